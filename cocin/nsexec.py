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
"""

from __future__ import annotations

import _signal as signal  # not signal.py: its enums cost ~4 ms per command
import errno
import os
import sys

from . import libc, state
from .process import exec_error, execvpe, forward_signals
from .record import Record
from .state import CocinError, Container

STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nsenter_stub")
NAMESPACES = ("ipc", "uts", "net", "pid", "cgroup", "mnt")  # mnt last: /proc is ours until then


class ExecOptions(Record):
    argv: list[str]
    env: list[str]
    workdir: str | None = None
    interactive: bool = False
    tty: bool = False
    detach: bool = False


def stub_available() -> bool:
    return os.environ.get("COCIN_EXEC_STUB", "1") != "0" and os.access(STUB, os.X_OK)


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


def join_cgroups(rec: Container) -> None:
    """Put this process (and so what it execs) in the container's cgroups, so
    the container's limits apply to the exec'd command too."""
    try:
        from . import cgroups
    except ImportError:
        return
    cgroups.open_existing(rec.id).join_self()


def join_namespaces(pid: int) -> None:
    """``setns`` into every namespace of ``pid`` that differs from ours."""
    fds = []
    try:
        for ns in NAMESPACES:
            path = f"/proc/{pid}/ns/{ns}"
            try:
                theirs, ours = os.stat(path), os.stat(f"/proc/self/ns/{ns}")
            except FileNotFoundError:
                continue
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), ns, path))
        for fd, ns, path in fds:
            libc.setns(fd, libc.NSTYPE_BY_NAME[ns], path)
    finally:
        for fd, _, _ in fds:
            os.close(fd)


def _exec_in_child(argv: list[str], env: dict[str, str], workdir: str) -> None:
    try:
        os.chdir(workdir)
    except OSError as e:
        sys.stderr.write(f"cocin: error: exec: cannot chdir to {workdir}: {e.strerror}\n")
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
    env = container_env(rec, opts.env, opts.tty)
    workdir = opts.workdir or rec.config.get("workdir") or "/"
    debug = os.environ.get("COCIN_DEBUG")
    join_cgroups(rec)
    if stub_available() and not opts.tty and not opts.detach:
        if debug:
            sys.stderr.write("cocin: exec via the static stub\n")
        sys.stdout.flush()
        os.execve(STUB, [STUB, str(rec.pid), workdir, "--", *opts.argv], env)
    if debug:
        sys.stderr.write("cocin: exec via Python setns\n")
    # After joining the mount namespace, the host's files (cocin's own modules
    # included) are out of sight: import everything we need now.
    if opts.tty:
        import fcntl

        from . import tty
    try:
        join_namespaces(rec.pid)
    except OSError as e:
        if e.errno == errno.ENOENT or not state.is_running(rec):
            raise CocinError(f"container {rec.name} is not running") from None
        raise
    master = None
    if opts.tty:
        master, slave = os.openpty()  # a pty of the container's own /dev/pts
    pid = os.fork()
    if pid == 0:
        if master is not None:
            os.setsid()
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
            os.setsid()
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if os.fork():
                os._exit(0)
        _exec_in_child(opts.argv, env, workdir)
    if opts.detach:
        _wait(pid)
        return 0
    if master is not None:
        os.close(slave)
        tty.relay(master, pid, opts.interactive)
    else:
        forward_signals(pid)
    return _wait(pid)
