"""Safe extraction of filesystem tarballs.

A tarball is untrusted input: a member named ``../../etc/passwd`` or
``/etc/passwd``, a hard link to ``/etc/shadow``, or a symlink ``x -> /etc``
followed by a member ``x/passwd`` would write outside the image. Every member
is checked *before* anything is written, and while extracting no path is ever
written through a symlink: each member's parent directory must resolve inside
the destination.

Absolute symlinks (``/bin/sh -> /bin/busybox``) are normal in a root
filesystem: they are resolved inside the container's root when it runs, and
extraction never follows them, so they are kept.
"""

from __future__ import annotations

import os
import posixpath
import tarfile

from .state import CocinError


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
            raise CocinError(f"refusing tarball member {raw!r}: hard link to {target!r} "
                             "points outside the image")
    elif m.issym():
        target = m.linkname
        if not target.startswith("/"):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
            if resolved == ".." or resolved.startswith("../"):
                raise CocinError(f"refusing tarball member {raw!r}: symlink to {target!r} "
                                 "points outside the image")
    elif not (m.isfile() or m.isdir() or m.ischr() or m.isblk() or m.isfifo()):
        raise CocinError(f"refusing tarball member {raw!r}: unsupported type")
    return name


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
        real_dest = os.path.realpath(dest)
        as_root = os.geteuid() == 0
        # Python >= 3.12 (and late 3.8-3.11 releases) filter members themselves,
        # and 3.14 refuses absolute symlinks by default: the checks above are ours.
        extra = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
        dirs = []
        for name, m in checked:
            if name == ".":
                continue
            target = os.path.join(real_dest, name)
            parent = os.path.realpath(os.path.dirname(target))
            if parent != real_dest and not parent.startswith(real_dest + os.sep):
                raise CocinError(f"refusing tarball member {m.name!r}: it goes through a "
                                 "symlink that leaves the image")
            os.makedirs(parent, exist_ok=True)
            if not m.isdir() and os.path.lexists(target) and not os.path.isdir(target):
                os.unlink(target)  # never write through an existing symlink
            m.name = name
            if m.islnk():
                m.linkname = _clean(m.linkname)
            try:
                tf.extract(m, real_dest, set_attrs=not m.isdir(), numeric_owner=as_root, **extra)
            except (tarfile.TarError, EOFError) as e:
                raise CocinError(f"cannot extract {path}: {e}") from None
            if m.isdir():
                dirs.append(m)
        # Directory modes and times last, deepest first, so a read-only
        # directory does not stop its own contents from being written.
        for m in sorted(dirs, key=lambda m: m.name, reverse=True):
            d = os.path.join(real_dest, m.name)
            if as_root:
                os.lchown(d, m.uid, m.gid)
            os.chmod(d, m.mode & 0o7777)
            os.utime(d, (m.mtime, m.mtime))
