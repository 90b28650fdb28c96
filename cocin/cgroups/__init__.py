"""Control groups: how cocin caps a container's memory, CPU and process count.

A *cgroup* is a directory in a special filesystem. Every process belongs to
exactly one cgroup per hierarchy; writing a PID into a cgroup's ``cgroup.procs``
moves that process (and its future children) there, and writing a value into a
controller file such as ``memory.max`` limits everything inside the directory.

Linux has two versions of that filesystem, and a host may mix them:

* **v1** mounts one hierarchy per controller (``/sys/fs/cgroup/memory``,
  ``/sys/fs/cgroup/cpu`` ...), so a container needs one directory in each;
* **v2** mounts a single unified tree at ``/sys/fs/cgroup`` in which a parent
  hands controllers down to its children through ``cgroup.subtree_control``;
* **hybrid** is v1 for every controller plus an empty v2 tree (usually at
  ``/sys/fs/cgroup/unified``) used only to track processes.

This package hides the difference behind :func:`create`, :func:`open_existing`
and :class:`Cgroup`; ``v1.py`` and ``v2.py`` hold the translations of each
docker flag into file names and values. cocin only ever touches its own
subtree, ``<hierarchy>/$COCIN_CGROUP_PARENT/<container-id>`` (``cocin/<id>``
by default).

This module is on the hot path of ``cocin run``: it imports only cheap stdlib
modules and never starts a subprocess.
"""

from __future__ import annotations

import errno
import os
import time

from cocin.record import Record

# Names used only in annotations: importing typing costs milliseconds at start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Callable

# <linux/magic.h>: what statfs(2) reports in f_type for each cgroup filesystem.
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270

CGROUP_ROOT = "/sys/fs/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
PARENT_ENV = "COCIN_CGROUP_PARENT"
DEFAULT_PARENT = "cocin"

# docker's linuxMinMemory: a smaller limit cannot even start a process.
MIN_MEMORY = 6 * 1024 * 1024
# How long destroy() keeps retrying an rmdir that says EBUSY.
RMDIR_TIMEOUT = 2.0
# errno values meaning "this cgroup was removed (or is being removed)".
VANISHED = (errno.ENOENT, errno.ENODEV)
# How often create() re-makes a parent that a concurrent destroy() removed.
MKDIR_RETRIES = 10

SYS_CPU_ONLINE = "/sys/devices/system/cpu/online"
SYS_NODE_ONLINE = "/sys/devices/system/node/online"

# kernel/sched/sched.h: the scheduler clamps cpu.shares to [MIN_SHARES, MAX_SHARES].
MIN_SHARES = 2
MAX_SHARES = 1 << 18
# kernel/sched/core.c: default_cfs_period() is 100 ms, the period docker uses too.
CFS_PERIOD_US = 100_000

# The docker flag behind each Limits field, and the controller that enforces it.
FLAG_OF_FIELD = {
    "memory": "--memory",
    "memory_swap": "--memory-swap",
    "cpus": "--cpus",
    "cpu_shares": "--cpu-shares",
    "cpuset_cpus": "--cpuset-cpus",
    "cpuset_mems": "--cpuset-mems",
    "pids_limit": "--pids-limit",
}
CONTROLLER_OF_FIELD = {
    "memory": "memory",
    "memory_swap": "memory",
    "cpus": "cpu",
    "cpu_shares": "cpu",
    "cpuset_cpus": "cpuset",
    "cpuset_mems": "cpuset",
    "pids_limit": "pids",
}

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


from cocin.errors import CocinError  # noqa: E402


class CgroupError(CocinError):
    """A cgroup problem, worded as one line a user can act on."""


# --------------------------------------------------------------------------
# Limits: what the user asked for, already validated.
# --------------------------------------------------------------------------


