"""The verbs: create, start, run, stop, kill, rm: orchestration only.

The life of a container, one straight path:

    create   check everything, make the directories, write the record (created)
    start    the *monitor* (the foreground client itself, or a small detached
             process) unshares a PID namespace and forks the container process:
               child:   unshare(mnt, uts, ipc, net) -> "ready" -> filesystem
                        (rootfs.setup) -> hostname -> stdio/pty -> wait "go" -> execve
               monitor: cgroup + network for the child's PID -> "go" -> the
                        close-on-exec socket reaching EOF means execve worked ->
                        record running -> wait -> record exit -> tear down
    stop     SIGTERM, wait, SIGKILL; the monitor records the exit
    rm       refuse a running container (unless -f), tear down, delete

The child reports a failure before execve as one line over the socket; it
becomes the user's one-line error and the exit code (125/126/127).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from . import libc, state
from .state import CocinError, Container, NotFound

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOG_NAME = "container.log"


@dataclass
class RunOptions:
    """What ``run``/``create`` were asked for, already parsed by the CLI."""

    image: str
    argv: list[str]
    name: str | None = None
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    rm: bool = False
    env: list[str] = field(default_factory=list)  # KEY=VALUE, in order
    workdir: str | None = None
    volumes: list[tuple[str, str, bool]] = field(default_factory=list)
    hostname: str | None = None
    limits: dict = field(default_factory=dict)
    network: str = "bridge"  # a network's name, or "none" or "host"
    publish: list[str] = field(default_factory=list)
    ip: str | None = None
    dns: list[str] = field(default_factory=list)


class ChildFailed(CocinError):
    """The container process failed before execve; carries Docker's exit code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.exit_code = code


# --- create ------------------------------------------------------------------

_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen",
               "lucid", "merry", "nifty", "proud", "quirky", "sharp", "tender", "witty")
_NAMES = ("babbage", "curie", "dijkstra", "euler", "hopper", "knuth", "lamport",
          "lovelace", "noether", "ritchie", "shannon", "thompson", "torvalds", "turing")


def _random_name(taken: set[str]) -> str:
    rnd = os.urandom(2)
    for i in range(1000):
        name = f"{_ADJECTIVES[(rnd[0] + i) % len(_ADJECTIVES)]}_" \
               f"{_NAMES[(rnd[1] + i // len(_ADJECTIVES)) % len(_NAMES)]}"
        if i >= len(_ADJECTIVES) * len(_NAMES):
            name += f"{i}"
        if name not in taken:
            return name
    return "c_" + os.urandom(4).hex()


def check_name(name: str) -> None:
    if not state.NAME_RE.match(name):
        raise CocinError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] "
                         "are allowed")


def check_volume(host: str, ctr: str) -> None:
    if not os.path.isabs(host):
        raise CocinError(f"invalid volume {host}:{ctr}: the host path must be absolute")
    if not os.path.isabs(ctr) or ".." in ctr.split("/") or ctr.rstrip("/") == "":
        raise CocinError(f"invalid volume {host}:{ctr}: the container path must be absolute, "
                         "not '/', without '..'")
    if os.path.exists(host) and not (os.path.isdir(host) or os.path.isfile(host)):
        raise CocinError(f"invalid volume {host}:{ctr}: the host path is not a file or directory")


def hosts_text(hostname: str, own_ip: str | None = None, peers: list = ()) -> str:
    """/etc/hosts: localhost, the container itself, and its network's peers."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"{own_ip}\t{hostname}" if own_ip else f"127.0.1.1\t{hostname}")
    lines += [f"{ip}\t{name}" for ip, name in peers]
    return "\n".join(lines) + "\n"


def _resolv_conf(dns: list[str]) -> str:
    """``--dns`` servers, or the host's resolvers minus loopback ones (a
    container's own loopback has no resolver listening)."""
    if dns:
        return "".join(f"nameserver {d}\n" for d in dns)
    try:
        with open("/etc/resolv.conf") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    keep = [ln for ln in lines
            if not (ln.startswith("nameserver") and (" 127." in ln or " ::1" in ln))]
    return "\n".join(keep) + "\n"


