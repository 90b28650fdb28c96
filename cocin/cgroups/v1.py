"""cgroup v1: one hierarchy per controller, so one directory per hierarchy.

On a v1 host each controller (or group of co-mounted controllers, such as
``cpu,cpuacct``) has its own tree under ``/sys/fs/cgroup``. A container gets
a directory ``<parent>/<id>`` in *every* tree, its processes are written into
each one's ``cgroup.procs``, and each limit goes to the tree of the
controller that enforces it. On a hybrid host the empty cgroup2 tree is
treated as one more hierarchy with no controllers: it only tracks processes.
"""

from __future__ import annotations

import errno
import os

from cocin.record import Record

from .base import Cgroup
from .files import (
    CgroupError,
    make_dirs,
    move_process,
    read_int,
    read_keyed,
    read_text,
    write_limit,
    write_text,
)
from .limits import (
    CFS_PERIOD_US,
    FLAG_OF_FIELD,
    SYS_CPU_ONLINE,
    SYS_NODE_ONLINE,
    Limits,
    cfs_quota_us,
    check_cpuset,
    clamp_shares,
    required_controllers,
)
from .mounts import Mount, cgroup_mounts

# An unlimited v1 memory limit reads back as PAGE_COUNTER_MAX pages in bytes
# (9223372036854771712 on x86_64): treat anything this large as "no limit".
UNLIMITED_MEMORY = 1 << 62

MEMSW_LIMIT = "memory.memsw.limit_in_bytes"

# Which docker flag each v1 file carries, to name it in errors.
FLAG_OF_FILE = {
    "memory.limit_in_bytes": FLAG_OF_FIELD["memory"],
    MEMSW_LIMIT: FLAG_OF_FIELD["memory_swap"],
    "cpu.cfs_period_us": FLAG_OF_FIELD["cpus"],
    "cpu.cfs_quota_us": FLAG_OF_FIELD["cpus"],
    "cpu.shares": FLAG_OF_FIELD["cpu_shares"],
    "cpuset.cpus": FLAG_OF_FIELD["cpuset_cpus"],
    "cpuset.mems": FLAG_OF_FIELD["cpuset_mems"],
    "pids.max": FLAG_OF_FIELD["pids_limit"],
}


class Hierarchy(Record):
    """One mounted v1 tree: where it is and which controllers it carries."""

    name: str  # "memory", "cpu,cpuacct", "name=systemd" or "unified"
    mountpoint: str
    controllers: tuple[str, ...] = ()


def hierarchies(mounts: list[Mount]) -> list[Hierarchy]:
    """One Hierarchy per distinct tree among ``mounts``.

    A tree mounted twice (same superblock, ``dev``) is kept once, preferring
    a mount of its root ``/``. A cgroup2 mount becomes the controller-less
    ``unified`` hierarchy of a hybrid host.
    """
    out: list[Hierarchy] = []
    seen: set[str] = set()
    for m in sorted(mounts, key=lambda m: m.root != "/"):
        if m.dev in seen:
            continue
        if m.fstype == "cgroup2":
            name = "unified"
        elif m.controllers:
            name = ",".join(m.controllers)
        elif m.name:
            name = f"name={m.name}"
        else:
            continue
        if any(h.name == name for h in out):
            continue
        seen.add(m.dev)
        out.append(Hierarchy(name, m.mountpoint, m.controllers))
    return out


def controller_map(hiers: list[Hierarchy]) -> dict[str, Hierarchy]:
    """Controller name -> its hierarchy; co-mounted controllers share one."""
    return {c: h for h in hiers for c in h.controllers}


def current() -> list[Hierarchy]:
    """The hierarchies of this host."""
    return hierarchies(cgroup_mounts())


def files_for(limits: Limits, swap_accounting: bool = True) -> dict[tuple[str, str], str]:
    """Translate ``limits`` into ``{(controller, file): value}``, in write order.

    * ``memory.limit_in_bytes`` caps RAM; ``memory.memsw.limit_in_bytes``
      caps RAM + swap, which is exactly docker's ``--memory-swap``. It must
      never be below the memory limit, so it is written second. As docker
      does, ``--memory`` alone allows as much swap again (memsw = 2 x memory),
      when the kernel accounts swap (``swap_accounting``).
    * CFS bandwidth: ``--cpus`` becomes a quota per 100 ms period.
    * ``cpu.shares`` is a relative weight (1024 = default).
    * ``pids.max`` caps the number of tasks; ``max`` means unlimited.
    """
    files: dict[tuple[str, str], str] = {}
    if limits.memory is not None:
        files["memory", "memory.limit_in_bytes"] = str(limits.memory)
    if limits.memory_swap is not None:
        if limits.memory_swap != -1 or swap_accounting:
            files["memory", MEMSW_LIMIT] = str(limits.memory_swap)
    elif limits.memory is not None and swap_accounting:
        files["memory", MEMSW_LIMIT] = str(2 * limits.memory)
    if limits.cpus is not None:
        files["cpu", "cpu.cfs_period_us"] = str(CFS_PERIOD_US)
        files["cpu", "cpu.cfs_quota_us"] = str(cfs_quota_us(limits.cpus))
    if limits.cpu_shares is not None:
        files["cpu", "cpu.shares"] = str(clamp_shares(limits.cpu_shares))
    if limits.cpuset_cpus is not None:
        files["cpuset", "cpuset.cpus"] = limits.cpuset_cpus
    if limits.cpuset_mems is not None:
        files["cpuset", "cpuset.mems"] = limits.cpuset_mems
    if limits.pids_limit is not None:
        files["pids", "pids.max"] = "max" if limits.pids_limit <= 0 else str(limits.pids_limit)
    return files


