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
and :class:`Cgroup`. One concern per module, read in this order:

* ``limits``  — docker's flags (``--memory``, ``--cpus``...) parsed into ``Limits``;
* ``mounts``  — mountinfo, the host's layout (v1/v2/hybrid), cocin's subtree;
* ``files``   — reading and writing cgroup files, making and removing directories;
* ``base``    — ``Cgroup``, what both versions share;
* ``v1``, ``v2`` — side by side, each version's translation of the limits
  into file names and values;
* here        — the dispatch to v1 or v2.

cocin only ever touches its own subtree,
``<hierarchy>/$COCIN_CGROUP_PARENT/<container-id>`` (``cocin/<id>`` by default).

This module is on the hot path of ``cocin run``: it imports only cheap stdlib
modules and never starts a subprocess.
"""

from __future__ import annotations

from .base import RMDIR_TIMEOUT, Cgroup
from .files import (
    MKDIR_RETRIES,
    VANISHED,
    CgroupError,
    make_dirs,
    move_process,
    read_int,
    read_keyed,
    read_text,
    rmdir_tree,
    write_limit,
    write_text,
)
from .limits import (
    CFS_PERIOD_US,
    CONTROLLER_OF_FIELD,
    FLAG_OF_FIELD,
    MAX_SHARES,
    MIN_MEMORY,
    MIN_SHARES,
    SYS_CPU_ONLINE,
    SYS_NODE_ONLINE,
    Limits,
    cfs_quota_us,
    check_cpus,
    check_cpuset,
    clamp_shares,
    online_cpus,
    parse_cpu_list,
    parse_limits,
    parse_size,
    required_controllers,
)
from .mounts import (
    CGROUP2_SUPER_MAGIC,
    CGROUP_ROOT,
    CGROUP_SUPER_MAGIC,
    DEFAULT_PARENT,
    MOUNTINFO,
    PARENT_ENV,
    Mount,
    cgroup_mounts,
    check_cid,
    detect_layout,
    layout,
    parent_name,
    parse_mountinfo,
    reset_cache,
)

# Every public name of the submodules, as ``from cocin.cgroups import X``
# offered them before the split (other modules and branches use them).
__all__ = [
    "CFS_PERIOD_US",
    "CGROUP2_SUPER_MAGIC",
    "CGROUP_ROOT",
    "CGROUP_SUPER_MAGIC",
    "CONTROLLER_OF_FIELD",
    "DEFAULT_PARENT",
    "FLAG_OF_FIELD",
    "MAX_SHARES",
    "MIN_MEMORY",
    "MIN_SHARES",
    "MKDIR_RETRIES",
    "MOUNTINFO",
    "PARENT_ENV",
    "RMDIR_TIMEOUT",
    "SYS_CPU_ONLINE",
    "SYS_NODE_ONLINE",
    "VANISHED",
    "Cgroup",
    "CgroupError",
    "Limits",
    "Mount",
    "cfs_quota_us",
    "cgroup_mounts",
    "check",
    "check_cid",
    "check_cpus",
    "check_cpuset",
    "clamp_shares",
    "create",
    "detect_layout",
    "layout",
    "make_dirs",
    "move_process",
    "online_cpus",
    "open_existing",
    "parent_name",
    "parse_cpu_list",
    "parse_limits",
    "parse_mountinfo",
    "parse_size",
    "read_int",
    "read_keyed",
    "read_text",
    "required_controllers",
    "reset_cache",
    "rmdir_tree",
    "write_limit",
    "write_text",
]

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType


def _backend() -> ModuleType:
    """The module that knows this host's cgroup version (hybrid is v1's job)."""
    if layout() == "v2":
        from . import v2

        return v2
    from . import v1

    return v1


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
