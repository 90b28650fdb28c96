"""Every ctypes binding cocin uses, and the kernel constants they need.

Python's ``os`` module covers much of POSIX but none of the calls that make a
container: ``unshare``, ``setns``, ``mount``, ``pivot_root``... This module binds
them from libc with ctypes. Conventions (after mkosi's sandbox.py):

* constants are named exactly as in the kernel headers, so ``man 2 mount``
  and ``<linux/sched.h>`` read the same as this file;
* every wrapper checks the return value and turns ``errno`` into
  ``OSError(errno, "call: strerror", path)`` through one helper, so an error
  always says which call failed on which path;
* it imports nothing of cocin, and only ``ctypes`` and ``os``: it is on the
  start-up path of every container.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

# <linux/sched.h>: namespace flags for clone(2), unshare(2) and setns(2).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>: mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_STRICTATIME = 1 << 24

# umount2(2) flags.
MNT_DETACH = 2

# <linux/prctl.h>
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

# <linux/magic.h>: f_type values statfs(2) reports.
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270

# <asm-generic/ioctls.h>
TIOCSCTTY = 0x540E

NSTYPE_BY_NAME = {
    "mnt": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "user": CLONE_NEWUSER,
}


def _check(result: int, call: str, path: str | None = None) -> int:
    """Turn a libc ``-1`` return into an ``OSError`` naming the call and path."""
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}", path)
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces of the kinds in ``flags``.

    For ``CLONE_NEWPID`` only the caller's *future children* enter the new PID
    namespace; the first one becomes its PID 1.
    """
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0, path: str | None = None) -> None:
    """Join the namespace behind ``fd`` (an open ``/proc/PID/ns/*`` file)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", path)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """Attach a filesystem (or change a mount's flags or propagation)."""
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    """Detach a mount; with ``MNT_DETACH`` lazily, even while it is busy."""
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """Make ``new_root`` the root of this mount namespace.

    libc has no wrapper, so it goes through syscall(2). The old root stays
    mounted at ``put_old`` until it is detached.
    """
    SYS_pivot_root = 155  # x86_64; aarch64 uses 41
    if os.uname().machine in ("aarch64", "arm64"):
        SYS_pivot_root = 41
    _check(_libc.syscall(ctypes.c_long(SYS_pivot_root), _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    """Set the hostname of the calling process's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg2: int = 0) -> None:
    _check(
        _libc.prctl(
            ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)
        ),
        "prctl",
    )


def set_process_name(name: str) -> None:
    """Name the thread (what ``ps -o comm`` and ``top`` show), at most 15 bytes."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(
        _libc.prctl(ctypes.c_int(PR_SET_NAME), buf, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl"
    )


# The C structs below are plain ctypes arrays where the layout allows it, or classes
# made on first use: every ctypes.Structure class costs ~10-50 us to create, paid by
# every command that imports this module (all of them). The array types the container's
# child uses are made here, before the fork: a type made in the child costs ~0.1 ms
# there (copy-on-write faults).
_U32x2, _U32x6, _ULONGx2, _U64x2 = (ctypes.c_uint32 * 2, ctypes.c_uint32 * 6, ctypes.c_ulong * 2, ctypes.c_uint64 * 2)
_STATFS_SIZE = 120  # struct statfs on 64-bit Linux: f_type (a long) first, which is all we read


def statfs_type(path: str) -> int:
    """The filesystem magic number of the mount holding ``path``."""
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    _check(_libc.statfs(_b(path), buf), "statfs", path)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


# --- rootfs, devices (issue 13: masked paths, --tmpfs, device allow-list) ----------

# <linux/mount.h>: the mount flags --tmpfs options map to (and the atime flags
# that statvfs(3) reports differently: ST_RELATIME is 4096, MS_RELATIME is not).
MS_SYNCHRONOUS = 16
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_I_VERSION = 1 << 23
MS_LAZYTIME = 1 << 25

# <linux/bpf.h>: the bpf(2) commands, program and attach types a device filter needs.
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 1 << 1


_bpf_types: list = []


def _bpf_attr_types() -> tuple:
    """(load attr, attach attr) classes, made on first use (cgroup v2 only)."""
    if not _bpf_types:

        class _BpfProgLoadAttr(ctypes.Structure):
            # The BPF_PROG_LOAD member of union bpf_attr, up to expected_attach_type.
            _fields_ = [
                ("prog_type", ctypes.c_uint32),
                ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32),
                ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64),
                ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32),
            ]

        class _BpfProgAttachAttr(ctypes.Structure):
            # The BPF_PROG_ATTACH/DETACH member of union bpf_attr.
            _fields_ = [
                ("target_fd", ctypes.c_uint32),
                ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32),
                ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32),
            ]

        _bpf_types[:] = [_BpfProgLoadAttr, _BpfProgAttachAttr]
    return tuple(_bpf_types)


def _bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    SYS_bpf = 280 if os.uname().machine in ("aarch64", "arm64") else 321  # x86_64
    return _check(
        _libc.syscall(
            ctypes.c_long(SYS_bpf), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr))
        ),
        what,
    )


