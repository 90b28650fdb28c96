"""End-to-end: run, ps, logs, stop, rm, import, images, rmi with real containers."""

from __future__ import annotations

import shlex
import time

import pytest


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {r.stderr!r}"
    assert lines[0].startswith("cocin: error: "), lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


def test_run_echo(cocin):
    r = cocin("run", "--rm", "busybox", "echo", "hello")
    assert (r.rc, r.stdout) == (0, "hello\n")


def test_argv_reaches_execve_intact(cocin):
    args = ["a b", "it's", '"quoted"', "  lead", "", "$HOME", "*"]
    r = cocin("run", "--rm", "busybox", "printf", "[%s]\n", *args)
    assert r.rc == 0
    assert r.stdout.splitlines() == [f"[{a}]" for a in args]


def test_exit_codes(cocin):
    assert cocin("run", "--rm", "busybox", "sh", "-c", "exit 42").rc == 42
    r = cocin("run", "--rm", "busybox", "no-such-command")
    assert r.rc == 127 and "executable file not found" in one_error_line(r)
    r = cocin("run", "--rm", "busybox", "/etc/passwd")
    assert r.rc == 126 and "permission denied" in one_error_line(r)


def test_namespaces_and_filesystem(cocin):
    script = (
        "echo pid=$$; hostname; grep -c . /proc/net/dev; "
        "ls /dev | tr '\\n' ' '; echo; "
        "touch /sys/x 2>/dev/null && echo sys-rw || echo sys-ro; "
        'grep -q "$(hostname)" /etc/hosts && echo hosts-ok; cat /etc/hostname; '
        "mount | grep -c ' / type overlay'; ls /proc | grep -c '^[0-9]'"
    )
    r = cocin("run", "--rm", "--name", "nscheck", "--network", "none", "busybox", "sh", "-c", script)
    assert r.rc == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "pid=1"
    hostname = out[1]
    assert len(hostname) == 12
    assert out[2] == "3"  # /proc/net/dev: two header lines and lo only: a new netns
    devs = set(out[3].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm"} <= devs
    assert out[4] == "sys-ro"
    assert out[5] == "hosts-ok" and out[6] == hostname
    assert out[7] == "1"
    assert int(out[8]) <= 3  # sh, ls and grep: only the container's own processes are visible
    r = cocin("run", "--rm", "--hostname", "box1", "busybox", "hostname")
    assert r.stdout == "box1\n"


def test_env_workdir(cocin, target_tmp):
    envfile = target_tmp.write("env", "# comment\nFROMFILE=yes\n\nSPACED=a b\n")
    r = cocin(
        "run",
        "--rm",
        "-e",
        "FOO=bar baz",
        "-e",
        "PASSED",
        "-e",
        "UNSET_XYZ",
        "--env-file",
        envfile,
        "-w",
        "/tmp/work",
        "busybox",
        "sh",
        "-c",
        'echo "$FOO|$PASSED|${UNSET_XYZ-unset}|$FROMFILE|$SPACED"; pwd',
        env={"PASSED": "from-caller"},
    )
    assert r.rc == 0, r.stderr
    assert r.stdout.splitlines() == ["bar baz|from-caller|unset|yes|a b", "/tmp/work"]


def test_volumes(cocin, target_tmp):
    host_dir = target_tmp / "vol/new"
    r = cocin("run", "--name", "volbox", "-v", f"{host_dir}:/data", "busybox", "sh", "-c", "echo kept > /data/file")
    assert r.rc == 0, r.stderr
    assert target_tmp.read("vol/new/file") == "kept\n"
    cocin.ok("rm", "volbox")
    assert target_tmp.read("vol/new/file") == "kept\n"  # the data survives rm
    r = cocin(
        "run", "--rm", "-v", f"{host_dir}:/data:ro", "busybox", "sh", "-c", "cat /data/file; echo x > /data/other"
    )
    assert r.stdout == "kept\n" and r.rc != 0
    assert not target_tmp.exists("vol/new/other")


def test_volume_under_an_image_symlink_stays_in_the_container(cocin, target_tmp):
    """An image's absolute symlink points into the container, never at the host:
    ``/data -> <a host directory>`` must not make cocin create files there."""
    host_target = target_tmp / "not-to-be-touched"
    cocin.sh(f"mkdir -p {host_target}")
    cocin.ok("run", "--name", "linker", "busybox", "ln", "-s", host_target, "/data")
    cocin.ok("commit", "linker", "linkimg")
    vol = target_tmp / "vol"
    try:
        r = cocin(
            "run",
            "--rm",
            "-v",
            f"{vol}:/data/sub",
            "-v",
            f"{target_tmp.write('f', 'in-file')}:/data/f",
            "linkimg",
            "sh",
            "-c",
            "cat /data/f; echo via-link > /data/sub/x",
        )
        assert r.rc == 0, r.stderr
        assert r.stdout == "in-file"
        assert target_tmp.read("vol/x") == "via-link\n"  # the volume was mounted where the link leads
        assert cocin.sh(f"ls -A {host_target}").stdout == ""  # and nothing made on the host
    finally:
        cocin("rm", "-f", "linker")
        cocin("rmi", "linkimg")


def test_writable_layer_is_per_container(cocin):
    cocin.ok("run", "--name", "w1", "busybox", "sh", "-c", "echo mine > /etc/motd; rm /bin/vi")
    r = cocin("run", "--rm", "busybox", "sh", "-c", "cat /etc/motd; ls /bin/vi")
    assert "mine" not in r.stdout and r.stdout == "/bin/vi\n"
    cocin.ok("rm", "w1")


def test_detached_exit_is_recorded(cocin):
    cid = cocin.ok(
        "run", "-d", "--name", "quick", "busybox", "sh", "-c", "echo to-out; echo to-err >&2; sleep 0.3; exit 3"
    ).stdout.strip()
    assert len(cid) == 64
    ps = cocin.ok("ps").stdout
    assert "quick" in ps and "Up " in ps
    rec = cocin.wait_for("quick", "exited")
    assert rec["exit_code"] == 3
    line = [ln for ln in cocin.ok("ps", "-a").stdout.splitlines() if "quick" in ln][0]
    assert "Exited (3)" in line and cid[:12] in line
    assert "quick" not in cocin.ok("ps").stdout
    logs = cocin.ok("logs", "quick").stdout
    assert "to-out" in logs and "to-err" in logs
    assert cocin.ok("logs", "--tail", "1", "quick").stdout == "to-err\n"


def test_logs_follow(cocin):
    cocin.ok("run", "-d", "--name", "ticker", "busybox", "sh", "-c", "for i in 1 2 3; do echo tick$i; sleep 0.2; done")
    r = cocin("logs", "-f", "ticker", timeout=20)
    assert r.rc == 0 and r.stdout.split() == ["tick1", "tick2", "tick3"]


def test_stop_escalates_to_sigkill(cocin):
    cocin.ok("run", "-d", "--name", "stubborn", "busybox", "sleep", "300")
    t0 = time.monotonic()
    cocin.ok("stop", "-t", "1", "stubborn")
    took = time.monotonic() - t0
    assert took >= 1.0
    rec = cocin.record("stubborn")
    assert rec["state"] == "exited" and rec["exit_code"] == 137
    assert cocin.sh(f"kill -0 {rec['pid']}").rc != 0


def test_stop_graceful(cocin):
    cocin.ok(
        "run", "-d", "--name", "polite", "busybox", "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"
    )
    cocin.ok("stop", "polite")
    rec = cocin.record("polite")
    assert rec["state"] == "exited" and rec["exit_code"] == 0


def test_rm_refuses_running(cocin):
    cocin.ok("run", "-d", "--name", "busy", "busybox", "sleep", "300")
    r = cocin("rm", "busy")
    assert r.rc == 125 and "running" in one_error_line(r)
    assert "busy" in cocin.ok("ps").stdout
    pid = cocin.record("busy")["pid"]
    cocin.ok("rm", "-f", "busy")
    assert "busy" not in cocin.ok("ps", "-a").stdout
    assert cocin.sh(f"kill -0 {pid}").rc != 0


def test_id_prefix_and_full_id(cocin):
    cid = cocin.ok("run", "-d", "busybox", "sleep", "300").stdout.strip()
    assert cocin.ok("stop", "-t", "0", cid[:8]).rc == 0
    cocin.ok("rm", cid)
    r = cocin("rm", cid)
    assert r.rc == 125 and "No such container" in one_error_line(r)


def _dirs(cocin) -> str:
    return cocin.sh(
        f"ls -A {cocin.root}/containers {cocin.root}/layers/sha256 {cocin.root}/imagedb {cocin.root}/l"
    ).stdout


def test_bad_input_leaves_nothing(cocin):
    before = _dirs(cocin)
    cocin.ok("run", "-d", "--name", "first", "busybox", "sleep", "300")
    first = cocin.record("first")
    middle = _dirs(cocin)
    cases = [
        (("run", "--name", "first", "busybox", "true"), "already in use"),
        (("run", "--name", "../../etc", "busybox", "true"), "invalid container name"),
        (("run", "--rm", "no-such-image", "true"), "No such image"),
        (("run", "--rm", "-v", "relative:/x", "busybox", "true"), "absolute"),
        (("stop", "no-such-container"), "No such container"),
        (("logs", "no-such-container"), "No such container"),
        (("run", "--bogus-flag", "busybox"), "unknown flag: --bogus-flag"),
        (("create", "-d", "busybox", "true"), "unknown shorthand flag"),
        (("run", "--rm", "--entrypoint", "", "busybox"), "no command"),
    ]
    for args, text in cases:
        r = cocin(*args)
        assert r.rc == 125, (args, r.rc, r.stderr)
        assert text in one_error_line(r), (args, r.stderr)
    assert _dirs(cocin) == middle
    assert cocin.record("first") == first  # the first container is untouched
    cocin.ok("rm", "-f", "first")
    assert _dirs(cocin) == before


def _make_tar(cocin, target_tmp, name: str, members: str) -> str:
    """Build a tarball with Python's tarfile on the target host."""
    path = target_tmp / name
    script = f"import tarfile, io\nt = tarfile.open({path!r}, 'w')\n{members}\nt.close()\n"
    r = cocin.sh(f"{cocin.python} -c {shlex.quote(script)}")
    assert r.rc == 0, r.stderr
    return str(path)


ADD = (
    "def add(name, data=b'', **kw):\n"
    "    i = tarfile.TarInfo(name)\n"
    "    for k, v in kw.items(): setattr(i, k, v)\n"
    "    i.size = len(data)\n"
    "    t.addfile(i, io.BytesIO(data) if data else None)\n"
)


@pytest.mark.parametrize(
    "members,text",
    [
        ("add('../evil', b'x')", "outside the image"),
        ("add('/abs', b'x')", "outside the image"),
        ("add('link', type=tarfile.LNKTYPE, linkname='/etc/passwd')", "outside"),
        ("add('sym', type=tarfile.SYMTYPE, linkname='../../etc')", "outside"),
        ("add('dir', type=tarfile.SYMTYPE, linkname='/tmp')\nadd('dir/owned', b'x')", "symlink"),
    ],
)
def test_import_refuses_escaping_tarball(cocin, target_tmp, members, text):
    before = _dirs(cocin)
    tar = _make_tar(cocin, target_tmp, "evil.tar", ADD + members)
    r = cocin("import", tar, "evil")
    assert r.rc == 125 and text in one_error_line(r)
    assert "evil" not in cocin.ok("images").stdout
    assert _dirs(cocin) == before
    assert cocin.sh("test -e /tmp/owned").rc != 0


def test_import_malformed(cocin, target_tmp):
    bad = target_tmp.write("bad.tar", b"this is not a tarball at all" * 100)
    before = _dirs(cocin)
    r = cocin("import", bad, "bad")
    assert r.rc == 125 and "tar" in one_error_line(r)
    r = cocin("import", target_tmp / "missing.tar", "bad")
    assert r.rc == 125 and "no such file" in one_error_line(r)
    assert _dirs(cocin) == before


def test_import_images_rmi(cocin, target_tmp):
    # A docker-export style tarball made from the busybox image's files.
    cocin.ok("run", "--name", "src", "busybox", "true")
    layer = cocin.record("src")["config"]["lower"]  # busybox: one layer
    layers_before = cocin.sh(f"ls {cocin.root}/layers/sha256").stdout.split()
    tgz = target_tmp / "rootfs.tar.gz"
    assert cocin.sh(f"tar -C {layer}/ -czf {tgz} .").rc == 0
    cocin.ok("rm", "src")
    out = cocin.ok("import", tgz, "mini").stdout
    assert out.startswith("sha256:")
    assert "mini" in cocin.ok("images").stdout
    r = cocin("import", tgz, "mini")
    assert r.rc == 125 and "already exists" in one_error_line(r)
    assert cocin.ok("run", "--rm", "mini", "sh", "-c", "echo from-mini").stdout == "from-mini\n"
    cocin.ok("run", "--name", "user", "mini", "true")
    r = cocin("rmi", "mini")
    assert r.rc == 125 and "user" not in r.stderr and "(must force)" in one_error_line(r)
    cocin.ok("rm", "user")
    cocin.ok("rmi", "mini")
    assert "mini" not in cocin.ok("images").stdout
    assert cocin.sh(f"ls {cocin.root}/layers/sha256").stdout.split() == layers_before  # mini's layer went


def test_tty_output_into_a_closed_pipe(cocin):
    """``run -t ... | head``: the reader goes, the terminal hangs up, and the
    container is still reaped, recorded and removed (the per-test check
    finds any cgroup left behind)."""
    before = cocin.containers()
    run = cocin.cmdline("run", "--rm", "-t", "--network", "none", "busybox", "sh", "-c", "yes")
    r = cocin.sh(f"{run} </dev/null | head -c 4")
    assert r.rc == 0 and r.stdout.startswith("y")
    assert cocin.containers() == before


def test_interactive_tty(cocin):
    """-it gives the container a real pty as its controlling terminal."""
    inner = cocin.cmdline("run", "-it", "--rm", "busybox", "sh", tty=True)
    feed = "tty; stty size; echo $TERM; exit 5\n"
    r = cocin.in_tty("stty rows 40 cols 100; " + inner, feed)
    assert r.rc == 5, (r.stdout, r.stderr)
    assert "/dev/pts/0" in r.stdout
    assert "40 100" in r.stdout
    assert "xterm" in r.stdout


def test_killed_monitor_then_ps_and_rm(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "orphan", "busybox", "sleep", "300")
    rec = cocin.record("orphan")
    assert cocin.sh(f"kill -9 {rec['monitor_pid']}").rc == 0
    wait_for(lambda: cocin.pid_gone(rec["monitor_pid"]))
    line = [ln for ln in cocin.ok("ps").stdout.splitlines() if "orphan" in ln]
    assert line and "Up " in line[0]  # the container itself is still running
    assert cocin.sh(f"kill -9 {rec['pid']}").rc == 0
    wait_for(lambda: cocin.pid_gone(rec["pid"]))
    line = [ln for ln in cocin.ok("ps", "-a").stdout.splitlines() if "orphan" in ln][0]
    assert "Exited (255)" in line
    cocin.ok("rm", "orphan")
    assert "orphan" not in cocin.ok("ps", "-a").stdout


def all_succeed(commands: list[str]) -> str:
    """A shell script running ``commands`` at once; it fails if any of them fails."""
    start = " ".join(f'{c} >/dev/null & p="$p $!";' for c in commands)
    return f"p=''; {start} rc=0; for j in $p; do wait $j || rc=1; done; exit $rc"


def test_parallel_run_and_rm(cocin):
    n = 20
    # 20 cocin processes at once: in an emulated (TCG) VM one takes up to ~50 s
    slow = 300
    run = all_succeed(
        [
            cocin.cmdline("run", "-d", "--name", f"par{i}", "busybox", "sleep", "300", timeout=slow)
            for i in range(1, n + 1)
        ]
    )
    assert cocin.sh(run).rc == 0
    ids = cocin.containers()
    names = {cocin.record(c)["name"] for c in ids}
    assert {f"par{i}" for i in range(1, n + 1)} <= names
    running = [ln for ln in cocin.ok("ps").stdout.splitlines() if " par" in ln]
    assert len(running) == n
    rm = all_succeed([cocin.cmdline("rm", "-f", f"par{i}", timeout=slow) for i in range(1, n + 1)])
    assert cocin.sh(rm).rc == 0
    assert not any(ln for ln in cocin.ok("ps", "-a").stdout.splitlines() if " par" in ln)


def test_detached_with_tty_logs_the_terminal(cocin, wait_for):
    cocin.ok("run", "-d", "-t", "--name", "dt", "busybox", "sh", "-c", "tty; echo $TERM; sleep 300")
    wait_for(lambda: "xterm" in cocin.ok("logs", "dt").stdout)
    logs = cocin.ok("logs", "dt").stdout
    assert "/dev/pts/0" in logs and "xterm" in logs
