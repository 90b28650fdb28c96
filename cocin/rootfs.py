"""The container's filesystem: overlay layers, volumes, /proc, /dev, /sys, pivot_root, masks.

Everything here runs in the container's process, *inside its new mount
namespace*, before the user's command. Mounts made in a mount namespace
vanish with it: when the container's last process exits, the kernel detaches
its overlay, volumes and /proc, so no mount of a container is ever left on
the host, whatever gets killed when.

Two ideas run through the module:

* **Mount targets are opened, not named.** A target path inside the
  container's root is resolved with the root as ``/`` (:func:`inside`), then
  walked one name at a time with ``openat(O_PATH|O_NOFOLLOW)`` from a
  directory descriptor, and the mount goes onto ``/proc/self/fd/N``, as runc
  does. A symbolic link swapped in meanwhile (by a container sharing a
  volume) makes the walk fail instead of leading the mount onto the host.
* **Confinement by mounts**, as Docker does by default: ``/sys`` read-only,
  kernel files that leak host information *masked* (``/dev/null`` bound over
  files, an empty read-only tmpfs over directories), the ``/proc`` knobs
  that change the host made *read-only* (bound onto themselves, remounted
  read-only), only a few device nodes in ``/dev``. These mounts hold because
  the container's command runs without ``CAP_SYS_ADMIN``: it may not unmount
  or remount them.

The knobs a container may add (--tmpfs, --device, --privileged's /dev,
--sysctl) live in rootfs_knobs.py, imported only when used.
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
from .state import CocinError

# (name, major, minor): the device nodes every container gets, as in Docker.
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))

# Docker's defaults (moby oci/defaults.go): masked, they read as empty.
MASKED_PATHS = (
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
)
# moby#49560: per-CPU thermal throttling counters are a side channel too; one per CPU.
CPU_DIR, THERMAL = "/sys/devices/system/cpu", "thermal_throttle"
# ... and read-only: the kernel knobs under them act on the whole host.
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# statvfs(3) f_flag bits -> the mount flags a read-only remount must keep:
# the kernel refuses to clear a flag the mount was "locked" with, and a bind
# remount that left them out would quietly drop nosuid/nodev/noexec.
ST_NOSUID, ST_NODEV, ST_NOEXEC = 2, 4, 8
ST_NOATIME, ST_NODIRATIME, ST_RELATIME = 1024, 2048, 4096
KEPT_FLAGS = (
    (ST_NOSUID, MS_NOSUID),
    (ST_NODEV, MS_NODEV),
    (ST_NOEXEC, MS_NOEXEC),
    (ST_NOATIME, libc.MS_NOATIME),
    (ST_NODIRATIME, libc.MS_NODIRATIME),
    (ST_RELATIME, libc.MS_RELATIME),
)

O_PATH_DIR = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC


def make_mounts_private() -> None:
    """Stop mount events from propagating back to the host.

    On hosts where ``/`` is a shared mount (systemd makes it so), a mount in
    the new namespace would otherwise appear in the host's, and
    ``pivot_root`` refuses to work (EINVAL) with a shared parent mount.
    """
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)


def mount_overlay(lower: str, upper: str, work: str, merged: str) -> None:
    """Stack a writable ``upper`` directory on the read-only image layers ``lower``.

    ``lower`` is overlay's ``lowerdir``: the image's layer directories, top
    first, separated by ``:``. Reads fall through the layers; writes land in
    ``upper`` (a deleted image file becomes a "whiteout" there), so every
    container shares one image. The mount options must fit in one page, so
    layers that sit in one directory (cocin's ``l/`` links) are named relative
    to it: the mount runs with that directory as the working directory.
    """
    dirs = lower.split(":")
    base = os.path.dirname(dirs[0])
    if len(dirs) > 1 and all(os.path.dirname(d) == base for d in dirs):
        cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
        try:
            os.chdir(base)
            libc.mount(
                "overlay",
                merged,
                "overlay",
                0,
                "lowerdir={},upperdir={},workdir={}".format(":".join(os.path.basename(d) for d in dirs), upper, work),
            )
        finally:
            os.fchdir(cwd)
            os.close(cwd)
        return
    libc.mount("overlay", merged, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}")


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


# --- mount targets, by file descriptor ---------------------------------------------


def fd_path(fd: int) -> str:
    """The path that names what ``fd`` is open on, for calls that take no fd (mount)."""
    return f"/proc/self/fd/{fd}"


def _open_dir(parent_fd: int, name: str, path: str) -> int:
    """An ``O_PATH`` fd of the directory ``name`` in ``parent_fd``, made if missing.

    ``O_NOFOLLOW|O_DIRECTORY``: a symbolic link (or a file) there is an error,
    never followed.
    """
    for _ in range(3):
        try:
            return os.open(name, O_PATH_DIR, dir_fd=parent_fd)
        except FileNotFoundError:
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
            except FileExistsError:
                pass
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                raise CocinError(
                    f"mount target {path}: {name} is not a directory (a symbolic "
                    "link or file appeared while it was set up)"
                ) from None
            raise
    raise CocinError(f"mount target {path}: {name} keeps disappearing")


def _walk(root_fd: int, parts: list[str], path: str) -> int:
    """Open (or make) each directory of ``parts`` below ``root_fd``; the last one's fd."""
    fd = os.dup(root_fd)
    try:
        for name in parts:
            nxt = _open_dir(fd, name, path)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _resolved(root: str, path: str) -> list[str]:
    """The names of container path ``path`` below the root, links resolved (none left)."""
    rel = os.path.relpath(inside(root, path), root)
    return [] if rel == "." else rel.split("/")


def open_parent(root_fd: int, root: str, path: str) -> tuple[int, str]:
    """``(fd of the parent directory, last name)`` of container path ``path``.

    The path is resolved with the container's root as ``/`` (:func:`inside`,
    a link at the last name included), then each directory on the way is
    opened (or made) without following links. The caller closes the fd.
    """
    parts = _resolved(root, path)
    if not parts:
        raise CocinError(f"invalid mount target {path}: it cannot be the container's root")
    return _walk(root_fd, parts[:-1], path), parts[-1]


def open_dir_in(root_fd: int, root: str, path: str) -> int:
    """The fd of directory ``path`` of the container (made if missing); the caller closes it."""
    return _walk(root_fd, _resolved(root, path), path)


class TargetIsLink(CocinError):
    """The last name of a mount target is a symbolic link (never followed by fd)."""


def open_target(parent_fd: int, name: str, path: str, is_dir: bool) -> int:
    """An ``O_PATH`` fd of the mount target ``name`` (made if missing), never a link."""
    if is_dir:
        return _open_dir(parent_fd, name, path)
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    except FileNotFoundError:
        try:  # O_EXCL|O_NOFOLLOW: made here, or an error; never opened through a link
            os.close(
                os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent_fd
                )
            )
        except FileExistsError:
            pass
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        os.close(fd)
        if stat.S_ISLNK(mode):
            raise TargetIsLink(f"cannot mount a file on {path}: it became a symbolic link")
        raise CocinError(f"cannot mount a file on {path}: it is a directory in the container")
    return fd


