"""Flattening a container's overlay into one plain directory tree.

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
"""

from __future__ import annotations

import os
import shutil
import stat

OPAQUE_XATTR = "trusted.overlay.opaque"

# Files cocin bind-mounts over a container's own (they describe the host it
# ran on, not the image): an empty placeholder of theirs in upper is skipped.
MOUNT_TARGETS = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _copy_attrs(src_st: os.stat_result, dst: str) -> None:
    os.lchown(dst, src_st.st_uid, src_st.st_gid)
    if not stat.S_ISLNK(src_st.st_mode):
        os.chmod(dst, stat.S_IMODE(src_st.st_mode))
    os.utime(dst, ns=(src_st.st_atime_ns, src_st.st_mtime_ns), follow_symlinks=False)


def copy_entry(src: str, dst: str, st: os.stat_result, links: dict) -> None:
    """Copy one non-directory entry faithfully; ``links`` maps inodes already
    copied to their new path, so hard links stay hard links."""
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in links:
        os.link(links[key], dst)
        return
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(mode):
        shutil.copyfile(src, dst, follow_symlinks=False)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
        os.mknod(dst, mode, st.st_rdev)
    else:
        return  # sockets are not content
    _copy_attrs(st, dst)
    if st.st_nlink > 1:
        links[key] = dst


def copy_tree(src: str, dst: str, overlay_upper: bool = False, links: dict | None = None) -> None:
    """Copy ``src`` into the existing directory ``dst``; with ``overlay_upper``
    apply whiteouts and opaque directories instead of copying them."""
    links = {} if links is None else links
    dirs = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        target_dir = dst if rel == "." else os.path.join(dst, rel)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            s = os.path.join(dirpath, name)
            d = os.path.join(target_dir, name)
            st = os.lstat(s)
            relpath = os.path.normpath(os.path.join(rel, name))
            if overlay_upper:
                if is_whiteout(st):
                    _remove(d)
                    continue
                if relpath in MOUNT_TARGETS and stat.S_ISREG(st.st_mode) and st.st_size == 0:
                    continue
            _remove(d)
            copy_entry(s, d, st, links)
        for name in list(dirnames):
            s = os.path.join(dirpath, name)
            if os.path.islink(s):
                continue
            d = os.path.join(target_dir, name)
            st = os.lstat(s)
            if overlay_upper and is_opaque(s):
                _remove(d)
            if os.path.lexists(d) and not os.path.isdir(d) or os.path.islink(d):
                os.unlink(d)
            if not os.path.isdir(d):
                os.mkdir(d)
            dirs.append((st, d))
        # os.walk follows no symlinks, so dirnames that are links were copied above.
        dirnames[:] = [n for n in dirnames if not os.path.islink(os.path.join(dirpath, n))]
    for st, d in reversed(dirs):  # attributes last: a read-only dir must be filled first
        _copy_attrs(st, d)


def flatten(lower: str, upper: str, dst: str) -> None:
    """Write the merged view of ``lower`` + ``upper`` into the new directory ``dst``."""
    links: dict = {}
    copy_tree(lower, dst, links=links)
    copy_tree(upper, dst, overlay_upper=True, links={})
    _copy_attrs(os.lstat(lower), dst)
