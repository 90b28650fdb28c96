"""seccomp: the system calls a container may make, and a cache of the compiled filter.

Namespaces decide what a process *sees*, capabilities what it may *do* with
what it sees; seccomp (secure computing) shrinks the kernel itself: a filter
attached to the process with ``seccomp(SECCOMP_SET_MODE_FILTER)`` runs on every
system call and answers allow, fail with an errno, or kill. Docker's default
profile allows ~350 everyday calls and refuses with ``EPERM`` the ones a
container has no business making (``keyctl``, ``kexec_load``, ``add_key``,
``open_by_handle_at``, new namespaces through ``unshare``/``clone`` flags,
``mount`` without CAP_SYS_ADMIN...), which closes many kernel bugs to
containers. A filter is inherited across ``fork`` and ``execve`` and can never
be removed, only narrowed by more filters.

This module is on the start-up path of every ``cocin run``: it only computes
a cache key and reads the compiled program from
``<state root>/cache/seccomp/<key>.bpf``. The compiler (``seccomp_compile``,
with ``json`` and the syscall tables) is imported only on a miss, i.e. once
per profile, capability set, architecture, kernel series and compiler version.

Usage (see ``libc.seccomp_set_mode_filter``)::

    prog = seccomp.program(None, bounding_caps)   # Docker's default profile
    libc.set_no_new_privs()                        # or keep CAP_SYS_ADMIN until then
    libc.seccomp_set_mode_filter(prog)
"""

from __future__ import annotations

import os

from .state import CocinError, root

VERSION = 1  # bump when the program the compiler emits changes in meaning

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROFILE = os.path.join(_HERE, "seccomp-default.json")
_KEYED_FILES = (DEFAULT_PROFILE, os.path.join(_HERE, "seccomp_compile.py"), os.path.join(_HERE, "syscalls.py"))

# <linux/capability.h>, in bit order: a set of them becomes a short hex mask in the key.
CAPS = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)
_CAP_BIT = {name: 1 << n for n, name in enumerate(CAPS)}


class ProfileError(CocinError):
    """A custom seccomp profile cocin cannot use (one line for the user)."""


def program(profile_text: str | None, caps: list[str]) -> bytes:
    """The BPF program (raw ``struct sock_filter`` array) of Docker's default
    profile (``profile_text`` None) or of a custom profile in Docker's JSON
    format, for a container holding ``caps`` (its bounding set, as Docker
    evaluates the profile's ``includes``/``excludes``). Raises ProfileError."""
    uname = os.uname()
    key = _key(profile_text, caps, uname)
    path = os.path.join(root(), "cache", "seccomp", key + ".bpf")
    data = _read(path)
    if data is None:
        data = _compile(profile_text, caps, uname)
        _store(path, data)
    return data


def _stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size:x}.{st.st_mtime_ns:x}"


def _key(profile_text: str | None, caps: list[str], uname) -> str:
    """A file name naming everything the program depends on."""
    mask, unknown = 0, []
    for cap in caps:
        bit = _CAP_BIT.get(cap)
        if bit is None:
            unknown.append(cap)
        mask |= bit or 0
    series = ".".join(uname.release.split(".")[:2])  # profiles may test minKernel
    parts = [f"v{VERSION}", uname.machine, series, f"{mask:x}", "-".join(_stamp(p) for p in _KEYED_FILES)]
    if unknown or profile_text is not None:
        import hashlib  # not on the default path: custom profiles and odd capability names

        digest = hashlib.sha256()
        digest.update("\0".join(sorted(unknown)).encode() + b"\1" + (profile_text or "").encode())
        parts.append(("custom-" if profile_text is not None else "") + digest.hexdigest()[:32])
    return "_".join(parts).replace("/", "")


def _compile(profile_text: str | None, caps: list[str], uname) -> bytes:
    from . import seccomp_compile

    if profile_text is None:
        with open(DEFAULT_PROFILE) as f:
            text = f.read()
    else:
        text = profile_text
    return seccomp_compile.compile_text(text, caps, uname.machine, uname.release)


def _read(path: str) -> bytes | None:
    """The cached program, or None (absent, or not a whole number of instructions)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 8 * 4096 + 1)
    finally:
        os.close(fd)
    return data if data and len(data) % 8 == 0 and len(data) <= 8 * 4096 else None


def _store(path: str, data: bytes) -> None:
    """Write the program atomically: a private temporary file, then rename(2).
    Two commands compiling at once write the same bytes, so no lock is needed.
    A cache that cannot be written (read-only state root) is no error."""
    directory = os.path.dirname(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        for d in (os.path.dirname(directory), directory):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
        try:
            fd = os.open(tmp, flags, 0o600)
        except FileExistsError:  # left by a crashed command whose PID we now have
            os.unlink(tmp)
            fd = os.open(tmp, flags, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
