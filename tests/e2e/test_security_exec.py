"""End-to-end: ``exec`` is confined as the container (issue 13).

A process ``exec`` starts must get the container's capabilities, seccomp
filter, no_new_privs and user, whichever way it joins: the static stub (the
default), Python's setns (``COCIN_EXEC_STUB=0``) and ``exec -it`` (always
Python, with a pty). ``exec -u`` overrides the user, ``exec --privileged``
gives every capability and no filter. Every check reads the exec'd process's
own ``/proc/self/status`` or runs a harmless probe inside the container.
"""

from __future__ import annotations

import os
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER_CAPS = "00000000a80425fb"  # Docker's 14 default capabilities
NONE = "0" * 16
PATHS = ["stub", "python", "tty"]


def _has_seccomp() -> bool:
    from cocin import libc

    return os.path.exists(os.path.join(REPO, "cocin", "seccomp.py")) and hasattr(libc, "seccomp_set_mode_filter")


needs_seccomp = pytest.mark.skipif(
    not _has_seccomp(),
    reason="cocin/seccomp.py (the seccomp compiler) or libc.seccomp_set_mode_filter is not in this tree yet",
)


@pytest.fixture(params=PATHS)
def path(request, cocin):
    """The three ways into a container; the stub one needs scripts/build_stub.sh."""
    if request.param == "stub" and cocin.sh(f"test -x {cocin.repo}/cocin/nsenter_stub").rc != 0:
        pytest.skip("the exec stub is not built (scripts/build_stub.sh)")
    return request.param


def run_in(cocin, path: str, ctr: str, flags: tuple, script: str) -> str:
    """Run the shell ``script`` through ``cocin exec FLAGS CTR`` on ``path``; its output."""
    if path == "tty":
        inner = cocin.cmdline("exec", "-it", *flags, ctr, "sh", tty=True)
        r = cocin.in_tty(inner, f"{script}; exit 0\n")
        assert r.rc == 0, (r.stdout, r.stderr)
        return r.stdout.replace("\r", "")
    env = {"COCIN_EXEC_STUB": "1" if path == "stub" else "0", "COCIN_DEBUG": "1"}
    r = cocin("exec", *flags, ctr, "sh", "-c", script, env=env)
    assert r.rc == 0, r.stderr
    assert ("via the static stub" if path == "stub" else "via Python setns") in r.stderr
    return r.stdout


def exec_status(cocin, path: str, ctr: str, *flags: str) -> dict[str, str]:
    """/proc/self/status of a process exec'd into ``ctr`` (by a shell that exec'd ``cat``,
    or, with a pty, started it: same sets, as root's execve keeps the bounding set)."""
    out = run_in(cocin, path, ctr, flags, "cat /proc/self/status")
    return {k: v.strip() for k, v in (line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)}


def container_status(cocin, ctr: str) -> dict[str, str]:
    """/proc/PID/status of the container's own process, read on the host."""
    pid = cocin.record(ctr)["pid"]
    out = cocin.sh(f"cat /proc/{pid}/status").stdout
    return {k: v.strip() for k, v in (line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)}


