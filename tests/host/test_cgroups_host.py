"""Real cgroups (root only): made under ``cocin-unittest``, checked, and nothing left behind.

The pure parts of cocin.cgroups (flag parsing, layout detection, file
translation) are tested in tests/unit/test_cgroups.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import threading

import pytest

from cocin import cgroups
from cocin.cgroups import (
    CgroupError,
    Limits,
    parse_limits,
    v1,
    v2,
)

MiB = 1 << 20


# -- real cgroups (root only) -------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating real cgroups needs root (run the suite with sudo)")
PARENT = "cocin-unittest"


def _roots() -> list[str]:
    """Every directory in which cocin makes its parent on this host."""
    if cgroups.layout() == "v2":
        return [v2.current()]
    return [h.mountpoint for h in v1.current()]


def _leftovers() -> list[str]:
    """Container cgroups under PARENT (which itself stays, as cocin's parent does)."""
    return [
        os.path.join(r, PARENT, d)
        for r in _roots()
        if os.path.isdir(os.path.join(r, PARENT))
        for d in os.listdir(os.path.join(r, PARENT))
        if os.path.isdir(os.path.join(r, PARENT, d))
    ]


def _remove_parents() -> None:
    for r in _roots():
        if os.path.isdir(os.path.join(r, PARENT)):
            os.rmdir(os.path.join(r, PARENT))  # fails, loudly, if anything is left inside


@pytest.fixture
def real(monkeypatch):
    if not os.path.isdir(cgroups.CGROUP_ROOT):
        pytest.skip("no /sys/fs/cgroup")
    monkeypatch.setenv("COCIN_CGROUP_PARENT", PARENT)
    cgroups.reset_cache()
    assert _leftovers() == [], "a previous run left cgroups behind"
    yield
    assert _leftovers() == [], "cgroups left behind"
    _remove_parents()


@needs_root
def test_real_cgroup_lifecycle(real, monkeypatch):
    limits = parse_limits(memory="64m", pids_limit="50", cpus="0.5", cpu_shares="512", cpuset_cpus="0", cpuset_mems="0")
    cgroups.check(limits)
    cg = cgroups.create("unit-life", limits)
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert cg.exists()
        cg.add(child.pid)
        assert child.pid in cg.procs()
        stats = cg.stats()
        assert stats["memory_limit"] == 64 * MiB
        assert stats["pids"] >= 1
        assert stats["memory_usage"] >= 0
        assert cg.oom_killed() is False
        same = cgroups.open_existing("unit-life")
        assert same.procs() == cg.procs()
        if cg.version == "v2":
            assert open(os.path.join(cg.path, "cpu.max")).read().split() == ["50000", "100000"]
        else:
            cpu = cg._dir("cpu")
            assert open(os.path.join(cpu, "cpu.cfs_quota_us")).read().strip() == "50000"
            assert open(os.path.join(cg._dir("cpuset"), "cpuset.cpus")).read().strip() == "0"
        # A busy cgroup is not removed and nothing is killed (retried 0.2 s, not 2 s).
        monkeypatch.setattr(cgroups.base, "RMDIR_TIMEOUT", 0.2)
        with pytest.raises(CgroupError, match="processes are still in it"):
            cg.destroy()
        assert child.poll() is None
        assert cg.exists()
    finally:
        child.kill()
        child.wait()
    assert cg.procs() == []
    cg.destroy()
    cg.destroy()  # idempotent
    assert not cg.exists()


@needs_root
def test_real_cgroup_without_limits_joins_only_what_it_needs(real):
    cg = cgroups.create("unit-empty", Limits())
    try:
        assert all(os.path.isdir(p) for p in cg.paths)
        if cgroups.layout() == "v2":
            assert len(cg.paths) == 1
        else:  # memory, pids and cpuacct (cpuacct may share a tree with cpu)
            joined = {c for h in cg.dirs for c in h.split(",")}
            assert {"memory", "pids", "cpuacct"} <= joined
            assert "devices" not in joined and "name=systemd" not in joined
    finally:
        cg.destroy()


@needs_root
def test_real_rejected_value_names_the_flag_and_leaves_nothing(real):
    # 0.001 CPU is a 100us quota: below the kernel's 1 ms minimum -> EINVAL
    with pytest.raises(CgroupError, match="--cpus"):
        cgroups.create("unit-bad", Limits(cpus=0.001))


@needs_root
def test_real_check_rejects_missing_cpus(real):
    with pytest.raises(CgroupError, match="--cpuset-cpus"):
        cgroups.check(Limits(cpuset_cpus="4095"))


@needs_root
def test_real_concurrent_create_and_destroy(real):
    errors = []

    def churn(name):
        try:
            for i in range(30):
                cgroups.create(f"{name}-{i}", Limits(pids_limit=10)).destroy()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(f"unit-race{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@needs_root
def test_real_v2_code_path_on_a_cgroup2_mount(real, monkeypatch):
    """Drive the v2 backend on the hybrid host's (controller-less) cgroup2 tree."""
    if cgroups.layout() != "hybrid":
        pytest.skip("needs the spare cgroup2 tree of a hybrid host")
    root = v2.current()
    monkeypatch.setattr(v2, "CONTROLLERS", ())  # enable nothing in the host's tree
    cg = v2.create("unit-v2", Limits(), PARENT, root)
    child = subprocess.Popen(["sleep", "30"])
    try:
        cg.add(child.pid)
        assert cg.procs() == [child.pid]
        assert cg.stats()["pids"] == 1
    finally:
        child.kill()
        child.wait()
    cg.destroy()
    assert not os.path.exists(cg.path)
    assert os.path.isdir(os.path.join(root, PARENT))  # cocin's parent stays
    os.rmdir(os.path.join(root, PARENT))


# -- device rules (issue 13) ----------------------------------------------------


@needs_root
def test_real_v1_devices_cgroup_holds_dockers_rules(real):
    """The container gets a devices cgroup of its own: deny all, then Docker's allow-list."""
    from cocin import devices

    if cgroups.layout() == "v2":
        pytest.skip("cgroup v1 devices controller: this host is v2 (see the eBPF test)")
    if "devices" not in v1.controller_map(v1.current()):
        pytest.skip("the v1 devices controller is not mounted on this host")
    cg = cgroups.create("unit-dev", Limits(), devices.DEFAULT_RULES)
    try:
        listed = open(os.path.join(cg._dir("devices"), "devices.list")).read().split("\n")
        assert sorted(x for x in listed if x) == sorted(devices.rule_text(r) for r in devices.DEFAULT_RULES)
    finally:
        cg.destroy()
    cg = cgroups.create("unit-dev-priv", Limits(), devices.ALLOW_ALL)
    try:
        assert open(os.path.join(cg._dir("devices"), "devices.list")).read() == "a *:* rwm\n"
    finally:
        cg.destroy()


@needs_root
def test_real_v2_backend_attaches_the_device_program(real, monkeypatch, tmp_path):
    """v2.create(devices=...) on the hybrid host's cgroup2 tree: a process in it
    may open /dev/null but not a /dev/kmsg-like node the test made."""
    from cocin import devices

    if cgroups.layout() != "hybrid":
        pytest.skip("needs the spare cgroup2 tree of a hybrid host")
    root = v2.current()
    monkeypatch.setattr(v2, "CONTROLLERS", ())
    node = tmp_path / "kmsg"
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 11))
    cg = v2.create("unit-v2dev", Limits(), PARENT, root, devices=devices.DEFAULT_RULES)
    try:
        script = (
            f"echo 0 > {cg.path}/cgroup.procs; cat /dev/null && echo null-ok; "
            f"head -c0 {node} 2>/dev/null || echo node-refused"
        )
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
        assert out.split() == ["null-ok", "node-refused"]
    finally:
        cg.destroy()
        os.rmdir(os.path.join(root, PARENT))
