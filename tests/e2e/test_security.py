"""Confinement (issue 13): capabilities, the user, no_new_privs, seccomp, ulimits,
and the classic escape attempts, each refused inside a default container.

The attempts are made by a small static C probe (tests/probes/escape.c), bound
read-only into the containers. It stops at the first step of each escape and
only ever touches harmless things (a file cocin made, a mount inside the
container, a new session keyring): nothing on the host is read or changed.

Tests marked ``needs_seccomp`` check what only the seccomp filter blocks
(keyctl, user namespaces, a custom profile); they skip while the compiler
(cocin/seccomp.py) is not in the tree.
"""

from __future__ import annotations

import json
import os
import shlex

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _has_seccomp() -> bool:
    from cocin import libc

    return os.path.exists(os.path.join(REPO, "cocin", "seccomp.py")) and hasattr(libc, "seccomp_set_mode_filter")


needs_seccomp = pytest.mark.skipif(
    not _has_seccomp(),
    reason="cocin/seccomp.py (the seccomp compiler) or libc.seccomp_set_mode_filter is not in this tree yet",
)

DOCKER_CAPS = "00000000a80425fb"  # Docker's 14 default capabilities
NET_ADMIN = 1 << 12
PROBE = "/probe/escape"
NETWORKS = ["none", "host"]


@pytest.fixture(scope="session")
def escape(cocin_session):
    """tests/probes/escape.c built static into a fresh directory; ``-v`` flags binding it."""
    host = cocin_session.host
    if host.run("command -v gcc").rc != 0:
        pytest.skip("gcc is not installed: the escape probe cannot be built")
    d = host.run("mktemp -d /tmp/cocin-probe-XXXXXXXX").stdout.strip()
    try:
        src = f"{cocin_session.repo}/tests/probes/escape.c"
        r = host.run(f"gcc -static -O2 -o {d}/escape {shlex.quote(src)}")
        if r.rc != 0:
            pytest.skip(f"gcc -static failed (no static libc?): {r.stderr.strip()[:200]}")
        yield ["-v", f"{d}:/probe:ro"]
    finally:
        host.run(f"rm -rf {shlex.quote(d)}")