def caps(fields: dict[str, str]) -> dict[str, str]:
    return {k: fields[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def start(cocin, name: str, *flags: str) -> str:
    cocin.ok("run", "-d", "--name", name, "--network", "none", *flags, "busybox", "sleep", "300")
    return name


def test_exec_gets_the_containers_capabilities_filter_and_no_new_privs(cocin, path):
    ctr = start(cocin, "sec-default")
    fields = exec_status(cocin, path, ctr)
    assert caps(fields) == {
        "CapInh": NONE,
        "CapPrm": DOCKER_CAPS,
        "CapEff": DOCKER_CAPS,
        "CapBnd": DOCKER_CAPS,
        "CapAmb": NONE,
    }
    own = container_status(cocin, ctr)
    assert caps(fields) == caps(own)
    assert fields["Seccomp"] == own["Seccomp"] and fields["NoNewPrivs"] == own["NoNewPrivs"] == "0"
    assert fields["Uid"].split() == ["0"] * 4


@needs_seccomp
def test_exec_is_under_the_containers_seccomp_filter(cocin, path):
    ctr = start(cocin, "sec-filter")
    assert exec_status(cocin, path, ctr)["Seccomp"] == "2"
    # unshare(2) needs CAP_SYS_ADMIN under Docker's profile: refused although a
    # user namespace needs no capability at all (so only the filter stops it)
    out = run_in(cocin, path, ctr, (), "unshare -U true 2>/dev/null; echo unshare=$?")
    assert "unshare=0" not in out and "unshare=1" in out


def test_exec_runs_as_the_containers_user(cocin, path):
    ctr = start(cocin, "sec-user", "-u", "1000:1001", "--group-add", "777")
    fields = exec_status(cocin, path, ctr)
    assert fields["Uid"].split() == ["1000"] * 4 and fields["Gid"].split() == ["1001"] * 4
    assert fields["Groups"].split() == ["777"]
    assert (fields["CapPrm"], fields["CapEff"], fields["CapBnd"]) == (NONE, NONE, DOCKER_CAPS)
    fields = exec_status(cocin, path, ctr, "-u", "0")  # exec -u overrides, both ways
    assert fields["Uid"].split() == ["0"] * 4 and fields["CapEff"] == DOCKER_CAPS


def test_exec_user_overrides_and_home_follows(cocin, path):
    ctr = start(cocin, "sec-override")
    fields = exec_status(cocin, path, ctr, "-u", "1000")
    assert fields["Uid"].split() == ["1000"] * 4 and fields["Gid"].split() == ["0"] * 4
    assert (fields["CapEff"], fields["CapBnd"]) == (NONE, DOCKER_CAPS)
    out = run_in(cocin, path, ctr, ("-u", "nobody"), 'echo "id=$(id -u):$(id -g) home=$HOME"')
    assert "id=65534:65534 home=/nonexistent" in out.splitlines()  # from the image's /etc/passwd
    out = run_in(cocin, path, ctr, ("-u", "nobody", "-e", "HOME=/x"), 'echo "home=$HOME"')
    assert "home=/x" in out.splitlines()


def test_exec_privileged_gets_every_capability_and_no_filter(cocin, path):
    ctr = start(cocin, "sec-priv")
    own = cocin.sh("grep CapBnd /proc/self/status").stdout.split()[1]  # cocin's own ceiling
    plain = exec_status(cocin, path, ctr)  # the flag makes the difference
    assert (plain["CapEff"], plain["Seccomp"]) == (DOCKER_CAPS, "2" if _has_seccomp() else "0")
    fields = exec_status(cocin, path, ctr, "--privileged")
    assert fields["CapEff"] == fields["CapPrm"] == fields["CapBnd"] == own != DOCKER_CAPS
    assert fields["Seccomp"] == "0"


def test_exec_into_a_cap_drop_all_container_has_none(cocin, path):
    ctr = start(cocin, "sec-dropall", "--cap-drop", "ALL")
    assert caps(exec_status(cocin, path, ctr)) == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), NONE
    )


def test_exec_keeps_no_new_privileges(cocin, path):
    ctr = start(cocin, "sec-nnp", "--security-opt", "no-new-privileges")
    assert exec_status(cocin, path, ctr)["NoNewPrivs"] == "1"


@pytest.mark.parametrize("stub", ["1", "0"])
def test_exec_unknown_or_bad_user_is_one_line(cocin, stub):
    ctr = start(cocin, "sec-baduser")
    env = {"COCIN_EXEC_STUB": stub}
    r = cocin("exec", "-u", "nosuchuser", ctr, "true", env=env)
    assert (r.rc, r.stdout) == (125, "")
    assert r.stderr == "cocin: error: unable to find user nosuchuser: no matching entries in passwd file\n"
    r = cocin("exec", "-u", "a:b:c", ctr, "true", env=env)
    assert r.rc == 125 and len(r.stderr.splitlines()) == 1 and "invalid user" in r.stderr


@pytest.mark.parametrize("stub", ["1", "0"])
def test_exec_user_is_looked_up_in_the_containers_files_only(cocin, target_tmp, stub):
    """The container's /etc/passwd is an absolute symlink to a path that exists
    both inside and on the host: the lookup must read the container's file."""
    inside = target_tmp / "passwd"
    target_tmp.write("passwd", "probe:x:2222:2222::/host:/bin/sh\n")  # must never be read
    ctr = start(cocin, "sec-symlink")
    cocin.ok(
        "exec",
        ctr,
        "sh",
        "-c",
        f"mkdir -p {target_tmp.path} && "
        f"echo 'probe:x:1111:1111::/in:/bin/sh' > {inside} && ln -sf {inside} /etc/passwd",
    )
    out = cocin.ok(
        "exec", "-u", "probe", ctr, "sh", "-c", 'echo "$(id -u):$(id -g):$HOME"', env={"COCIN_EXEC_STUB": stub}
    ).stdout
    assert out == "1111:1111:/in\n"