def check_network(opts: RunOptions) -> None:
    """Refuse an unknown network or a malformed -p/--ip before creating anything."""
    if opts.network in ("none", "host"):
        if opts.publish or opts.ip:
            raise CocinError(f"-p and --ip need a bridge network, not --network {opts.network}")
        return
    from . import network

    if opts.network != "bridge":
        network.inspect_network(opts.network)  # raises "network X not found"
    for spec in opts.publish:
        network.parse_publish(spec)
    if opts.ip:
        import ipaddress
        try:
            ipaddress.IPv4Address(opts.ip)
        except ValueError:
            raise CocinError(f"invalid IPv4 address: {opts.ip}") from None


def create(opts: RunOptions) -> Container:
    """Check the request, then make the container's directories and record.

    Everything that can be refused is refused before anything is made.
    """
    from . import images

    if opts.name is not None:
        check_name(opts.name)
    for host, ctr, _ro in opts.volumes:
        check_volume(host, ctr)
    if opts.workdir is not None and not opts.workdir.startswith("/"):
        raise CocinError(f"the working directory {opts.workdir!r} is invalid: it needs to be "
                         "an absolute path")
    if not opts.argv:
        raise CocinError("no command specified")
    check_network(opts)
    existing = {r.name for r in state.load_all()}
    if opts.name in existing:
        raise CocinError(f"the container name {opts.name!r} is already in use")
    img = images.get(opts.image)

    cid = os.urandom(32).hex()
    hostname = opts.hostname or cid[:12]
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname, "HOME": "/root"}
    if opts.tty:
        env["TERM"] = "xterm"
    for item in opts.env:
        key, _, value = item.partition("=")
        env[key] = value
    cfg = {
        "image_id": img.id,
        "lower": img.rootfs,
        "env": [f"{k}={v}" for k, v in env.items()],
        "workdir": opts.workdir or "/",
        "hostname": hostname,
        "tty": opts.tty,
        "interactive": opts.interactive,
        "detach": opts.detach,
        "rm": opts.rm,
        "volumes": [list(v) for v in opts.volumes],
        "limits": opts.limits,
        "network_mode": opts.network,
        "publish": list(opts.publish),
        "ip": opts.ip,
    }
    d = state.container_dir(cid)
    os.makedirs(state.containers_dir(), exist_ok=True)
    os.mkdir(d, 0o710)
    try:
        for sub in ("upper", "work", "rootfs"):
            os.mkdir(os.path.join(d, sub), 0o755)
        etc = {"hostname": hostname + "\n", "hosts": hosts_text(hostname),
               "resolv.conf": _resolv_conf(opts.dns)}
        for fname, text in etc.items():
            with open(os.path.join(d, fname), "w") as f:
                f.write(text)
        for host, _ctr, _ro in opts.volumes:
            if not os.path.exists(host):
                os.makedirs(host, exist_ok=True)
        with state.locked():
            taken = {r.name for r in state.load_all()}
            name = opts.name or _random_name(taken)
            if name in taken:
                raise CocinError(f"the container name {name!r} is already in use")
            rec = Container(id=cid, name=name, image=images.normalize(opts.image),
                            argv=list(opts.argv), created=time.time(), config=cfg)
            state.save(rec)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    return rec


# --- the container process (child side) ---------------------------------------

def _loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (it starts down).

    The classic way: read the interface flags with SIOCGIFFLAGS, set IFF_UP,
    write them back with SIOCSIFFLAGS, on any socket of that namespace.
    """
    import fcntl
    import struct

    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def _send(sock: socket.socket, msg: str, fds: list[int] = ()) -> None:
    """One line to the monitor; ``fds`` travel along as SCM_RIGHTS ancillary data."""
    import array

    data = msg.encode() + b"\n"
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def _exec_error(argv0: str, e: OSError) -> tuple[int, str]:
    """Docker's exit codes: 127 command not found, 126 found but not executable."""
    if e.errno == errno.ENOENT:
        if "/" in argv0:
            return 127, f'exec: "{argv0}": no such file or directory'
        return 127, f'exec: "{argv0}": executable file not found in $PATH'
    if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return 126, f'exec: "{argv0}": permission denied'
    return 126, f'exec: "{argv0}": {os.strerror(e.errno or 0)}'