class Limits(Record):
    """Resource limits of one container, in docker's units.

    ``None`` means "not asked for". ``memory_swap`` is memory *plus* swap, as
    in docker (``-1`` = unlimited swap); ``pids_limit`` ``-1`` = unlimited.
    """

    memory: int | None = None
    memory_swap: int | None = None
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None

    def is_empty(self) -> bool:
        """True when no limit at all was asked for."""
        return all(getattr(self, f) is None for f in self._fields)

    def to_dict(self) -> dict:
        """A JSON-able dict for the container record (every field, ``None`` included)."""
        return {f: getattr(self, f) for f in self._fields}

    @classmethod
    def from_dict(cls, d: dict | None) -> Limits:
        """Rebuild from :meth:`to_dict` output; unknown keys are ignored."""
        d = d or {}
        return cls(**{f: d.get(f) for f in cls._fields})


def _is_decimal(s: str) -> bool:
    digits = s.replace(".", "", 1)
    return bool(digits) and all("0" <= c <= "9" for c in digits)


def parse_size(text: str, what: str = "size") -> int:
    """Parse a docker-style byte size: ``100``, ``100b``, ``512k``, ``64M``, ``1.5g``.

    Suffixes are powers of 1024 and case-insensitive; ``kb``/``mib`` spellings
    are accepted as docker does. ``what`` only words the error message.
    """
    raw = str(text)
    s = raw.strip().lower()
    for tail in ("ib", "b"):  # "64mb", "64mib" -> "64m"; a bare "100b" stays
        if s.endswith(tail) and len(s) > len(tail) and s[-len(tail) - 1] in "kmg":
            s = s[: -len(tail)]
            break
    unit = s[-1:] if s[-1:].isalpha() else ""
    number = s[: len(s) - len(unit)].strip()
    if unit not in _SIZE_UNITS or not _is_decimal(number):
        if number.startswith("-") and _is_decimal(number[1:]):
            raise CgroupError(f"invalid {what} '{raw}': it must not be negative")
        raise CgroupError(f"invalid {what} '{raw}': use a number with an optional b, k, m or g suffix")
    return int(float(number) * _SIZE_UNITS[unit])


def parse_cpu_list(text: str) -> set[int]:
    """Expand a kernel "cpu list" such as ``0-2,4`` into ``{0, 1, 2, 4}``.

    The same syntax names CPUs in ``cpuset.cpus`` and NUMA memory nodes in
    ``cpuset.mems`` (see ``man 7 cpuset``, "List format"). Raises ValueError.
    """
    out: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(part)
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(part)
        out.update(range(first, last + 1))
    return out


def _int_flag(flag: str, text: object) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise CgroupError(f"invalid {flag} '{text}': use a whole number") from None


def _cpuset_flag(flag: str, text: object) -> str:
    value = str(text).replace(" ", "")
    try:
        parse_cpu_list(value)
    except ValueError:
        raise CgroupError(f"invalid {flag} '{text}': use a list like 0-2,4") from None
    return value


