"""cgroup v2: one unified tree, controllers handed down level by level.

On a v2 host there is a single hierarchy (``/sys/fs/cgroup``), so a
container is one directory ``<parent>/<id>``. A controller's files appear in
a cgroup only when its parent lists the controller in
``cgroup.subtree_control``; cocin therefore enables ``cpuset cpu memory
pids`` in the root (only those not enabled yet) and in its own parent.
The "no internal processes" rule forbids that in a cgroup that holds
processes, which is why containers live in leaves below ``cocin/``.
"""

from __future__ import annotations

import errno
import os

from .base import Cgroup
from .files import (
    VANISHED,
    CgroupError,
    make_dirs,
    read_int,
    read_keyed,
    read_text,
    write_limit,
    write_text,
)
from .limits import (
    CFS_PERIOD_US,
    FLAG_OF_FIELD,
    MAX_SHARES,
    MIN_SHARES,
    SYS_CPU_ONLINE,
    SYS_NODE_ONLINE,
    Limits,
    cfs_quota_us,
    check_cpuset,
    clamp_shares,
    required_controllers,
)
from .mounts import CGROUP_ROOT, Mount, cgroup_mounts, parent_name

# include/linux/cgroup.h: the range of cpu.weight (and io.weight).
CGROUP_WEIGHT_MIN = 1
CGROUP_WEIGHT_DFL = 100
CGROUP_WEIGHT_MAX = 10000

# The controllers cocin enables for its containers, in the kernel's order.
CONTROLLERS = ("cpuset", "cpu", "memory", "pids")

SWAP_MAX = "memory.swap.max"

FLAG_OF_FILE = {
    "memory.max": FLAG_OF_FIELD["memory"],
    SWAP_MAX: FLAG_OF_FIELD["memory_swap"],
    "cpu.max": FLAG_OF_FIELD["cpus"],
    "cpu.weight": FLAG_OF_FIELD["cpu_shares"],
    "cpuset.cpus": FLAG_OF_FIELD["cpuset_cpus"],
    "cpuset.mems": FLAG_OF_FIELD["cpuset_mems"],
    "pids.max": FLAG_OF_FIELD["pids_limit"],
}


def shares_to_weight(shares: int) -> int:
    """Map v1 ``cpu.shares`` (2..262144) linearly onto v2 ``cpu.weight`` (1..10000).

    This is the formula runc and the kernel documentation use, so the
    default 1024 shares becomes weight 39 (not 100: the ranges differ).
    """
    shares = clamp_shares(shares)
    span = (CGROUP_WEIGHT_MAX - CGROUP_WEIGHT_MIN) * (shares - MIN_SHARES)
    return CGROUP_WEIGHT_MIN + span // (MAX_SHARES - MIN_SHARES)


def files_for(limits: Limits, swap_accounting: bool = True) -> dict[str, str]:
    """Translate ``limits`` into ``{file: value}`` for the container's directory.

    * ``memory.max`` caps RAM; ``memory.swap.max`` caps *swap alone*, so
      docker's memory+swap total becomes ``memory_swap - memory``
      (``--memory`` alone: as much swap again, as docker does).
    * ``cpu.max`` is ``"QUOTA PERIOD"`` in microseconds.
    * ``cpu.weight`` replaces ``cpu.shares`` (see :func:`shares_to_weight`).
    * ``"max"`` means unlimited in every v2 file.
    """
    files: dict[str, str] = {}
    if limits.memory is not None:
        files["memory.max"] = str(limits.memory)
    if limits.memory_swap == -1:
        if swap_accounting:
            files[SWAP_MAX] = "max"
    elif limits.memory_swap is not None and limits.memory is not None:
        files[SWAP_MAX] = str(limits.memory_swap - limits.memory)
    elif limits.memory is not None and swap_accounting:
        files[SWAP_MAX] = str(limits.memory)
    if limits.cpus is not None:
        files["cpu.max"] = f"{cfs_quota_us(limits.cpus)} {CFS_PERIOD_US}"
    if limits.cpu_shares is not None:
        files["cpu.weight"] = str(shares_to_weight(limits.cpu_shares))
    if limits.cpuset_cpus is not None:
        files["cpuset.cpus"] = limits.cpuset_cpus
    if limits.cpuset_mems is not None:
        files["cpuset.mems"] = limits.cpuset_mems
    if limits.pids_limit is not None:
        files["pids.max"] = "max" if limits.pids_limit <= 0 else str(limits.pids_limit)
    return files


def find_root(mounts: list[Mount]) -> str:
    """The cgroup2 mount point, preferring /sys/fs/cgroup."""
    v2 = [m for m in mounts if m.fstype == "cgroup2"]
    for m in sorted(v2, key=lambda m: (m.mountpoint != CGROUP_ROOT, m.root != "/")):
        return m.mountpoint
    raise CgroupError("no cgroup2 filesystem is mounted")


def current() -> str:
    return find_root(cgroup_mounts())


def available_controllers(path: str) -> list[str]:
    """Controllers a cgroup may enable for its children (``cgroup.controllers``)."""
    return (read_text(os.path.join(path, "cgroup.controllers")) or "").split()


def swap_accounting(root: str, parent: str) -> bool | None:
    """Does the kernel account swap (``memory.swap.max`` exists)? None = cannot tell.

    The root cgroup has no memory.* limit files, so look in a non-root
    cgroup that has the memory controller: cocin's parent, or our own.
    """
    candidates = [os.path.join(root, parent)]
    own = next(
        (line[3:] for line in (read_text("/proc/self/cgroup") or "").splitlines() if line.startswith("0::")), "/"
    )
    if own.strip("/"):
        candidates.append(os.path.join(root, own.strip("/")))
    for path in candidates:
        if os.path.exists(os.path.join(path, "memory.max")):
            return os.path.exists(os.path.join(path, SWAP_MAX))
    return None


