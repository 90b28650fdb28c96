"""End-to-end: resource limits are enforced by the kernel, and cleaned up."""

from __future__ import annotations


def cgroup_dirs(cocin) -> list[str]:
    parent = cocin.env["COCIN_CGROUP_PARENT"]
    return cocin.sh(f"find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path '*/{parent}/*'").stdout.split()


def test_memory_limit_oom_kill_is_recorded(cocin):
    r = cocin(
        "run", "--name", "hog", "-m", "32m", "busybox", "sh", "-c", "head -c 100000000 /dev/zero | tail > /dev/null"
    )
    assert r.rc == 137
    rec = cocin.record("hog")
    assert rec["oom_killed"] is True and rec["exit_code"] == 137
    line = [ln for ln in cocin.ok("ps", "-a").stdout.splitlines() if "hog" in ln][0]
    assert "Exited (137)" in line
    assert cgroup_dirs(cocin) == []


def test_memory_within_limit_is_fine(cocin):
    r = cocin("run", "--rm", "-m", "64m", "busybox", "sh", "-c", "head -c 10000000 /dev/zero | tail -c 1 | wc -c")
    assert (r.rc, r.stdout) == (0, "1\n")


def test_pids_limit(cocin, wait_for):
    cocin.ok(
        "run",
        "-d",
        "--name",
        "forky",
        "--pids-limit",
        "20",
        "busybox",
        "sh",
        "-c",
        'sh -c "for i in \\$(seq 50); do sleep 60 & done"; sleep 60',
    )
    wait_for(lambda: "fork" in cocin.ok("logs", "forky").stdout)  # the limit is reached
    cid = cocin.full_id("forky")
    procs = cocin.sh(
        f"cat /sys/fs/cgroup/pids/{cocin.env['COCIN_CGROUP_PARENT']}/{cid}/cgroup.procs "
        f"2>/dev/null || cat /sys/fs/cgroup/{cocin.env['COCIN_CGROUP_PARENT']}/{cid}/cgroup.procs"
    )
    n = len(procs.stdout.split())
    assert 10 <= n <= 20, n
    assert "fork" in cocin.ok("logs", "forky").stdout
    cocin.ok("rm", "-f", "forky")
    assert cgroup_dirs(cocin) == []


def test_cpus_quota(cocin):
    r = cocin("run", "--rm", "--cpus", "0.5", "busybox", "sh", "-c", "timeout 2 sh -c 'while :; do :; done'; times")
    assert r.rc == 0, r.stderr
    children = r.stdout.splitlines()[-1].split()  # user and system time of the children
    used = sum(float(t.split("m")[0]) * 60 + float(t.split("m")[1].rstrip("s")) for t in children)
    assert 0.5 <= used <= 1.2, used  # 2 s of wall clock at half a CPU: ~1 s


def test_cpuset(cocin):
    r = cocin("run", "--rm", "--cpuset-cpus", "0", "busybox", "grep", "Cpus_allowed_list", "/proc/self/status")
    assert r.rc == 0 and r.stdout.split() == ["Cpus_allowed_list:", "0"]


def test_exec_joins_the_cgroup(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "cgx", "--pids-limit", "30", "busybox", "sleep", "300")
    cocin.ok("exec", "-d", "cgx", "sleep", "250")
    cid = cocin.full_id("cgx")
    procs_file = (
        f"cat /sys/fs/cgroup/pids/{cocin.env['COCIN_CGROUP_PARENT']}/{cid}/cgroup.procs "
        f"2>/dev/null || cat /sys/fs/cgroup/{cocin.env['COCIN_CGROUP_PARENT']}/{cid}/cgroup.procs"
    )
    wait_for(lambda: len(cocin.sh(procs_file).stdout.split()) >= 2)
    procs = cocin.sh(procs_file)
    assert len(procs.stdout.split()) == 2
    cocin.ok("stop", "-t", "1", "cgx")
    assert cgroup_dirs(cocin) == []


def test_stats(cocin):
    cocin.ok("run", "-d", "--name", "st", "-m", "64m", "busybox", "sleep", "300")
    out = cocin.ok("stats", "--no-stream", "st").stdout.splitlines()
    assert out[0].split()[:3] == ["CONTAINER", "ID", "NAME"]
    assert "st" in out[1] and "64MiB" in out[1]


def test_bad_limits_create_nothing(cocin):
    before = cocin.sh(f"ls -A {cocin.root}/containers").stdout
    for args, text in [
        (("-m", "12q"), "invalid memory size"),
        (("-m", "-5m"), "memory"),
        (("--cpus", "0"), "cpus"),
        (("--cpus", "64"), "CPUs"),
        (("--cpuset-cpus", "63"), "cpuset-cpus"),
        (("--pids-limit", "many"), "pids-limit"),
        (("--memory-swap", "10m", "-m", "20m"), "memory-swap"),
    ]:
        r = cocin("run", "--rm", *args, "busybox", "true")
        assert r.rc == 125, (args, r.stderr)
        assert text in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert cocin.sh(f"ls -A {cocin.root}/containers").stdout == before
    assert cgroup_dirs(cocin) == []
