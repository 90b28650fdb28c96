"""Unit tests of rootfs: container paths resolved with the container's root as / and opened
without following links, --tmpfs options, sysctl keys, the flags a read-only remount keeps.

Pure logic on a temporary directory tree: no root, no mounts."""

from __future__ import annotations

import errno
import os

import pytest

from cocin import libc
from cocin.rootfs import (
    KEPT_FLAGS,
    MASKED_PATHS,
    READONLY_PATHS,
    TargetIsLink,
    _walk,
    inside,
    kept_flags,
    open_dir_in,
    open_parent,
    open_target,
)
from cocin.rootfs_knobs import sysctl_path, tmpfs_options
from cocin.state import CocinError


@pytest.fixture
def tree(tmp_path):
    """An image-like tree with the links a hostile or careless image may hold."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "srv" / "www").mkdir(parents=True)
    os.symlink("/etc", root / "abs")  # absolute: the container's /etc
    os.symlink("srv/www", root / "rel")  # relative to where it is
    os.symlink("../../../../../..", root / "up")  # climbs: stops at the root
    os.symlink(str(tmp_path / "outside"), root / "host")  # a host path, as seen from the container
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    return str(root)


def test_plain_paths(tree):
    assert inside(tree, "/etc/hosts") == os.path.join(tree, "etc/hosts")
    assert inside(tree, "/new/dir/") == os.path.join(tree, "new/dir")
    assert inside(tree, "/") == tree


def test_links_resolve_inside_the_root(tree):
    assert inside(tree, "/abs/hostname") == os.path.join(tree, "etc/hostname")
    assert inside(tree, "/rel/index.html") == os.path.join(tree, "srv/www/index.html")
    assert inside(tree, "/up/etc") == os.path.join(tree, "etc")
    assert inside(tree, "/srv/../../../etc") == os.path.join(tree, "etc")


def test_a_link_to_a_host_path_stays_in_the_root(tree, tmp_path):
    resolved = inside(tree, "/host/sub")
    assert resolved == os.path.join(tree, str(tmp_path / "outside").lstrip("/"), "sub")
    assert resolved.startswith(tree + "/")


def test_link_loops_are_refused(tree):
    with pytest.raises(OSError) as e:
        inside(tree, "/loop1/x")
    assert e.value.errno == errno.ELOOP


# --- mount targets opened by fd, never through a link (no root, no mounts) ----------


@pytest.fixture
def root_fd(tree):
    fd = os.open(tree, os.O_PATH | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def _name_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def test_open_parent_makes_missing_directories_inside_the_root(tree, root_fd):
    parent, name = open_parent(root_fd, tree, "/abs/new/deeper/leaf")
    try:
        assert name == "leaf"
        assert _name_of(parent) == os.path.join(tree, "etc/new/deeper")
    finally:
        os.close(parent)
    fd = open_dir_in(root_fd, tree, "/rel")
    assert _name_of(fd) == os.path.join(tree, "srv/www")
    os.close(fd)
    with pytest.raises(CocinError, match="root"):
        open_parent(root_fd, tree, "/up")  # resolves to the root itself


def test_a_link_swapped_in_after_resolution_is_refused(tree, root_fd, tmp_path):
    """inside() resolved the path; a link that appears afterwards (a racing
    container) makes the walk fail instead of leading outside the root."""
    victim = tmp_path / "victim"
    victim.mkdir()
    os.makedirs(os.path.join(tree, "vol/sub"))
    parent, name = open_parent(root_fd, tree, "/vol/sub/x")
    os.close(parent)
    os.rename(os.path.join(tree, "vol/sub"), os.path.join(tree, "vol/old"))
    os.symlink(str(victim), os.path.join(tree, "vol/sub"))
    with pytest.raises(CocinError, match="not a directory"):
        _walk(root_fd, ["vol", "sub", "x"], "/vol/sub/x")
    assert list(victim.iterdir()) == []  # nothing made through the link


def test_open_target_never_follows_the_last_name(tree, tmp_path):
    outside = tmp_path / "outside-file"
    outside.write_text("host")
    etc = os.open(os.path.join(tree, "etc"), os.O_PATH | os.O_DIRECTORY)
    try:
        os.symlink(str(outside), os.path.join(tree, "etc/hosts"))
        with pytest.raises(TargetIsLink):
            open_target(etc, "hosts", "/etc/hosts", is_dir=False)
        fd = open_target(etc, "hostname", "/etc/hostname", is_dir=False)  # made, empty
        assert _name_of(fd) == os.path.join(tree, "etc/hostname")
        os.close(fd)
        with pytest.raises(CocinError, match="not a directory"):
            open_target(etc, "hosts", "/etc/hosts", is_dir=True)
        root = os.open(tree, os.O_PATH)
        try:
            with pytest.raises(CocinError, match="is a directory"):
                open_target(root, "etc", "/etc", is_dir=False)
        finally:
            os.close(root)
    finally:
        os.close(etc)
    assert outside.read_text() == "host"


# --- option parsing ----------------------------------------------------------------


def test_tmpfs_options_start_from_dockers_defaults():
    flags, data = tmpfs_options("")
    assert flags == libc.MS_NOEXEC | libc.MS_NOSUID | libc.MS_NODEV and data == ""
    flags, data = tmpfs_options("exec,size=64m,mode=1770,ro,uid=1000,size=128m")
    assert flags == libc.MS_NOSUID | libc.MS_NODEV | libc.MS_RDONLY
    assert data == "mode=1770,uid=1000,size=128m"  # the later size wins
    flags, _ = tmpfs_options("rw,suid,dev,noatime,sync,rprivate")
    assert flags == libc.MS_NOEXEC | libc.MS_NOATIME | libc.MS_SYNCHRONOUS


def test_kept_flags_map_statvfs_bits_to_mount_flags():
    assert kept_flags(0) == 0
    assert kept_flags(2 | 4 | 8) == libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC
    assert kept_flags(4096 | 1) == libc.MS_RELATIME  # ST_RELATIME is not MS_RELATIME; ST_RDONLY dropped
    assert len(KEPT_FLAGS) == 6


def test_sysctl_keys_become_proc_paths():
    assert sysctl_path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    assert sysctl_path("kernel.shm_rmid_forced") == "/proc/sys/kernel/shm_rmid_forced"
    for bad in ("net..x", "net.ipv4.", "../../etc", ""):
        with pytest.raises(CocinError):
            sysctl_path(bad)


def test_dockers_masked_and_readonly_paths():
    assert set(MASKED_PATHS) == {
        "/proc/asound",
        "/proc/acpi",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    }
    assert set(READONLY_PATHS) == {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
