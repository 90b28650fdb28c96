"""End-to-end: exec (through the static stub and through Python), commit,
export, import, save and load."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["stub", "python"])
def exec_path(request, cocin):
    """Both ways of joining a container; the stub one needs scripts/build_stub.sh."""
    if request.param == "stub" and cocin.sh(f"test -x {cocin.repo}/cocin/nsenter_stub").rc != 0:
        pytest.skip("the exec stub is not built (scripts/build_stub.sh)")
    return {"COCIN_EXEC_STUB": "1" if request.param == "stub" else "0", "COCIN_DEBUG": "1"}


def test_exec_runs_inside(cocin, exec_path):
    cocin.ok("run", "-d", "--name", "target", "-e", "FROMRUN=1", "busybox", "sleep", "300")
    r = cocin(
        "exec",
        "-e",
        "FOO=bar baz",
        "-w",
        "/tmp",
        "target",
        "sh",
        "-c",
        'echo "$FOO|$FROMRUN|$(pwd)|$(hostname)"; exit 7',
        env=exec_path,
    )
    assert r.rc == 7, r.stderr
    hostname = cocin.record("target")["config"]["hostname"]
    assert r.stdout == f"bar baz|1|/tmp|{hostname}\n"
    path = "static stub" if exec_path["COCIN_EXEC_STUB"] == "1" else "Python setns"
    assert path in r.stderr
    r = cocin("exec", "target", "no-such-cmd", env=exec_path)
    assert r.rc == 127 and "executable file not found" in r.stderr
    r = cocin("exec", "target", "printf", "[%s]", "a b", "it's", env=exec_path)
    assert r.stdout == "[a b][it's]"


def test_exec_sleep_is_in_pidns_and_cgroup_and_dies_with_stop(cocin, exec_path, wait_for):
    cocin.ok("run", "-d", "--name", "host1", "busybox", "sleep", "300")
    cocin.ok("exec", "-d", "host1", "sleep", "260", env=exec_path)
    bg = cocin.sh(f"{cocin.cmdline('exec', 'host1', 'sleep', '270', env=exec_path)} >/dev/null 2>&1 &")
    assert bg.rc == 0
    wait_for(lambda: cocin.sh("pgrep -f '^sleep 260' && pgrep -f '^sleep 270'").rc == 0)
    ps = cocin.ok("exec", "host1", "ps", "-o", "pid,args", env=exec_path).stdout
    assert "sleep 260" in ps and "sleep 270" in ps and "1 sleep 300" in " ".join(ps.split())
    rec = cocin.record("host1")
    procs = cocin.sh(
        "cat /sys/fs/cgroup/pids/{0}/{1}/cgroup.procs 2>/dev/null || cat /sys/fs/cgroup/{0}/{1}/cgroup.procs".format(
            cocin.env["COCIN_CGROUP_PARENT"], rec["id"]
        )
    ).stdout.split()
    host_pids = cocin.sh("pgrep -f '^sleep 2[67]0'").stdout.split()
    assert host_pids and set(host_pids) <= set(procs)
    cocin.ok("stop", "-t", "1", "host1")
    wait_for(lambda: cocin.sh("pgrep -f '^sleep 2[67]0'").stdout.strip() == "")
    assert cocin.sh("pgrep -f '^sleep 2[67]0'").stdout.strip() == ""


def test_exec_errors(cocin):
    r = cocin("exec", "nobody-here", "true")
    assert r.rc == 125 and "No such container" in r.stderr
    cocin.ok("run", "--name", "done", "busybox", "true")
    r = cocin("exec", "done", "true")
    assert r.rc == 125 and r.stderr.strip() == "cocin: error: container done is not running"
    cocin.ok("run", "-d", "--name", "up", "busybox", "sleep", "300")
    r = cocin("exec", "up")
    assert r.rc == 125 and "requires at least 2 arguments" in r.stderr and "Traceback" not in r.stderr


def test_exec_tty(cocin):
    cocin.ok("run", "-d", "--name", "ttyc", "busybox", "sleep", "300")
    inner = cocin.cmdline("exec", "-it", "ttyc", "sh", tty=True)
    feed = "tty; exit 3\n"
    r = cocin.in_tty(inner, feed)
    assert r.rc == 3, (r.stdout, r.stderr)
    assert "/dev/pts/" in r.stdout


def test_commit_keeps_changes(cocin):
    cocin.ok(
        "run",
        "--name",
        "changer",
        "busybox",
        "sh",
        "-c",
        "echo data > /made; chmod 640 /made; ln -s /made /sym; ln /made /hard; "
        "rm /bin/vi; rm -rf /var; mknod /null2 c 1 3; chown 1:2 /made",
    )
    cocin.ok("commit", "changer", "committed")
    r = cocin(
        "run",
        "--rm",
        "committed",
        "sh",
        "-c",
        "stat -c '%A %u:%g %h' /made; readlink /sym; stat -c '%F' /null2; "
        "ls /bin/vi /var 2>&1; ls -a /bin | grep -c wh",
    )
    lines = r.stdout.splitlines()
    assert lines[0] == "-rw-r----- 1:2 2"
    assert lines[1] == "/made"
    assert lines[2] == "character special file"
    assert "No such file" in lines[3] and "No such file" in lines[4]
    assert lines[5] == "0"
    r = cocin("commit", "changer", "committed")
    assert r.rc == 125 and "already exists" in r.stderr
    cocin.ok("commit", "--force", "changer", "committed")


def test_commit_running_container(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "live", "busybox", "sh", "-c", "echo live > /f; sleep 300")
    upper = f"{cocin.root}/containers/{cocin.full_id('live')}/upper"
    wait_for(lambda: cocin.sh(f"cat {upper}/f").stdout == "live\n")
    cocin.ok("commit", "live", "fromlive")
    assert cocin.ok("run", "--rm", "fromlive", "cat", "/f").stdout == "live\n"


def test_export_import_save_load(cocin, target_tmp):
    cocin.ok("run", "--name", "exp", "busybox", "sh", "-c", "echo round > /trip; rm /bin/vi")
    tar = target_tmp / "exp.tar"
    cocin.ok("export", "exp", "-o", tar)
    listing = cocin.sh(f"tar -tvf {tar}").stdout
    assert " trip" in listing and "bin/vi" not in listing and " ./" not in listing
    cocin.ok("import", tar, "again")
    assert cocin.ok("run", "--rm", "again", "cat", "/trip").stdout == "round\n"
    saved = target_tmp / "again.tar"
    cocin.ok("save", "again", "-o", saved)
    assert cocin.sh(f"tar -tf {saved}").rc == 0
    cocin.ok("rmi", "again")
    assert cocin.ok("load", "-i", saved).stdout == "Loaded image: again:latest\n"
    assert cocin.ok("run", "--rm", "again", "cat", "/trip").stdout == "round\n"
    r = cocin("load", "-i", tar)
    assert r.rc == 125 and "import" in r.stderr