def mount_in(
    root_fd: int,
    root: str,
    path: str,
    source: str | None,
    fstype: str | None,
    flags: int,
    data: str | None = None,
    is_dir: bool = True,
    parent: int | None = None,
) -> tuple[int, str]:
    """Mount onto container path ``path``, by fd; returns ``(parent fd, name)`` (caller closes).

    ``parent``: the fd of the target's directory, when the caller has it open
    already (the fd returned is then a duplicate of it).
    """
    if parent is not None:
        parent, name = os.dup(parent), path.rsplit("/", 1)[-1]
    else:
        parent, name = open_parent(root_fd, root, path)
    try:
        fd = open_target(parent, name, path, is_dir)
        try:
            libc.mount(source, fd_path(fd), fstype, flags, data)
        finally:
            os.close(fd)
    except BaseException:
        os.close(parent)
        raise
    return parent, name


def kept_flags(f_flag: int) -> int:
    """The MS_* flags a remount must repeat, from a mount's statvfs ``f_flag``."""
    return sum(ms for st, ms in KEPT_FLAGS if f_flag & st)


def bind_in(root_fd: int, root: str, source: str, path: str, readonly: bool = False, parent: int | None = None) -> None:
    """Make host ``source`` visible at container path ``path``.

    A read-only bind needs a second call: a bind mount takes the flags of
    its source mount and ignores ``MS_RDONLY``, so it is remounted
    (``MS_BIND|MS_REMOUNT|MS_RDONLY``) keeping the flags it has. The remount
    goes through the new mount itself: the name, looked up again, now leads
    into it. ``parent``: see :func:`mount_in`; an image's link at the last
    name is then followed the slow way, with the container's root as ``/``.
    """
    is_dir = os.path.isdir(source)
    try:
        parent, name = mount_in(root_fd, root, path, source, None, MS_BIND | MS_REC, is_dir=is_dir, parent=parent)
    except TargetIsLink:
        if parent is None:
            raise
        parent, name = mount_in(root_fd, root, path, source, None, MS_BIND | MS_REC, is_dir=is_dir)
    try:
        if readonly:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            try:
                libc.mount(
                    None, fd_path(fd), None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept_flags(os.statvfs(fd).f_flag)
                )
            finally:
                os.close(fd)
    finally:
        os.close(parent)