def _child(rec: Container, sock: socket.socket, log_fd: int | None) -> None:
    """The container process, from fork to execve. Never returns."""
    from . import rootfs

    cfg = rec.config
    code, stage = 125, "setup"
    try:
        stage = "namespaces"
        flags = libc.CLONE_NEWNS | libc.CLONE_NEWUTS | libc.CLONE_NEWIPC
        if cfg.get("network_mode") != "host":
            flags |= libc.CLONE_NEWNET
        libc.unshare(flags)
        if cfg.get("network_mode") != "host":
            _loopback_up()
        _send(sock, "ready")
        stage = "filesystem"
        rootfs.setup(cfg, rec.dir)
        libc.sethostname(cfg["hostname"])
        stage = "stdio"
        if cfg.get("tty"):
            os.setsid()
            master, slave = os.openpty()  # from the container's own /dev/pts
            import fcntl
            fcntl.ioctl(slave, libc.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.close(slave)
            _send(sock, "pty", [master])
            os.close(master)
        else:
            if cfg.get("detach"):
                os.setsid()
            if not cfg.get("interactive") or cfg.get("detach"):
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
            if log_fd is not None:
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
        if log_fd is not None:
            os.close(log_fd)
        stage = "workdir"
        workdir = cfg.get("workdir") or "/"
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)
        if sock.recv(3) != b"go\n":
            os._exit(125)  # the monitor went away: never run the command
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        env = dict(e.split("=", 1) for e in cfg["env"])
        stage = "exec"
        try:
            os.execvpe(rec.argv[0], rec.argv, env)
        except OSError as e:
            code, message = _exec_error(rec.argv[0], e)
            _send(sock, f"error {code} {message}")
            os._exit(code)
    except BaseException as e:  # report any failure as one line, then die
        try:
            _send(sock, f"error {code} {stage}: {e}")
        finally:
            os._exit(code)
    os._exit(code)


# --- the monitor side -----------------------------------------------------------

@dataclass
class Launched:
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
                fds += [int.from_bytes(payload[i:i + 4], sys.byteorder)
                        for i in range(0, len(payload) - len(payload) % 4, 4)]
        if not data:
            return ("eof" if not buf else buf.decode()), fds
        buf += data
    return buf[:-1].decode(), fds


def _fork_container(rec: Container, log_fd: int | None) -> tuple[int, socket.socket]:
    """Fork the container process as PID 1 of a new PID namespace.

    ``unshare(CLONE_NEWPID)`` moves only this process's *future children*
    into a new namespace. Right after the fork we ``setns`` back to our own,
    so later helpers we fork (iptables, ...) stay in the host's namespace.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.unshare(libc.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _child(rec, theirs, log_fd)
        libc.setns(own_pidns, libc.CLONE_NEWPID, "/proc/self/ns/pid")
    finally:
        os.close(own_pidns)
    theirs.close()
    return pid, ours


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def launch(rec: Container, log_fd: int | None) -> Launched:
    """Start the container process and confirm it reached execve.

    Runs in the monitor. On return the record says "running".
    """
    pid, sock = _fork_container(rec, log_fd)
    try:
        msg, _ = _recv_line(sock)
        if msg != "ready":
            raise _failure(msg, pid)
        # The child now has its namespaces: limits and network go here, before "go".
        _join_cgroup(rec, pid)
        endpoint = _connect(rec, pid)
        sock.sendall(b"go\n")
        master = None
        while True:
            msg, fds = _recv_line(sock)
            if msg == "pty" and fds:
                master = fds[0]
                continue
            if msg == "eof":
                break
            raise _failure(msg, pid)
    except BaseException:
        _kill_and_reap(pid)
        raise
    finally:
        sock.close()
    now = time.time()
    with state.locked():
        fresh = state.load(rec.id)
        fresh.state = "running"
        fresh.pid, fresh.pid_start = pid, state.proc_start_time(pid)
        fresh.monitor_pid = os.getpid()
        fresh.monitor_start = state.proc_start_time(fresh.monitor_pid)
        fresh.started, fresh.finished, fresh.exit_code = now, 0.0, None
        fresh.oom_killed = False
        fresh.network = endpoint
        state.save(fresh)
    rec.__dict__.update(fresh.__dict__)
    return Launched(pid, master)


def _join_cgroup(rec: Container, pid: int) -> None:
    """Make the container's cgroups, write its limits, move the process in.

    The process joins before it may run the user's command, so the limits
    hold from the command's first instruction on.
    """
    from . import cgroups

    try:
        cgroups.create(rec.id, cgroups.Limits.from_dict(rec.config.get("limits"))).add(pid)
    except cgroups.CgroupError as e:
        _kill_and_reap(pid)
        _release_cgroup(rec)
        raise CocinError(str(e)) from None


def _connect(rec: Container, pid: int) -> dict:
    """Plug the container's network namespace into its network (bridge mode)."""
    mode = rec.config.get("network_mode", "none")
    if mode in ("none", "host"):
        return {}
    from . import network

    try:
        endpoint = network.attach(mode, rec.id, rec.name, pid, rec.config.get("ip"),
                                  rec.config.get("publish", []))
    except BaseException:
        _kill_and_reap(pid)
        _release_cgroup(rec)
        raise
    update_hosts(endpoint["network"], {rec.id: endpoint["ip"]})
    return endpoint


