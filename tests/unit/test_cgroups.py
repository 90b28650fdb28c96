"""Unit tests of cocin.cgroups: flag parsing, layout detection, and the
translation of each limit into v1 and v2 file names and values.

Everything here is pure (or uses a fake tree under tmp_path) and needs no
root; the tests that make real cgroups are in tests/host/test_cgroups_host.py.
"""

from __future__ import annotations

import json
import os

import pytest

from cocin import cgroups
from cocin.cgroups import (
    CGROUP2_SUPER_MAGIC,
    CgroupError,
    Limits,
    parse_limits,
    parse_mountinfo,
    parse_size,
    v1,
    v2,
)

MiB = 1 << 20
GiB = 1 << 30

# /proc/self/mountinfo of a Debian 12 host booted without systemd: every
# controller on v1 (cpu and cpuacct apart), plus an empty cgroup2.
HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# A classic v1 host (systemd with the legacy layout): cpu,cpuacct co-mounted.
V1_COMOUNTED = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid shared:9 - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw shared:12 - cgroup cgroup rw,net_cls,net_prio
32 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid shared:13 - cgroup cgroup rw,cpuset,clone_children
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid shared:14 - cgroup cgroup rw,pids
"""

# A pure v2 host (Debian 12 with systemd).
V2_ONLY = """\
22 26 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw
26 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
27 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


