"""Where the cgroup filesystems are: mountinfo, the host's layout, cocin's subtree.

``/proc/self/mountinfo`` lists every mount of this process's mount namespace;
its ``cgroup`` and ``cgroup2`` lines say which hierarchies exist and where.
From them (and the filesystem type of ``/sys/fs/cgroup``) the layout follows:
``v1``, ``v2`` or ``hybrid``, detected once per process. cocin only ever
touches its own subtree, ``$COCIN_CGROUP_PARENT`` (``cocin``) in each
hierarchy, with one directory per container below it.
"""

from __future__ import annotations

import os

from cocin.record import Record

from .files import CgroupError

# <linux/magic.h>: what statfs(2) reports in f_type for each cgroup filesystem.
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270

CGROUP_ROOT = "/sys/fs/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
PARENT_ENV = "COCIN_CGROUP_PARENT"
DEFAULT_PARENT = "cocin"

# Mount options of a v1 cgroup mount that are not controller names.
_V1_NON_CONTROLLER_OPTIONS = {
    "rw",
    "ro",
    "none",
    "all",
    "noprefix",
    "xattr",
    "clone_children",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
}


class Mount(Record):
    """One cgroup line of /proc/self/mountinfo (see ``man 5 proc``)."""

    mountpoint: str
    fstype: str  # "cgroup" (v1) or "cgroup2"
    root: str  # which directory of the hierarchy is mounted there ("/" = all)
    dev: str  # "major:minor" of the superblock: same value = same hierarchy
    controllers: tuple[str, ...] = ()  # v1 only, e.g. ("cpu", "cpuacct")
    name: str | None = None  # v1 named hierarchy, e.g. "systemd" for name=systemd


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040 \011 \012 \134.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Keep the cgroup and cgroup2 mounts of a mountinfo text, in order.

    A line reads ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE
    SOURCE SUPEROPTS``; for v1 the controllers are the super options.
    """
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        head, tail = left.split(), right.split()
        if len(head) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        controllers, name = [], None
        if tail[0] == "cgroup":
            for opt in tail[2].split(","):
                if opt.startswith("name="):
                    name = opt[5:]
                elif "=" not in opt and opt not in _V1_NON_CONTROLLER_OPTIONS:
                    controllers.append(opt)
        mounts.append(Mount(_unescape(head[4]), tail[0], _unescape(head[3]), head[2], tuple(controllers), name))
    return mounts


def detect_layout(mounts: list[Mount], root_magic: int | None = None) -> str:
    """Decide "v1", "v2" or "hybrid" from the cgroup mounts.

    ``root_magic`` is statfs(``/sys/fs/cgroup``).f_type when known: on a pure
    v2 host that directory *is* a cgroup2 mount (CGROUP2_SUPER_MAGIC); on v1
    and hybrid hosts it is a tmpfs holding one mount per hierarchy.
    """
    v1 = [m for m in mounts if m.fstype == "cgroup" and m.controllers]
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    if root_magic == CGROUP2_SUPER_MAGIC:
        return "v2"
    if root_magic is None and any(m.mountpoint == CGROUP_ROOT for m in v2):
        return "v2"
    if v1:
        return "hybrid" if v2 else "v1"
    if v2:
        return "v2"
    raise CgroupError("no cgroup filesystem is mounted: cocin needs /sys/fs/cgroup")


_cache: dict[str, object] = {}


def cgroup_mounts() -> list[Mount]:
    """The cgroup mounts of this process's mount namespace (cached)."""
    if "mounts" not in _cache:
        try:
            with open(MOUNTINFO) as f:
                _cache["mounts"] = parse_mountinfo(f.read())
        except OSError as e:
            raise CgroupError(f"cannot read {MOUNTINFO}: {e.strerror}") from None
    return _cache["mounts"]  # type: ignore[return-value]


def _root_magic() -> int | None:
    # statfs(2) reads the filesystem type straight from the kernel. The
    # binding lives in cocin.libc; without it mountinfo alone decides.
    try:
        from .. import libc

        return libc.statfs_type(CGROUP_ROOT)
    except (ImportError, AttributeError, OSError):
        return None


def layout() -> str:
    """ "v1", "v2" or "hybrid" for this host, detected once per process."""
    if "layout" not in _cache:
        _cache["layout"] = detect_layout(cgroup_mounts(), _root_magic())
    return _cache["layout"]  # type: ignore[return-value]


def reset_cache() -> None:
    """Forget the detected layout (for tests, or after mounting cgroupfs)."""
    _cache.clear()


def parent_name() -> str:
    """The subtree cocin owns in each hierarchy: $COCIN_CGROUP_PARENT or "cocin"."""
    name = os.environ.get(PARENT_ENV, "").strip("/") or DEFAULT_PARENT
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise CgroupError(f"invalid {PARENT_ENV} '{name}': use a relative path such as cocin")
    return name


def check_cid(cid: str) -> None:
    """A container id becomes a directory name, so it must be one path component."""
    if not cid or "/" in cid or cid in (".", "..") or "\0" in cid:
        raise CgroupError(f"invalid container id '{cid}' for a cgroup name")
