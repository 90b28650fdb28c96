"""``Cgroup``: one container's cgroup, whatever the version.

A handle on the directories a container has, one per hierarchy it uses
(one on v2), with what is the same in both versions: moving processes in,
listing them, removing the directories. ``v1.V1Cgroup`` and ``v2.V2Cgroup``
add the limits, statistics and OOM report of their version.
"""

from __future__ import annotations

import os
import time

from .files import CgroupError, move_process, read_text, rmdir_tree

# How long destroy() keeps retrying an rmdir that says EBUSY.
RMDIR_TIMEOUT = 2.0


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
            move_process(os.path.join(path, "cgroup.procs"), pid, missing_ok)

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
        busy = [p for p in self.dirs.values() if not rmdir_tree(p, deadline)]
        if busy:
            raise CgroupError(f"cannot remove cgroup {busy[0]}: processes are still in it")
