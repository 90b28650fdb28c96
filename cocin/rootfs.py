"""The container's filesystem: overlay layers, volumes, /proc, /dev, /sys, pivot_root.

Everything here runs in the container's process, *inside its new mount
namespace*, before the user's command. Mounts made in a mount namespace
vanish with it: when the container's last process exits, the kernel detaches
its overlay, volumes and /proc, so no mount of a container is ever left on
the host, whatever gets killed when.
"""

from __future__ import annotations

import errno
import os
import stat

from . import libc
from .libc import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_STRICTATIME,
)

# (name, major, minor): the device nodes every container gets, as in Docker.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
           ("urandom", 1, 9), ("tty", 5, 0))


def make_mounts_private() -> None:
    """Stop mount events from propagating back to the host.

    On hosts where ``/`` is a shared mount (systemd makes it so), a mount in
    the new namespace would otherwise appear in the host's, and
    ``pivot_root`` refuses to work (EINVAL) with a shared parent mount.
    """
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_overlay(lower: str, upper: str, work: str, merged: str) -> None:
    """Stack a writable ``upper`` directory on the read-only image ``lower``.

    Reads fall through to the image; writes land in ``upper`` (a deleted image
    file becomes a "whiteout" there), so every container shares one image.
    """
    libc.mount("overlay", merged, "overlay", 0,
               f"lowerdir={lower},upperdir={upper},workdir={work}")


def inside(root: str, path: str, max_links: int = 40) -> str:
    """``path`` as the container will see it, as a host path under ``root``.

    Until ``pivot_root``, a symbolic link in the image still resolves against
    the *host's* ``/``: an image holding ``/data -> /etc`` would turn
    ``-v x:/data/y`` into a directory made, and a mount made, at the host's
    /etc/y. So the path is walked one name at a time and links are followed
    by hand, with ``root`` as ``/``; ``..`` never climbs above it. Names that
    do not exist yet are kept as they are (they will be made as directories).
    Linux 5.6 can do this in the kernel: ``openat2(RESOLVE_IN_ROOT)``.
    """
    todo = [p for p in path.split("/") if p]
    done: list[str] = []  # resolved names below root, none of them a link
    while todo:
        name = todo.pop(0)
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        host = os.path.join(root, *done, name)
        try:
            is_link = stat.S_ISLNK(os.lstat(host).st_mode)
        except FileNotFoundError:
            is_link = False
        if not is_link:
            done.append(name)
            continue
        max_links -= 1
        if max_links < 0:
            raise OSError(errno.ELOOP, f"too many symbolic links in {path}")
        target = os.readlink(host)
        if target.startswith("/"):
            done = []  # absolute: from the container's root
        todo = [p for p in target.split("/") if p] + todo
    return os.path.join(root, *done)


def bind(source: str, target: str, readonly: bool = False) -> None:
    """Make ``source`` visible at ``target`` too; a read-only bind needs a remount."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    libc.mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        libc.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def mount_proc(root: str) -> None:
    """A /proc of the new PID namespace: it lists only the container's processes."""
    target = inside(root, "/proc")
    os.makedirs(target, exist_ok=True)
    libc.mount("proc", target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_sys(root: str) -> None:
    """/sys read-only: a container may look at devices, not reconfigure them."""
    target = inside(root, "/sys")
    os.makedirs(target, exist_ok=True)
    libc.mount("sysfs", target, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def mount_dev(root: str) -> None:
    """A fresh /dev: a tmpfs with only the harmless device nodes.

    ``/dev/pts`` is a *new instance* of devpts, so the container sees only
    its own pseudo-terminals, and ``/dev/ptmx`` points at that instance.
    """
    dev = inside(root, "/dev")
    os.makedirs(dev, exist_ok=True)
    libc.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        path = os.path.join(dev, name)
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(path, 0o666)  # mknod applies the umask
    os.makedirs(os.path.join(dev, "pts"))
    libc.mount("devpts", os.path.join(dev, "pts"), "devpts", MS_NOSUID | MS_NOEXEC,
               "newinstance,ptmxmode=0666,mode=0620,gid=5")
    os.symlink("pts/ptmx", os.path.join(dev, "ptmx"))
    os.makedirs(os.path.join(dev, "shm"))
    libc.mount("shm", os.path.join(dev, "shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
               "mode=1777,size=65536k")
    os.makedirs(os.path.join(dev, "mqueue"))
    for src, name in (("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
                      ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr")):
        os.symlink(src, os.path.join(dev, name))


def pivot_into(root: str) -> None:
    """Make ``root`` the container's ``/`` and detach the host's tree.

    ``pivot_root(".", ".")`` stacks the old root on top of the new one at
    the same place; unmounting ``.`` (lazily, with its whole subtree) then
    removes the host's filesystem from the container's view for good.
    Unlike chroot, there is no way back up.
    """
    os.chdir(root)
    libc.pivot_root(".", ".")
    libc.umount2(".", MNT_DETACH)
    os.chdir("/")


def setup(cfg: dict, container_dir: str) -> None:
    """The whole filesystem of a container, in order; runs inside its namespaces.

    ``cfg`` is the record's config: ``lower`` (image layer), ``volumes``
    (``[host, container, readonly]``), ``hostname``.
    """
    merged = os.path.join(container_dir, "rootfs")
    make_mounts_private()
    mount_overlay(cfg["lower"], os.path.join(container_dir, "upper"),
                  os.path.join(container_dir, "work"), merged)
    for name in ("hostname", "hosts", "resolv.conf"):
        src = os.path.join(container_dir, name)
        if os.path.exists(src):
            bind(src, inside(merged, "/etc/" + name))
    for host, ctr, ro in cfg.get("volumes", []):
        bind(host, inside(merged, ctr), ro)
    mount_proc(merged)
    mount_dev(merged)
    mount_sys(merged)
    pivot_into(merged)
