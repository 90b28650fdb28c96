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
    """A `sleep` in fresh pid/mnt/uts namespaces with hostname 'inner' and
    its own empty /tmp (so the host's /tmp is out of sight once joined)."""
    proc = subprocess.Popen(
        [
            "unshare",
            "--fork",
            "--pid",
            "--mount-proc",
            "--uts",
            "sh",
            "-c",
            "mount -t tmpfs none /tmp && hostname inner && exec sleep 30",
        ],
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
        capture_output=True,
        text=True,
        timeout=20,
        **kw,
    )


@needs_stub
def test_stub_is_static():
    """No PT_INTERP program header => no dynamic loader => static."""
    data = STUB.read_bytes()
    assert data[:4] == b"\x7fELF"
    assert data[4] == 2, "expected a 64-bit ELF"
    endian = "<" if data[5] == 1 else ">"
    (e_phoff,) = struct.unpack_from(endian + "Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from(endian + "HH", data, 0x36)
    types = [struct.unpack_from(endian + "I", data, e_phoff + i * e_phentsize)[0] for i in range(e_phnum)]
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
    assert r.stderr.strip() == ('cocin: error: exec: "cocin-no-such-command": executable file not found in $PATH')
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
    assert sorted(r.stdout.splitlines()) == ["COCIN_TEST=hello world", "PATH=/usr/bin:/bin"]


@needs_stub
@needs_root
def test_env_options_replace_our_environment(target):
    """--env K=V entries are the command's whole environment, and its PATH is the one
    searched; the stub's own (here a PATH without env in it) is not passed on."""
    r = run_stub(
        "--env",
        "PATH=/usr/bin:/bin",
        "--env",
        "COCIN_TEST=a=b",
        target,
        "/",
        "env",
        env={"PATH": "/nowhere", "OURS": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["COCIN_TEST=a=b", "PATH=/usr/bin:/bin"]
    r = run_stub("--env", "NOEQUALS", target, "/", "true")
    assert r.returncode == 125 and "invalid --env" in r.stderr


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


# --- the confinement options (issue 13: exec confined as the container) ------------------

DEFAULT_CAPS = "00000000a80425fb"  # Docker's 14 (moby's oci/caps/defaults.go)
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SYS_UNAME = {"x86_64": 63, "aarch64": 160}


def bpf(*insns):
    """struct sock_filter instructions (code, jt, jf, k) as raw bytes."""
    return b"".join(struct.pack("=HBBI", *i) for i in insns)


def deny_uname_filter():
    """Load the syscall number; uname -> EPERM, anything else allowed."""
    nr = SYS_UNAME[os.uname().machine]
    return bpf(
        (0x20, 0, 0, 0),  # ld  [0] (seccomp_data.nr)
        (0x15, 0, 1, nr),  # jeq nr, next, skip
        (0x06, 0, 0, SECCOMP_RET_ERRNO | 1),  # ret ERRNO(EPERM)
        (0x06, 0, 0, SECCOMP_RET_ALLOW),
    )  # ret ALLOW


def status(text):
    """/proc/PID/status lines as a dict."""
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def start_time(pid):
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


@needs_stub
@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1", "1", "/", "true"], "unknown option --bogus"),
        (["--uid"], "option --uid needs a value"),
        (["--uid", "x", "1", "/", "true"], 'invalid uid "x"'),
        (["--uid", "4294967295", "1", "/", "true"], 'invalid uid "4294967295"'),
        (["--gid", "-1", "1", "/", "true"], 'invalid gid "-1"'),
        (["--groups", "1,,2", "1", "/", "true"], 'invalid group ""'),
        (["--groups", "1,x", "1", "/", "true"], 'invalid group "x"'),
        (["--caps", "zz", "1", "/", "true"], 'invalid --caps "zz"'),
        (["--caps", "-1", "1", "/", "true"], 'invalid --caps "-1"'),
        (["--start-time", "1e5", "1", "/", "true"], 'invalid start time "1e5"'),
        (["--nnp", "1", "/"], "usage: nsenter_stub"),
        (["--seccomp", "/cocin-no-such-filter", "1", "/", "true"], "cannot open seccomp filter"),
    ],
)
def test_option_errors_exit_125(args, message):
    r = run_stub(*args)
    assert r.returncode == 125
    assert r.stderr.startswith("cocin: error: ") and message in r.stderr
    assert len(r.stderr.splitlines()) == 1


@needs_stub
def test_seccomp_file_must_be_a_filter_and_no_symlink(tmp_path):
    odd = tmp_path / "odd"
    odd.write_bytes(b"1234567")  # not a multiple of 8 bytes
    link = tmp_path / "link"
    good = tmp_path / "good"
    good.write_bytes(bpf((0x06, 0, 0, SECCOMP_RET_ALLOW)))
    link.symlink_to(good)
    for path, message in (
        (odd, "invalid seccomp filter"),
        (tmp_path / "empty", "invalid seccomp filter"),
        (link, "cannot open seccomp filter"),
    ):
        if path.name == "empty":
            path.write_bytes(b"")
        r = run_stub("--seccomp", path, "1", "/", "true")
        assert r.returncode == 125 and message in r.stderr, r.stderr


@needs_stub
@needs_root
def test_without_options_nothing_is_dropped(target):
    r = run_stub(target, "/", "cat", "/proc/self/status")
    st = status(r.stdout)
    assert st["CapEff"] == Path("/proc/self/status").read_text().split("CapEff:\t")[1].split()[0]
    assert st["Uid"].split()[0] == "0" and st["NoNewPrivs"] == "0"


@needs_stub
@needs_root
def test_root_keeps_the_mask_in_bounding_permitted_effective(target):
    r = run_stub(
        "--uid",
        "0",
        "--gid",
        "0",
        "--groups",
        "10,27",
        "--caps",
        DEFAULT_CAPS.lstrip("0"),
        target,
        "/",
        "cat",
        "/proc/self/status",
    )
    assert r.returncode == 0, r.stderr
    st = status(r.stdout)
    assert (st["CapBnd"], st["CapPrm"], st["CapEff"]) == (DEFAULT_CAPS,) * 3
    assert (st["CapInh"], st["CapAmb"]) == ("0" * 16,) * 2
    assert st["Groups"].split() == ["10", "27"]
    assert st["NoNewPrivs"] == "0" and st["Seccomp"] == "0"


@needs_stub
@needs_root
def test_other_user_has_the_mask_in_bounding_only(target):
    r = run_stub(
        "--uid",
        "1000",
        "--gid",
        "1001",
        "--groups",
        "",
        "--caps",
        DEFAULT_CAPS,
        "--nnp",
        target,
        "/",
        "cat",
        "/proc/self/status",
    )
    assert r.returncode == 0, r.stderr
    st = status(r.stdout)
    assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["1001"] * 4
    assert st["Groups"].split() == []
    assert st["CapBnd"] == DEFAULT_CAPS
    assert st["CapPrm"] == st["CapEff"] == st["CapInh"] == st["CapAmb"] == "0" * 16
    assert st["NoNewPrivs"] == "1"


@needs_stub
@needs_root
@pytest.mark.skipif(os.uname().machine not in SYS_UNAME, reason="uname's syscall number not listed here")
@pytest.mark.parametrize("nnp", [[], ["--nnp"]])
def test_seccomp_filter_read_on_the_host_and_installed(target, tmp_path, nnp):
    # The target's /tmp is its own tmpfs: tmp_path is visible only to the host,
    # so the filter must be read before the stub joins the mount namespace.
    filt = tmp_path / "seccomp.bpf"
    filt.write_bytes(deny_uname_filter())
    r = run_stub(
        "--seccomp",
        filt,
        *nnp,
        "--caps",
        DEFAULT_CAPS,
        target,
        "/",
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; uname -n",
    )
    st = status(r.stdout)
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == ("1" if nnp else "0")
    assert r.returncode != 0 and "inner" not in r.stdout  # uname(2) refused by the filter
    assert run_stub(target, "/", "uname", "-n").stdout.strip() == "inner"


@needs_stub
@needs_root
def test_start_time_pins_the_process(target):
    r = run_stub("--start-time", start_time(target), target, "/", "hostname")
    assert (r.returncode, r.stdout.strip()) == (0, "inner"), r.stderr
    wrong = int(start_time(target)) + 1  # what a reused PID would show
    r = run_stub("--start-time", wrong, target, "/", "hostname")
    assert r.returncode == 125 and r.stdout == ""
    assert r.stderr.strip() == f"cocin: error: process {target} has exited: it is not the container's any more"


# --- exec pins the container's process (issue 13, finding 7) ---------------------------

# The seam: exec's first check (``state.is_running``, from the record) passed
# while the container's process was alive; by the time exec joins, that
# process is gone and its PID belongs to a newcomer (here: the target, whose
# start time is not the record's). Replacing the early check models that
# moment; pinning right before setns must still refuse. (Reusing a PID for
# real would need ns_last_pid or cycling through pid_max.)
PIN_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from cocin import nsexec, state
from cocin.state import CocinError, Container

state.reconcile = lambda rec: rec
state.is_running = lambda rec: True
nsexec.join_cgroups = lambda rec: None
rec = Container(id="0" * 64, name="pinned", image="none", argv=[], created=0.0, state="running",
                pid=int(sys.argv[2]), pid_start=int(sys.argv[3]))
try:
    sys.exit(nsexec.exec_in(rec, nsexec.ExecOptions(argv=["hostname"], env=[])))
except CocinError as e:
    sys.stderr.write(f"cocin: error: {e}\\n")
    sys.exit(125)
"""


@needs_root
@pytest.mark.parametrize("stub", ["1", "0"])
def test_exec_refuses_a_pid_that_is_not_the_records_process(target, tmp_path, stub):
    if stub == "1" and not STUB.exists():
        pytest.skip(f"{STUB} is not built (run scripts/build_stub.sh)")
    env = {**os.environ, "COCIN_ROOT": str(tmp_path), "COCIN_EXEC_STUB": stub}

    def exec_with(start):
        return subprocess.run(
            ["/usr/bin/python3", "-c", PIN_SCRIPT, str(ROOT), str(target), str(start)],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
        )

    r = exec_with(start_time(target))  # the record's process: joined
    assert (r.returncode, r.stdout.strip()) == (0, "inner"), r.stderr
    r = exec_with(int(start_time(target)) + 1)  # someone else's now: refused, nothing run
    assert (r.returncode, r.stdout) == (125, ""), r.stderr
    assert r.stderr.strip() == "cocin: error: container pinned is not running"
