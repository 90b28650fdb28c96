"""Flattening a container's overlay into one plain directory tree, by directory fds.

A container's filesystem is the image layer (read-only, ``lower``) with the
container's changes (``upper``) on top. overlayfs records changes in the
upper directory in two special ways:

* a *whiteout*, a character device with number 0/0, means "the file of this
  name in the lower layer was deleted";
* an *opaque* directory (extended attribute ``trusted.overlay.opaque=y``)
  means "hide everything the lower layer had in this directory" (the
  directory was deleted and made again).

``flatten`` copies the lower tree, then applies the upper one with those two
rules, so the result is what a process inside the container sees: deleted
files are gone and no whiteout ever appears as a file. Copies keep modes,
owners, times, symlinks, hard links and device nodes.

**The host never follows a path the container controls.** The upper
directory lies on the host, and a running container changes it while we
copy: a path like ``upper/a/b`` that the host resolves by name is a path the
container steers. Swap ``a`` for a symlink to a host directory at the right
moment and a copy by path reads, deletes or overwrites the host's files.
So no path of more than one name is ever resolved here:

* a directory is opened relative to its parent's descriptor (``openat(2)``)
  with ``O_DIRECTORY|O_NOFOLLOW``: a symlink there is an error, never a detour;
* any other entry is first *pinned* with ``O_PATH|O_NOFOLLOW``, a descriptor
  of the entry itself (a symlink stays a symlink), and ``fstat`` of that
  descriptor decides what it is. A regular file's bytes are then read by
  reopening that very inode through ``/proc/self/fd/N`` (as runc does), so a
  swap after the check cannot turn the read into an open of a device or FIFO;
* the new tree is written the same way, relative to its own directory fds.

``tarball`` uses the same helpers (``open_beneath``, ``remove_at``) to
extract an image into a layer.

**Layers as tarballs (OCI).** An image is a stack of such change sets, each
stored once as a directory in overlay's own format (whiteouts and opaque
directories as above), so the stack can be mounted as overlay ``lowerdir``s
directly. A layer travels as a tarball, where the two markers cannot be a
device or an extended attribute: the OCI image spec spells a whiteout of
``NAME`` as an empty file ``.wh.NAME`` and an opaque directory as an empty
file ``DIR/.wh..wh..opq``. ``write_layer_tar`` turns the overlay markers
into those names (``tarball.extract`` turns them back); its bytes are
canonical (sorted names, whole-second times, no owner names, no record
padding, as Go's ``archive/tar`` ends a stream), so the same tree always has
the same ``diff_id``: the sha256 of the uncompressed layer tarball.

(Slightly over 500 lines: the walk by directory fds serves both the
flattening and the tarball, which is why they share this module.)
"""

from __future__ import annotations

import errno
import os
import stat

from . import files

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

OPAQUE_XATTR = "trusted.overlay.opaque"
WH_PREFIX = ".wh."  # OCI: ``.wh.NAME`` deletes NAME of the layers below
WH_OPAQUE = ".wh..wh..opq"  # OCI: the directory holding it hides what the layers below had there

# Files cocin bind-mounts over a container's own (they describe the host it
# ran on, not the image): an empty placeholder of theirs in upper is skipped.
MOUNT_TARGETS = ("etc/hostname", "etc/hosts", "etc/resolv.conf")

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_PIN = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# --- walking by descriptor ------------------------------------------------------------


def open_dir(path: str, dir_fd: int | None = None) -> int:
    """A descriptor of the directory ``path`` (relative to ``dir_fd``); a symlink
    as the last name fails with ``ELOOP``/``ENOTDIR`` instead of being followed."""
    return os.open(path, O_DIR, dir_fd=dir_fd)


def open_beneath(root_fd: int, rel: str, create: bool = False) -> int:
    """Open the directory ``rel`` under ``root_fd`` one name at a time.

    Each step is an ``openat`` of one name with ``O_NOFOLLOW``, so the walk
    stays below ``root_fd`` whatever symlinks the tree holds: one on the way
    raises ``OSError`` (``ELOOP`` or ``ENOTDIR``, its ``filename`` the path up
    to it). With ``create``, missing directories are made (mode 0755).
    """
    fd = os.open(".", O_DIR, dir_fd=root_fd)
    done = []
    try:
        for part in rel.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise OSError(errno.EINVAL, "'..' in a path inside a layer", rel)
            done.append(part)
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nfd = os.open(part, O_DIR, dir_fd=fd)
            except OSError as e:
                raise OSError(e.errno, e.strerror, "/".join(done)) from None
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def reopen(pin: int, flags: int) -> int:
    """Open the inode ``pin`` (an ``O_PATH`` descriptor) for real, with ``flags``.

    ``/proc/self/fd/N`` is a "magic link" to the file itself, not to a name:
    whatever happened to the name meanwhile, this opens what ``fstat(pin)`` saw.
    """
    return os.open(f"/proc/self/fd/{pin}", flags | os.O_CLOEXEC)


