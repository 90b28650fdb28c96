"""The device program in the kernel (root): the verifier accepts it, and attached
to a throwaway cgroup2 directory that a forked process joins, the kernel
refuses that process a device the rules do not allow.

The program's logic, interpreted without the kernel, is tested in
tests/unit/test_devices.py.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid

import pytest

from cocin import devicefilter
from cocin.devices import DEFAULT_RULES

# --- the program in the kernel (root) -----------------------------------------------

CGROUP2 = "/sys/fs/cgroup/unified"


def _cgroup2_root() -> str | None:
    from cocin import libc

    for path in ("/sys/fs/cgroup", CGROUP2):
        try:
            if libc.statfs_type(path) == libc.CGROUP2_SUPER_MAGIC:
                return path
        except OSError:
            pass
    return None


@pytest.fixture
def cgroup2_dir():
    if os.geteuid() != 0:
        pytest.skip("loading a BPF program and making a cgroup need root")
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 mount on this host")
    path = os.path.join(root, f"cocin-unit-devices-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    yield path
    os.rmdir(path)  # the attached program goes with the directory


def _probe_in(cgroup: str, paths: list[str]) -> dict[str, int]:
    """Fork a process into ``cgroup``; open each path for reading there; errno per path (0 = ok)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
            out = []
            for p in paths:
                try:
                    os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
                    out.append("0")
                except OSError as e:
                    out.append(str(e.errno))
            os.write(w, " ".join(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return dict(zip(paths, map(int, data.split())))


def test_kernel_enforces_the_program(cgroup2_dir, tmp_path):
    """The verifier accepts the program; attached, it refuses /dev/kmsg-like nodes.

    On a cgroup v1 (hybrid) host the cgroup2 tree is still the one the BPF
    device hook consults, so this runs here as on a v2 host. The nodes are
    made by the test in its own temp dir; they are only opened, never read
    or written.
    """
    kmsg = tmp_path / "kmsg"
    loop = tmp_path / "loop"
    os.mknod(kmsg, 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    os.mknod(loop, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    paths = ["/dev/null", "/dev/zero", str(kmsg), str(loop)]
    before = _probe_in(cgroup2_dir, paths)
    assert before[str(kmsg)] == 0  # nothing attached yet: the node opens
    devicefilter.attach(cgroup2_dir, DEFAULT_RULES)
    after = _probe_in(cgroup2_dir, paths)
    assert after == {"/dev/null": 0, "/dev/zero": 0, str(kmsg): errno.EPERM, str(loop): errno.EPERM}
