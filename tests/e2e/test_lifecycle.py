"""End-to-end: create/start/restart/kill/wait/inspect/top/rename/prune, --init,
restart policies, crash safety and concurrency."""

from __future__ import annotations

import json
import time

import pytest


def ps_line(cocin, name: str) -> str:
    return next((ln for ln in cocin.ok("ps", "-a").stdout.splitlines() if ln.endswith(" " + name)), "")


def test_create_then_start_keeps_filesystem(cocin):
    cid = cocin.ok(
        "create", "--name", "c", "busybox", "sh", "-c", "cat /count 2>/dev/null; echo x >> /count; exit 3"
    ).stdout.strip()
    assert len(cid) == 64
    assert "Created" in ps_line(cocin, "c")
    r = cocin("start", "-a", "c")
    assert (r.rc, r.stdout) == (3, "")
    r = cocin("start", "-a", "c")
    assert (r.rc, r.stdout) == (3, "x\n")  # the writable layer survived
    cocin.ok("start", "c")
    assert cocin.ok("wait", "c").stdout == "3\n"
    assert cocin.ok("logs", "c").stdout == "x\nx\n"


def test_wait_for_a_later_exit(cocin):
    cocin.ok("run", "-d", "--name", "later", "busybox", "sh", "-c", "sleep 1; exit 7")
    t0 = time.monotonic()
    assert cocin.ok("wait", "later").stdout == "7\n"
    assert time.monotonic() - t0 >= 0.5