def status(cocin, *flags: str, pid: str = "self") -> dict[str, str]:
    """The fields of /proc/PID/status of a container's process (run with ``flags``)."""
    out = cocin.ok("run", "--rm", *flags, "busybox", "cat", f"/proc/{pid}/status").stdout
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def caps(fields: dict[str, str]) -> dict[str, str]:
    return {k: fields[k].strip() for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def probe(cocin, escape_flags: list[str], *argv: str, flags: tuple = ("--network", "none")):
    return cocin("run", "--rm", *escape_flags, *flags, "busybox", PROBE, *argv)


# --- the default container -------------------------------------------------------------


@pytest.mark.parametrize("network", NETWORKS)
def test_default_container_has_dockers_capabilities(cocin, network):
    fields = status(cocin, "--network", network)
    assert caps(fields) == {
        "CapInh": "0" * 16,
        "CapPrm": DOCKER_CAPS,
        "CapEff": DOCKER_CAPS,
        "CapBnd": DOCKER_CAPS,
        "CapAmb": "0" * 16,
    }
    assert fields["NoNewPrivs"].strip() == "0"  # Docker's default: off


@needs_seccomp
@pytest.mark.parametrize("network", NETWORKS)
def test_default_container_is_under_a_seccomp_filter(cocin, network):
    assert status(cocin, "--network", network)["Seccomp"].strip() == "2"


@pytest.mark.parametrize("network", NETWORKS)
def test_shocker_fails(cocin, escape, network):
    """open_by_handle_at through a file bound from the host (cocin's own /etc/hostname)."""
    r = probe(cocin, escape, "shocker", "/etc/hostname", flags=("--network", network))
    assert r.rc == 1 and "blocked: open_by_handle_at" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("fstype", ["tmpfs", "sysfs", "cgroup", "proc"])
def test_mounts_fail(cocin, escape, network, fstype):
    r = probe(cocin, escape, "mount", fstype, "/tmp", flags=("--network", network))
    assert r.rc == 1 and "blocked: mount: Operation not permitted" in r.stdout, r.stdout + r.stderr


def test_busybox_mount_fails(cocin):
    r = cocin("run", "--rm", "--network", "none", "busybox", "mount", "-t", "tmpfs", "none", "/tmp")
    assert r.rc != 0 and ("denied" in r.stderr.lower() or "not permitted" in r.stderr.lower()), r.stderr


def test_mknod_is_one_of_the_14_and_can_be_dropped(cocin, escape):
    """MKNOD is one of Docker's 14: a node can be made (the device cgroup keeps it
    from being opened); ``--cap-drop MKNOD`` takes even that away."""
    r = probe(cocin, escape, "mknod", "/tmp/loop0")
    assert r.rc == 0, r.stdout + r.stderr
    r = probe(cocin, escape, "mknod", "/tmp/loop0", flags=("--network", "none", "--cap-drop", "MKNOD"))
    assert r.rc == 1 and "blocked: mknod" in r.stdout, r.stdout + r.stderr


@needs_seccomp
@pytest.mark.parametrize("network", NETWORKS)
def test_keyctl_fails(cocin, escape, network):
    r = probe(cocin, escape, "keyctl", flags=("--network", network))
    assert r.rc == 1 and "blocked: keyctl" in r.stdout, r.stdout + r.stderr


@needs_seccomp
def test_io_uring_is_blocked_as_in_docker(cocin, escape):
    """Docker's profile dropped io_uring in 25.0 (moby#46762): a ring does reads,
    writes and opens in the kernel, where the seccomp filter does not see them."""
    free = probe(cocin, escape, "io_uring", flags=("--network", "none", "--security-opt", "seccomp=unconfined"))
    if free.rc != 0:
        pytest.skip(f"io_uring is off on this host (kernel.io_uring_disabled?): {free.stdout.strip()}")
    r = probe(cocin, escape, "io_uring")
    assert r.rc == 1 and "blocked: io_uring_setup: Operation not permitted" in r.stdout, r.stdout + r.stderr


@needs_seccomp
@pytest.mark.parametrize("network", NETWORKS)
def test_user_namespace_fails(cocin, escape, network):
    r = probe(cocin, escape, "userns", flags=("--network", network))
    assert r.rc == 1 and "blocked" in r.stdout, r.stdout + r.stderr
    r = cocin("run", "--rm", "--network", network, "busybox", "unshare", "-U", "-r", "true")
    assert r.rc != 0


def test_ping_works_and_needs_net_raw(cocin):
    cocin.ok("run", "--rm", "--network", "none", "busybox", "ping", "-c1", "-W2", "127.0.0.1")
    r = cocin("run", "--rm", "--network", "none", "--cap-drop", "NET_RAW", "busybox", "ping", "-c1", "-W2", "127.0.0.1")
    assert r.rc == 1 and "permission denied" in r.stderr, r.stderr  # no raw socket without NET_RAW


def test_chown_works_and_cap_drop_chown_stops_it(cocin):
    script = "touch /tmp/f && chown 1:1 /tmp/f && stat -c %u:%g /tmp/f"
    assert cocin.ok("run", "--rm", "--network", "none", "busybox", "sh", "-c", script).stdout.strip() == "1:1"
    r = cocin("run", "--rm", "--network", "none", "--cap-drop", "chown", "busybox", "sh", "-c", script)
    assert r.rc != 0 and "not permitted" in r.stderr.lower(), r.stderr


def test_init_and_command_are_both_confined(cocin):
    out = cocin.ok(
        "run",
        "--rm",
        "--init",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "grep -h CapBnd /proc/1/status /proc/self/status; cat /proc/1/comm",
    ).stdout.split()
    assert out == ["CapBnd:", DOCKER_CAPS, "CapBnd:", DOCKER_CAPS, "cocin-init"]


def test_init_is_out_of_the_commands_reach(cocin):
    """``--init``'s PID 1 is the host's python: the command (same uid) must not reach
    its /proc files, whose ``exe`` is a handle on the host's binary (CVE-2019-5736)."""
    script = (
        "readlink /proc/1/exe && echo exe-readable; test -w /proc/1/exe && echo exe-writable; "
        "cat /proc/1/environ >/dev/null 2>&1 && echo environ-readable; readlink /proc/self/exe"
    )
    out = cocin.ok("run", "--rm", "--init", "--network", "none", "busybox", "sh", "-c", script).stdout
    assert out.split() == ["/bin/busybox"], out


@pytest.mark.parametrize("flags", [(), ("-i",), ("--init",)])
def test_the_callers_terminal_is_not_the_containers_controlling_terminal(cocin, flags):
    """Attached without -t, the container's stdio is the caller's terminal; were it
    also its controlling terminal, ioctl(TIOCSTI) could type commands into the host's
    shell (a default container did make an interactive root shell run one). Field 7
    of /proc/self/stat (tty_nr) is 0 without a controlling terminal. Under script(1)."""
    inner = cocin.cmdline(
        "run", "--rm", "--network", "none", *flags, "busybox", "cut", "-d", " ", "-f7", "/proc/self/stat", tty=True
    )
    r = cocin.sh(f"script -qec {shlex.quote(inner)} /dev/null </dev/null")
    assert r.rc == 0, r.stdout + r.stderr
    assert r.stdout.replace("\r", "").split() == ["0"], r.stdout


def test_cgroup_namespace_as_docker(cocin):
    """Docker's default cgroupns mode: private on a pure cgroup v2 host (the
    container sees its own cgroup as "/"), the host's on v1 and hybrid hosts."""
    out = cocin.ok("run", "--rm", "--network", "none", "busybox", "cat", "/proc/self/cgroup").stdout
    if cocin.sh("stat -fc %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs":
        assert out.split() == ["0::/"]
    else:
        assert f"pids:/{cocin.env['COCIN_CGROUP_PARENT']}/" in out


# --- the user --------------------------------------------------------------------------


def test_numeric_user_keeps_the_capabilities_in_the_bounding_set_only(cocin):
    out = cocin.ok(
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "1000",
        "busybox",
        "sh",
        "-c",
        "id -u; id -g; echo $HOME; grep -E 'Cap(Eff|Prm|Bnd)' /proc/self/status",
    ).stdout.split()
    assert out == ["1000", "0", "/", "CapPrm:", "0" * 16, "CapEff:", "0" * 16, "CapBnd:", DOCKER_CAPS]


@pytest.fixture
def users_image(cocin):
    """busybox plus users of its own in /etc/passwd and /etc/group, committed as an image."""
    script = (
        "echo 'app:x:1234:1234:app:/home/app:/bin/sh' >> /etc/passwd && "
        "echo 'app:x:1234:' >> /etc/group && echo 'extra:x:2345:app,other' >> /etc/group && "
        "echo 'more:x:3456:' >> /etc/group"
    )
    name = "sectest-users-" + os.urandom(3).hex()
    cocin.ok("run", "--name", name, "--network", "none", "busybox", "sh", "-c", script)
    try:
        cocin.ok("commit", name, name)
        yield name
    finally:
        cocin("rm", "-f", name)
        cocin("rmi", "-f", name)


def test_user_by_name_from_the_images_passwd_and_group(cocin, users_image):
    out = cocin.ok(
        "run", "--rm", "--network", "none", "-u", "app", users_image, "sh", "-c", "id -u; id -g; id -G; echo $HOME"
    ).stdout.split()
    assert out == ["1234", "1234", "1234", "2345", "/home/app"]


def test_group_add_by_name_and_number(cocin, users_image):
    out = cocin.ok(
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "app:more",
        "--group-add",
        "extra",
        "--group-add",
        "777",
        users_image,
        "sh",
        "-c",
        "id -u; id -g; id -G",
    ).stdout.split()
    # an explicit group replaces the memberships of /etc/group (runc's rule); --group-add adds
    assert out[:3] == ["1234", "3456", "3456"] and sorted(out[3:]) == ["2345", "777"]  # the kernel sorts


def test_nobody_and_home_set_by_env_wins(cocin):
    out = cocin.ok(
        "run", "--rm", "--network", "none", "-u", "nobody", "-e", "HOME=/x", "busybox", "sh", "-c", "id -un; echo $HOME"
    ).stdout.split()
    assert out == ["nobody", "/x"]


def test_unknown_user_is_refused(cocin):
    r = cocin("run", "--rm", "--network", "none", "-u", "nosuchuser", "busybox", "true")
    assert r.rc == 125
    assert r.stderr.strip() == ("cocin: error: unable to find user nosuchuser: no matching entries in passwd file")


# --- the knobs ---------------------------------------------------------------------------


def test_cap_add_and_cap_drop(cocin):
    added = caps(status(cocin, "--network", "none", "--cap-add", "cap_net_admin"))
    assert int(added["CapEff"], 16) == int(DOCKER_CAPS, 16) | NET_ADMIN
    dropped = caps(status(cocin, "--network", "none", "--cap-drop", "ALL"))
    assert dropped == {k: "0" * 16 for k in dropped}
    only = caps(status(cocin, "--network", "none", "--cap-drop", "all", "--cap-add", "KILL"))
    assert only["CapEff"] == only["CapBnd"] == f"{1 << 5:016x}"


def test_privileged_has_every_capability_and_no_filter(cocin):
    own = cocin.sh("grep CapBnd /proc/self/status").stdout.split()[1]  # cocin's own ceiling
    fields = status(cocin, "--network", "none", "--privileged")
    assert caps(fields)["CapEff"] == caps(fields)["CapBnd"] == own
    assert fields["Seccomp"].strip() == "0"


def test_no_new_privileges(cocin):
    for opt in ("no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"):
        assert status(cocin, "--network", "none", "--security-opt", opt)["NoNewPrivs"].strip() == "1"
    assert status(cocin, "--network", "none", "--security-opt", "no-new-privileges=false")["NoNewPrivs"].strip() == "0"


def test_seccomp_unconfined(cocin):
    assert status(cocin, "--network", "none", "--security-opt", "seccomp=unconfined")["Seccomp"].strip() == "0"


@needs_seccomp
def test_custom_seccomp_profile(cocin, target_tmp):
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    path = target_tmp.path + "/profile.json"
    cocin.sh(f"printf %s {shlex.quote(json.dumps(profile))} > {path}")
    r = cocin(
        "run",
        "--rm",
        "--network",
        "none",
        "--security-opt",
        f"seccomp={path}",
        "busybox",
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; mkdir /tmp/x",
    )
    assert r.rc != 0 and "Seccomp:\t2" in r.stdout, r.stdout + r.stderr
    cocin.ok("run", "--rm", "--network", "none", "busybox", "mkdir", "/tmp/x")


def test_ulimit(cocin):
    out = cocin.ok(
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "core=0",
        "busybox",
        "cat",
        "/proc/self/limits",
    ).stdout
    rows = {line[:26].strip(): line[26:].split()[:2] for line in out.splitlines()[1:]}
    assert rows["Max open files"] == ["1024", "2048"]
    assert rows["Max core file size"] == ["0", "0"]


def test_inspect_shows_the_confinement(cocin):
    cid = cocin.ok(
        "create",
        "--network",
        "none",
        "--cap-add",
        "net_admin",
        "--cap-drop",
        "CAP_CHOWN",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--tmpfs",
        "/run:size=1m",
        "-u",
        "1000:1000",
        "--group-add",
        "10",
        "--device",
        "/dev/null:/dev/mynull:rw",
        "--ulimit",
        "nofile=1024:2048",
        "--sysctl",
        "kernel.shmmni=4000",
        "busybox",
        "true",
    ).stdout.strip()
    obj = json.loads(cocin.ok("inspect", cid).stdout)[0]
    hc = obj["HostConfig"]
    assert (hc["Privileged"], hc["CapAdd"], hc["CapDrop"]) == (False, ["NET_ADMIN"], ["CHOWN"])
    assert hc["SecurityOpt"] == ["no-new-privileges"] and hc["ReadonlyRootfs"] is True
    assert hc["Tmpfs"] == {"/run": "size=1m"} and hc["GroupAdd"] == ["10"]
    assert hc["Devices"] == [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rw"}]
    assert hc["Ulimits"] == [{"Name": "nofile", "Hard": 2048, "Soft": 1024}]
    assert hc["Sysctls"] == {"kernel.shmmni": "4000"}
    assert obj["Config"]["User"] == "1000:1000"


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cap-add", "FOO"], 'unknown capability: "CAP_FOO"'),
        (["--cap-drop", "CAP_NOPE"], 'unknown capability: "CAP_NOPE"'),
        (["--security-opt", "bogus"], 'invalid --security-opt 1: "bogus"'),
        (["--security-opt", "no-new-privileges=maybe"], 'invalid --security-opt 2: "no-new-privileges=maybe"'),
        (["--security-opt", "systempaths=confined"], 'invalid --security-opt 2: "systempaths=confined"'),
        (["--security-opt", "apparmor=docker-default"], "no SELinux or AppArmor support"),
        (["--security-opt", "seccomp=/nonexistent/profile.json"], "opening seccomp profile"),
        (["--ulimit", "nofile=2048:1024"], "ulimit soft limit must be less than or equal to hard limit"),
        (["--ulimit", "bogus=1"], "invalid ulimit type: bogus"),
        (["--ulimit", "nofile"], "invalid ulimit argument: nofile"),
        (["--sysctl", "vm.swappiness=10"], "sysctl 'vm.swappiness=10' is not allowed"),
        (["--sysctl", "kernel.hostname=x"], "sysctl 'kernel.hostname=x' is not allowed"),
        (["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], "not allowed in host network namespace"),
        (["--device", "/etc/hostname"], "not a device node"),
        (["--device", "/dev/nonexistent-device"], "no such file or directory"),
        (["--device", "/dev/null:/dev/n:rwx"], "invalid device mode: rwx"),
        (["--tmpfs", "relative"], "the container path must be absolute"),
        (["-u", "a:b:c"], "invalid user"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(cocin, flags, message):
    before = cocin.containers()
    r = cocin("run", "--rm", *flags, "busybox", "true")
    assert r.rc == 125
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cocin: error: ") and message in lines[0], r.stderr
    assert cocin.containers() == before


def test_bad_seccomp_profile_is_refused(cocin, target_tmp):
    path = target_tmp.path + "/bad.json"
    cocin.sh(f"echo '{{not json' > {path}")
    r = cocin("create", "--security-opt", f"seccomp={path}", "busybox", "true")
    assert r.rc == 125 and r.stderr.startswith("cocin: error: decoding seccomp profile failed"), r.stderr