def test_exec_passes_on_no_descriptor_of_its_caller(cocin, target_tmp, path):
    """A descriptor the caller of ``exec`` holds (7, on a host directory the test
    made) must not reach the exec'd process: through it ``openat`` walks the host's
    tree, and any process of the container may use it via /proc/PID/fd (runc's
    CVE-2024-21626 was such a leak). Fails when fd 7 is still open inside."""
    target_tmp.write("secret", "on the host\n")
    ctr = start(cocin, "sec-fds")
    script = "echo fds: $(ls /proc/self/fd); cat /proc/self/fd/7/secret 2>/dev/null; echo end"
    if path == "tty":
        inner = cocin.cmdline("exec", "-it", ctr, "sh", tty=True) + f" 7<{target_tmp.path}"
        r = cocin.in_tty(inner, f"{script}; exit 0\n")
    else:
        env = {"COCIN_EXEC_STUB": "1" if path == "stub" else "0"}
        r = cocin.sh(cocin.cmdline("exec", ctr, "sh", "-c", script, env=env) + f" 7<{target_tmp.path}")
    assert r.rc == 0, r.stderr
    assert "end" in r.stdout and "on the host" not in r.stdout
    listed = [line.split() for line in r.stdout.replace("\r", "").splitlines() if line.startswith("fds: 0 1")]
    assert listed and "7" not in listed[-1], r.stdout


def test_exec_stub_runs_from_a_sealed_copy_not_the_hosts_file(cocin):
    """The stub's child ends up in the container, where ``/proc/PID/exe`` names its
    binary: an image's ``#!/proc/self/exe`` makes the kernel run the stub again in
    there, and a process of the container that opens its exe in time could write the
    host's ``nsenter_stub`` later (runc's CVE-2019-5736). The stub must run from a
    sealed memfd. Read on the host: the exe of the stub waiting for ``sleep 3131``."""
    if cocin.sh(f"test -x {cocin.repo}/cocin/nsenter_stub").rc != 0:
        pytest.skip("the exec stub is not built (scripts/build_stub.sh)")
    ctr = start(cocin, "sec-memfd")
    cmd = cocin.cmdline("exec", ctr, "sleep", "3131", env={"COCIN_EXEC_STUB": "1"})
    r = cocin.sh(
        f"({cmd} >/dev/null 2>&1 &); i=0; while [ $i -lt 300 ]; do "
        "p=$(pgrep -f -x 'sleep 3131'); [ -n \"$p\" ] && break; sleep 0.1; i=$((i+1)); done; "
        "readlink /proc/$(ps -o ppid= -p $p | tr -d ' ')/exe; kill $p"
    )
    assert r.rc == 0, r.stderr
    assert r.stdout.startswith("/memfd:cocin-stub"), r.stdout


@pytest.mark.parametrize("stub", ["1", "0"])
def test_exec_does_not_get_the_callers_terminal_as_controlling_terminal(cocin, stub):
    """``exec`` without -t hands its stdio (the caller's terminal) to the command; as
    its controlling terminal too, ioctl(TIOCSTI) could type into the host's shell,
    and any process of the container may ptrace the exec'd one. tty_nr (field 7 of
    /proc/self/stat) must be 0. Run under script(1)."""
    ctr = start(cocin, "sec-ctty")
    inner = cocin.cmdline(
        "exec", ctr, "cut", "-d", " ", "-f7", "/proc/self/stat", tty=True, env={"COCIN_EXEC_STUB": stub}
    )
    r = cocin.sh(f"script -qec {shlex.quote(inner)} /dev/null </dev/null")
    assert r.rc == 0, r.stdout + r.stderr
    assert r.stdout.replace("\r", "").split() == ["0"], r.stdout


def test_exec_stub_runs_with_none_of_the_containers_environment(cocin):
    """The command's environment comes from the container (its PID 1's environ,
    which the container may rewrite); the stub, root on the host until it joins the
    namespaces, must not run with it: its C library reads GLIBC_TUNABLES and the like
    at start-up. Read on the host: the environ of the stub waiting for ``sleep 3132``;
    the command itself still gets the container's variables."""
    if cocin.sh(f"test -x {cocin.repo}/cocin/nsenter_stub").rc != 0:
        pytest.skip("the exec stub is not built (scripts/build_stub.sh)")
    ctr = start(cocin, "sec-stubenv", "-e", "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4096")
    cmd = cocin.cmdline("exec", "-e", "PROBE=1", ctr, "sleep", "3132", env={"COCIN_EXEC_STUB": "1"})
    r = cocin.sh(
        f"({cmd} >/dev/null 2>&1 &); i=0; while [ $i -lt 300 ]; do "
        "p=$(pgrep -f -x 'sleep 3132'); [ -n \"$p\" ] && break; sleep 0.1; i=$((i+1)); done; "
        "echo stub: $(tr '\\0' ' ' < /proc/$(ps -o ppid= -p $p | tr -d ' ')/environ); "
        "echo command: $(tr '\\0' ' ' < /proc/$p/environ); kill $p"
    )
    assert r.rc == 0, r.stderr
    lines = dict(line.split(":", 1) for line in r.stdout.splitlines() if ":" in line)
    assert "GLIBC_TUNABLES" not in lines["stub"] and "PROBE" not in lines["stub"], r.stdout
    assert "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4096" in lines["command"].split(), r.stdout
    assert "PROBE=1" in lines["command"].split(), r.stdout