def parse_limits(
    memory: str | None = None,
    memory_swap: str | None = None,
    cpus: str | None = None,
    cpu_shares: str | None = None,
    cpuset_cpus: str | None = None,
    cpuset_mems: str | None = None,
    pids_limit: str | None = None,
) -> Limits:
    """Validate raw CLI strings with docker's rules and return :class:`Limits`.

    Only the syntax and the rules between flags are checked here; whether the
    host can honour them is :func:`check`'s job. As in docker, ``--memory 0``,
    ``--memory-swap 0`` and ``--cpu-shares 0`` mean "not set".
    """
    lim = Limits()
    if memory is not None:
        lim.memory = parse_size(memory, "memory size") or None
        if lim.memory is not None and lim.memory < MIN_MEMORY:
            raise CgroupError(f"invalid --memory '{memory}': minimum memory limit allowed is 6MB")
    if memory_swap is not None:
        if str(memory_swap).strip() == "-1":
            lim.memory_swap = -1
        else:
            lim.memory_swap = parse_size(memory_swap, "memory-swap size") or None
        if lim.memory_swap not in (None, -1):
            if lim.memory is None:
                raise CgroupError("--memory-swap needs --memory: set a memory limit too")
            if lim.memory_swap < lim.memory:
                raise CgroupError(
                    f"invalid --memory-swap '{memory_swap}': it is memory plus swap, so it "
                    f"must be at least --memory ({memory}), or -1 for unlimited swap"
                )
    if cpus is not None:
        try:
            value = float(str(cpus).strip())
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise CgroupError(f"invalid --cpus '{cpus}': use a number above 0, such as 0.5 or 2")
        lim.cpus = value
    if cpu_shares is not None:
        shares = _int_flag("--cpu-shares", cpu_shares)
        if shares < 0:
            raise CgroupError(f"invalid --cpu-shares '{cpu_shares}': it must not be negative")
        lim.cpu_shares = shares or None
    if cpuset_cpus is not None:
        lim.cpuset_cpus = _cpuset_flag("--cpuset-cpus", cpuset_cpus)
    if cpuset_mems is not None:
        lim.cpuset_mems = _cpuset_flag("--cpuset-mems", cpuset_mems)
    if pids_limit is not None:
        pids = _int_flag("--pids-limit", pids_limit)
        if pids < -1:
            raise CgroupError(f"invalid --pids-limit '{pids_limit}': use a positive number, or 0 or -1 for unlimited")
        lim.pids_limit = -1 if pids == 0 else pids
    return lim


def clamp_shares(shares: int) -> int:
    """cpu.shares as the kernel will apply it (values outside 2..262144 are clamped)."""
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def cfs_quota_us(cpus: float, period_us: int = CFS_PERIOD_US) -> int:
    """CPU time per period that ``--cpus`` allows.

    The CFS bandwidth controller lets a cgroup run ``quota`` microseconds of
    CPU time in every ``period`` microseconds, summed over all CPUs, so
    ``--cpus 1.5`` is 150000us per 100000us. Computed as docker does, via
    whole nanoCPUs, so 0.1 gives exactly 10000.
    """
    return round(cpus * 1e9) * period_us // 1_000_000_000


def required_controllers(limits: Limits) -> dict[str, str]:
    """Controller name -> the first flag that needs it (unlimited values need none)."""
    need: dict[str, str] = {}
    for name, ctrl in CONTROLLER_OF_FIELD.items():
        value = getattr(limits, name)
        if value is None or (name in ("memory_swap", "pids_limit") and value == -1):
            continue
        need.setdefault(ctrl, FLAG_OF_FIELD[name])
    return need


# --------------------------------------------------------------------------
# Where are the cgroup filesystems? (layout detection)
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# Small file helpers. cgroup files are tiny and are read or written in one go.
# --------------------------------------------------------------------------


def read_text(path: str) -> str | None:
    """The content of a cgroup file, or None when it (or its cgroup) is gone."""
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
        return None
    except OSError as e:
        if e.errno == errno.ENODEV:  # the cgroup was removed while open
            return None
        raise


def read_int(path: str) -> int | None:
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def read_keyed(path: str) -> dict[str, int]:
    """Parse "key value" lines, as in memory.stat, cpu.stat or memory.events."""
    out = {}
    for line in (read_text(path) or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out


def write_text(path: str, value: str) -> None:
    """Write one value with a single write(2), as the kernel expects.

    A cgroup file parses each write as a whole, so a buffered writer that
    split the value would be rejected. Raises OSError.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_limit(path: str, value: str, flag: str) -> None:
    """Write a limit file, turning the kernel's refusal into a CgroupError naming ``flag``."""
    try:
        write_text(path, value)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ERANGE):
            raise CgroupError(f"invalid {flag}: the kernel refused {value!r} for {os.path.basename(path)}") from None
        if e.errno == errno.ENOENT:
            raise CgroupError(f"{flag} is not supported on this host: {path} does not exist") from None
        raise CgroupError(f"cannot set {flag}: writing {path}: {e.strerror}") from None