def remove_at(dir_fd: int, name: str) -> None:
    """``rm -rf name`` relative to ``dir_fd``, following no symlink (nothing there: no-op)."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except IsADirectoryError:
        files.remove_tree(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def entries(top: str):
    """Every entry below the directory ``top``, depth first in name order, as
    ``(dir_fd, name, relative path, lstat)`` (``dir_fd`` holds ``name``).

    A stack of open directories (one descriptor per level), never recursion
    and never a symlink followed: for trees of any depth, such as a layer a
    container committed. Pre-order, as ``tar`` lists a tree: a directory,
    then what it holds.
    """
    files.raise_fd_limit()
    stack: list[tuple[int, Iterator[str] | None, str]] = [(open_dir(top), None, "")]
    try:
        while stack:
            fd, names, prefix = stack[-1]
            if names is None:
                names = iter(sorted(os.listdir(fd)))
                stack[-1] = (fd, names, prefix)
            for name in names:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                yield fd, name, prefix + name, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append((open_dir(name, fd), None, prefix + name + "/"))
                    break
            else:
                os.close(stack.pop()[0])
    finally:
        for fd, _names, _prefix in stack:
            os.close(fd)


# --- overlay markers ----------------------------------------------------------------


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(dir_fd: int) -> bool:
    try:
        return os.getxattr(dir_fd, OPAQUE_XATTR) == b"y"
    except OSError:
        return False


# --- copying --------------------------------------------------------------------------


def set_attrs_fd(fd: int, st: os.stat_result) -> None:
    """Owner, then mode (a chown clears set-user-ID bits), then times."""
    os.fchown(fd, st.st_uid, st.st_gid)
    os.fchmod(fd, stat.S_IMODE(st.st_mode))
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _set_attrs_at(dir_fd: int, name: str, st: os.stat_result) -> None:
    """The same for an entry we just made in our own new tree (no fd to write
    through: a symlink or a device node). A symlink's mode does not exist."""
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dir_fd)
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def copy_data(src: int, dst: int) -> None:
    """All bytes of ``src`` into ``dst`` (``sendfile(2)``: no copy through Python)."""
    offset = 0
    while True:
        try:
            n = os.sendfile(dst, src, offset, 1 << 30)
        except OSError as e:
            if offset or e.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
            break  # a file system without sendfile: plain reads below
        if n == 0:
            return
        offset += n
    while True:
        chunk = os.read(src, 1 << 20)
        if not chunk:
            return
        os.write(dst, chunk)


def _copy_file(pin: int, st: os.stat_result, dfd: int, name: str) -> int:
    """Copy the regular file pinned by ``pin`` to ``name`` in ``dfd``; the new inode."""
    src = reopen(pin, os.O_RDONLY)
    try:
        dst = os.open(name, O_NEW, 0o600, dir_fd=dfd)
        try:
            copy_data(src, dst)
            set_attrs_fd(dst, st)
            return os.fstat(dst).st_ino
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _link(target: tuple[str, int], root_fd: int, dfd: int, name: str) -> bool:
    """Hard-link ``name`` to the copy already made at ``target`` (path in the new
    tree, its inode); False if that copy is no longer there to link to."""
    rel, ino = target
    parent, _, base = rel.rpartition("/")
    try:
        pfd = open_beneath(root_fd, parent)
    except OSError:
        return False
    try:
        if os.stat(base, dir_fd=pfd, follow_symlinks=False).st_ino != ino:
            return False
        os.link(base, name, src_dir_fd=pfd, dst_dir_fd=dfd, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        os.close(pfd)


def _copy_nondir(pin: int, st: os.stat_result, dfd: int, name: str, rel: str, links: dict, root_fd: int) -> None:
    """Copy one non-directory entry faithfully; ``links`` maps source inodes
    already copied to their copy, so hard links stay hard links."""
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in links and _link(links[key], root_fd, dfd, name):
        return
    mode = st.st_mode
    if stat.S_ISREG(mode):
        ino = _copy_file(pin, st, dfd, name)
    else:
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink("", dir_fd=pin), name, dir_fd=dfd)  # readlinkat(pin, "")
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(name, mode, st.st_rdev, dir_fd=dfd)
        else:
            return  # sockets are not content
        _set_attrs_at(dfd, name, st)
        ino = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_ino
    if st.st_nlink > 1:
        links[key] = (rel, ino)


