"""End-to-end: the container's filesystem view and device access (issue 13).

Docker's masked and read-only paths, read-only /sys, the device allow-list
(devices cgroup on v1, an eBPF program on v2), --device, --privileged,
--security-opt systempaths=unconfined, --read-only, --tmpfs, --sysctl and
read-only volumes that stay read-only.

Every probe is harmless to the host: ``access(2)`` through a small static C
probe (busybox's ``test -w`` answers "yes" to root whatever the mount says),
mounts and remounts attempted inside the container's own mount namespace,
device nodes the container makes in its own /tmp and only opens, reads of
files the test wrote into its own temp dir. Nothing writes to /proc/sys,
sysrq, a device or a host file outside the test's temp dirs.

The remount and mount attempts fail because the container runs without
CAP_SYS_ADMIN (cocin/confine.py): the mounts made here only hold with it.
"""

from __future__ import annotations

import shlex

import pytest

PROBE_C = r"""
/* access_w PATH...: may this process open PATH for writing? access(2) reports
   EROFS for a read-only mount, even to root, and writes nothing. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        printf("%s %s\n", argv[i], access(argv[i], W_OK) == 0 ? "writable" : strerror(errno));
    return 0;
}
"""


@pytest.fixture(scope="module")
def probe(cocin_session):
    """The static ``access_w`` probe, built with gcc on the target; a -v argument for it."""
    host = cocin_session
    d = host.sh("mktemp -d /tmp/cocin-probe-XXXXXXXX").stdout.strip()
    try:
        if host.sh("command -v gcc").rc != 0:
            pytest.skip("gcc is needed to build the access(2) probe")
        r = host.sh(f"printf %s {shlex.quote(PROBE_C)} > {d}/probe.c && gcc -static -O2 -o {d}/access_w {d}/probe.c")
        if r.rc != 0:
            pytest.skip(f"cannot build a static probe: {r.stderr.strip()[:200]}")
        yield f"{d}/access_w:/probe/access_w:ro"
    finally:
        host.sh(f"rm -rf {shlex.quote(d)}")


