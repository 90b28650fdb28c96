"""The filesystem knobs of ``run``: --tmpfs, --device, --privileged's /dev, --sysctl.

Imported by rootfs.setup only when a container uses one of them, so that the
default start does not pay for code it does not run.

* ``--tmpfs PATH[:OPTIONS]`` mounts a fresh tmpfs. mount(8) options are
  partly *flags* of the mount(2) call (``ro``, ``noexec``, ``nosuid``...:
  the VFS enforces them) and partly *data* the filesystem parses itself
  (tmpfs's ``size``, ``mode``, ``uid``...).
* ``--device HOST[:CTR[:rwm]]`` makes a device node in the container with
  the numbers of the host's (a node is only a name for a driver: major and
  minor); whether it may be opened is the device cgroup's decision
  (cocin/devices.py).
* ``--privileged`` copies every device node of the host's /dev.
* ``--sysctl KEY=VALUE`` writes a kernel parameter in /proc/sys, from inside
  the container: namespaced keys then change only the container's namespace.
"""

from __future__ import annotations

import os
import stat

from . import libc
from .libc import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME
from .rootfs import mount_in, open_parent
from .state import CocinError

# Names in the host's /dev that --privileged does not copy (runc's list).
HOST_DEV_SKIP = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console")

# mount(8) option -> (clears the flag?, MS_* flag): the options of --tmpfs that
# are flags; the others (size, mode, uid, gid, nr_inodes...) go to tmpfs as data.
MOUNT_FLAGS = {
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "nosuid": (False, MS_NOSUID),
    "suid": (True, MS_NOSUID),
    "nodev": (False, MS_NODEV),
    "dev": (True, MS_NODEV),
    "noexec": (False, MS_NOEXEC),
    "exec": (True, MS_NOEXEC),
    "sync": (False, libc.MS_SYNCHRONOUS),
    "async": (True, libc.MS_SYNCHRONOUS),
    "dirsync": (False, libc.MS_DIRSYNC),
    "mand": (False, libc.MS_MANDLOCK),
    "nomand": (True, libc.MS_MANDLOCK),
    "atime": (True, libc.MS_NOATIME),
    "noatime": (False, libc.MS_NOATIME),
    "diratime": (True, libc.MS_NODIRATIME),
    "nodiratime": (False, libc.MS_NODIRATIME),
    "relatime": (False, libc.MS_RELATIME),
    "norelatime": (True, libc.MS_RELATIME),
    "strictatime": (False, MS_STRICTATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "lazytime": (False, libc.MS_LAZYTIME),
    "nolazytime": (True, libc.MS_LAZYTIME),
    "iversion": (False, libc.MS_I_VERSION),
    "noiversion": (True, libc.MS_I_VERSION),
    "nosymfollow": (False, libc.MS_NOSYMFOLLOW),
    "symfollow": (True, libc.MS_NOSYMFOLLOW),
    "defaults": (False, 0),
}
# Propagation options Docker accepts in --tmpfs: every container mount is private here.
PROPAGATION = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
TMPFS_DEFAULTS = "noexec,nosuid,nodev"  # moby: what every --tmpfs starts from


def copy_host_devices(dev: int, host_dir: str = "/dev", rel: str = "") -> None:
    """``--privileged``: every device node of the host's /dev, made again in the container's.

    Made with the host's numbers, mode and owner (as Docker does); names the
    container already has are kept. Links are not followed.
    """
    with os.scandir(os.path.join(host_dir, rel) if rel else host_dir) as it:
        entries = list(it)
    for entry in entries:
        if entry.name in HOST_DEV_SKIP:
            continue
        name = f"{rel}/{entry.name}" if rel else entry.name
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISDIR(st.st_mode):
            try:
                os.mkdir(name, 0o755, dir_fd=dev)
            except FileExistsError:
                pass
            copy_host_devices(dev, host_dir, name)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            try:
                os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dev)
            except FileExistsError:
                continue
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dev, follow_symlinks=False)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dev, follow_symlinks=False)


def make_devices(root_fd: int, root: str, entries: list) -> None:
    """``--device HOST:CTR:PERMS``: the host's node made again at CTR (default: HOST).

    The node is made with the host's numbers, mode and owner; what the
    container may do with it is the device cgroup's decision (PERMS). A
    name that exists already is kept, as runc does.
    """
    from .devices import host_device

    for host, ctr, _perms in entries:
        kind, major, minor, mode, uid, gid = host_device(host)
        ctr = ctr or host
        parent, name = open_parent(root_fd, root, ctr)
        try:
            kind_bit = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
            try:
                os.mknod(name, mode | kind_bit, os.makedev(major, minor), dir_fd=parent)
            except FileExistsError:
                continue
            os.chmod(name, mode, dir_fd=parent, follow_symlinks=False)
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)


# --- --tmpfs ------------------------------------------------------------------------


def tmpfs_options(options: str) -> tuple[int, str]:
    """``--tmpfs`` options -> ``(MS_* flags, data string)`` for mount(2).

    Docker starts from ``noexec,nosuid,nodev`` and applies the user's
    options in order, so ``exec`` undoes ``noexec``; a later ``size=`` wins.
    Flag names become MS_* bits; the rest (``size``, ``mode``, ``uid``...)
    is tmpfs's own business and goes to it as data.
    """
    flags, data = 0, {}
    for opt in f"{TMPFS_DEFAULTS},{options}".split(","):
        opt = opt.strip()
        if not opt or opt in PROPAGATION:
            continue
        if opt in MOUNT_FLAGS:
            clear, bit = MOUNT_FLAGS[opt]
            flags = flags & ~bit if clear else flags | bit
        else:
            key, _, _ = opt.partition("=")
            data.pop(key, None)
            data[key] = opt
    return flags, ",".join(data.values())


def mount_tmpfs(root_fd: int, root: str, path: str, options: str) -> None:
    flags, data = tmpfs_options(options or "")
    parent, _ = mount_in(root_fd, root, path, "tmpfs", "tmpfs", flags, data or None)
    os.close(parent)


# --- --sysctl, after pivot_root -----------------------------------------------------


def sysctl_path(key: str) -> str:
    """``net.ipv4.ip_forward`` -> ``/proc/sys/net/ipv4/ip_forward``."""
    parts = key.replace("/", ".").split(".")
    if any(p in ("", ".", "..") for p in parts):
        raise CocinError(f"invalid sysctl {key!r}")
    return "/proc/sys/" + "/".join(parts)


def write_sysctls(sysctls: list, host_network: bool = False) -> None:
    """``--sysctl KEY=VALUE``: written in the container's own /proc/sys.

    The kernel keeps the namespaced keys (``net.*``, ``kernel.shm*``,
    ``kernel.msg*``, ``kernel.sem``, ``fs.mqueue.*``...) per namespace: the
    writer's network or IPC namespace, which is the container's. A key the
    kernel lacks is an error, not a silent no-op.
    """
    for key, value in sysctls:
        if host_network and key.startswith("net."):
            raise CocinError(f"sysctl {key!r} is not allowed in the host's network namespace")
        path = sysctl_path(key)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise CocinError(f"sysctl {key!r} is not supported by this kernel (no {path})") from None
        try:
            os.write(fd, str(value).encode())
        except OSError as e:
            raise CocinError(f"sysctl {key}={value}: the kernel refused it: {e.strerror}") from None
        finally:
            os.close(fd)