def _enter_dir(pin: int, dfd: int, name: str, overlay_upper: bool, as_layer: bool = False) -> tuple[int, int]:
    """Open the source directory pinned by ``pin`` and its copy ``name`` in ``dfd``
    (made if missing; whatever else stood there is removed). ``as_layer``: an
    opaque directory stays opaque in the copy."""
    src = reopen(pin, os.O_RDONLY | os.O_DIRECTORY)
    try:
        opaque = (overlay_upper or as_layer) and is_opaque(src)
        if overlay_upper and opaque:
            remove_at(dfd, name)
        try:
            if not stat.S_ISDIR(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=dfd)  # a file or a symlink: replaced
        except FileNotFoundError:
            pass
        try:
            os.mkdir(name, 0o700, dir_fd=dfd)  # its own mode once it is filled
        except FileExistsError:
            pass
        dst = open_dir(name, dfd)
        if as_layer and opaque:
            os.setxattr(dst, OPAQUE_XATTR, b"y")
        return src, dst
    except BaseException:
        os.close(src)
        raise


def _copy_entry(
    sfd: int,
    dfd: int,
    name: str,
    rel: str,
    overlay_upper: bool,
    links: dict,
    root_fd: int,
    as_layer: bool = False,
    skip: tuple = (),
):
    """Copy the entry ``name`` of ``sfd`` into ``dfd``. For a directory, return
    (source fd, copy fd, stat) for the caller to descend into."""
    try:
        pin = os.open(name, O_PIN, dir_fd=sfd)
    except FileNotFoundError:
        return None  # removed meanwhile: a running container's files change
    try:
        st = os.fstat(pin)
        if stat.S_ISDIR(st.st_mode):
            return (*_enter_dir(pin, dfd, name, overlay_upper, as_layer), st)
        if overlay_upper and is_whiteout(st):
            remove_at(dfd, name)
            return None
        if rel in skip and stat.S_ISREG(st.st_mode) and st.st_size == 0:
            return None
        remove_at(dfd, name)
        _copy_nondir(pin, st, dfd, name, rel, links, root_fd)
        return None
    finally:
        os.close(pin)


def copy_tree(
    src_fd: int,
    dst_fd: int,
    overlay_upper: bool = False,
    links: dict | None = None,
    as_layer: bool = False,
    skip: tuple = (),
) -> None:
    """Copy the directory ``src_fd`` into the directory ``dst_fd``; with
    ``overlay_upper`` apply whiteouts and opaque directories instead of copying them,
    with ``as_layer`` copy them as they are (a container's changes become a layer).
    Empty regular files at the paths in ``skip`` are left out (``MOUNT_TARGETS``
    in a container's upper directory).

    Depth first with a stack of open directory pairs (no recursion: a deep
    tree must not hit Python's recursion limit). A directory's own attributes
    are set when it is left, after its contents: a read-only directory must
    be filled first, and filling it changes its times.
    """
    links = {} if links is None else links
    stack = [(src_fd, dst_fd, "", iter(sorted(os.listdir(src_fd))), None)]
    try:
        while stack:
            sfd, dfd, prefix, names, st = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                if st is not None:  # not the top, which the caller owns
                    try:
                        set_attrs_fd(dfd, st)
                    finally:
                        os.close(sfd)
                        os.close(dfd)
                continue
            sub = _copy_entry(sfd, dfd, name, prefix + name, overlay_upper, links, dst_fd, as_layer, skip)
            if sub is not None:
                s, d, sub_st = sub
                try:
                    names_below = iter(sorted(os.listdir(s)))
                except BaseException:
                    os.close(s)
                    os.close(d)
                    raise
                stack.append((s, d, prefix + name + "/", names_below, sub_st))
    finally:
        for sfd, dfd, _prefix, _names, st in stack:
            if st is not None:
                os.close(sfd)
                os.close(dfd)


def _resolve_link(path: str) -> str:
    """A layer named by cocin's own short link (``<root>/l/NAME``) as its directory."""
    if os.path.islink(path):
        return os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return path