def make_dirs(root: str, parent: str, cid: str, prepare: Callable[[str], None] | None = None) -> str:
    """mkdir ``root/parent/cid`` and return it; ``prepare`` runs on each directory.

    ``prepare(path)`` is called for every directory below ``root`` (parents
    first, the new child last), whether it was just made or already existed,
    so it must be idempotent. Another cocin may remove an empty ``parent`` at
    any moment (its destroy() tidies up); ENOENT or ENODEV then means "the
    parent vanished": make it again and retry. Other failures raise OSError.
    """
    chain = [*parent.split("/"), cid]
    for _ in range(MKDIR_RETRIES):
        path = root
        try:
            for part in chain:
                path = os.path.join(path, part)
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    pass
                if prepare is not None:
                    prepare(path)
            return path
        except OSError as e:
            # ENOENT: the parent is gone; ENODEV: it is being removed (its
            # files still open, but a dying cgroup refuses reads and writes).
            if e.errno not in VANISHED:
                raise
    raise CgroupError(f"cannot create cgroup {path}: its parent keeps disappearing")


def _rmdir_tree(path: str, deadline: float) -> bool:
    """rmdir ``path`` and any sub-cgroups the container made, deepest first.

    A cgroup directory holds only kernel files, so rmdir(2) removes it
    whole, but only once no process is left in it: until then the kernel
    answers EBUSY (a process still exiting can keep it busy for a moment).
    """
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        delay = 0.005
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
    return not os.path.exists(path)


def _move(procs_file: str, pid: int, missing_ok: bool = True) -> None:
    """Write ``pid`` to a ``cgroup.procs`` or ``tasks`` file, with clear errors.

    ``missing_ok``: a hierarchy without this cgroup is skipped (``exec`` tries
    every hierarchy; the container joined only some)."""
    try:
        write_text(procs_file, str(pid))
    except OSError as e:
        if e.errno in VANISHED and missing_ok:
            return
        if e.errno == errno.ESRCH:
            raise CgroupError(f"cannot add process {pid} to cgroup: no such process") from None
        raise CgroupError(f"cannot add process {pid} to {os.path.dirname(procs_file)}: {e.strerror}") from None


class Cgroup:
    """One container's cgroup: a directory in each hierarchy it uses.

    ``dirs`` maps a hierarchy name (a v1 controller list such as
    ``"cpu,cpuacct"``, ``"name=systemd"`` or ``"unified"``; ``""`` on v2)
    to its directory. Every method copes with directories that no longer
    exist: reads are empty and writes are skipped.
    """

    version = ""

    def __init__(self, cid: str, dirs: dict[str, str]) -> None:
        self.cid = cid
        self.dirs = dirs

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.cid} {sorted(self.dirs.values())}>"

    @property
    def paths(self) -> list[str]:
        return list(self.dirs.values())

    def exists(self) -> bool:
        return any(os.path.isdir(p) for p in self.dirs.values())

    def add(self, pid: int, missing_ok: bool = True) -> None:
        """Move process ``pid`` (0 = the caller) into this cgroup in every hierarchy.

        Writing a PID to ``cgroup.procs`` moves the whole thread group; its
        future children are born inside. Hierarchies whose directory has gone
        are skipped, unless not ``missing_ok``.
        """
        for path in self.dirs.values():
            _move(os.path.join(path, "cgroup.procs"), pid, missing_ok)

    def join_self(self, missing_ok: bool = True) -> None:
        """Move the calling process in (a container before its exec, ``exec``).

        On v2 this is ``add(0)``; v1 has a faster way, see V1Cgroup. The
        container's own process passes ``missing_ok=False``: its cgroup was
        made a moment ago, so a missing one is an error, not "no limits".
        """
        self.add(0, missing_ok)

    def procs(self) -> list[int]:
        """Host PIDs in the cgroup (and in any sub-cgroup the container made)."""
        pids: set[int] = set()
        for path in self.dirs.values():
            for dirpath, _dirs, _files in os.walk(path):
                text = read_text(os.path.join(dirpath, "cgroup.procs")) or ""
                pids.update(int(p) for p in text.split())
        return sorted(pids)

    def oom_killed(self) -> bool:
        """Did the kernel's OOM killer kill a process of this cgroup? Overridden."""
        return False

    def stats(self) -> dict:
        """Usage figures; see the version-specific subclasses."""
        return {"memory_usage": 0, "memory_limit": None, "cpu_usage_ns": 0, "pids": 0}

    def destroy(self) -> None:
        """Remove the directories (never killing anything).

        Retries EBUSY for up to RMDIR_TIMEOUT seconds in all, then raises
        CgroupError naming a directory still in use. Safe to call twice.
        cocin's own parent (``cocin/``) stays, as Docker's ``docker/`` does:
        the next container finds it instead of making it again.
        """
        deadline = time.monotonic() + RMDIR_TIMEOUT
        busy = [p for p in self.dirs.values() if not _rmdir_tree(p, deadline)]
        if busy:
            raise CgroupError(f"cannot remove cgroup {busy[0]}: processes are still in it")