# --- the kernel's filesystems ------------------------------------------------------


def mount_proc(root_fd: int, root: str) -> None:
    """A /proc of the new PID namespace: it lists only the container's processes."""
    parent, _ = mount_in(root_fd, root, "/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.close(parent)


def mount_sys(root_fd: int, root: str, privileged: bool = False) -> None:
    """/sys read-only: a container may look at devices, not reconfigure them.

    Without ``CAP_SYS_ADMIN`` it can neither remount it nor mount another
    sysfs. ``--privileged`` gets it read-write, as in Docker.
    """
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY)
    parent, _ = mount_in(root_fd, root, "/sys", "sysfs", "sysfs", flags)
    os.close(parent)


def mount_dev(root_fd: int, root: str) -> int:
    """A fresh /dev: a tmpfs with only the harmless device nodes; returns its fd.

    ``/dev/pts`` is a *new instance* of devpts, so the container sees only
    its own pseudo-terminals, and ``/dev/ptmx`` points at that instance.
    ``/dev/mqueue`` shows the POSIX message queues of the container's own
    IPC namespace, as in Docker. Nodes are made with ``mknodat`` in the new
    tmpfs through its fd (``mknod`` applies the umask, hence the chmod).
    """
    parent, name = mount_in(root_fd, root, "/dev", "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    try:
        dev = os.open(name, O_PATH_DIR, dir_fd=parent)  # the new tmpfs: the name leads into it
    finally:
        os.close(parent)
    try:
        for node, major, minor in DEVICES:
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor), dir_fd=dev)
            os.chmod(node, 0o666, dir_fd=dev)
        here = fd_path(dev)
        for sub in ("pts", "shm", "mqueue"):
            os.mkdir(sub, 0o755, dir_fd=dev)
        libc.mount(
            "devpts", f"{here}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"
        )
        libc.mount("shm", f"{here}/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k")
        libc.mount("mqueue", f"{here}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        os.symlink("pts/ptmx", "ptmx", dir_fd=dev)
        for src, link in (
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ):
            os.symlink(src, link, dir_fd=dev)
    except BaseException:
        os.close(dev)
        raise
    return dev


# --- after pivot_root: inside the container's own view -------------------------------


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


def make_readonly_paths(paths: tuple = READONLY_PATHS) -> None:
    """Bind each path onto itself, then remount that bind read-only.

    /proc is mounted nosuid,nodev,noexec, and the remount keeps them.
    """
    for path in paths:
        try:
            libc.mount(path, path, None, MS_BIND | MS_REC)
        except FileNotFoundError:
            continue  # this kernel has no such file
        libc.mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def thermal_paths() -> list[str]:
    """``/sys/devices/system/cpu/cpuN/thermal_throttle`` of every CPU that has one."""
    try:
        names = os.listdir(CPU_DIR)
    except OSError:
        return []
    return [
        p for p in (f"{CPU_DIR}/{n}/{THERMAL}" for n in names if n[3:].isdigit() and n[:3] == "cpu") if os.path.isdir(p)
    ]


def mask_paths(paths: tuple = MASKED_PATHS) -> None:
    """Hide kernel files: ``/dev/null`` bound over a file, an empty read-only tmpfs
    over a directory (binding a file onto a directory fails with ENOTDIR)."""
    for path in (*paths, *thermal_paths()):
        try:
            libc.mount("/dev/null", path, None, MS_BIND)
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            libc.mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def make_root_readonly() -> None:
    """``--read-only``: the container's own ``/`` (the overlay) read-only.

    Only that mount: volumes, /dev, /dev/shm, /proc and ``--tmpfs`` mounts
    are mounts of their own and stay as they are.
    """
    libc.mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY)


