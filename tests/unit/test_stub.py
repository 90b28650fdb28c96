"""Real tests of cocin/nsenter_stub (the static helper behind `cocin exec`).

They need root, util-linux `unshare`, and the stub built by
scripts/build_stub.sh; otherwise they are skipped with the reason.
"""
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "cocin" / "nsenter_stub"

needs_stub = pytest.mark.skipif(
    not STUB.exists(),
    reason=f"{STUB} is not built (run scripts/build_stub.sh)",
)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and util-linux unshare to create namespaces",
)


def _wait_for_child(parent_pid, timeout=5.0):
    """PID of the first child of parent_pid (the process inside the ns)."""
    deadline = time.monotonic() + timeout
    path = f"/proc/{parent_pid}/task/{parent_pid}/children"
    while time.monotonic() < deadline:
        try:
            kids = Path(path).read_text().split()
        except FileNotFoundError:
            kids = []
        if kids:
            pid = int(kids[0])
            # wait until it has exec'd sleep (hostname already set)
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    return pid
            except FileNotFoundError:
                pass
        time.sleep(0.02)
    raise RuntimeError("target process in new namespaces did not start")


@pytest.fixture
def target():
    """A `sleep` in fresh pid/mnt/uts namespaces with hostname 'inner'."""
    proc = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount-proc", "--uts",
         "sh", "-c", "hostname inner && exec sleep 30"],
    )
    inner = None
    try:
        inner = _wait_for_child(proc.pid)
        yield inner
    finally:
        # Kill the namespace's init (the sleep) by pid: that tears the whole
        # pid namespace down; killing only unshare would orphan it.
        if inner is not None:
            try:
                os.kill(inner, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_stub(*args, **kw):
    return subprocess.run(
        [str(STUB), *map(str, args)],
        capture_output=True, text=True, timeout=20, **kw,
    )


@needs_stub
def test_stub_is_static():
    """No PT_INTERP program header => no dynamic loader => static."""
    data = STUB.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert data[4] == 2, "expected a 64-bit ELF"
    endian = "<" if data[5] == 1 else ">"
    e_phoff, = struct.unpack_from(endian + "Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from(endian + "HH", data, 0x36)
    types = [struct.unpack_from(endian + "I", data, e_phoff + i * e_phentsize)[0]
             for i in range(e_phnum)]
    PT_INTERP = 3
    assert PT_INTERP not in types, "stub is dynamically linked"


@needs_stub
def test_usage_errors_exit_125():
    r = run_stub()
    assert r.returncode == 125 and "cocin: error:" in r.stderr
    r = run_stub("notapid", "/", "true")
    assert r.returncode == 125 and "invalid PID" in r.stderr
    r = run_stub("123", "/")
    assert r.returncode == 125


@needs_stub
@needs_root
def test_nonexistent_pid_exits_125():
    r = run_stub(2**22 + 12345, "/", "true")  # above the max pid_max
    assert r.returncode == 125
    assert r.stderr.startswith("cocin: error:")
    assert len(r.stderr.strip().splitlines()) == 1


@needs_stub
@needs_root
def test_hostname_is_the_namespace_one(target):
    r = run_stub(target, "/", "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "inner"


@needs_stub
@needs_root
def test_exit_code_passthrough(target):
    assert run_stub(target, "/", "sh", "-c", "exit 7").returncode == 7
    assert run_stub(target, "/", "--", "true").returncode == 0
    # killed by a signal -> 128 + signal number
    r = run_stub(target, "/", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM


@needs_stub
@needs_root
def test_not_found_127_and_not_executable_126(target):
    r = run_stub(target, "/", "cocin-no-such-command")
    assert r.returncode == 127
    assert r.stderr.strip() == ('cocin: error: exec: "cocin-no-such-command": '
                                'executable file not found in $PATH')
    r = run_stub(target, "/", "/etc/passwd")
    assert r.returncode == 126 and "/etc/passwd" in r.stderr


@needs_stub
@needs_root
def test_cwd_and_bad_cwd(target):
    r = run_stub(target, "/tmp", "pwd")
    assert (r.returncode, r.stdout.strip()) == (0, "/tmp")
    r = run_stub(target, "/cocin-no-such-dir", "true")
    assert r.returncode == 125
    assert "cannot chdir to /cocin-no-such-dir" in r.stderr


@needs_stub
@needs_root
def test_environment_passed_unchanged(target):
    env = {"PATH": "/usr/bin:/bin", "COCIN_TEST": "hello world"}
    r = run_stub(target, "/", "env", env=env)
    assert r.returncode == 0
    assert sorted(r.stdout.splitlines()) == ["COCIN_TEST=hello world",
                                             "PATH=/usr/bin:/bin"]


@needs_stub
@needs_root
def test_command_runs_inside_pid_namespace(target):
    bg = subprocess.Popen([str(STUB), str(target), "/", "sleep", "27"])
    try:
        time.sleep(0.3)
        r = run_stub(target, "/", "sh", "-c", "echo $$; ps -o pid=,args=")
        lines = r.stdout.splitlines()
        assert int(lines[0]) < 100  # a small pid: we are in the new pid ns
        assert any(ln.split(None, 1) == ["1", "sleep 30"] for ln in lines[1:])
        assert any(ln.split(None, 1)[1:] == ["sleep 27"] for ln in lines[1:])
    finally:
        bg.send_signal(signal.SIGTERM)  # forwarded to the sleep
        assert bg.wait(timeout=10) == 128 + signal.SIGTERM
