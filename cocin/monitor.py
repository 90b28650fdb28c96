"""Starting a container process and watching over it until it is done.

The *monitor* is the process that forks the container and waits for it: the
foreground client itself (``run``, ``start -a``), or a small detached
process (``run -d``, ``start``). The protocol between the two, over a Unix
socket pair whose container end is close-on-exec:

    container (child)                           monitor (parent)
                                                cgroup made, limits written; fork
    join the cgroup; unshare(mnt, uts,
    ipc, net), lo up
    "ready"  ───────────────────────────────►   network for its PID
    filesystem (rootfs.setup), hostname,
    stdio or pty ("pty" + fd) ─────────────►
    the user looked up, ulimits
                              ◄─────────────   "go"
    confined (confine.drop_privileges:
    capabilities, user, seccomp)
    execve(command)   ──── socket closes ───►   EOF: the command runs;
                                                record "running"; wait; record exit;
                                                tear down; maybe restart (policy)

A failure in the child before execve travels as one line ("error CODE
message") and becomes the user's error and exit code (125/126/127).
"""

from __future__ import annotations

# The C modules behind ``signal`` and ``socket``: the Python wrappers build
# enums on import (~4-6 ms, with ``enum`` itself), paid by every ``cocin run``.
import _signal as signal
import _socket as socket
import os
import sys
import time

from . import confine, libc, resources, state
from .process import FORWARDED_SIGNALS, close_fds_except, exec_error, execvpe, forward_signals
from .record import Record
from .state import CocinError, Container, NotFound

LOG_NAME = "container.log"


class ChildFailed(CocinError):
    """The container process failed before execve; carries Docker's exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.exit_code = code


def fault(point: str) -> None:
    """Test hook: ``COCIN_FAULT=point`` SIGKILLs the client right here.

    The crash-safety tests use it to kill ``run`` at chosen moments.
    """
    if os.environ.get("COCIN_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


# --- the container process (child side) ---------------------------------------


def _loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (it starts down).

    The classic way: read the interface flags with SIOCGIFFLAGS, set IFF_UP,
    write them back with SIOCSIFFLAGS, on any socket of that namespace.
    """
    import fcntl
    import struct

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    finally:
        s.close()


def _send(sock: socket.socket, msg: str, fds: list[int] = ()) -> None:
    """One line to the monitor; ``fds`` travel along as SCM_RIGHTS ancillary data."""
    data = msg.encode() + b"\n"
    if fds:
        payload = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)  # C ints
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, payload)])
    else:
        sock.sendall(data)


def _exec(argv: list[str], env: dict[str, str], sock: socket.socket) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        execvpe(argv, env)
    except OSError as e:
        code, message = exec_error(argv[0], e)
        _send(sock, f"error {code} {message}")
        os._exit(code)