def update_hosts(net: str, extra: dict | None = None, gone: str | None = None) -> None:
    """Rewrite /etc/hosts of every container on ``net`` so peers resolve by name.

    The file is bind-mounted into the container, so it is rewritten *in
    place*: a rename would leave the mount on the old file.
    """
    from . import network

    try:
        peers = [(ip, name) for ip, name in network.hosts_entries(net)]
    except CocinError:
        return
    members = {r.id: r for r in state.load_all()
               if r.id != gone and ((r.network or {}).get("network") == net or r.id in (extra or {}))}
    for cid, r in members.items():
        own = (extra or {}).get(cid) or (r.network or {}).get("ip")
        text = hosts_text(r.config.get("hostname", r.short_id), own,
                          [(ip, n) for ip, n in peers if n != r.name])
        try:
            with open(os.path.join(r.dir, "hosts"), "r+") as f:
                f.truncate(0)
                f.write(text)
        except OSError:
            pass


def connect(rec: Container, net: str, ip: str | None = None) -> None:
    """``network connect``: a running container without a network joins one.

    cocin gives a container one network interface (eth0), so only a
    container that has none (``--network none``) can be connected.
    """
    from . import network

    if not state.is_running(state.reconcile(rec)):
        raise CocinError(f"container {rec.name} is not running")
    if rec.network.get("network"):
        raise CocinError(f"container {rec.name} is already connected to network "
                         f"{rec.network['network']}: disconnect it first")
    if rec.config.get("network_mode") == "host":
        raise CocinError(f"container {rec.name} uses the host's network")
    endpoint = network.attach(net, rec.id, rec.name, rec.pid, ip, [])
    state.update(rec.id, network=endpoint)
    update_hosts(endpoint["network"], {rec.id: endpoint["ip"]})


def disconnect(rec: Container, net: str) -> None:
    if (rec.network or {}).get("network") != net:
        raise CocinError(f"container {rec.name} is not connected to network {net}")
    _disconnect(rec)
    state.update(rec.id, network={})


def _disconnect(rec: Container) -> None:
    ep = rec.network or {}
    if not ep.get("network"):
        return
    from . import network

    try:
        network.detach(ep["network"], rec.id, ep)
    except CocinError as e:
        sys.stderr.write(f"cocin: warning: {e}\n")
    update_hosts(ep["network"], gone=rec.id)


def _release_cgroup(rec: Container) -> bool:
    """Remove the container's cgroups; return whether the OOM killer struck."""
    from . import cgroups

    cg = cgroups.open_existing(rec.id)
    oom = cg.oom_killed()
    try:
        cg.destroy()
    except cgroups.CgroupError as e:
        sys.stderr.write(f"cocin: warning: {e}\n")
    return oom


def _failure(msg: str, pid: int) -> ChildFailed:
    _kill_and_reap(pid)
    if msg.startswith("error "):
        _, code, text = msg.split(" ", 2)
        return ChildFailed(int(code), text)
    return ChildFailed(125, "the container process died during setup")


def _record_failed_start(rec: Container, code: int) -> None:
    try:
        state.update(rec.id, state="exited", exit_code=code, finished=time.time())
    except NotFound:
        pass


def wait_and_record(rec: Container, pid: int) -> int:
    """Reap the container process, record how it ended, release what it held."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            status = 255 << 8
            break
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        code = 128 - code  # killed by a signal: 128 + its number, as a shell says
    finished = time.time()
    oom = _release_cgroup(rec)
    try:
        with state.locked():
            fresh = state.load(rec.id)
            if fresh.pid == pid:
                fresh.state, fresh.exit_code, fresh.finished = "exited", code, finished
                fresh.oom_killed = oom
                state.save(fresh)
    except NotFound:
        pass  # removed meanwhile (rm -f): nothing to record
    teardown(rec)
    return code


def teardown(rec: Container) -> None:
    """Release what a container held outside its own namespaces. Idempotent.

    Its mounts need nothing: they lived in its mount namespace, gone with it.
    """
    _release_cgroup(rec)
    try:
        rec = state.load(rec.id)  # the endpoint is in the latest record
    except NotFound:
        pass
    _disconnect(rec)


def forward_signals(pid: int) -> None:
    """Pass the usual terminal and job-control signals on to the container."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)