def logs_count(cocin, ref: str, text: str, n: int, timeout: float = 10.0) -> int:
    """How often ``text`` is in the logs, once it is there ``n`` times or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        count = cocin.ok("logs", ref).stdout.count(text)
        if count >= n or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def test_restart_and_kill(cocin):
    cocin.ok(
        "run",
        "-d",
        "--name",
        "k",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-hup' HUP; trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done",
    )
    assert logs_count(cocin, "k", "up", 1) == 1  # the traps are set
    # one signal at a time: two HUPs pending at once would be delivered as one
    cocin.ok("kill", "-s", "HUP", "k")
    assert logs_count(cocin, "k", "got-hup", 1) == 1
    cocin.ok("kill", "-s", "1", "k")
    assert logs_count(cocin, "k", "got-hup", 2) == 2
    pid = cocin.record("k")["pid"]
    cocin.ok("restart", "-t", "2", "k")
    rec = cocin.record("k")
    assert rec["state"] == "running" and rec["pid"] != pid
    assert cocin.ok("logs", "k").stdout.splitlines().count("up") == 2
    r = cocin("kill", "-s", "NOSUCH", "k")
    assert r.rc == 125 and "invalid signal" in r.stderr
    cocin.ok("kill", "k")
    rec = cocin.wait_for("k", "exited")
    assert rec["exit_code"] == 137
    r = cocin("kill", "k")
    assert r.rc == 125 and "not running" in r.stderr


def test_inspect(cocin):
    cocin.ok(
        "run", "-d", "--name", "ins", "-m", "64m", "-e", "A=1", "--restart", "on-failure:2", "busybox", "sleep", "300"
    )
    data = json.loads(cocin.ok("inspect", "ins").stdout)[0]
    assert data["Name"] == "/ins" and data["State"]["Running"] is True
    assert data["State"]["Pid"] == cocin.record("ins")["pid"]
    assert data["HostConfig"]["Memory"] == 64 * 1024 * 1024
    assert data["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert "A=1" in data["Config"]["Env"] and data["Config"]["Cmd"] == ["sleep", "300"]
    assert data["NetworkSettings"]["IPAddress"]
    r = cocin.ok("inspect", "-f", "{{.State.Pid}} {{.State.OOMKilled}} {{json .Config.Cmd}}", "ins")
    assert r.stdout == f'{data["State"]["Pid"]} false ["sleep","300"]\n'  # Go's compact JSON
    r = cocin("inspect", "no-such-thing")
    assert r.rc == 1 and "Error: No such object: no-such-thing" in r.stderr
    assert json.loads(cocin.ok("inspect", "busybox").stdout)[0]["RepoTags"] == ["busybox:latest"]


def test_top(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "tp", "busybox", "sh", "-c", "sleep 301 & sleep 302")
    wait_for(lambda: "sleep 302" in cocin.ok("top", "tp").stdout)
    out = cocin.ok("top", "tp").stdout
    assert "PID" in out.splitlines()[0] and "sleep 301" in out and "sleep 302" in out


def test_rename_and_prune(cocin):
    cocin.ok("run", "--name", "old", "busybox", "true")
    cocin.ok("rename", "old", "new")
    assert ps_line(cocin, "new") and not ps_line(cocin, "old")
    r = cocin("rename", "new", "../bad")
    assert r.rc == 125
    cocin.ok("run", "-d", "--name", "keep", "busybox", "sleep", "300")
    out = cocin.ok("container", "prune", "-f").stdout
    assert "Deleted Containers:" in out and "Total reclaimed space" in out
    assert not ps_line(cocin, "new") and ps_line(cocin, "keep")


ORPHAN = "sh -c 'sleep 0.2 &'; exec sleep 300"


def test_init_reaps_zombies_and_forwards_sigterm(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "noinit", "busybox", "sh", "-c", ORPHAN)
    cocin.ok("run", "-d", "--init", "--name", "withinit", "busybox", "sh", "-c", ORPHAN)

    def orphans_ended() -> bool:  # a zombie in noinit; withinit's reaped, or ended
        stats = [s[0] for s in cocin.ok("exec", "noinit", "ps", "-o", "stat").stdout.split()]
        return "Z" in stats and "sleep 0.2" not in cocin.ok("exec", "withinit", "ps", "-o", "args").stdout

    wait_for(orphans_ended)
    # the first letter of STAT: "ZN" when the suite itself runs under nice
    assert "Z" in [s[0] for s in cocin.ok("exec", "noinit", "ps", "-o", "stat").stdout.split()]  # nobody reaps
    assert "Z" not in [s[0] for s in cocin.ok("exec", "withinit", "ps", "-o", "stat").stdout.split()]
    t0 = time.monotonic()
    cocin.ok("stop", "-t", "5", "withinit")
    assert time.monotonic() - t0 < 3  # SIGTERM reached sleep: no wait for SIGKILL
    assert cocin.record("withinit")["exit_code"] == 143


def test_on_failure_restarts_exactly_n_times(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "flaky", "--restart", "on-failure:3", "busybox", "sh", "-c", "echo run; exit 1")

    def done() -> bool:
        rec = cocin.record("flaky")
        return rec["state"] == "exited" and rec["restart_count"] == 3

    wait_for(done, 20, 0.1)
    time.sleep(1)  # no condition to wait for: a fourth restart must not come
    rec = cocin.record("flaky")
    assert (rec["state"], rec["restart_count"], rec["exit_code"]) == ("exited", 3, 1)
    assert cocin.ok("logs", "flaky").stdout == "run\n" * 4
    assert cocin.ok("inspect", "-f", "{{.RestartCount}}", "flaky").stdout == "3\n"
    r = cocin("run", "--rm", "--restart", "always", "busybox", "true")
    assert r.rc == 125 and "--rm" in r.stderr


def test_always_shows_restarting_and_stop_ends_it(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "loop", "--restart", "always", "busybox", "sh", "-c", "exit 2")
    seen = wait_for(lambda: "Restarting (2)" in ps_line(cocin, "loop"), 15)
    assert seen
    cocin.ok("stop", "loop")
    count = cocin.record("loop")["restart_count"]
    time.sleep(2)  # no condition to wait for: no restart may come after the stop
    rec = cocin.record("loop")
    assert rec["state"] == "exited" and rec["restart_count"] == count
    assert "Exited (2)" in ps_line(cocin, "loop")


@pytest.mark.parametrize("point", ["before-namespaces", "after-mounts", "after-record"])
def test_client_killed_during_run(cocin, point, wait_for):
    # The container would hold the output pipes open: send them elsewhere.
    cmd = cocin.cmdline("run", "--name", f"crash-{point}", "busybox", "sleep", "300", env={"COCIN_FAULT": point})
    r = cocin.sh(f"{cmd} </dev/null >/dev/null 2>&1")
    assert r.rc in (137, 128 + 9), r.rc

    def settled() -> bool:
        line = ps_line(cocin, f"crash-{point}")
        if point == "after-record":
            return "Up " in line
        return bool(line) and cocin.record(f"crash-{point}")["state"] in ("created", "exited")

    wait_for(settled)
    line = ps_line(cocin, f"crash-{point}")
    assert line, "the record must survive"
    rec = cocin.record(f"crash-{point}")
    if point == "after-record":
        assert rec["state"] == "running" and "Up " in line  # the container itself lives on
    else:
        assert rec["state"] in ("created", "exited")
    cocin.ok("rm", "-f", f"crash-{point}")
    assert not ps_line(cocin, f"crash-{point}")


def test_simulated_reboot(cocin, wait_for):
    for i in range(3):
        cocin.ok("run", "-d", "--name", f"boot{i}", "busybox", "sh", "-c", f"echo {i} >> /state; sleep 300")
    recs = [cocin.record(f"boot{i}") for i in range(3)]
    state = [f"{cocin.root}/containers/{r['id']}/upper/state" for r in recs]
    wait_for(lambda: all(cocin.sh(f"cat {path}").stdout == f"{i}\n" for i, path in enumerate(state)))
    pids = " ".join(f"{r['pid']} {r['monitor_pid']}" for r in recs)
    assert cocin.sh(f"kill -9 {pids}").rc == 0
    wait_for(lambda: all(cocin.pid_gone(r[k]) for r in recs for k in ("pid", "monitor_pid")))
    for i in range(3):
        assert "Exited (255)" in ps_line(cocin, f"boot{i}")
    for i in range(3):
        cocin.ok("start", f"boot{i}")
    wait_for(lambda: all(cocin.sh(f"cat {path}").stdout == f"{i}\n{i}\n" for i, path in enumerate(state)))
    for i in range(3):
        assert "Up " in ps_line(cocin, f"boot{i}")
        assert cocin.ok("exec", f"boot{i}", "cat", "/state").stdout == f"{i}\n{i}\n"


def test_concurrent_lifecycle_hammering(cocin):
    names = [f"ham{i}" for i in range(5)]
    for n in names:
        cocin.ok("run", "-d", "--name", n, "busybox", "sleep", "300")
    verbs = ["start", "stop -t 1", "restart -t 1", "rm -f", "start", "stop -t 0"]
    loop = " ".join(f"v=$(( (RANDOM + {w}) % {len(verbs)} )); c=$(( RANDOM % 5 )); " for w in range(1))
    workers = []
    for w in range(4):
        cmds = []
        for k in range(12):
            verb = verbs[(w * 5 + k * 7) % len(verbs)]
            name = names[(w + k * 3) % 5]
            cmds.append(cocin.cmdline(*verb.split(), name, timeout=30) + " >/dev/null 2>&1")
        workers.append(
            "( end=$(( $(date +%s) + 20 )); while [ $(date +%s) -lt $end ]; do " + "; ".join(cmds) + "; done ) &"
        )
    assert loop  # (kept simple: each worker cycles through a fixed mix of verbs)
    assert cocin.sh(" ".join(workers) + " wait").rc == 0
    for cid in cocin.containers():
        rec = cocin.record(cid)  # parses
        alive = cocin.sh(f"kill -0 {rec['pid']}").rc == 0 if rec["pid"] else False
        if rec["state"] == "running":
            assert alive, rec
        else:
            assert rec["state"] in ("created", "exited"), rec
    # Everything still works afterwards.
    for cid in cocin.containers():
        cocin.ok("rm", "-f", cid)
