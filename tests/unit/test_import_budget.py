"""The import budget of ``cocin run``: the one place that keeps the rule.

Every cocin command pays for each module it imports, on every start: tens to
hundreds of microseconds for a small module read from the bytecode cache, and
milliseconds for some of the standard library (``re`` ~6 ms, ``json`` ~7 ms,
``signal``'s and ``socket``'s enums ~4-6 ms, ``typing``, ``dataclasses``,
``subprocess``, ``shutil``...). ``cocin run`` has a start-up budget of a few
tens of milliseconds in all, so the modules on its path are listed here: the
standard library it may load beyond the interpreter's own start-up, and the
cocin modules. A new import on that path fails this test. Import it lazily in
the function that needs it; or, if it is worth its cost on every ``run``, add
it below with the measurement that says so. (The comments in the modules say
why a *particular* choice was made, such as ``_signal`` for ``signal``; this
test holds the general rule.)

The path is followed by importing, in a fresh interpreter, the modules
``run`` loads, lazily included: the CLI, the verbs, the container's start
(cgroups of both versions, rootfs, confinement, seccomp, devices, a terminal)
and the bridge network with published ports. No container is made: any user
can run it.
"""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What ``cocin run [-it] [-p ...] IMAGE`` imports, the lazy imports included.
RUN_PATH = [
    "cocin.cli",
    "cocin.flags",
    "cocin.runtime",
    "cocin.images",
    "cocin.reference",
    "cocin.confine",
    "cocin.cgroups",
    "cocin.cgroups.v1",
    "cocin.cgroups.v2",
    "cocin.devices",
    "cocin.devicefilter",
    "cocin.rootfs",
    "cocin.rootfs_knobs",
    "cocin.seccomp",
    "cocin.tty",
    "cocin.network",
    "cocin.network.bridge",
    "cocin.network.firewall",
    "cocin.network.ports",
    "cocin.network.sysctl",
]

# The standard library the run path may load beyond the interpreter's start-up.
STDLIB_BUDGET = {
    "__future__",  # every module's first line: a tiny module
    "_json",  # fastjson: the C half of json, without json's ~7 ms (re, enum)
    "fcntl",  # flock(2): state and network locks
    "_ctypes",  # libc.py: the system calls Python has no wrapper for
    "ctypes",
    "ctypes._endian",
    "struct",  # ctypes needs it; with these three, part of start-up on most interpreters
    "_struct",
    "types",
    "errno",  # built in
    "_socket",  # netlink and the socket pair to the child (not socket.py: enums)
    "termios",  # cocin.tty: raw mode for -t
    "tty",
    "select",
}

# The cocin modules on the run path. (child, launch, restart, removal, faults
# and spec: monitor.py in four, the OCI spec, issues 12 and 16.)
COCIN_BUDGET = {
    "cocin",
    "cocin.cgroups",
    "cocin.cgroups.base",
    "cocin.cgroups.files",
    "cocin.cgroups.limits",
    "cocin.cgroups.mounts",
    "cocin.cgroups.v1",
    "cocin.cgroups.v2",
    "cocin.child",
    "cocin.cli",
    "cocin.confine",
    "cocin.devicefilter",
    "cocin.devices",
    "cocin.errors",
    "cocin.faults",
    "cocin.fastjson",
    "cocin.files",
    "cocin.flags",
    "cocin.images",
    "cocin.launch",
    "cocin.libc",
    "cocin.monitor",
    "cocin.network",
    "cocin.network.bridge",
    "cocin.network.firewall",
    "cocin.network.ipam",
    "cocin.network.ipv4",
    "cocin.network.netlink",
    "cocin.network.ports",
    "cocin.network.store",
    "cocin.network.sysctl",
    "cocin.paths",
    "cocin.process",
    "cocin.record",
    "cocin.reference",
    "cocin.removal",
    "cocin.resources",
    "cocin.restart",
    "cocin.rootfs",
    "cocin.rootfs_knobs",
    "cocin.runtime",
    "cocin.seccomp",
    "cocin.spec",
    "cocin.state",
    "cocin.tty",
}

# Named so that a failure says what went wrong, not only "not in the budget".
NEVER = {"re", "json", "typing", "enum", "dataclasses", "inspect", "subprocess", "shutil", "tempfile", "argparse"}


def loaded_by_the_run_path() -> set[str]:
    """The modules importing RUN_PATH adds to a fresh interpreter's."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "before = set(sys.modules)\n"
        f"for name in {RUN_PATH!r}:\n"
        "    __import__(name)\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n"
    )
    # -I: no PYTHONPATH, user site or current directory.
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_run_path_stays_within_its_import_budget():
    loaded = loaded_by_the_run_path()
    stdlib = {m for m in loaded if m != "cocin" and not m.startswith("cocin.")}
    cocin = loaded - stdlib
    assert not stdlib & NEVER, f"the run path imports {sorted(stdlib & NEVER)}: import them lazily"
    assert stdlib <= STDLIB_BUDGET, f"over the budget: {sorted(stdlib - STDLIB_BUDGET)} (see this file's docstring)"
    assert cocin <= COCIN_BUDGET, f"new cocin modules on the run path: {sorted(cocin - COCIN_BUDGET)}"


def test_the_budget_lists_only_what_exists_or_is_planned():
    """A module dropped from the run path is dropped from the budget too."""
    loaded = loaded_by_the_run_path()
    planned = {"cocin.launch", "cocin.child", "cocin.restart", "cocin.removal", "cocin.faults", "cocin.spec"}
    assert COCIN_BUDGET - planned <= loaded | set(RUN_PATH), sorted(COCIN_BUDGET - planned - loaded)