def writable(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def mountpoints(cocin, *args: str) -> dict[str, str]:
    """Mount point -> "MOUNT_OPTIONS FSTYPE" inside a container run with ``args``."""
    out = cocin.ok("run", "--rm", *args, "busybox", "cat", "/proc/self/mountinfo").stdout
    table = {}
    for line in out.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        table[fields[4]] = f"{fields[5]} {right.split()[0]}"
    return table


def host_has(cocin, path: str) -> bool:
    return cocin.sh(f"test -e {shlex.quote(path)}").rc == 0


# --- defaults ----------------------------------------------------------------------------


def test_masked_paths_are_covered_and_empty(cocin):
    files = [p for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts") if host_has(cocin, p)]
    dirs = [p for p in ("/proc/acpi", "/sys/firmware") if host_has(cocin, p)]
    assert files and dirs, "this host has none of the masked paths the test reads"
    table = mountpoints(cocin)
    for p in files + dirs:
        assert p in table, f"{p} is not masked"
    assert all(table[d].startswith("ro,") and table[d].endswith("tmpfs") for d in dirs)
    script = "; ".join([f"echo {p} $(wc -c < {p})" for p in files] + [f"echo {d} $(ls -A {d} | wc -l)" for d in dirs])
    out = cocin.ok("run", "--rm", "busybox", "sh", "-c", script).stdout
    assert {ln.split()[0]: ln.split()[1] for ln in out.splitlines()} == {p: "0" for p in files + dirs}


def test_readonly_paths_and_sys(cocin, probe):
    paths = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/net/ipv4/ip_forward",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ]
    paths = [p for p in paths if host_has(cocin, p)]
    if host_has(cocin, "/proc/sysrq-trigger"):
        paths.append("/proc/sysrq-trigger")
    out = cocin.ok("run", "--rm", "-v", probe, "busybox", "/probe/access_w", *paths).stdout
    assert writable(out) == {p: "Read-only file system" for p in paths}
    table = mountpoints(cocin)
    for p in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"):
        assert table[p].startswith("ro,nosuid,nodev,noexec"), (p, table[p])
    assert table["/sys"].startswith("ro,")


def test_sys_cannot_be_remounted_or_mounted_again(cocin):
    """Without CAP_SYS_ADMIN: no remount of /sys, no second sysfs (tried in the container's namespace)."""
    r = cocin(
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "mount -o remount,rw /sys; echo remount=$?; mkdir /s; mount -t sysfs sysfs /s; echo mount=$?; "
        'awk \'$5 == "/sys" || $5 == "/s" {print $5, $6}\' /proc/self/mountinfo',
    )
    lines = r.stdout.splitlines()
    assert lines[:2] == ["remount=1", "mount=1"], r.stdout
    assert [ln.split()[0] for ln in lines[2:]] == ["/sys"] and lines[2].split()[1].startswith("ro,")


def test_device_nodes_outside_the_allow_list_cannot_be_opened(cocin):
    """mknod is allowed (Docker's 'c *:* m', 'b *:* m'); opening is what the cgroup refuses."""
    r = cocin(
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "mknod /tmp/kmsg c 1 11 && echo mknod-ok; head -c1 /tmp/kmsg; echo kmsg=$?; "
        "mknod /tmp/loop b 7 0 && head -c1 /tmp/loop; echo loop=$?; "
        "echo hi > /dev/null && echo null-ok; head -c4 /dev/zero | wc -c",
    )
    assert r.stdout.split() == ["mknod-ok", "kmsg=1", "loop=1", "null-ok", "4"], (r.stdout, r.stderr)
    assert r.stderr.count("Operation not permitted") == 2, r.stderr


def test_dev_holds_only_the_default_nodes_and_mqueue(cocin):
    table = mountpoints(cocin)
    assert table["/dev/mqueue"].endswith("mqueue")
    out = cocin.ok("run", "--rm", "busybox", "ls", "/dev").stdout.split()
    assert sorted(out) == sorted(
        [
            "fd",
            "full",
            "mqueue",
            "null",
            "ptmx",
            "pts",
            "random",
            "shm",
            "stderr",
            "stdin",
            "stdout",
            "tty",
            "urandom",
            "zero",
        ]
    )


@pytest.mark.parametrize("stub", ["1", "0"], ids=["stub", "python"])
def test_exec_joins_the_devices_cgroup(cocin, stub):
    """Both exec paths (static stub, Python setns) join the devices cgroup too."""
    if stub == "1" and cocin.sh(f"test -x {cocin.repo}/cocin/nsenter_stub").rc != 0:
        pytest.skip("the exec stub is not built (scripts/build_stub.sh)")
    cocin.ok("run", "-d", "--name", "devx", "busybox", "sleep", "300")
    try:
        cid = cocin.full_id("devx")
        main = cocin.sh(f"cat /proc/{cocin.record('devx')['pid']}/cgroup").stdout
        out = cocin.ok(
            "exec",
            "devx",
            "sh",
            "-c",
            "cat /proc/self/cgroup; mknod /tmp/k c 1 11; head -c1 /tmp/k; echo kmsg=$?",
            env={"COCIN_EXEC_STUB": stub},
        ).stdout
        if ":devices:" in main:  # v1: the container's own devices cgroup, joined by exec too
            line = next(ln for ln in out.splitlines() if ":devices:" in ln)
            assert line.endswith(f"/{cid}"), line
        assert "kmsg=1" in out.split()
    finally:
        cocin("rm", "-f", "devx")


def test_ro_volume_keeps_its_source_flags(cocin, target_tmp):
    """A :ro volume is remounted read-only keeping its source's nosuid/nodev/noexec;
    a tmpfs (nosuid,nodev here) as the source shows it."""
    src = target_tmp / "ro-src"
    cocin.sh(f"mkdir -p {src} && mount -t tmpfs -o nosuid,nodev,size=1m cocin-test {src} && echo kept > {src}/f")
    try:
        table = mountpoints(cocin, "-v", f"{src}:/data:ro")
        opts = table["/data"].split()[0].split(",")
        assert {"ro", "nosuid", "nodev"} <= set(opts), opts
    finally:
        cocin.sh(f"umount {src}")


def test_ro_volume_cannot_be_remounted_rw(cocin, target_tmp):
    """Without CAP_SYS_ADMIN the remount is refused; the host file stays unchanged."""
    f = target_tmp.write("vol/f", "original\n")
    r = cocin(
        "run",
        "--rm",
        "-v",
        f"{target_tmp / 'vol'}:/data:ro",
        "busybox",
        "sh",
        "-c",
        "mount -o remount,rw /data; mount -o remount,bind,rw /data; echo changed > /data/f; cat /data/f",
    )
    assert r.rc != 0 or "changed" not in r.stdout
    assert cocin.sh(f"cat {f}").stdout == "original\n"


# --- knobs ---------------------------------------------------------------------------------


def test_device_flag_makes_the_node_with_its_permissions(cocin):
    if not host_has(cocin, "/dev/loop-control"):
        pytest.skip("the host has no /dev/loop-control")
    r = cocin(
        "run",
        "--rm",
        "--device",
        "/dev/loop-control:/dev/lc:r",
        "--device",
        "/dev/full:/dev/mydev",
        "busybox",
        "sh",
        "-c",
        "ls -l /dev/lc | cut -c1; head -c0 /dev/lc && echo read-ok; (: > /dev/lc) 2>&1; head -c2 /dev/mydev | wc -c",
    )
    assert r.rc == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "c" and lines[1] == "read-ok"
    assert "Operation not permitted" in lines[2]  # write was not in the rule
    assert lines[3].strip() == "2"
    out = cocin.ok(
        "run",
        "--rm",
        "--device",
        "/dev/loop-control",
        "busybox",
        "sh",
        "-c",
        "head -c0 /dev/loop-control && echo same-path",
    ).stdout
    assert out == "same-path\n"
    r = cocin("run", "--rm", "--device", "/dev/no-such-device", "busybox", "true")
    assert r.rc == 125 and r.stderr.count("\n") == 1 and "/dev/no-such-device" in r.stderr


def test_privileged_sees_the_hosts_devices_and_a_writable_sys(cocin):
    host_devs = [p for p in ("/dev/kmsg", "/dev/loop0", "/dev/loop-control") if host_has(cocin, p)]
    assert host_devs, "the host has none of the device nodes the test looks for"
    table = mountpoints(cocin, "--privileged")
    assert table["/sys"].startswith("rw,")
    assert "/proc/keys" not in table and "/proc/sys" not in table
    out = cocin.ok(
        "run", "--rm", "--privileged", "busybox", "sh", "-c", " ".join(f"head -c0 {p} && echo {p};" for p in host_devs)
    ).stdout
    assert out.split() == host_devs


def test_systempaths_unconfined_unmasks(cocin, probe):
    confined = {"/proc/keys", "/proc/timer_list", "/proc/acpi", "/sys/firmware", "/proc/sys"}
    confined = {p for p in confined if host_has(cocin, p)}
    assert confined <= set(mountpoints(cocin))  # masked or read-only by default ...
    table = mountpoints(cocin, "--security-opt", "systempaths=unconfined")
    assert not confined & set(table)  # ... but not with the option
    assert table["/sys"].startswith("ro,")  # only the paths; /sys stays read-only
    out = cocin.ok(
        "run",
        "--rm",
        "--security-opt",
        "systempaths=unconfined",
        "-v",
        probe,
        "busybox",
        "sh",
        "-c",
        "wc -c < /proc/timer_list; /probe/access_w /proc/sys/kernel/core_pattern",
    ).stdout
    lines = out.splitlines()
    assert int(lines[0]) > 0 and lines[1] == "/proc/sys/kernel/core_pattern writable"


def test_read_only_root_with_tmpfs(cocin, target_tmp):
    vol = target_tmp / "rw-vol"
    r = cocin(
        "run",
        "--rm",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{vol}:/data",
        "-w",
        "/work/dir",
        "busybox",
        "sh",
        "-c",
        "touch /x 2>&1; touch /tmp/y && echo tmp-ok; echo v > /data/v && echo vol-ok; "
        "touch /dev/shm/z && echo shm-ok; pwd",
    )
    assert r.rc == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "Read-only file system" in lines[0]
    assert lines[1:] == ["tmp-ok", "vol-ok", "shm-ok", "/work/dir"]
    assert target_tmp.read("rw-vol/v") == "v\n"
    assert mountpoints(cocin, "--read-only")["/"].startswith("ro,")


def test_tmpfs_options_are_honoured(cocin):
    table = mountpoints(cocin, "--tmpfs", "/t1", "--tmpfs", "/run/t2:size=1m,mode=700,exec,uid=1")
    assert table["/t1"].split()[0].split(",")[:4] == ["rw", "nosuid", "nodev", "noexec"]
    assert set(table["/run/t2"].split()[0].split(",")) >= {"rw", "nosuid", "nodev"}
    assert "noexec" not in table["/run/t2"]
    out = cocin.ok(
        "run",
        "--rm",
        "--tmpfs",
        "/run/t2:size=1m,mode=700,uid=1",
        "busybox",
        "sh",
        "-c",
        "stat -c '%a %u' /run/t2; grep ' /run/t2 ' /proc/mounts",
    ).stdout
    assert out.splitlines()[0] == "700 1" and "size=1024k" in out


def test_sysctls_are_set_in_the_containers_namespaces_only(cocin):
    before = cocin.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced").stdout
    out = cocin.ok(
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--sysctl",
        "kernel.shm_rmid_forced=1",
        "busybox",
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/kernel/shm_rmid_forced",
    ).stdout
    assert out.split() == ["1", "1"]
    assert cocin.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced").stdout == before
    r = cocin("run", "--rm", "--sysctl", "net.ipv4.no_such_knob=1", "busybox", "true")
    assert r.rc == 125 and r.stderr.count("\n") == 1 and "net.ipv4.no_such_knob" in r.stderr