# --- all of it ---------------------------------------------------------------------------


def _depth(path: str) -> int:
    return len([p for p in path.split("/") if p])


def setup(cfg: dict, container_dir: str) -> None:
    """The whole filesystem of a container, in order; runs inside its namespaces.

    ``cfg`` is the record's config: ``lower`` (image layer), ``volumes``
    (``[host, container, readonly]``), ``tmpfs``, ``devices``, ``sysctls``,
    ``privileged``, ``systempaths_unconfined``, ``read_only``.
    """
    merged = os.path.join(container_dir, "rootfs")
    privileged = bool(cfg.get("privileged"))
    knobs = None
    if privileged or cfg.get("tmpfs") or cfg.get("devices") or cfg.get("sysctls"):
        from . import rootfs_knobs as knobs  # now: the host's files are gone after pivot_root
    make_mounts_private()
    mount_overlay(cfg["lower"], os.path.join(container_dir, "upper"), os.path.join(container_dir, "work"), merged)
    root_fd = os.open(merged, O_PATH_DIR)
    try:
        etc = open_dir_in(root_fd, merged, "/etc")  # opened once for the three files
        try:
            for name in ("hostname", "hosts", "resolv.conf"):
                src = os.path.join(container_dir, name)
                if os.path.exists(src):
                    bind_in(root_fd, merged, src, "/etc/" + name, parent=etc)
        finally:
            os.close(etc)
        mount_proc(root_fd, merged)
        dev = mount_dev(root_fd, merged)
        try:
            if privileged:
                knobs.copy_host_devices(dev)
        finally:
            os.close(dev)
        mount_sys(root_fd, merged, privileged)
        # User mounts, parents before children (as Docker sorts them).
        mounts = [(ctr, "volume", (host, ro)) for host, ctr, ro in cfg.get("volumes", [])]
        mounts += [(path, "tmpfs", opts) for path, opts in cfg.get("tmpfs") or []]
        for ctr, kind, arg in sorted(mounts, key=lambda m: _depth(m[0])):
            if kind == "volume":
                bind_in(root_fd, merged, arg[0], ctr, arg[1])
            else:
                knobs.mount_tmpfs(root_fd, merged, ctr, arg)
        if cfg.get("devices"):  # after the mounts, as runc: a node under a volume stays visible
            knobs.make_devices(root_fd, merged, cfg["devices"])
        if cfg.get("read_only"):  # the working directory cannot be made later
            os.close(open_dir_in(root_fd, merged, cfg.get("workdir") or "/"))
    finally:
        os.close(root_fd)
    pivot_into(merged)
    # runc's order: sysctls, then /proc/sys read-only, then the masks.
    if cfg.get("sysctls"):
        knobs.write_sysctls(cfg["sysctls"], cfg.get("network_mode") == "host")
    if not (privileged or cfg.get("systempaths_unconfined")):
        make_readonly_paths()
        mask_paths()
    if cfg.get("read_only"):
        make_root_readonly()
