"""``exec``: run another process inside a running container.

A container is nothing but a set of namespaces (and cgroups) that its
processes share. ``setns(2)`` moves the calling process into an existing
namespace given by an open ``/proc/PID/ns/*`` file, so joining a container
is: join its cgroups, join each of its namespaces, then fork (a PID namespace
only applies to children) and execve the command.

Two ways do that here:

* the static C stub ``cocin/nsenter_stub`` (built by scripts/build_stub.sh):
  this process joins the cgroups and then *becomes* the stub, which joins the
  namespaces before any language runtime starts; it costs one small execve;
* pure Python with ctypes, when the stub is not built: a single-threaded
  Python process may join a mount namespace too. Same behaviour.

``-t`` always takes the Python way, which must stay around to relay the pty.

**Confined as the container.** Joining namespaces gives no protection by
itself: the exec'd process must also get the container's capabilities,
seccomp filter, no_new_privs and user (``confine``), or ``exec`` would be a
way out of a confined container. Both ways apply them, in runc's order, in
the forked child right before ``execve``: the stub from its options
(``confine.stub_args``), the Python way through ``confine.drop_privileges``.
``exec -u`` overrides the user; ``exec --privileged`` gives every capability
and no seccomp filter. (Docker's ``exec --privileged`` keeps the container's
filter, moby issue 21984, so that ``--privileged`` does not give what it
says; cocin drops it, as ``run --privileged`` does.)

The user is looked up in the *container's* ``/etc/passwd`` and
``/etc/group``, inside its mount namespace, where its symlinks lead only to
its own files: the Python way after joining it, the stub way by stepping
into that mount namespace and back (``setns`` to our own saved one).

**Pinned.** A PID number is reused once its process is gone, so "the
container's PID" may by now be someone else. Right before joining, exec
takes a pidfd of the PID (``pidfd_open``), which names one process for good,
and checks that the process behind it started when the record says; the
namespaces are then joined through that pidfd (``setns(pidfd, ...)``, Linux
5.8). The stub does the same check with ``--start-time``.
"""

from __future__ import annotations

import _signal as signal  # not signal.py: its enums cost ~4 ms per command
import errno
import os
import sys

from . import confine, libc, state
from .process import exec_error, execvpe, forward_signals
from .record import Record
from .state import CocinError, Container

STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsenter_stub")
NAMESPACES = ("ipc", "uts", "net", "pid", "cgroup", "mnt")  # mnt last: /proc is ours until then
SECCOMP_BPF = "seccomp.bpf"  # the container's compiled filter, written at start (monitor.py)


class ExecOptions(Record):
    argv: list[str]
    env: list[str]
    workdir: str | None = None
    interactive: bool = False
    tty: bool = False
    detach: bool = False
    user: str | None = None  # -u: instead of the container's user
    privileged: bool = False  # --privileged: every capability, no seccomp filter


class Confinement(Record):
    """What the exec'd process is confined to (see the module's docstring)."""

    caps: list[str]
    no_new_privs: bool
    program_path: str | None  # the seccomp filter on the host, None: unconfined
    user: str | None
    group_add: list[str]


def confinement(rec: Container, opts: ExecOptions) -> Confinement:
    """The container's confinement, changed by ``exec -u`` and ``exec --privileged``."""
    cfg = rec.config
    path: str | None = os.path.join(rec.dir, SECCOMP_BPF)
    if opts.privileged:
        caps, path = confine.known_caps(), None
    else:
        caps = confine.capabilities(cfg)
        if not os.path.lexists(path):
            path = None  # the container runs unconfined too
    return Confinement(
        caps=caps,
        no_new_privs=bool(cfg.get("no_new_privileges")),
        program_path=path,
        user=opts.user or cfg.get("user"),
        group_add=list(cfg.get("group_add") or []),
    )


def read_program(path: str | None) -> bytes | None:
    """The seccomp filter, read now: once in the container's mount namespace
    the host's files are out of sight. cocin's own file, never a symlink."""
    if path is None:
        return None
    return state.read_bytes(path, os.O_NOFOLLOW)