def bpf_prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "", log_size: int = 0) -> int:
    """Load an eBPF program (raw ``struct bpf_insn`` bytes) through the verifier; its fd.

    With ``log_size`` the verifier's explanation of a refusal is appended
    to the error message.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(log_size) if log_size else None
    attr = _bpf_attr_types()[0](
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(lic),
        prog_name=name.encode()[:15],
    )
    if log is not None:
        attr.log_level, attr.log_size, attr.log_buf = 1, log_size, ctypes.addressof(log)
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf(BPF_PROG_LOAD)")
    except OSError as e:
        if log is not None and log.value:
            raise OSError(e.errno, f"{e.strerror}: {log.value.decode(errors='replace')}") from None
        raise


def bpf_prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    """Attach a loaded program to ``target_fd`` (an open cgroup v2 directory)."""
    attr = _bpf_attr_types()[1](target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type, attach_flags=flags)
    _bpf(BPF_PROG_ATTACH, attr, "bpf(BPF_PROG_ATTACH)")


# --- confinement (issue 13: capabilities, no_new_privs; cocin/confine.py) -----------

# <linux/prctl.h>
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/capability.h>: 64-bit capability sets, as two 32-bit halves.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


# struct __user_cap_header_struct {u32 version; int pid} as two u32 (pid 0: this thread);
# struct __user_cap_data_struct {u32 effective, permitted, inheritable} x 2 (bits 0-31,
# then 32-63) as six u32.


def capbset_read(cap: int) -> bool:
    """Is capability ``cap`` in the calling thread's bounding set? (False if unknown.)"""
    res = _libc.prctl(
        ctypes.c_int(PR_CAPBSET_READ), ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)
    )
    return res > 0


def capget() -> tuple[int, int, int]:
    """The calling thread's (effective, permitted, inheritable) sets as 64-bit masks."""
    head = _U32x2(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _U32x6()
    _check(_libc.capget(head, data), "capget")
    return tuple(data[i] | data[3 + i] << 32 for i in (0, 1, 2))


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's effective, permitted and inheritable sets (64-bit masks)."""
    head = _U32x2(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _U32x6()
    for i in (0, 1):
        shift = 32 * i
        data[3 * i] = (effective >> shift) & 0xFFFFFFFF
        data[3 * i + 1] = (permitted >> shift) & 0xFFFFFFFF
        data[3 * i + 2] = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(head, data), "capset")


RLIM_INFINITY = ctypes.c_ulong(-1).value


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """Set a resource limit of the calling process (-1: ``RLIM_INFINITY``).

    Through ctypes rather than the ``resource`` module: the container's child
    calls it after ``pivot_root``, when the host's lib-dynload is out of reach.
    """
    # struct rlimit {rlim_cur, rlim_max} as two unsigned longs (RLIM_INFINITY is all ones)
    lim = _ULONGx2(RLIM_INFINITY if soft == -1 else soft, RLIM_INFINITY if hard == -1 else hard)
    _check(_libc.setrlimit(ctypes.c_int(resource), lim), "setrlimit")


# --- seccomp (issue 13: the system call filter; cocin/seccomp.py) ------------------

# <linux/seccomp.h>
SECCOMP_SET_MODE_FILTER = 1


def seccomp_set_mode_filter(program: bytes) -> None:
    """Attach a classic BPF seccomp filter (raw ``struct sock_filter`` array) to the
    calling thread, for good: it is inherited by children and kept across execve.

    The kernel accepts it only from a thread with no_new_privs set or with
    CAP_SYS_ADMIN. libc has no wrapper, so it goes through syscall(2).
    """
    SYS_seccomp = 277 if os.uname().machine in ("aarch64", "arm64") else 317  # x86_64
    buf = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog <linux/filter.h> on 64-bit Linux: unsigned short len (the number of
    # instructions) at offset 0, the pointer to them at offset 8.
    prog = _U64x2(0, ctypes.addressof(buf))
    ctypes.c_ushort.from_buffer(prog).value = len(program) // 8
    _check(
        _libc.syscall(
            ctypes.c_long(SYS_seccomp), ctypes.c_uint(SECCOMP_SET_MODE_FILTER), ctypes.c_uint(0), ctypes.byref(prog)
        ),
        "seccomp",
    )


def set_no_new_privs() -> None:
    """prctl(PR_SET_NO_NEW_PRIVS, 1): execve can no longer grant privileges (setuid
    bits and file capabilities are ignored) for this process and its children."""
    _check(
        _libc.prctl(
            ctypes.c_int(PR_SET_NO_NEW_PRIVS),
            ctypes.c_ulong(1),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        ),
        "prctl(PR_SET_NO_NEW_PRIVS)",
    )


# --- exec (issue 13: exec confined as the container; cocin/nsexec.py) -----------------

# <linux/prctl.h>: 0 = no core dumps, no ptrace attach, /proc/PID files root-owned.
PR_SET_DUMPABLE = 4

# <linux/memfd.h> (Linux 6.3): an executable memfd, said explicitly (vm.memfd_noexec);
# older kernels refuse the bit with EINVAL, and every memfd is executable there.
MFD_EXEC = 0x0010


# --- the --init process's command line (issue 17: everyday CLI) -------------------


def set_cmdline(text: bytes) -> None:
    """Overwrite this process's argv area with ``text`` (what /proc/PID/cmdline and
    ps show), as setproctitle(3) does: the kernel reads the area between the
    mm's arg_start and arg_end (fields 48 and 49 of /proc/self/stat). Shorter text
    is padded with NULs, longer is cut; the area itself is never moved or grown.
    """
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    size = end - start
    if size <= 0:
        return
    data = text[: size - 1].ljust(size, b"\0")
    ctypes.memmove(start, data, size)


# --- OCI runtime: the console socket's pty (issue 16; cocin/oci/console.py) ---------

# <asm-generic/ioctls.h>: a pty master from a devpts instance's ptmx. TIOCSPTLCK
# unlocks the slave, TIOCGPTN reads its number (/dev/pts/N), TIOCGPTPEER opens the
# slave straight from the master (no path lookup inside the container's /dev).
TIOCSPTLCK = 0x40045431
TIOCGPTN = 0x80045430
TIOCGPTPEER = 0x5441