def check(limits: Limits, root: str | None = None, parent: str | None = None) -> None:
    """Refuse limits this host cannot apply, before anything is created."""
    root = current() if root is None else root
    parent = parent_name() if parent is None else parent
    available = available_controllers(root)
    for ctrl, flag in required_controllers(limits).items():
        if ctrl not in available:
            raise CgroupError(f"{flag} needs the {ctrl} cgroup controller, which this kernel does not offer in {root}")
    if limits.memory_swap not in (None, -1) and swap_accounting(root, parent) is False:
        raise CgroupError(
            "--memory-swap needs swap accounting, which this kernel has turned off (CONFIG_MEMCG_SWAP, swapaccount=1)"
        )
    for field, name, sysfs in (("cpuset_cpus", "cpus", SYS_CPU_ONLINE), ("cpuset_mems", "mems", SYS_NODE_ONLINE)):
        requested = getattr(limits, field)
        if requested is not None:
            have = read_text(os.path.join(root, f"cpuset.{name}.effective")) or read_text(sysfs)
            check_cpuset(FLAG_OF_FIELD[field], requested, have)


def enable_controllers(path: str, needed: dict[str, str]) -> None:
    """Enable cocin's controllers for the children of ``path``, one at a time.

    Writing ``+memory`` to ``cgroup.subtree_control`` makes the memory files
    appear in every child. Only controllers not yet enabled are written, so
    a host whose root already delegates them is left exactly as it was. A
    controller that cannot be enabled is fatal only if a limit needs it.
    """
    enabled = (read_text(os.path.join(path, "cgroup.subtree_control")) or "").split()
    for ctrl in CONTROLLERS:
        if ctrl in enabled or ctrl not in available_controllers(path):
            continue
        try:
            write_text(os.path.join(path, "cgroup.subtree_control"), f"+{ctrl}")
        except OSError as e:
            if e.errno in VANISHED:
                raise  # the directory vanished: make_dirs retries
            if ctrl in needed:
                hint = " (it holds processes: is cocin running inside a container?)" if e.errno == errno.EBUSY else ""
                raise CgroupError(
                    f"{needed[ctrl]}: cannot enable the {ctrl} controller in {path}: {e.strerror}{hint}"
                ) from None


def attach_devices(path: str, rules: tuple) -> None:
    """Attach the device filter program of ``rules`` to the cgroup at ``path``."""
    from cocin import devicefilter

    try:
        devicefilter.attach(path, rules)
    except OSError as e:
        raise CgroupError(f"cannot attach the device filter to {path}: {e.strerror}") from None


class V2Cgroup(Cgroup):
    """A container's single directory in the unified tree."""

    version = "v2"

    @property
    def path(self) -> str:
        return self.dirs[""]

    def oom_killed(self) -> bool:
        """``memory.events`` counts ``oom_kill``: processes the OOM killer ended here."""
        return read_keyed(os.path.join(self.path, "memory.events")).get("oom_kill", 0) > 0

    def stats(self) -> dict:
        """Memory in use (minus inactive page cache, as ``docker stats`` shows it),
        the memory limit (None = ``max``), CPU time used and task count."""
        usage = read_int(os.path.join(self.path, "memory.current")) or 0
        inactive = read_keyed(os.path.join(self.path, "memory.stat")).get("inactive_file", 0)
        cpu_usec = read_keyed(os.path.join(self.path, "cpu.stat")).get("usage_usec", 0)
        tasks = read_int(os.path.join(self.path, "pids.current"))
        return {
            "memory_usage": max(usage - inactive, 0),
            "memory_limit": read_int(os.path.join(self.path, "memory.max")),  # "max" -> None
            "cpu_usage_ns": cpu_usec * 1000,
            "pids": len(self.procs()) if tasks is None else tasks,
        }


def open_existing(cid: str, parent: str, root: str | None = None) -> V2Cgroup:
    root = current() if root is None else root
    return V2Cgroup(cid, {"": os.path.join(root, parent, cid)})


def create(cid: str, limits: Limits, parent: str, root: str | None = None, devices: tuple | None = None) -> V2Cgroup:
    """Enable controllers down to ``<parent>``, make ``<parent>/<cid>``, write the limits.

    v2 has no devices controller: ``devices`` (rules, see cocin/devices.py)
    become an eBPF program attached to the new directory.
    """
    root = current() if root is None else root
    needed = required_controllers(limits)
    cg = open_existing(cid, parent, root)

    def prepare(path: str) -> None:
        if path != cg.path:  # the leaf itself delegates nothing
            enable_controllers(path, needed)

    try:
        try:
            # The host's root: only controllers not enabled yet are written.
            enable_controllers(root, needed)
            make_dirs(root, parent, cid, prepare)
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {cg.path}: {e.strerror}") from None
        swap = os.path.exists(os.path.join(cg.path, SWAP_MAX))
        for name, value in files_for(limits, swap).items():
            write_limit(os.path.join(cg.path, name), value, FLAG_OF_FILE[name])
        if devices is not None:
            attach_devices(cg.path, devices)
    except BaseException:
        try:
            cg.destroy()
        except CgroupError:
            pass
        raise
    return cg