def sealed_stub() -> int:
    """A sealed in-memory copy of the stub, to execute instead of its file.

    The stub's child ends up in the container, and whatever runs there can
    name the binary of a process through ``/proc/PID/exe``. An image's
    ``#!/proc/self/exe`` script makes the kernel run the stub again inside the
    container (dumpable, until its first instruction); a process of the
    container that opens its ``/proc/PID/exe`` then, holds the host's
    ``nsenter_stub``, and may write it once no exec is running: the next
    ``cocin exec`` would run the container's code as root on the host. That is
    runc's CVE-2019-5736, and this is runc's fix: the stub runs from a
    ``memfd`` copy sealed against writes, so ``/proc/PID/exe`` leads to a
    throwaway copy no one can change. Copying ~700 kB costs ~0.1 ms.
    """
    import fcntl

    src = os.open(STUB, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fd = os.memfd_create("cocin-stub", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING | libc.MFD_EXEC)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            fd = os.memfd_create("cocin-stub", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)  # before 6.3
        size, done = os.fstat(src).st_size, 0
        while done < size:
            n = os.sendfile(fd, src, done, size - done)
            if n == 0:
                raise CocinError(f"{STUB} shrank while it was read")
            done += n
    finally:
        os.close(src)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def stub_available() -> bool:
    """The stub is built, and not older than its source (a stale one may not know
    the options this cocin passes: then the Python way, until it is rebuilt)."""
    if os.environ.get("COCIN_EXEC_STUB", "1") == "0" or not os.access(STUB, os.X_OK):
        return False
    try:
        return os.stat(STUB).st_mtime_ns >= os.stat(STUB + ".c").st_mtime_ns
    except FileNotFoundError:
        return True  # installed without its source


def container_env(rec: Container, extra: list[str], tty: bool) -> dict[str, str]:
    """The environment of the container's PID 1 (from /proc/PID/environ), plus -e."""
    try:
        with open(f"/proc/{rec.pid}/environ", "rb") as f:
            raw = f.read()
        items = [e.decode(errors="surrogateescape") for e in raw.split(b"\0") if b"=" in e]
    except OSError:
        items = list(rec.config.get("env", []))
    env = dict(e.split("=", 1) for e in items)
    if tty:
        env.setdefault("TERM", "xterm")
    for e in extra:
        k, _, v = e.partition("=")
        env[k] = v
    return env


def no_inherited_fds() -> None:
    """Close-on-exec on every descriptor above stderr that we were started with.

    Whatever the caller of ``cocin exec`` left open (a shell's ``3<dir``, a CI
    runner's sockets) would otherwise pass through execve into the
    container, and a descriptor of a host directory is a way out of it:
    ``openat(fd, "../..")`` walks the host's tree (runc's CVE-2024-21626 was
    such a leaked descriptor). ``docker exec`` passes no descriptor either.
    """
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed by now


def join_cgroups(rec: Container) -> None:
    """Put this process (and so what it execs) in the container's cgroups, so
    the container's limits apply to the exec'd command too."""
    try:
        from . import cgroups
    except ImportError:
        return
    cgroups.open_existing(rec.id).join_self()


def pin(rec: Container) -> int:
    """A pidfd of the container's process, checked to be that very process.

    The pidfd names the process behind the PID *now*, for good; if that one
    did not start when the record says, the container's process is gone and
    its PID is someone else's.
    """
    try:
        pidfd = os.pidfd_open(rec.pid)
    except ProcessLookupError:
        raise CocinError(f"container {rec.name} is not running") from None
    except OSError as e:
        if e.errno == errno.ENOSYS:
            raise CocinError("exec needs Linux 5.3 or newer (pidfd_open)") from None
        raise
    if state.proc_start_time(rec.pid) != rec.pid_start:
        os.close(pidfd)
        raise CocinError(f"container {rec.name} is not running")
    return pidfd


def join_namespaces(pidfd: int, pid: int, names: tuple[str, ...] = NAMESPACES) -> None:
    """``setns`` into the namespaces ``names`` of the process behind ``pidfd``."""
    flags = 0
    for ns in names:
        flags |= libc.NSTYPE_BY_NAME[ns]
    try:
        libc.setns(pidfd, flags, f"/proc/{pid}")  # all at once (Linux 5.8)
        return
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    # An older kernel: the /proc/PID/ns files, one by one (those we share are
    # skipped: setns into one's own can fail). Signal 0 through the pidfd then
    # proves its process still lives, so the PID was not reused: the files are its.
    fds = []
    try:
        for ns in names:
            path = f"/proc/{pid}/ns/{ns}"
            try:
                theirs, ours = os.stat(path), os.stat(f"/proc/self/ns/{ns}")
            except FileNotFoundError:
                continue
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), ns, path))
        signal.pidfd_send_signal(pidfd, 0)
        for fd, ns, path in fds:
            libc.setns(fd, libc.NSTYPE_BY_NAME[ns], path)
    finally:
        for fd, _, _ in fds:
            os.close(fd)


def lookup_user(conf: Confinement) -> confine.Identity:
    """``confine.resolve_user`` in the container's files, with no more power
    than the exec'd process will have: our effective capabilities are
    lowered to its set while reading (a container's /etc/passwd may be a
    symlink to, say, /proc/kallsyms, which shows more to CAP_SYSLOG)."""
    effective, permitted, inheritable = libc.capget()
    libc.capset(effective & confine.cap_mask(conf.caps), permitted, inheritable)
    try:
        return confine.resolve_user(conf.user, conf.group_add)
    finally:
        libc.capset(effective, permitted, inheritable)


