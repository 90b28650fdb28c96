"""Safe extraction of filesystem tarballs.

A tarball is untrusted input: a member named ``../../etc/passwd`` or
``/etc/passwd``, a hard link to ``/etc/shadow``, or a symlink ``x -> /etc``
followed by a member ``x/passwd`` (or a directory member ``x/`` whose mode
is then set on ``/etc``) would reach outside the image. So:

* every member's name is checked *before* anything is written: no absolute
  names, no ``..``, hard links only to names inside the image;
* everything is written relative to a *directory file descriptor* of the
  layer being built, one name at a time with ``O_NOFOLLOW``
  (``layers.open_beneath``): a member whose path goes through a symlink is
  refused, whether the symlink came earlier in the same tarball or not;
* each member replaces whatever stood at its name (a symlink included)
  unless both are directories, as ``docker load`` does; files are created
  with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and their owner, mode and times set
  through that descriptor, so no chown/chmod/utime ever lands on a
  symlink's target; a hard link is made with ``linkat`` between two
  directory fds of the layer, to a target found the same way.

Absolute symlinks (``/bin/sh -> /bin/busybox``) are normal in a root
filesystem: they are resolved inside the container's root when it runs, and
extraction never follows them, so they are kept.

A tarball is extracted as one layer of an image: the OCI whiteout files
become overlay's markers again (``layers``): ``DIR/.wh.NAME`` a character
device 0/0 named ``NAME``, ``DIR/.wh..wh..opq`` the extended attribute
``trusted.overlay.opaque=y`` on ``DIR``. Neither file is ever written itself.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile

from .errors import CocinError
from .layers import O_NEW, OPAQUE_XATTR, WH_OPAQUE, WH_PREFIX, open_beneath, open_dir, remove_at


def _clean(name: str) -> str:
    name = name[2:] if name.startswith("./") else name
    return posixpath.normpath(name) if name not in ("", ".", "./") else "."


def check_member(m: tarfile.TarInfo) -> str:
    """Return the member's clean relative path, or raise for one that escapes."""
    raw = m.name
    if raw.startswith("/") or ".." in raw.split("/"):
        raise CocinError(f"refusing tarball member {raw!r}: it would land outside the image")
    name = _clean(raw)
    if m.islnk():
        target = m.linkname
        if target.startswith("/") or ".." in target.split("/"):
            raise CocinError(f"refusing tarball member {raw!r}: hard link to {target!r} points outside the image")
    elif m.issym():
        target = m.linkname
        if not target.startswith("/"):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if resolved == ".." or resolved.startswith("../"):
                raise CocinError(f"refusing tarball member {raw!r}: symlink to {target!r} points outside the image")
    elif not (m.isfile() or m.isdir() or m.ischr() or m.isblk() or m.isfifo()):
        raise CocinError(f"refusing tarball member {raw!r}: unsupported type")
    return name