# -- sizes and flags --------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("100", 100),
        ("100b", 100),
        ("100B", 100),
        ("512k", 512 * 1024),
        ("64m", 64 * MiB),
        ("64M", 64 * MiB),
        ("1g", GiB),
        ("1.5g", 3 * GiB // 2),
        ("64mb", 64 * MiB),
        ("64MiB", 64 * MiB),
        (" 8m ", 8 * MiB),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12q", "", "m", "1e3", "64 mm", "abc", "1.2.3m", "bb"])
def test_parse_size_rejects_bad_suffix(text):
    with pytest.raises(CgroupError, match="use a number with an optional b, k, m or g suffix"):
        parse_size(text)


def test_parse_size_rejects_negative():
    with pytest.raises(CgroupError, match="must not be negative"):
        parse_size("-5m")


def test_parse_limits_memory_message_names_the_flag():
    with pytest.raises(CgroupError) as e:
        parse_limits(memory="12q")
    assert str(e.value) == ("invalid memory size '12q': use a number with an optional b, k, m or g suffix")


def test_parse_limits_all_flags():
    lim = parse_limits(
        memory="64m",
        memory_swap="128m",
        cpus="1.5",
        cpu_shares="512",
        cpuset_cpus="0-1",
        cpuset_mems="0",
        pids_limit="100",
    )
    assert lim == Limits(
        memory=64 * MiB,
        memory_swap=128 * MiB,
        cpus=1.5,
        cpu_shares=512,
        cpuset_cpus="0-1",
        cpuset_mems="0",
        pids_limit=100,
    )


def test_parse_limits_nothing_is_empty():
    assert parse_limits().is_empty()
    assert not parse_limits(pids_limit="10").is_empty()


def test_memory_minimum_is_6mb():
    assert parse_limits(memory="6m").memory == 6 * MiB
    with pytest.raises(CgroupError, match="minimum memory limit allowed is 6MB"):
        parse_limits(memory="5m")
    assert parse_limits(memory="0").memory is None  # docker: 0 = not set


def test_memory_swap_rules():
    assert parse_limits(memory="64m", memory_swap="-1").memory_swap == -1
    assert parse_limits(memory="64m", memory_swap="64m").memory_swap == 64 * MiB
    with pytest.raises(CgroupError, match="--memory-swap needs --memory"):
        parse_limits(memory_swap="128m")
    with pytest.raises(CgroupError, match="must be at least --memory"):
        parse_limits(memory="64m", memory_swap="32m")
    with pytest.raises(CgroupError, match="memory-swap size"):
        parse_limits(memory="64m", memory_swap="-2")


@pytest.mark.parametrize("text", ["0", "-1", "abc", "nan", "inf", ""])
def test_cpus_must_be_positive_number(text):
    with pytest.raises(CgroupError, match="--cpus"):
        parse_limits(cpus=text)


def test_cpu_shares():
    assert parse_limits(cpu_shares="1024").cpu_shares == 1024
    assert parse_limits(cpu_shares="0").cpu_shares is None
    with pytest.raises(CgroupError, match="--cpu-shares"):
        parse_limits(cpu_shares="-1")
    with pytest.raises(CgroupError, match="whole number"):
        parse_limits(cpu_shares="1.5")


@pytest.mark.parametrize("good", ["0", "0-2,4", "1,3", "0 - 1"])
def test_cpuset_syntax_ok(good):
    assert parse_limits(cpuset_cpus=good).cpuset_cpus == good.replace(" ", "")


@pytest.mark.parametrize("bad", ["", "a", "0-", "-1", "2-1", "0,,1", "0-1-2"])
def test_cpuset_syntax_bad(bad):
    with pytest.raises(CgroupError, match=r"--cpuset-mems .*use a list like 0-2,4"):
        parse_limits(cpuset_mems=bad)


def test_parse_cpu_list():
    assert cgroups.parse_cpu_list("0-2,4") == {0, 1, 2, 4}
    assert cgroups.parse_cpu_list("7") == {7}


def test_pids_limit():
    assert parse_limits(pids_limit="20").pids_limit == 20
    assert parse_limits(pids_limit="0").pids_limit == -1
    assert parse_limits(pids_limit="-1").pids_limit == -1
    for bad in ("-2", "x", "1.5"):
        with pytest.raises(CgroupError, match="--pids-limit"):
            parse_limits(pids_limit=bad)


def test_errors_are_one_line():
    for kwargs in (
        {"memory": "1"},
        {"memory": "64m", "memory_swap": "1m"},
        {"cpus": "-3"},
        {"cpuset_cpus": "x"},
        {"pids_limit": "-5"},
    ):
        with pytest.raises(CgroupError) as e:
            parse_limits(**kwargs)
        assert "\n" not in str(e.value)


def test_limits_dict_roundtrip_is_json():
    lim = Limits(memory=64 * MiB, memory_swap=-1, cpus=0.5, pids_limit=-1)
    d = json.loads(json.dumps(lim.to_dict()))
    assert Limits.from_dict(d) == lim
    assert Limits.from_dict({"memory": 1, "future_field": 2}) == Limits(memory=1)
    assert Limits.from_dict(None) == Limits()


# -- layout detection --------------------------------------------------------


def test_parse_mountinfo_keeps_cgroups_only():
    mounts = parse_mountinfo(HYBRID)
    assert [m.mountpoint for m in mounts][:2] == ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct"]
    assert len(mounts) == 10
    systemd = next(m for m in mounts if m.name)
    assert (systemd.name, systemd.controllers) == ("systemd", ())
    assert mounts[-1].fstype == "cgroup2"


def test_parse_mountinfo_comounted_and_options():
    mounts = {m.mountpoint: m for m in parse_mountinfo(V1_COMOUNTED)}
    assert mounts["/sys/fs/cgroup/cpu,cpuacct"].controllers == ("cpu", "cpuacct")
    assert mounts["/sys/fs/cgroup/cpuset"].controllers == ("cpuset",)  # not clone_children
    assert mounts["/sys/fs/cgroup/systemd"].controllers == ()  # not xattr


def test_parse_mountinfo_unescapes_spaces():
    line = r"40 31 0:37 / /mnt/my\040cg rw - cgroup2 none rw" + "\n"
    assert parse_mountinfo(line)[0].mountpoint == "/mnt/my cg"


def test_detect_layout():
    assert cgroups.detect_layout(parse_mountinfo(HYBRID)) == "hybrid"
    assert cgroups.detect_layout(parse_mountinfo(V1_COMOUNTED)) == "v1"
    assert cgroups.detect_layout(parse_mountinfo(V2_ONLY)) == "v2"
    # statfs has the last word on what /sys/fs/cgroup is.
    assert cgroups.detect_layout(parse_mountinfo(V2_ONLY), CGROUP2_SUPER_MAGIC) == "v2"
    assert cgroups.detect_layout(parse_mountinfo(HYBRID), 0x01021994) == "hybrid"
    with pytest.raises(CgroupError, match="no cgroup filesystem"):
        cgroups.detect_layout([])


def test_layout_of_this_host_is_cached():
    cgroups.reset_cache()
    try:
        first = cgroups.layout()
    except CgroupError:
        pytest.skip("no cgroup filesystem here")
    assert first in ("v1", "v2", "hybrid")
    assert cgroups.layout() is first


def test_v1_hierarchies_hybrid():
    hiers = v1.hierarchies(parse_mountinfo(HYBRID))
    names = [h.name for h in hiers]
    assert names == [
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "blkio",
        "pids",
        "name=systemd",
        "unified",
    ]
    cmap = v1.controller_map(hiers)
    assert cmap["cpu"].mountpoint == "/sys/fs/cgroup/cpu"
    assert cmap["cpuacct"].mountpoint == "/sys/fs/cgroup/cpuacct"
    assert "unified" not in cmap and "systemd" not in cmap


def test_v1_hierarchies_comounted_share_a_directory():
    hiers = v1.hierarchies(parse_mountinfo(V1_COMOUNTED))
    cmap = v1.controller_map(hiers)
    assert cmap["cpu"] is cmap["cpuacct"]
    assert cmap["cpu"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    cg = v1.open_existing("abc", "cocin", hiers)
    assert cg.dirs["cpu,cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct/cocin/abc"
    assert cg._dir("cpuacct") == cg._dir("cpu")


def test_v1_hierarchies_bind_mount_kept_once():
    text = HYBRID + "50 31 0:32 /sub /mnt/mem rw - cgroup cgroup rw,memory\n"
    hiers = v1.hierarchies(parse_mountinfo(text))
    assert [h.mountpoint for h in hiers if h.name == "memory"] == ["/sys/fs/cgroup/memory"]


def test_v2_root():
    assert v2.find_root(parse_mountinfo(V2_ONLY)) == "/sys/fs/cgroup"
    with pytest.raises(CgroupError):
        v2.find_root(parse_mountinfo(V1_COMOUNTED))


# -- translation: v1 ---------------------------------------------------------


def test_v1_memory_alone_allows_as_much_swap_again():
    files = v1.files_for(Limits(memory=64 * MiB))
    assert list(files.items()) == [
        (("memory", "memory.limit_in_bytes"), str(64 * MiB)),
        (("memory", "memory.memsw.limit_in_bytes"), str(128 * MiB)),  # written after memory
    ]


def test_v1_memory_without_swap_accounting():
    files = v1.files_for(Limits(memory=64 * MiB), swap_accounting=False)
    assert files == {("memory", "memory.limit_in_bytes"): str(64 * MiB)}
    # an explicit -1 is the default anyway, so it needs no memsw file
    files = v1.files_for(Limits(memory=64 * MiB, memory_swap=-1), swap_accounting=False)
    assert ("memory", "memory.memsw.limit_in_bytes") not in files


def test_v1_memory_swap():
    files = v1.files_for(Limits(memory=64 * MiB, memory_swap=100 * MiB))
    assert files["memory", "memory.memsw.limit_in_bytes"] == str(100 * MiB)
    files = v1.files_for(Limits(memory=64 * MiB, memory_swap=-1))
    assert files["memory", "memory.memsw.limit_in_bytes"] == "-1"


@pytest.mark.parametrize("cpus, quota", [(1.5, "150000"), (0.1, "10000"), (2, "200000"), (0.01, "1000")])
def test_v1_cpus(cpus, quota):
    assert v1.files_for(Limits(cpus=cpus)) == {
        ("cpu", "cpu.cfs_period_us"): "100000",
        ("cpu", "cpu.cfs_quota_us"): quota,
    }


def test_v1_shares_and_clamping():
    assert v1.files_for(Limits(cpu_shares=512)) == {("cpu", "cpu.shares"): "512"}
    assert v1.files_for(Limits(cpu_shares=1)) == {("cpu", "cpu.shares"): "2"}
    assert v1.files_for(Limits(cpu_shares=10**6)) == {("cpu", "cpu.shares"): "262144"}


def test_v1_cpuset_and_pids():
    files = v1.files_for(Limits(cpuset_cpus="0-1", cpuset_mems="0", pids_limit=42))
    assert files == {
        ("cpuset", "cpuset.cpus"): "0-1",
        ("cpuset", "cpuset.mems"): "0",
        ("pids", "pids.max"): "42",
    }
    assert v1.files_for(Limits(pids_limit=-1)) == {("pids", "pids.max"): "max"}
    assert v1.files_for(Limits(pids_limit=0)) == {("pids", "pids.max"): "max"}


def test_v1_no_limits_no_files():
    assert v1.files_for(Limits()) == {}


def test_v1_every_file_names_its_flag():
    lim = parse_limits(
        memory="64m", memory_swap="128m", cpus="1", cpu_shares="100", cpuset_cpus="0", cpuset_mems="0", pids_limit="5"
    )
    for _ctrl, name in v1.files_for(lim):
        assert v1.FLAG_OF_FILE[name].startswith("--")


# -- translation: v2 ---------------------------------------------------------


def test_v2_memory_and_swap():
    assert v2.files_for(Limits(memory=64 * MiB)) == {
        "memory.max": str(64 * MiB),
        "memory.swap.max": str(64 * MiB),  # docker: memory+swap = 2 x memory
    }
    assert v2.files_for(Limits(memory=64 * MiB), swap_accounting=False) == {"memory.max": str(64 * MiB)}
    files = v2.files_for(Limits(memory=64 * MiB, memory_swap=100 * MiB))
    assert files["memory.swap.max"] == str(36 * MiB)  # swap alone = total - memory
    files = v2.files_for(Limits(memory=64 * MiB, memory_swap=64 * MiB))
    assert files["memory.swap.max"] == "0"
    files = v2.files_for(Limits(memory=64 * MiB, memory_swap=-1))
    assert files["memory.swap.max"] == "max"


def test_v2_cpu_max():
    assert v2.files_for(Limits(cpus=1.5)) == {"cpu.max": "150000 100000"}
    assert v2.files_for(Limits(cpus=0.5)) == {"cpu.max": "50000 100000"}


@pytest.mark.parametrize("shares, weight", [(2, 1), (1024, 39), (512, 20), (262144, 10000), (1, 1), (10**6, 10000)])
def test_v2_shares_to_weight(shares, weight):
    # weight = 1 + ((shares - 2) * 9999) / 262142, on shares clamped to 2..262144
    assert v2.shares_to_weight(shares) == weight
    assert v2.files_for(Limits(cpu_shares=shares)) == {"cpu.weight": str(weight)}


def test_v2_cpuset_and_pids():
    assert v2.files_for(Limits(cpuset_cpus="0,1", cpuset_mems="0", pids_limit=7)) == {
        "cpuset.cpus": "0,1",
        "cpuset.mems": "0",
        "pids.max": "7",
    }
    assert v2.files_for(Limits(pids_limit=-1)) == {"pids.max": "max"}


def test_v2_every_file_names_its_flag():
    lim = parse_limits(
        memory="64m", memory_swap="128m", cpus="1", cpu_shares="100", cpuset_cpus="0", cpuset_mems="0", pids_limit="5"
    )
    assert set(v2.files_for(lim)) == set(v2.FLAG_OF_FILE)


def test_required_controllers():
    assert cgroups.required_controllers(Limits()) == {}
    assert cgroups.required_controllers(Limits(pids_limit=-1)) == {}
    assert cgroups.required_controllers(Limits(memory=1, cpus=1.0, cpuset_mems="0", pids_limit=3)) == {
        "memory": "--memory",
        "cpu": "--cpus",
        "cpuset": "--cpuset-mems",
        "pids": "--pids-limit",
    }


# -- host checks against fake trees ------------------------------------------


def _fake_v1(tmp_path, controllers=("cpu", "cpuacct", "cpuset", "memory", "pids"), memsw=True):
    hiers = []
    for ctrl in controllers:
        root = tmp_path / ctrl
        root.mkdir()
        (root / "cgroup.procs").write_text("")
        hiers.append(v1.Hierarchy(ctrl, str(root), (ctrl,)))
    if "cpu" in controllers:
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    if "memory" in controllers and memsw:
        (tmp_path / "memory" / "memory.memsw.limit_in_bytes").write_text("0\n")
    if "cpuset" in controllers:
        (tmp_path / "cpuset" / "cpuset.effective_cpus").write_text("0-1\n")
        (tmp_path / "cpuset" / "cpuset.effective_mems").write_text("0\n")
    return hiers


def test_v1_check_passes_on_capable_host(tmp_path):
    lim = parse_limits(memory="64m", memory_swap="1g", cpus="1", cpuset_cpus="1", cpuset_mems="0", pids_limit="9")
    v1.check(lim, _fake_v1(tmp_path))


def test_v1_check_missing_controller(tmp_path):
    hiers = _fake_v1(tmp_path, controllers=("cpu", "memory"))
    with pytest.raises(CgroupError, match="--pids-limit needs the pids cgroup controller"):
        v1.check(Limits(pids_limit=5), hiers)
    v1.check(Limits(pids_limit=-1), hiers)  # unlimited needs nothing


def test_v1_check_swap_accounting(tmp_path):
    hiers = _fake_v1(tmp_path, memsw=False)
    with pytest.raises(CgroupError, match="--memory-swap needs swap accounting"):
        v1.check(Limits(memory=64 * MiB, memory_swap=128 * MiB), hiers)
    v1.check(Limits(memory=64 * MiB, memory_swap=-1), hiers)
    v1.check(Limits(memory=64 * MiB), hiers)


def test_v1_check_cfs_bandwidth(tmp_path):
    hiers = _fake_v1(tmp_path)
    os.unlink(tmp_path / "cpu" / "cpu.cfs_quota_us")
    with pytest.raises(CgroupError, match="--cpus needs CFS bandwidth"):
        v1.check(Limits(cpus=1.0), hiers)


def test_v1_check_cpuset_nodes_exist(tmp_path):
    hiers = _fake_v1(tmp_path)
    with pytest.raises(CgroupError, match=r"--cpuset-cpus '0-3'.*available: 0-1"):
        v1.check(Limits(cpuset_cpus="0-3"), hiers)
    with pytest.raises(CgroupError, match="memory nodes are not available"):
        v1.check(Limits(cpuset_mems="1"), hiers)


def test_check_cpus_against_online():
    cgroups.check_cpus(2.0, 2)
    cgroups.check_cpus(0.01, 1)
    with pytest.raises(CgroupError, match="range of CPUs is from 0.01 to 2.00"):
        cgroups.check_cpus(3, 2)
    with pytest.raises(CgroupError, match="only 1 CPU available"):
        cgroups.check_cpus(0.001, 1)


def test_check_rejects_more_cpus_than_online():
    with pytest.raises(CgroupError, match="--cpus"):
        cgroups.check(Limits(cpus=float(cgroups.online_cpus() + 1)))


def test_check_empty_limits_is_free():
    cgroups.check(Limits())


def _fake_v2(tmp_path, controllers="cpuset cpu io memory hugetlb pids"):
    (tmp_path / "cgroup.controllers").write_text(controllers + "\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    (tmp_path / "cpuset.cpus.effective").write_text("0-3\n")
    (tmp_path / "cpuset.mems.effective").write_text("0\n")
    return str(tmp_path)


def test_v2_check(tmp_path):
    root = _fake_v2(tmp_path, "cpu memory")
    v2.check(Limits(memory=64 * MiB, cpus=1.0), root, "cocin")
    with pytest.raises(CgroupError, match="--pids-limit needs the pids cgroup controller"):
        v2.check(Limits(pids_limit=3), root, "cocin")
    with pytest.raises(CgroupError, match="--cpuset-cpus needs the cpuset"):
        v2.check(Limits(cpuset_cpus="0"), root, "cocin")


def test_v2_check_cpuset_and_swap(tmp_path):
    root = _fake_v2(tmp_path)
    v2.check(Limits(cpuset_cpus="0-3"), root, "cocin")
    with pytest.raises(CgroupError, match="--cpuset-cpus '4'"):
        v2.check(Limits(cpuset_cpus="4"), root, "cocin")
    parent = tmp_path / "cocin"
    parent.mkdir()
    (parent / "memory.max").write_text("max\n")  # memory on, but no memory.swap.max
    with pytest.raises(CgroupError, match="--memory-swap needs swap accounting"):
        v2.check(Limits(memory=64 * MiB, memory_swap=128 * MiB), root, "cocin")
    (parent / "memory.swap.max").write_text("max\n")
    v2.check(Limits(memory=64 * MiB, memory_swap=128 * MiB), root, "cocin")


def test_v2_enable_controllers_only_writes_missing_ones(tmp_path, monkeypatch):
    root = _fake_v2(tmp_path, "cpuset cpu io memory pids")
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    written = []
    monkeypatch.setattr(v2, "write_text", lambda path, value: written.append(value))
    v2.enable_controllers(root, {})
    assert written == ["+cpuset", "+pids"]


def test_v2_enable_controllers_failure_fatal_only_when_needed(tmp_path, monkeypatch):
    root = _fake_v2(tmp_path, "cpu memory")

    def refuse(path, value):
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(v2, "write_text", refuse)
    v2.enable_controllers(root, {})
    with pytest.raises(CgroupError, match="--memory: cannot enable the memory controller"):
        v2.enable_controllers(root, {"memory": "--memory"})


# -- handles, reading, and directory handling on fake trees --------------------


def test_handle_on_missing_cgroup_is_empty(tmp_path):
    hiers = [
        v1.Hierarchy("memory", str(tmp_path / "m"), ("memory",)),
        v1.Hierarchy("pids", str(tmp_path / "p"), ("pids",)),
    ]
    for cg in (v1.open_existing("gone", "cocin", hiers), v2.open_existing("gone", "cocin", str(tmp_path))):
        assert not cg.exists()
        assert cg.procs() == []
        assert cg.oom_killed() is False
        assert cg.stats() == {"memory_usage": 0, "memory_limit": None, "cpu_usage_ns": 0, "pids": 0}
        cg.add(os.getpid())  # no directory: nothing to join
        cg.destroy()
        cg.destroy()


def test_v1_stats_and_oom(tmp_path):
    for name in ("memory", "cpuacct", "pids"):
        (tmp_path / name / "cocin" / "c1").mkdir(parents=True)
    hiers = [v1.Hierarchy(n, str(tmp_path / n), (n,)) for n in ("memory", "cpuacct", "pids")]
    cg = v1.open_existing("c1", "cocin", hiers)
    mem = tmp_path / "memory" / "cocin" / "c1"
    (mem / "memory.usage_in_bytes").write_text("5000000\n")
    (mem / "memory.stat").write_text("cache 10\ntotal_inactive_file 1000000\n")
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    (tmp_path / "cpuacct" / "cocin" / "c1" / "cpuacct.usage").write_text("123456789\n")
    (tmp_path / "pids" / "cocin" / "c1" / "pids.current").write_text("3\n")
    assert cg.stats() == {"memory_usage": 4000000, "memory_limit": None, "cpu_usage_ns": 123456789, "pids": 3}
    assert cg.oom_killed() is False
    (mem / "memory.limit_in_bytes").write_text("67108864\n")
    assert cg.stats()["memory_limit"] == 64 * MiB
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert cg.oom_killed() is True
    # kernels before 4.13 have no oom_kill line: fall back on failcnt
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")
    (mem / "memory.failcnt").write_text("0\n")
    assert cg.oom_killed() is False
    (mem / "memory.failcnt").write_text("12\n")
    assert cg.oom_killed() is True


def test_v2_stats_and_oom(tmp_path):
    d = tmp_path / "cocin" / "c2"
    d.mkdir(parents=True)
    cg = v2.open_existing("c2", "cocin", str(tmp_path))
    (d / "memory.current").write_text("3000\n")
    (d / "memory.stat").write_text("anon 2000\ninactive_file 1000\n")
    (d / "memory.max").write_text("max\n")
    (d / "cpu.stat").write_text("usage_usec 250\nuser_usec 200\n")
    (d / "cgroup.procs").write_text("10\n11\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert cg.stats() == {"memory_usage": 2000, "memory_limit": None, "cpu_usage_ns": 250000, "pids": 2}
    assert cg.procs() == [10, 11]
    assert cg.oom_killed() is False
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert cg.oom_killed() is True


def test_make_dirs_runs_prepare_parent_first(tmp_path):
    seen = []
    path = cgroups.make_dirs(str(tmp_path), "cocin", "abc", seen.append)
    assert path == str(tmp_path / "cocin" / "abc")
    assert seen == [str(tmp_path / "cocin"), path]
    # a second call finds everything in place and still prepares each level
    assert cgroups.make_dirs(str(tmp_path), "cocin", "abc") == path


def test_make_dirs_recreates_a_parent_removed_meanwhile(tmp_path):
    # Another cocin's destroy() removes the empty parent between our two mkdirs.
    removed = []

    def prepare(path):
        if path.endswith("/cocin") and not removed:
            os.rmdir(path)
            removed.append(path)

    path = cgroups.make_dirs(str(tmp_path), "cocin", "abc", prepare)
    assert removed and os.path.isdir(path)


def test_parent_name_from_environment(monkeypatch):
    monkeypatch.delenv("COCIN_CGROUP_PARENT", raising=False)
    assert cgroups.parent_name() == "cocin"
    monkeypatch.setenv("COCIN_CGROUP_PARENT", "cocin-test")
    assert cgroups.parent_name() == "cocin-test"
    monkeypatch.setenv("COCIN_CGROUP_PARENT", "../etc")
    with pytest.raises(CgroupError, match="COCIN_CGROUP_PARENT"):
        cgroups.parent_name()


@pytest.mark.parametrize("cid", ["", "a/b", "..", "."])
def test_container_id_must_be_one_component(cid):
    with pytest.raises(CgroupError, match="invalid container id"):
        cgroups.create(cid, Limits())