def visit_user(pidfd: int, pid: int, conf: Confinement) -> confine.Identity:
    """For the stub way: step into the container's mount namespace only to
    look the user up (there its symlinks lead only to its own files), then
    back into ours, where the stub is. Our working directory is then our
    mount namespace's root: nothing needs it, the stub goes by its full path.
    """
    ours = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        join_namespaces(pidfd, pid, ("mnt",))
        try:
            return lookup_user(conf)
        finally:
            libc.setns(ours, libc.CLONE_NEWNS, "/proc/self/ns/mnt")
    finally:
        os.close(ours)


def set_home(env: dict[str, str], ident: confine.Identity, opts: ExecOptions) -> None:
    """``HOME``: the container's, or the home of ``exec -u``'s user (unless ``-e HOME``)."""
    if opts.user and not any(e.partition("=")[0] == "HOME" for e in opts.env):
        env["HOME"] = ident.home
    else:
        env.setdefault("HOME", ident.home)


def _exec_in_child(
    argv: list[str],
    env: dict[str, str],
    workdir: str,
    conf: Confinement,
    ident: confine.Identity,
    program: bytes | None,
) -> None:
    try:
        os.chdir(workdir)
    except OSError as e:
        sys.stderr.write(f"cocin: error: exec: cannot chdir to {workdir}: {e.strerror}\n")
        os._exit(125)
    try:
        confine.drop_privileges(conf.caps, ident, conf.no_new_privs, program)
    except OSError as e:
        sys.stderr.write(f"cocin: error: exec: {e.strerror or e}\n")
        os._exit(125)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        execvpe(argv, env)
    except OSError as e:
        code, message = exec_error(argv[0], e)
        sys.stderr.write(f"cocin: error: {message}\n")
        os._exit(code)


def _wait(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


def exec_in(rec: Container, opts: ExecOptions) -> int:
    """Run ``opts.argv`` in the running container ``rec``; return its exit code."""
    if not state.is_running(state.reconcile(rec)):
        raise CocinError(f"container {rec.name} is not running")
    if not opts.argv:
        raise CocinError("exec needs a command to run")
    if opts.user:
        try:
            confine.parse_user(opts.user)
        except ValueError as e:
            raise CocinError(str(e)) from None
    no_inherited_fds()
    conf = confinement(rec, opts)
    env = container_env(rec, opts.env, opts.tty)
    workdir = opts.workdir or rec.config.get("workdir") or "/"
    debug = os.environ.get("COCIN_DEBUG")
    join_cgroups(rec)
    # Not dumpable (execve resets it): while the child still holds our
    # privileges in the container's PID namespace, no process there may
    # ptrace it or open its /proc files.
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    pidfd = pin(rec)
    if stub_available() and not opts.tty and not opts.detach:
        if debug:
            sys.stderr.write("cocin: exec via the static stub\n")
        try:
            ident = visit_user(pidfd, rec.pid, conf)
        except LookupError as e:
            raise CocinError(str(e)) from None
        set_home(env, ident, opts)
        args = confine.stub_args(conf.caps, ident, conf.no_new_privs, conf.program_path)
        # The command's environment travels as options, the stub's own is empty: the
        # container writes its PID 1's environ, and a C library reads its environment
        # (GLIBC_TUNABLES...) at start-up, while the stub is still root on the host.
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        sys.stdout.flush()
        os.execve(
            sealed_stub(),
            [STUB, *args, "--start-time", str(rec.pid_start), str(rec.pid), workdir, "--", *opts.argv],
            {},
        )
    if debug:
        sys.stderr.write("cocin: exec via Python setns\n")
    # After joining the mount namespace, the host's files (cocin's own modules
    # and the seccomp filter included) are out of sight: read and import
    # everything we need now.
    program = read_program(conf.program_path)
    if opts.tty:
        import fcntl

        from . import tty
    try:
        join_namespaces(pidfd, rec.pid)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESRCH) or not state.is_running(rec):
            raise CocinError(f"container {rec.name} is not running") from None
        raise
    finally:
        os.close(pidfd)
    try:
        ident = lookup_user(conf)  # the container's files now
    except LookupError as e:
        raise CocinError(str(e)) from None
    set_home(env, ident, opts)
    master = None
    if opts.tty:
        master, slave = os.openpty()  # a pty of the container's own /dev/pts
    pid = os.fork()
    if pid == 0:
        # A session of its own: the caller's terminal must not be the exec'd
        # process's controlling terminal (ioctl(TIOCSTI) types into the host's shell).
        os.setsid()
        if master is not None:
            fcntl.ioctl(slave, libc.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.close(slave)
            os.close(master)
        elif not opts.interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        if opts.detach:
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if os.fork():
                os._exit(0)
        _exec_in_child(opts.argv, env, workdir, conf, ident, program)
    if opts.detach:
        _wait(pid)
        return 0
    if master is not None:
        os.close(slave)
        tty.relay(master, pid, opts.interactive)
    else:
        forward_signals(pid)
    return _wait(pid)