def _parent(root_fd: int, name: str, raw: str, create: bool = True) -> int:
    """A descriptor of the directory that holds ``name``, reached without
    following any symlink (made on the way with ``create``)."""
    try:
        return open_beneath(root_fd, posixpath.dirname(name), create=create)
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP, errno.ENOENT):
            raise
        what = e.filename
        try:
            is_link = stat.S_ISLNK(os.stat(what, dir_fd=root_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link:
            why = f"it goes through the symlink {what!r}"
        elif e.errno == errno.ENOENT:
            why = f"{what!r} does not exist"
        else:
            why = f"{what!r} is not a directory"
        raise CocinError(f"refusing tarball member {raw!r}: {why}") from None


class _Extractor:
    """Writes members into the layer below ``root_fd``."""

    def __init__(self, tf: tarfile.TarFile, path: str, root_fd: int):
        self.tf = tf
        self.path = path
        self.root_fd = root_fd
        self.as_root = os.geteuid() == 0
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []
        self.opaque: list[str] = []

    def member(self, name: str, m: tarfile.TarInfo) -> None:
        pfd = _parent(self.root_fd, name, m.name)
        try:
            base = posixpath.basename(name)
            if base.startswith(WH_PREFIX):
                self.whiteout(pfd, posixpath.dirname(name), base, m)
                return
            keep = m.isdir() and _is_dir(pfd, base)
            if not keep:
                remove_at(pfd, base)  # never write through what stood there
            if m.isdir():
                if not keep:
                    os.mkdir(base, 0o700, dir_fd=pfd)
                self.dirs.append((name, m))  # its mode and times once it is filled
            elif m.isfile():
                self.file(pfd, base, m)
            elif m.issym():
                os.symlink(m.linkname, base, dir_fd=pfd)
                if self.as_root:
                    os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
                os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)
            elif m.islnk():
                self.hard_link(pfd, base, m)
            else:  # character or block device, FIFO
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK if m.isblk() else stat.S_IFIFO
                os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
                self.attrs_at(pfd, base, m)
        finally:
            os.close(pfd)

    def whiteout(self, pfd: int, parent: str, base: str, m: tarfile.TarInfo) -> None:
        """An OCI whiteout file, turned into overlay's marker (see the module's docstring)."""
        if base == WH_OPAQUE:
            self.opaque.append(parent)  # set once the directory is complete
            return
        target = base[len(WH_PREFIX) :]
        if target in ("", ".", "..") or target.startswith(WH_PREFIX):
            raise CocinError(f"refusing tarball member {m.name!r}: not a valid whiteout")
        remove_at(pfd, target)
        os.mknod(target, stat.S_IFCHR | 0o600, 0, dir_fd=pfd)

    def finish_opaque(self) -> None:
        for name in self.opaque:
            fd = open_beneath(self.root_fd, name)
            try:
                os.setxattr(fd, OPAQUE_XATTR, b"y")
            finally:
                os.close(fd)

    def file(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        fd = os.open(base, O_NEW, 0o600, dir_fd=pfd)
        try:
            src = self.tf.extractfile(m)
            if src is None:  # not a regular file: the caller asked for one
                raise CocinError(f"{m.name}: not a regular file in the archive")
            try:
                while True:
                    chunk = memoryview(src.read(1 << 20))
                    if not chunk:
                        break
                    while chunk:
                        chunk = chunk[os.write(fd, chunk) :]
            except (tarfile.TarError, EOFError) as e:
                raise CocinError(f"cannot extract {self.path}: {e}") from None
            self.attrs_fd(fd, m)
        finally:
            os.close(fd)

    def hard_link(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        target = _clean(m.linkname)
        tfd = _parent(self.root_fd, target, m.name, create=False)
        try:
            tbase = posixpath.basename(target)
            try:
                st = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise CocinError(
                    f"refusing tarball member {m.name!r}: hard link to {m.linkname!r}, which is not in the image"
                ) from None
            if stat.S_ISDIR(st.st_mode):
                raise CocinError(f"refusing tarball member {m.name!r}: hard link to the directory {m.linkname!r}")
            # linkat(2) without AT_SYMLINK_FOLLOW: a symlink target is linked itself.
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def attrs_fd(self, fd: int, m: tarfile.TarInfo) -> None:
        """Owner, then mode (a chown clears set-user-ID bits), then times."""
        if self.as_root:
            os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, m.mode & 0o7777)
        os.utime(fd, (m.mtime, m.mtime))

    def attrs_at(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        """The same for a device node or FIFO we just made (opening one could
        wait for a writer, or reach a device): by name in our own directory."""
        if self.as_root:
            os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, m.mode & 0o7777, dir_fd=pfd)
        os.utime(base, (m.mtime, m.mtime), dir_fd=pfd, follow_symlinks=False)

    def finish_dirs(self) -> None:
        """Directory modes and times last, deepest first, so a read-only
        directory does not stop its own contents from being written. Each is
        reached again without symlinks; one a later member replaced is skipped."""
        for name, m in sorted(self.dirs, key=lambda d: d[0], reverse=True):
            try:
                fd = open_beneath(self.root_fd, name)
            except OSError:
                continue
            try:
                self.attrs_fd(fd, m)
            finally:
                os.close(fd)


def _is_dir(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def extract(path: str, dest: str) -> None:
    """Extract the tarball at ``path`` (plain, gzip, bzip2 or xz) into ``dest``."""
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError):
        raise CocinError(f"cannot read {path}: not a valid tar archive") from None
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise CocinError(f"cannot read {path}: truncated or corrupt tar archive ({e})") from None
        checked = [(check_member(m), m) for m in members]
        root_fd = open_dir(dest)
        try:
            ex = _Extractor(tf, path, root_fd)
            for name, m in checked:
                if name != ".":
                    ex.member(name, m)
            ex.finish_dirs()
            ex.finish_opaque()
        finally:
            os.close(root_fd)