def _missing_controller(ctrl: str, flag: str) -> CgroupError:
    return CgroupError(f"{flag} needs the {ctrl} cgroup controller, which is not mounted on this host")


def check(limits: Limits, hiers: list[Hierarchy] | None = None) -> None:
    """Refuse limits this host cannot apply, before anything is created."""
    cmap = controller_map(current() if hiers is None else hiers)
    for ctrl, flag in required_controllers(limits).items():
        if ctrl not in cmap:
            raise _missing_controller(ctrl, flag)
    quota = os.path.join(cmap["cpu"].mountpoint, "cpu.cfs_quota_us") if "cpu" in cmap else ""
    if limits.cpus is not None and not os.path.exists(quota):
        raise CgroupError("--cpus needs CFS bandwidth control, which this kernel lacks (CONFIG_CFS_BANDWIDTH)")
    memsw = os.path.join(cmap["memory"].mountpoint, MEMSW_LIMIT) if "memory" in cmap else ""
    if limits.memory_swap not in (None, -1) and not os.path.exists(memsw):
        raise CgroupError(
            "--memory-swap needs swap accounting, which this kernel has turned off (boot with swapaccount=1)"
        )
    for field, name, sysfs in (("cpuset_cpus", "cpus", SYS_CPU_ONLINE), ("cpuset_mems", "mems", SYS_NODE_ONLINE)):
        requested = getattr(limits, field)
        if requested is not None:
            root = cmap["cpuset"].mountpoint
            available = (
                read_text(os.path.join(root, f"cpuset.effective_{name}"))
                or read_text(os.path.join(root, f"cpuset.{name}"))
                or read_text(sysfs)
            )
            check_cpuset(FLAG_OF_FIELD[field], requested, available)


def init_cpuset(path: str) -> None:
    """Give a new cpuset cgroup the CPUs and memory nodes of its parent.

    A v1 cpuset starts with *empty* ``cpuset.cpus`` and ``cpuset.mems``
    (unless ``cgroup.clone_children`` is set), and the kernel refuses to
    move a task into a cpuset with no CPU or no memory node (ENOSPC). So
    every level, including cocin's own parent, copies its parent's sets.
    """
    for name in ("cpuset.cpus", "cpuset.mems"):
        if (read_text(os.path.join(path, name)) or "").strip():
            continue
        inherited = (read_text(os.path.join(os.path.dirname(path), name)) or "").strip()
        if inherited:
            write_text(os.path.join(path, name), inherited)


class V1Cgroup(Cgroup):
    """A container's directories across the v1 hierarchies."""

    version = "v1"

    def _dir(self, ctrl: str) -> str | None:
        for name, path in self.dirs.items():
            if ctrl in name.split(","):
                return path
        return None

    def join_self(self, missing_ok: bool = True) -> None:
        """Move the calling process in, the fast way v1 allows.

        Writing to ``cgroup.procs`` moves a whole thread group under a global
        lock whose write side waits for an RCU grace period: 5-15 ms here, for
        each hierarchy. A thread moving *itself* (``0`` written to ``tasks``)
        skips that lock, and for a single-threaded process, such as a freshly
        forked child, moving its one thread is moving the process.
        """
        if len(os.listdir("/proc/self/task")) != 1:
            self.add(0, missing_ok)  # threads: each would have to move itself
            return
        for path in self.dirs.values():
            move_process(os.path.join(path, "tasks"), 0, missing_ok)

    def oom_killed(self) -> bool:
        """Read the memory cgroup's OOM record.

        Since Linux 4.13 ``memory.oom_control`` counts kills (``oom_kill N``).
        Older kernels only say whether the group is ``under_oom`` now, so fall
        back to that, or to ``memory.failcnt`` (times the limit was hit): a
        heuristic, as hitting the limit does not always end in a kill.
        """
        mem = self._dir("memory")
        if mem is None:
            return False
        control = read_keyed(os.path.join(mem, "memory.oom_control"))
        if "oom_kill" in control:
            return control["oom_kill"] > 0
        failcnt = read_int(os.path.join(mem, "memory.failcnt")) or 0
        return control.get("under_oom", 0) == 1 or failcnt > 0

    def stats(self) -> dict:
        """Memory in use (minus inactive page cache, as ``docker stats`` shows it),
        the memory limit (None = unlimited), CPU time used and task count."""
        mem, acct, pids = self._dir("memory"), self._dir("cpuacct"), self._dir("pids")
        usage, limit = 0, None
        if mem is not None:
            usage = read_int(os.path.join(mem, "memory.usage_in_bytes")) or 0
            inactive = read_keyed(os.path.join(mem, "memory.stat")).get("total_inactive_file", 0)
            usage = max(usage - inactive, 0)
            limit = read_int(os.path.join(mem, "memory.limit_in_bytes"))
            if limit is not None and limit >= UNLIMITED_MEMORY:
                limit = None
        cpu = read_int(os.path.join(acct, "cpuacct.usage")) if acct else None
        tasks = read_int(os.path.join(pids, "pids.current")) if pids else None
        return {
            "memory_usage": usage,
            "memory_limit": limit,
            "cpu_usage_ns": cpu or 0,
            "pids": len(self.procs()) if tasks is None else tasks,
        }