def flatten(lower: str, upper: str | None, dst: str) -> None:
    """Write the merged view of ``lower`` + ``upper`` into the new directory ``dst``.

    ``lower`` is overlay's ``lowerdir`` value: one directory, or several
    separated by ``:``, the top layer first. Each layer is applied from the
    bottom up, with its whiteouts and opaque directories, then ``upper`` (if
    any). The paths are cocin's own (in the state root); only what lies below
    them is the image's or the container's.
    """
    files.raise_fd_limit()
    dirs = [_resolve_link(d) for d in reversed(lower.split(":"))] + ([upper] if upper else [])
    dst_fd = open_dir(dst)
    try:
        for i, path in enumerate(dirs):
            fd = open_dir(path)
            try:
                is_upper = upper is not None and i == len(dirs) - 1
                copy_tree(fd, dst_fd, overlay_upper=True, skip=MOUNT_TARGETS if is_upper else ())
                if i == 0:
                    set_attrs_fd(dst_fd, os.fstat(fd))
            finally:
                os.close(fd)
    finally:
        os.close(dst_fd)


def copy_changes(upper: str, dst: str) -> None:
    """A container's ``upper`` directory copied into the new directory ``dst`` as
    a layer: whiteouts and opaque directories kept as they are."""
    files.raise_fd_limit()
    src_fd, dst_fd = open_dir(upper), open_dir(dst)
    try:
        copy_tree(src_fd, dst_fd, as_layer=True, skip=MOUNT_TARGETS)
    finally:
        os.close(src_fd)
        os.close(dst_fd)


# --- a layer as an OCI tarball ----------------------------------------------------------

BLOCK = 512


def _header(rel: str, st: os.stat_result, fd: int, name: str, links: dict):
    """The tar header of one entry of a layer directory (``None``: not content)."""
    import tarfile

    info = tarfile.TarInfo(rel)
    info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    info.mtime, info.uname, info.gname = int(st.st_mtime), "", ""
    mode = st.st_mode
    if is_whiteout(st):
        parent, _, base = rel.rpartition("/")
        info.name = (parent + "/" if parent else "") + WH_PREFIX + base
        info.mode = 0o600
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
        else:
            links[key] = rel
            info.size = st.st_size
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=fd)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None  # a socket
    return info


def write_layer_tar(top: str, write) -> int:
    """Write the layer directory ``top`` as an OCI layer tarball through
    ``write(bytes)``; returns the number of bytes. Whiteouts become ``.wh.``
    files, an opaque directory gets a ``.wh..wh..opq`` file right after it.

    ``top`` is cocin's own layer (in the state root, or a copy made there),
    and every file is opened relative to its directory's fd with
    ``O_NOFOLLOW``.
    """
    import tarfile

    total = 0
    links: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) -> the first name archived

    def put(info, fd=None, name=None) -> None:
        nonlocal total
        buf = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        write(buf)
        total += len(buf)
        if info.isreg() and info.size:
            f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                left = info.size
                while left > 0:  # exactly the size in the header, whatever the file does
                    chunk = os.read(f, min(left, 1 << 20)) or bytes(min(left, 1 << 20))
                    chunk = chunk[:left]
                    write(chunk)
                    left -= len(chunk)
            finally:
                os.close(f)
            pad = -info.size % BLOCK
            write(bytes(pad))
            total += info.size + pad

    for fd, name, rel, st in entries(top):
        info = _header(rel, st, fd, name, links)
        if info is None:
            continue
        put(info, fd, name)
        if info.isdir():
            sub = open_dir(name, fd)
            try:
                opaque = is_opaque(sub)
            finally:
                os.close(sub)
            if opaque:
                wh = tarfile.TarInfo(rel + "/" + WH_OPAQUE)
                wh.mode, wh.uid, wh.gid, wh.mtime, wh.uname, wh.gname = (
                    0o600,
                    st.st_uid,
                    st.st_gid,
                    int(st.st_mtime),
                    "",
                    "",
                )
                put(wh)
    write(bytes(2 * BLOCK))  # the end-of-archive marker, no padding to a 10 KiB record
    return total + 2 * BLOCK


def diff_id(top: str) -> str:
    """``sha256:<hex>`` of the layer directory's tarball (``write_layer_tar``)."""
    import hashlib

    h = hashlib.sha256()
    write_layer_tar(top, h.update)
    return "sha256:" + h.hexdigest()
