"""Docker's resource flags: parsing ``--memory``, ``--cpus``... into ``Limits``.

What the user asked for, checked with docker's rules and in docker's units,
before any cgroup exists; ``v1.py`` and ``v2.py`` turn a ``Limits`` into the
files of their cgroup version. Also the host facts a limit must fit (how many
CPUs are online, which cpuset a parent allows).
"""

from __future__ import annotations

import os

from cocin.record import Record

from .files import CgroupError, read_text

SYS_CPU_ONLINE = "/sys/devices/system/cpu/online"
SYS_NODE_ONLINE = "/sys/devices/system/node/online"

# docker's linuxMinMemory: a smaller limit cannot even start a process.
MIN_MEMORY = 6 * 1024 * 1024

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
            if lim.memory_swap is not None and lim.memory_swap < lim.memory:
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