def open_existing(cid: str, parent: str, hiers: list[Hierarchy] | None = None) -> V1Cgroup:
    hiers = current() if hiers is None else hiers
    return V1Cgroup(cid, {h.name: os.path.join(h.mountpoint, parent, cid) for h in hiers})


# Hierarchies every container joins even without limits: they give ``stats``
# (memory, cpuacct), ``top``/``exec`` (pids) and OOM detection (memory).
ALWAYS_JOINED = ("memory", "pids", "cpuacct")


def used(hiers: list[Hierarchy], needed: dict[str, str] | set[str]) -> list[Hierarchy]:
    """The hierarchies a container needs: the always-joined ones plus those
    its limits (and device rules) need. On v1 every hierarchy joined costs a
    separate write to ``cgroup.procs``, each a process migration that waits
    for an RCU grace period: joining ten hierarchies instead of three is
    ~10 ms per start (joining through ``tasks`` costs far less, see join_self)."""
    wanted = set(ALWAYS_JOINED) | set(needed)
    return [h for h in hiers if wanted & set(h.controllers)]


def write_devices(path: str, rules: tuple) -> None:
    """Write the device rules into a new devices cgroup.

    The kernel parses each write(2) as one rule, so the file is opened once
    and written once per rule.
    """
    from cocin import devices

    fds: dict[str, int] = {}
    try:
        for name, line in devices.v1_writes(rules):
            try:
                if name not in fds:
                    fds[name] = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CLOEXEC)
                os.write(fds[name], line.encode())
            except OSError as e:
                raise CgroupError(f"cannot set device rule {line!r} in {path}: {e.strerror}") from None
    finally:
        for fd in fds.values():
            os.close(fd)


def create(
    cid: str, limits: Limits, parent: str, hiers: list[Hierarchy] | None = None, devices: tuple | None = None
) -> V1Cgroup:
    """Make ``<parent>/<cid>`` in the hierarchies it needs, then write the limits
    and, with ``devices``, the device rules (the container then sits in a
    devices cgroup of its own, not in the host's)."""
    hiers = current() if hiers is None else hiers
    cmap = controller_map(hiers)
    needed = required_controllers(limits)
    for ctrl, flag in needed.items():
        if ctrl not in cmap:
            raise _missing_controller(ctrl, flag)
    hiers = used(hiers, set(needed) | ({"devices"} if devices is not None else set())) or hiers
    cg = open_existing(cid, parent, hiers)
    try:
        for h in hiers:
            prepare = init_cpuset if "cpuset" in h.controllers else None
            try:
                make_dirs(h.mountpoint, parent, cid, prepare)
            except OSError as e:
                # Like crun: a read-only tree we need nothing from is skipped.
                if e.errno == errno.EROFS and not set(h.controllers) & set(needed):
                    del cg.dirs[h.name]
                    continue
                raise CgroupError(f"cannot create cgroup in {h.mountpoint}: {e.strerror}") from None
        memory = cmap.get("memory")
        swap = memory is not None and os.path.exists(os.path.join(memory.mountpoint, MEMSW_LIMIT))
        for (ctrl, name), value in files_for(limits, swap).items():
            write_limit(os.path.join(cg.dirs[cmap[ctrl].name], name), value, FLAG_OF_FILE[name])
        if devices is not None and "devices" in cmap and cmap["devices"].name in cg.dirs:
            write_devices(cg.dirs[cmap["devices"].name], devices)
    except BaseException:
        try:
            cg.destroy()
        except CgroupError:
            pass
        raise
    return cg