def start_foreground(rec: Container) -> int:
    """Run the container attached to this terminal; return its exit code."""
    try:
        launched = launch(rec, None)
    except ChildFailed as e:
        _record_failed_start(rec, e.exit_code)
        raise
    if launched.pty_master is not None:
        from . import tty
        tty.relay(launched.pty_master, launched.pid, rec.config.get("interactive", False))
    else:
        forward_signals(launched.pid)
    return wait_and_record(rec, launched.pid)


def start_detached(rec: Container) -> None:
    """Start the container under a small monitor process that outlives us.

    The monitor (a forked copy of this process in its own session) launches
    the container, tells us over a pipe whether it started, then waits for it
    and records its exit.
    """
    r, w = os.pipe()
    log_path = os.path.join(rec.dir, LOG_NAME)
    monitor = os.fork()
    if monitor == 0:
        os.close(r)
        try:
            os.setsid()
            libc.set_process_name("cocin-monitor")
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                             0o640)
            try:
                launched = launch(rec, log_fd)
            except CocinError as e:
                _record_failed_start(rec, e.exit_code)
                os.write(w, f"{e.exit_code} {e}".encode())
                os._exit(0)
            os.write(w, b"0 ok")
            os.close(w)
            if launched.pty_master is not None:
                from . import tty
                tty.copy_to_log(launched.pty_master, log_fd)
            os.close(log_fd)
            wait_and_record(rec, launched.pid)
            if rec.config.get("rm"):
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


def run(opts: RunOptions) -> int:
    rec = create(opts)
    try:
        if opts.detach:
            start_detached(rec)
            return 0
        return start_foreground(rec)
    finally:
        if opts.rm and not opts.detach:
            remove_files(rec)


# --- stop, kill, rm --------------------------------------------------------------

def _wait_dead(pid: int, start: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while state.alive(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _wait_recorded(rec: Container, timeout: float = 5.0) -> Container:
    """After the process died, give its monitor a moment to record the exit."""
    deadline = time.monotonic() + timeout
    while True:
        fresh = state.load(rec.id)
        if fresh.state != "running" or fresh.pid != rec.pid:
            return fresh
        if not state.alive(fresh.monitor_pid, fresh.monitor_start) or time.monotonic() > deadline:
            return state.reconcile(fresh)
        time.sleep(0.01)


def signal_container(rec: Container, sig: int) -> None:
    if not state.is_running(rec):
        raise CocinError(f"container {rec.name} is not running")
    try:
        os.kill(rec.pid, sig)
    except ProcessLookupError:
        pass


def stop(rec: Container, timeout: float = 10.0) -> Container:
    """SIGTERM, up to ``timeout`` seconds' grace, then SIGKILL (as ``docker stop``)."""
    rec = state.reconcile(rec)
    if not state.is_running(rec):
        return rec
    try:
        os.kill(rec.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if not _wait_dead(rec.pid, rec.pid_start, timeout):
        try:
            os.kill(rec.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_dead(rec.pid, rec.pid_start, 10.0)
    return _wait_recorded(rec)


def remove(rec: Container, force: bool = False) -> None:
    rec = state.reconcile(rec)
    if state.is_running(rec):
        if not force:
            raise CocinError(f"cannot remove container {rec.name}: container is running: "
                             "stop the container before removing or force remove")
        try:
            os.kill(rec.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_dead(rec.pid, rec.pid_start, 10.0)
    teardown(rec)
    remove_files(rec)


def remove_files(rec: Container) -> None:
    """Delete the record and directory: renamed away under the lock first, so a
    concurrent ``rm`` of the same container finds nothing instead of half."""
    from . import images

    trash = os.path.join(state.containers_dir(), f".rm-{rec.id}")
    with state.locked():
        try:
            os.rename(rec.dir, trash)
        except FileNotFoundError:
            return
    shutil.rmtree(trash, ignore_errors=True)
    images.gc_layer(rec.config.get("image_id", ""))