# --------------------------------------------------------------------------
# The public entry points pick the v1 or v2 backend.
# --------------------------------------------------------------------------


def _backend() -> ModuleType:
    """The module that knows this host's cgroup version (hybrid is v1's job)."""
    if layout() == "v2":
        from . import v2

        return v2
    from . import v1

    return v1


def online_cpus() -> int:
    """How many CPUs the host has online (``/sys/devices/system/cpu/online``)."""
    text = read_text(SYS_CPU_ONLINE)
    try:
        return len(parse_cpu_list(text.strip())) if text else (os.cpu_count() or 1)
    except ValueError:
        return os.cpu_count() or 1


def check_cpus(cpus: float, online: int) -> None:
    """--cpus must fit the host, and the CFS quota it becomes must be >= 1 ms."""
    if not 0.01 <= cpus <= online:
        raise CgroupError(
            f"invalid --cpus {cpus:g}: range of CPUs is from 0.01 to {online:.2f}, "
            f"as there {'is' if online == 1 else 'are'} only {online} "
            f"CPU{'' if online == 1 else 's'} available"
        )


def check_cpuset(flag: str, requested: str, available: str | None) -> None:
    """Every CPU (or memory node) of a cpuset must exist in the parent's set."""
    if available is None:
        return
    try:
        have = parse_cpu_list(available.strip()) if available.strip() else set()
    except ValueError:
        return
    missing = parse_cpu_list(requested) - have
    if missing:
        what = "CPUs" if flag == "--cpuset-cpus" else "memory nodes"
        raise CgroupError(
            f"invalid {flag} '{requested}': requested {what} are not available "
            f"(available: {available.strip() or 'none'})"
        )


def check(limits: Limits) -> None:
    """Check, before anything is created, that this host can apply ``limits``."""
    if limits.is_empty():
        return
    if limits.cpus is not None:
        check_cpus(limits.cpus, online_cpus())
    _backend().check(limits)


def create(cid: str, limits: Limits, devices: tuple | None = None) -> Cgroup:
    """Create the container's cgroup in every hierarchy and write ``limits``.

    ``devices``: the device rules (see cocin/devices.py) the cgroup enforces,
    None to leave device access as the parent's. Call before the container's
    first process joins (see :meth:`Cgroup.add`). On failure nothing is left
    behind.
    """
    check_cid(cid)
    return _backend().create(cid, limits, parent_name(), devices=devices)


def open_existing(cid: str) -> Cgroup:
    """A handle on a container's cgroup made earlier, possibly by another process."""
    check_cid(cid)
    return _backend().open_existing(cid, parent_name())