def _init(argv: list[str], env: dict[str, str], sock: socket.socket) -> None:
    """``--init``: stay as PID 1, run the command as PID 2.

    PID 1 of a namespace has two jobs a normal program does not do: reap
    orphans (every process whose parent died becomes its child; unreaped they
    stay zombies) and handle signals (the kernel drops signals PID 1 has no
    handler for, so ``docker stop`` would need SIGKILL). This init is Python
    already in memory: nothing has to exist inside the image.

    That Python is the host's own interpreter, so init is made non-dumpable:
    the container's other processes (same uid) may then neither ptrace it nor
    open its /proc files, ``/proc/1/exe`` above all, which leads to the host's
    python binary (a handle on it to write later is runc's CVE-2019-5736).
    The command's execve makes the command dumpable again.
    """
    libc.prctl(libc.PR_SET_DUMPABLE, 0)
    child = os.fork()
    if child == 0:
        _exec(argv, env, sock)
    sock.close()
    libc.set_process_name("cocin-init")
    # ps in the container: "cocin-init -- CMD ARGS" (as Docker's "/sbin/docker-init -- CMD"),
    # not the host's "/usr/bin/python3 /path/cocin.py run ..." this Python was started as.
    try:
        libc.set_cmdline(b"\0".join(a.encode() for a in ["cocin-init", "--", *argv]) + b"\0")
    except (OSError, ValueError, IndexError):
        pass  # cosmetic only: an unreadable /proc/self/stat leaves the old command line

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS + (signal.SIGWINCH,):
        signal.signal(sig, forward)
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:  # the command ended: so does the container
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def _child(rec: Container, sock: socket.socket, log_fd: int | None, cgroup, program: bytes | None) -> None:
    """The container process, from fork to execve. Never returns.

    ``log_fd`` is None when attached to the caller's terminal, else the log;
    ``program`` the seccomp filter to install last (None: unconfined).
    """
    from . import rootfs

    state.forget_inherited_locks()
    close_fds_except(sock.fileno(), log_fd)
    cfg = rec.config
    detached = log_fd is not None
    code, stage = 125, "setup"
    try:
        stage = "cgroup"
        cgroup.join_self(missing_ok=False)  # still single-threaded: the fast way in (v1)
        stage = "namespaces"
        flags = libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC
        if _private_cgroupns():
            flags |= libc.CLONE_NEWCGROUP  # after joining: the container's cgroup becomes its "/"
        if cfg.get("network_mode") != "host":
            flags |= libc.CLONE_NEWNET
        libc.unshare(flags)
        if cfg.get("network_mode") != "host":
            _loopback_up()
        _send(sock, "ready")
        stage = "filesystem"
        rootfs.setup(cfg, rec.dir)
        libc.sethostname(cfg["hostname"])
        if os.environ.get("COCIN_FAULT") == "after-mounts":
            os.kill(os.getppid(), signal.SIGKILL)  # test hook: the client dies now
        stage = "stdio"
        if cfg.get("tty"):
            import fcntl

            os.setsid()
            master, slave = os.openpty()  # from the container's own /dev/pts
            fcntl.ioctl(slave, libc.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.close(slave)
            _send(sock, "pty", [master])
            os.close(master)
        else:
            # A session of its own, as runc gives: the caller's terminal (our
            # stdio when attached) must not be the container's controlling
            # terminal, or ioctl(TIOCSTI) would type commands into the host's shell.
            os.setsid()
            if detached or not cfg.get("interactive"):
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
            if detached:
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
        if detached:
            os.close(log_fd)
        stage = "workdir"
        workdir = cfg.get("workdir") or "/"
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
        stage = ""  # runc's words need no prefix: "unable to find user x: ..."
        ident = confine.resolve_user(cfg.get("user"), cfg.get("group_add") or [])
        stage = "ulimit"
        confine.apply_rlimits(cfg.get("ulimits") or [])
        env = dict(e.split("=", 1) for e in cfg["env"])
        env.setdefault("HOME", ident.home)
        if sock.recv(3) != b"go\n":
            os._exit(125)  # the monitor went away: never run the command
        stage = "confinement"
        confine.drop_privileges(confine.capabilities(cfg), ident, bool(cfg.get("no_new_privileges")), program)
        stage = "exec"
        if cfg.get("init"):  # both init and the command confined
            _init(rec.argv, env, sock)
        _exec(rec.argv, env, sock)
    except BaseException as e:  # report any failure as one line, then die
        try:
            _send(sock, f"error {code} {stage + ': ' if stage else ''}{e}")
        finally:
            os._exit(code)
    os._exit(code)


# --- launching -------------------------------------------------------------------


class Launched(Record):
    pid: int
    pty_master: int | None


def _recv_line(sock: socket.socket) -> tuple[str, list[int]]:
    """One message from the child (and any file descriptors passed with it)."""
    fds: list[int] = []
    buf = b""
    while not buf.endswith(b"\n"):
        data, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += [
                    int.from_bytes(payload[i : i + 4], sys.byteorder)
                    for i in range(0, len(payload) - len(payload) % 4, 4)
                ]
        if not data:
            return ("eof" if not buf else buf.decode()), fds
        buf += data
    return buf[:-1].decode(), fds


def _private_cgroupns() -> bool:
    """A private cgroup namespace, as Docker gives on a pure cgroup v2 host (its
    default "private" cgroupns mode); on v1/hybrid hosts Docker uses the host's."""
    from . import cgroups  # loaded already: the monitor made the cgroup with it

    return cgroups.layout() == "v2"


SECCOMP_BPF = "seccomp.bpf"  # the compiled filter, for exec


def seccomp_program(rec: Container) -> bytes | None:
    """The container's seccomp filter (None: unconfined), also written for ``exec``.

    ``--privileged`` and ``seccomp=unconfined`` get none; ``default`` is Docker's
    profile; ``custom`` the profile stored at create. ``cocin.seccomp`` caches
    the compiled program, so this costs a file read on the start path.
    """
    cfg = rec.config
    mode = cfg.get("seccomp") or "default"
    path = os.path.join(rec.dir, SECCOMP_BPF)
    program = None
    if not cfg.get("privileged") and mode != "unconfined":
        from . import seccomp

        text = None
        if mode == "custom":
            with open(os.path.join(rec.dir, "seccomp.json")) as f:
                text = f.read()
        program = seccomp.program(text, confine.capabilities(cfg))
    _store_program(path, program)
    return program


def _store_program(path: str, program: bytes | None) -> None:
    """Write ``program`` to ``path`` atomically, only when missing or changed; no
    program: no file."""
    try:
        with open(path, "rb") as f:
            if f.read() == program:
                return
    except FileNotFoundError:
        if program is None:
            return
    if program is None:
        os.unlink(path)
        return
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, program)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _fork_container(rec: Container, log_fd: int | None, cgroup, program: bytes | None) -> tuple[int, socket.socket]:
    """Fork the container process as PID 1 of a new PID namespace.

    ``unshare(CLONE_NEWPID)`` moves only this process's *future children*
    into a new namespace. Right after the fork we ``setns`` back to our own,
    so later helpers we fork (iptables, ...) stay in the host's namespace.
    """
    # The child's module, imported here rather than in the child: an import right
    # after fork(2) runs into copy-on-write faults on every page it touches (sys.modules,
    # the interpreter's caches), ~0.5 ms more than the same import before the fork.
    from . import rootfs  # noqa: F401

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.unshare(libc.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _child(rec, theirs, log_fd, cgroup, program)
        libc.setns(own_pidns, libc.CLONE_NEWPID, "/proc/self/ns/pid")
    finally:
        os.close(own_pidns)
    theirs.close()
    return pid, ours


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_and_reap(pid: int) -> None:
    _kill(pid)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _raise_child_error(sock: socket.socket) -> None:
    """If the child reported a failure (and died, taking its namespaces with it,
    which is what made our step fail), raise that failure instead."""
    sock.settimeout(0.5)
    try:
        msg, _ = _recv_line(sock)
    except OSError:
        return
    if msg.startswith("error "):
        raise _failure(msg) from None


def _failure(msg: str) -> ChildFailed:
    if msg.startswith("error "):
        _, code, text = msg.split(" ", 2)
        return ChildFailed(int(code), text)
    return ChildFailed(125, "the container process died during setup")


def launch(rec: Container, log_fd: int | None) -> Launched:
    """Start the container process and confirm it reached execve.

    On return the record says "running"; on failure nothing is left held.
    """
    pid, sock, endpoint = 0, None, {}
    try:
        program = seccomp_program(rec)
        cgroup = resources.make_cgroup(rec)  # the child joins it before anything else
        pid, sock = _fork_container(rec, log_fd, cgroup, program)
        msg, _ = _recv_line(sock)
        if msg != "ready":
            raise _failure(msg)
        # The child has its namespaces now: its network, before "go".
        try:
            endpoint = resources.connect(rec, pid)
            sock.sendall(b"go\n")
        except (CocinError, OSError):
            _raise_child_error(sock)  # the child failed first? then that is the error
            raise
        master = None
        while True:
            msg, fds = _recv_line(sock)
            if msg == "pty" and fds:
                master = fds[0]
            elif msg == "eof":
                break
            else:
                raise _failure(msg)
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        rec.network = endpoint
        resources.teardown(rec)
        raise
    finally:
        if sock is not None:
            sock.close()
    with state.locked():
        fresh = state.load(rec.id)
        fresh.state = "running"
        fresh.pid, fresh.pid_start = pid, state.proc_start_time(pid)
        fresh.monitor_pid = os.getpid()
        fresh.monitor_start = state.proc_start_time(fresh.monitor_pid)
        fresh.started, fresh.finished, fresh.exit_code = time.time(), 0.0, None
        fresh.oom_killed = False
        fresh.network = endpoint
        state.save(fresh)
    rec.__dict__.update(fresh.__dict__)
    fault("after-record")
    return Launched(pid, master)


def _reap(pid: int) -> int:
    """Wait for the container process; its exit code as a shell would say it."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N


def record_exit(rec: Container, pid: int, code: int) -> Container | None:
    """Record how the container ended, release what it held, and decide (in
    the same locked step, so a ``stop`` cannot slip in between) whether its
    restart policy brings it back: the state is then "restarting"."""
    oom = resources.teardown(rec)
    try:
        with state.locked():
            fresh = state.load(rec.id)
            if fresh.pid == pid:
                fresh.exit_code, fresh.finished = code, time.time()
                fresh.oom_killed = oom
                fresh.network = {}
                if should_restart(fresh, code):
                    fresh.state = "restarting"
                    fresh.restart_count += 1
                else:
                    fresh.state = "exited"
                state.save(fresh)
            return fresh
    except NotFound:
        return None  # removed meanwhile (rm -f): nothing to record


def _cancel_restart(rec: Container) -> None:
    """A stop (or rm) came during the back-off: the container stays exited."""
    try:
        with state.locked():
            fresh = state.load(rec.id)
            if fresh.state == "restarting":
                fresh.state = "exited"
                state.save(fresh)
    except NotFound:
        pass


# --- restart policies --------------------------------------------------------------


def parse_restart(text: str | None) -> dict:
    """``no``, ``always``, ``unless-stopped``, ``on-failure[:N]`` -> {name, max}."""
    name, _, count = (text or "no").partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure"):
        raise CocinError(f"invalid restart policy {text!r}: use no, always, unless-stopped or on-failure[:max-retries]")
    if count and (name != "on-failure" or not count.isdigit()):
        raise CocinError(f"invalid restart policy {text!r}: only on-failure takes a retry count")
    return {"name": name, "max": int(count or 0)}


def should_restart(rec: Container, code: int) -> bool:
    policy = rec.config.get("restart") or {"name": "no"}
    if rec.manually_stopped or policy["name"] == "no":
        return False
    if policy["name"] == "on-failure":
        return code != 0 and (policy["max"] == 0 or rec.restart_count < policy["max"])
    return True


def _backoff(rec: Container, delay: float) -> bool:
    """Sleep before a restart, as Docker does; False when a stop/rm cancelled it."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        try:
            fresh = state.load(rec.id)
        except NotFound:
            return False
        if fresh.manually_stopped or fresh.state != "restarting":
            return False
    return True


def supervise(rec: Container, log_fd: int | None, on_started=None) -> int:
    """Launch the container, wait for it, record it; restart as the policy says.

    ``on_started`` is called once, after the first successful launch (or with
    the error of a failed one).
    """
    delay = 0.1  # Docker's back-off: 100 ms, doubling, at most a minute
    first = True
    lock = None  # held while relaunching, as stop/start/rm hold it
    while True:
        try:
            launched = launch(rec, log_fd)
        except CocinError as e:
            code = getattr(e, "exit_code", 125)
            # Docker: a container that never started (a port already taken, no such
            # command) keeps its state, "created" for a new one; a relaunch that fails exits.
            never_ran = first and rec.state in ("created", "exited")
            try:
                state.update(
                    rec.id,
                    state=rec.state if never_ran else "exited",
                    exit_code=code,
                    finished=rec.finished if never_ran else time.time(),
                )
            except NotFound:
                pass
            if first:
                if on_started:
                    on_started(e)
                raise
            return code
        finally:
            if lock is not None:
                lock.release()
                lock = None
        if first and on_started:
            on_started(None)
        first = False
        broken = None
        try:
            if launched.pty_master is not None:
                from . import tty

                if log_fd is None:
                    tty.relay(launched.pty_master, launched.pid, rec.config.get("interactive", False))
                else:
                    tty.copy_to_log(launched.pty_master, log_fd)
            elif log_fd is None:
                forward_signals(launched.pid)
        except BaseException as e:  # the relay broke: the container must not outlive its record
            broken = e
            _kill(launched.pid)
        code = _reap(launched.pid)
        ran = time.time() - rec.started
        fresh = record_exit(rec, launched.pid, code)
        if broken is not None:
            raise broken
        if fresh is None or fresh.state != "restarting":
            return code
        delay = 0.1 if ran >= 10 or fresh.restart_count == 1 else min(delay * 2, 60.0)
        if not _backoff(rec, delay):
            _cancel_restart(rec)
            return code
        lock = state.ContainerLock(rec.id)
        try:
            fresh = state.load(rec.id)
        except NotFound:
            fresh = None
        if fresh is None or fresh.manually_stopped or fresh.state != "restarting":
            lock.release()
            _cancel_restart(rec)
            return code
        rec.__dict__.update(fresh.__dict__)


def start_foreground(rec: Container, on_started=None) -> int:
    """Run the container attached to this terminal; return its exit code."""
    return supervise(rec, None, on_started)


def start_detached(rec: Container) -> None:
    """Start the container under a small monitor process that outlives us.

    The monitor (a forked copy of this process, in its own session) launches
    the container, tells us over a pipe whether it started, then stays to
    wait for it, record its exit and carry out its restart policy.
    """
    r, w = os.pipe()
    log_path = os.path.join(rec.dir, LOG_NAME)
    monitor = os.fork()
    if monitor == 0:
        os.close(r)
        state.forget_inherited_locks()
        try:
            os.setsid()
            libc.set_process_name("cocin-monitor")
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

            def report(error):
                msg = "0 ok" if error is None else f"{getattr(error, 'exit_code', 125)} {error}"
                os.write(w, msg.encode())
                os.close(w)

            try:
                supervise(rec, log_fd, report)
            except CocinError:
                os._exit(0)
            if rec.config.get("rm"):
                from .runtime import remove_files

                remove_files(rec)
        except BaseException as e:
            try:
                os.write(w, f"125 monitor: {e}".encode())
            except OSError:
                pass
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        answer = f.read().decode()
    os.waitpid(monitor, os.WNOHANG)
    code_s, _, text = answer.partition(" ")
    if not code_s:
        raise CocinError("the container monitor died while starting the container")
    if code_s != "0":
        raise ChildFailed(int(code_s), text)
