"""The verbs: create, start, run, stop, kill, restart, wait, rm: orchestration only.

The life of a container, one straight path:

    create   check everything, make the directories, write the record (created)
    start    teardown leftovers of a crash, then monitor.start_*: fork the
             container process, give it cgroup and network, let it execve;
             the monitor waits, records the exit and restarts per policy
    stop     SIGTERM, wait, SIGKILL; the monitor records the exit
    rm       refuse a running container (unless -f), tear down, delete

Verbs that change a container's life hold its ``ContainerLock`` throughout,
so concurrent start/stop/restart/rm of one container end consistently.
"""

from __future__ import annotations

import _signal as signal  # not signal.py: its enums cost ~4 ms per command
import os
import time

from . import monitor, resources, state
from .monitor import LOG_NAME, ChildFailed  # noqa: F401 - part of this module's interface
from .record import Factory, Record
from .state import CocinError, Container, NotFound

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RunOptions(Record):
    """What ``run``/``create`` were asked for, already parsed by the CLI."""

    image: str
    argv: list[str]
    name: str | None = None
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    rm: bool = False
    env: list[str] = Factory(list)  # KEY=VALUE, in order
    workdir: str | None = None
    volumes: list[tuple[str, str, bool]] = Factory(list)
    hostname: str | None = None
    limits: dict = Factory(dict)
    network: str = "bridge"  # a network's name, or "none" or "host"
    publish: list[str] = Factory(list)
    ip: str | None = None
    dns: list[str] = Factory(list)
    restart: str | None = None
    init: bool = False
    entrypoint: str | None = None  # --entrypoint ("" clears the image's, and its Cmd)
    pull: str = "missing"  # --pull always|missing|never
    # Confinement (issue 13), as given on the command line; checked by create.
    privileged: bool = False
    cap_add: list[str] = Factory(list)
    cap_drop: list[str] = Factory(list)
    security_opt: list[str] = Factory(list)
    read_only: bool = False
    tmpfs: list[str] = Factory(list)
    user: str | None = None
    group_add: list[str] = Factory(list)
    devices: list[str] = Factory(list)
    ulimits: list[str] = Factory(list)
    sysctls: list[str] = Factory(list)


# --- create ------------------------------------------------------------------

_ADJECTIVES = (
    "brave",
    "calm",
    "eager",
    "fancy",
    "gentle",
    "happy",
    "jolly",
    "keen",
    "lucid",
    "merry",
    "nifty",
    "proud",
    "quirky",
    "sharp",
    "tender",
    "witty",
)
_NAMES = (
    "babbage",
    "curie",
    "dijkstra",
    "euler",
    "hopper",
    "knuth",
    "lamport",
    "lovelace",
    "noether",
    "ritchie",
    "shannon",
    "thompson",
    "torvalds",
    "turing",
)


def _random_name() -> str:
    """Docker-style ``adjective_scientist``, one not taken yet (under the lock)."""
    rnd = os.urandom(2)
    for i in range(1000):
        name = (
            f"{_ADJECTIVES[(rnd[0] + i) % len(_ADJECTIVES)]}_{_NAMES[(rnd[1] + i // len(_ADJECTIVES)) % len(_NAMES)]}"
        )
        if i >= len(_ADJECTIVES) * len(_NAMES):
            name += f"{i}"
        if not state.name_taken(name):
            return name
    return "c_" + os.urandom(4).hex()


def check_name(name: str) -> None:
    if not state.valid_name(name):
        raise CocinError(f"invalid container name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if len(name) > state.NAME_MAX:
        raise CocinError(f"invalid container name: {len(name)} characters, at most {state.NAME_MAX} are allowed")


def check_volume(host: str, ctr: str) -> None:
    if not os.path.isabs(host):
        raise CocinError(f"invalid volume {host}:{ctr}: the host path must be absolute")
    if not os.path.isabs(ctr) or ".." in ctr.split("/") or ctr.rstrip("/") == "":
        raise CocinError(f"invalid volume {host}:{ctr}: the container path must be absolute, not '/', without '..'")
    if os.path.exists(host) and not (os.path.isdir(host) or os.path.isfile(host)):
        raise CocinError(f"invalid volume {host}:{ctr}: the host path is not a file or directory")


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
    keep = [ln for ln in lines if not (ln.startswith("nameserver") and (" 127." in ln or " ::1" in ln))]
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
    else:
        network.check_default_network()  # its bridge may be another root's: say so now
    for spec in opts.publish:
        network.parse_publish(spec)
    if opts.ip:
        import ipaddress

        try:
            ipaddress.IPv4Address(opts.ip)
        except ValueError:
            raise CocinError(f"invalid IPv4 address: {opts.ip}") from None


def _path_in_container(path: str, what: str) -> str:
    if not path.startswith("/") or ".." in path.split("/"):
        raise CocinError(f"invalid {what} {path!r}: the container path must be absolute, without '..'")
    return os.path.normpath(path)


def parse_tmpfs(spec: str) -> list[str]:
    """``--tmpfs PATH[:OPTIONS]`` -> ``[path, options]`` (the options are mount(8)'s)."""
    path, _, options = spec.partition(":")
    path = _path_in_container(path, "--tmpfs")
    if path == "/":
        raise CocinError(f"invalid --tmpfs {spec!r}: a tmpfs cannot replace the root")
    return [path, options]


def _device_mode(text: str) -> bool:
    """Docker's validDeviceMode: a non-empty mix of r, w, m, each once."""
    return 0 < len(text) <= 3 and all(c in "rwm" for c in text) and len(set(text)) == len(text)


def parse_device(spec: str) -> list[str]:
    """``--device HOST[:CONTAINER][:rwm]`` -> ``[host, container, perms]``, as docker/cli
    parses it; the host path must be a device node (checked now, not at start)."""
    import stat

    parts = spec.split(":")
    if len(parts) > 3:
        raise CocinError(f"invalid device specification: {spec}")
    host, ctr, perms = parts[0], "", "rwm"
    if len(parts) == 3:
        ctr, perms = parts[1], parts[2]
    elif len(parts) == 2:
        if _device_mode(parts[1]):
            perms = parts[1]
        else:
            ctr = parts[1]
    ctr = ctr or host
    if not _device_mode(perms):
        raise CocinError(f"invalid device mode: {perms}")
    for path in (host, ctr):
        if not path.startswith("/"):
            raise CocinError(f"bad format for path: {path}")
    ctr = _path_in_container(ctr, "--device")
    try:
        mode = os.stat(host).st_mode
    except OSError as e:
        raise CocinError(
            f"error gathering device information while adding custom device {host!r}: {e.strerror.lower()}"
        ) from None
    if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
        raise CocinError(f"error gathering device information while adding custom device {host!r}: not a device node")
    return [os.path.normpath(host), ctr, perms]


def _seccomp_profile(path: str, caps: list[str]) -> str:
    """Read a ``--security-opt seccomp=PROFILE.json`` now (as docker/cli does) and check it."""
    try:
        with open(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CocinError(f"opening seccomp profile ({path}) failed: {getattr(e, 'strerror', e)}") from None
    from . import seccomp

    try:
        seccomp.program(text, caps)  # compiled (and cached) now: refused now if it cannot be
    except seccomp.ProfileError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise CocinError(f"decoding seccomp profile failed: {e}") from None
    return text


def security_config(opts: RunOptions) -> tuple[dict, str | None]:
    """Check and normalize the confinement flags: the config keys, and the text of a
    custom seccomp profile (to store with the container)."""
    from . import confine

    try:
        sec = confine.parse_security_opts(opts.security_opt)
        cfg = {
            "privileged": bool(opts.privileged),
            "cap_add": confine.normalize_caps(opts.cap_add),
            "cap_drop": confine.normalize_caps(opts.cap_drop),
            "security_opt": list(opts.security_opt),
            "no_new_privileges": sec["no_new_privileges"],
            "systempaths_unconfined": sec["systempaths_unconfined"],
            "user": opts.user or None,
            "group_add": list(opts.group_add),
            "read_only": bool(opts.read_only),
            "ulimits": confine.parse_ulimits(opts.ulimits),
            "sysctls": [confine.parse_sysctl(s, opts.network == "host") for s in opts.sysctls],
        }
        if opts.user:
            confine.parse_user(opts.user)
        for group in opts.group_add:
            if not group or ":" in group or (group.isdigit() and int(group) >= 2**32 - 1):
                raise ValueError(f"invalid --group-add {group!r}")
    except ValueError as e:
        raise CocinError(str(e)) from None
    cfg["tmpfs"] = [parse_tmpfs(t) for t in opts.tmpfs]
    cfg["devices"] = [parse_device(d) for d in opts.devices]
    seen = [c for _h, c, _ro in opts.volumes] + [p for p, _o in cfg["tmpfs"]]
    for path in seen:
        if seen.count(path) > 1:
            raise CocinError(f"Duplicate mount point: {path}")
    text = None
    if sec["seccomp"] in ("default", "unconfined"):
        cfg["seccomp"] = sec["seccomp"]
    else:
        cfg["seccomp"] = "custom"
        text = _seccomp_profile(sec["seccomp"], confine.capabilities(cfg))
    return cfg, text


def container_config(opts: RunOptions, image: dict) -> dict:
    """The container's own config, as Docker keeps it (and ``commit`` carries into a
    new image): the image's ``config`` with the command line's changes.

    ``--entrypoint`` replaces the image's Entrypoint and drops its Cmd; a
    command after the image replaces Cmd. ``-e`` adds to or overrides Env,
    ``-w`` WorkingDir, ``-u`` User.
    """
    cfg = dict(image)
    if opts.entrypoint is not None:
        cfg["Entrypoint"] = [opts.entrypoint] if opts.entrypoint else None
        cfg["Cmd"] = None
    if opts.argv:
        cfg["Cmd"] = list(opts.argv)
    env = {}
    for item in list(image.get("Env") or []) + list(opts.env):
        key, _, value = item.partition("=")
        env[key] = value
    cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
    if opts.workdir:
        cfg["WorkingDir"] = opts.workdir
    if opts.user:
        cfg["User"] = opts.user
    return cfg


def _image(opts: RunOptions):
    """The image to run, pulled as ``--pull`` says: ``missing`` (when it is not
    here and its reference names a registry), ``always``, ``never``."""
    from . import images

    if opts.pull not in ("missing", "always", "never"):
        raise CocinError(f'invalid pull option: \'{opts.pull}\': must be one of "always", "missing" or "never"')
    if opts.pull == "always":
        from . import registry

        return registry.pull_to_stderr(opts.image)
    try:
        return images.get(opts.image)
    except NotFound:
        if opts.pull == "never":
            raise
        from . import registry

        return registry.pull_for_run(opts.image)


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
        raise CocinError(f"the working directory {opts.workdir!r} is invalid: it needs to be an absolute path")
    restart = monitor.parse_restart(opts.restart)
    if restart["name"] != "no" and opts.rm:
        raise CocinError("conflicting options: --restart and --rm")
    check_network(opts)
    security, seccomp_text = security_config(opts)
    if opts.name is not None and state.name_taken(opts.name):
        raise CocinError(f"the container name {opts.name!r} is already in use")
    img = _image(opts)
    image_cfg = container_config(opts, img.config.get("config") or {})
    stop_signal(image_cfg)  # a bad one is refused now, not at stop
    argv = (image_cfg.get("Entrypoint") or []) + (image_cfg.get("Cmd") or [])
    if not argv:
        raise CocinError("no command specified")
    if not opts.user and image_cfg.get("User"):
        try:
            from . import confine

            confine.parse_user(image_cfg["User"])
        except ValueError as e:
            raise CocinError(f"the image's user: {e}") from None
        security["user"] = image_cfg["User"]

    cid = os.urandom(32).hex()
    # --network host: the host's name (Docker), in the container's own UTS namespace
    hostname = opts.hostname or (os.uname().nodename if opts.network == "host" else cid[:12])
    env = {"PATH": DEFAULT_PATH, "HOSTNAME": hostname}
    if not security["user"]:
        env["HOME"] = "/root"  # else the user's, from the image's /etc/passwd, at start
    if opts.tty:
        env["TERM"] = "xterm"
    for item in image_cfg["Env"]:  # the image's, then -e (already in image_cfg)
        key, _, value = item.partition("=")
        env[key] = value
    cfg = {
        "image_id": img.id,
        "lower": img.lower,
        "image_config": image_cfg,
        "env": [f"{k}={v}" for k, v in env.items()],
        "workdir": image_cfg.get("WorkingDir") or "/",
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
        "restart": restart,
        "init": opts.init,
        **security,
    }
    d = state.container_dir(cid)
    os.makedirs(state.containers_dir(), exist_ok=True)
    os.mkdir(d, 0o710)
    try:
        for sub in ("upper", "work", "rootfs"):
            os.mkdir(os.path.join(d, sub), 0o755)
        etc = {
            "hostname": hostname + "\n",
            "hosts": resources.hosts_text(hostname),
            "resolv.conf": _resolv_conf(opts.dns),
        }
        if seccomp_text is not None:
            etc["seccomp.json"] = seccomp_text
        for fname, text in etc.items():
            with open(os.path.join(d, fname), "w") as f:
                f.write(text)
        for host, _ctr, _ro in opts.volumes:
            if not os.path.exists(host):
                os.makedirs(host, exist_ok=True)
        with state.locked():
            name = opts.name or _random_name()
            if not state.claim_name(name, cid):  # before the record: see claim_name
                raise CocinError(f"the container name {name!r} is already in use")
            rec = Container(
                id=cid, name=name, image=images.normalize(opts.image), argv=argv, created=time.time(), config=cfg
            )
            state.save(rec)
    except BaseException:
        state.remove_tree(d)
        raise
    return rec


# --- start, run ------------------------------------------------------------------


def start(rec: Container, attach: bool = False) -> int | None:
    """Start a created or exited container: same filesystem, same config.

    ``attach``: run in the foreground and return its exit code. A container
    already running is left alone, as ``docker start`` does.
    """
    lock = state.container_lock(rec.id)
    try:
        rec = state.reconcile(state.load(rec.id))
        if rec.state == "running" and not state.is_running(rec):
            rec = _wait_recorded(rec)  # just ended: its monitor is still tearing down
        if state.is_running(rec) or (rec.state == "restarting" and state.alive(rec.monitor_pid, rec.monitor_start)):
            return None
        resources.teardown(rec)  # whatever a crash left behind
        rec = state.update(rec.id, manually_stopped=False, restart_count=0, network={})
        if not attach:
            monitor.start_detached(rec)
            return None
        return monitor.start_foreground(rec, on_started=lambda _err: lock.release())
    finally:
        lock.release()


def run(opts: RunOptions) -> tuple[Container, int]:
    """create + start; returns the record and (in the foreground) the exit code."""
    monitor.fault("before-create")
    rec = create(opts)
    monitor.fault("before-namespaces")
    try:
        if opts.detach:
            with state.container_lock(rec.id):
                monitor.start_detached(rec)
            return rec, 0
        lock = state.container_lock(rec.id)
        try:
            return rec, monitor.start_foreground(rec, on_started=lambda _err: lock.release())
        finally:
            lock.release()
    finally:
        if opts.rm and not opts.detach:
            remove_files(rec)


# --- stop, kill, restart, wait ----------------------------------------------------


def _wait_dead(pid: int, start: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while state.alive(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return True


def _wait_recorded(rec: Container, timeout: float = 10.0) -> Container:
    """After the process died, give its monitor a moment to record the exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fresh = state.load(rec.id)
        except NotFound:
            return rec
        if fresh.state not in ("running", "restarting") or fresh.pid != rec.pid:
            return fresh
        if not state.alive(fresh.monitor_pid, fresh.monitor_start) or time.monotonic() > deadline:
            return state.reconcile(fresh)
        time.sleep(0.01)


def _signal(rec: Container, sig: int) -> None:
    try:
        os.kill(rec.pid, sig)
    except ProcessLookupError:
        pass


def stop_signal(image_cfg: dict) -> int:
    """The image's ``StopSignal`` (``SIGINT``, ``INT``, ``2``) as a number; SIGTERM without one."""
    text = str(image_cfg.get("StopSignal") or "SIGTERM").upper()
    if text.isdigit() and 0 < int(text) < signal.NSIG:
        return int(text)
    num = getattr(signal, text if text.startswith("SIG") else "SIG" + text, None)
    if not isinstance(num, int) or text.startswith("SIG_"):  # SIG_IGN, SIG_DFL are not signals
        raise CocinError(f"invalid signal: {image_cfg.get('StopSignal')}")
    return num


def _stop_locked(rec: Container, timeout: float) -> Container:
    rec = state.reconcile(state.load(rec.id))
    if rec.state in ("running", "restarting"):
        rec = state.update(rec.id, manually_stopped=True)  # no restart after this
    if not state.is_running(rec):
        return _wait_recorded(rec) if rec.state == "restarting" else rec
    _signal(rec, stop_signal(rec.config.get("image_config") or {}))
    if not _wait_dead(rec.pid, rec.pid_start, timeout):
        _signal(rec, signal.SIGKILL)
        _wait_dead(rec.pid, rec.pid_start, 10.0)
    return _wait_recorded(rec)


def stop(rec: Container, timeout: float = 10.0) -> Container:
    """SIGTERM, up to ``timeout`` seconds' grace, then SIGKILL (as ``docker stop``).

    Without ``--init`` the command is PID 1 of its namespace, and the kernel
    drops signals PID 1 installed no handler for: a command that ignores
    SIGTERM is ended by the SIGKILL.
    """
    with state.container_lock(rec.id):
        return _stop_locked(rec, timeout)


def kill(rec: Container, sig: int) -> None:
    """Send any signal to the container's main process (``docker kill``)."""
    with state.container_lock(rec.id):
        rec = state.reconcile(state.load(rec.id))
        if not state.is_running(rec):
            raise CocinError(f"container {rec.name} is not running")
        if sig == signal.SIGKILL:
            state.update(rec.id, manually_stopped=True)
        _signal(rec, sig)


def restart(rec: Container, timeout: float = 10.0) -> None:
    with state.container_lock(rec.id):
        _stop_locked(rec, timeout)
    start(rec)


def wait(rec: Container) -> int:
    """Block until the container next stops; its exit code (``docker wait``)."""
    first_pid = None
    while True:
        try:
            fresh = state.reconcile(state.load(rec.id))
        except NotFound:
            raise CocinError(f"container {rec.name} was removed while waiting") from None
        if fresh.state == "running":
            first_pid = first_pid or fresh.pid
        if fresh.state == "exited" or (fresh.state == "restarting" and first_pid):
            return fresh.exit_code if fresh.exit_code is not None else 255
        time.sleep(0.05)


# --- rm, rename, prune --------------------------------------------------------------


def remove(rec: Container, force: bool = False) -> None:
    with state.container_lock(rec.id):
        try:
            rec = state.reconcile(state.load(rec.id))
        except NotFound:
            raise NotFound(f"No such container: {rec.name}") from None
        if state.is_running(rec) or rec.state == "restarting":
            if not force:
                raise CocinError(
                    f"cannot remove container {rec.name}: container is {rec.state}: "
                    "stop the container before removing or force remove"
                )
            state.update(rec.id, manually_stopped=True)
            if state.is_running(rec):
                _signal(rec, signal.SIGKILL)
                _wait_dead(rec.pid, rec.pid_start, 10.0)
        resources.teardown(rec)
        remove_files(rec)


def remove_files(rec: Container) -> None:
    """Delete the record and directory: renamed away under the lock first, so a
    concurrent ``rm`` of the same container finds nothing instead of half."""
    from . import images

    trash = os.path.join(state.containers_dir(), f".rm-{rec.id}")
    with state.locked():
        try:
            name = state.load(rec.id).name  # the latest: a rename may have come since
        except NotFound:
            name = rec.name
        try:
            os.rename(rec.dir, trash)
        except FileNotFoundError:
            return
        state.release_name(name, rec.id)
    state.remove_tree(trash)
    try:
        os.unlink(os.path.join(state.root(), "locks", rec.id))
    except FileNotFoundError:
        pass
    images.gc_layer(rec.config.get("image_id", ""), rec.image)


def rename(rec: Container, new: str) -> None:
    check_name(new)
    with state.locked():
        fresh = state.load(rec.id)
        if fresh.name == new:
            raise CocinError(f"container {new} already has that name")
        if not state.claim_name(new, rec.id):
            raise CocinError(f"the container name {new!r} is already in use")
        old, fresh.name = fresh.name, new
        state.save(fresh)
        state.release_name(old, rec.id)
    resources.renamed(fresh)  # its peers' /etc/hosts


def prune() -> tuple[list[str], int]:
    """Remove every stopped container; their IDs and the bytes freed."""
    from . import images

    removed, freed = [], 0
    for rec in state.load_all():
        rec = state.reconcile(rec)
        if rec.state not in ("exited", "created"):
            continue
        size = images.tree_size(rec.dir)
        try:
            remove(rec)
        except CocinError:
            continue  # started meanwhile
        removed.append(rec.id)
        freed += size
    return removed, freed


def top_pids(rec: Container) -> list[int]:
    """Host PIDs of the container's processes (from its cgroup)."""
    from . import cgroups

    if not state.is_running(state.reconcile(rec)):
        raise CocinError(f"container {rec.name} is not running")
    pids = cgroups.open_existing(rec.id).procs()
    return pids or [rec.pid]


# --- network connect / disconnect ------------------------------------------------


def connect(rec: Container, net: str, ip: str | None = None) -> None:
    """``network connect``: a running container without a network joins one.

    cocin gives a container one network interface (eth0), so only a
    container that has none (``--network none``) can be connected.
    """
    with state.container_lock(rec.id):
        rec = state.reconcile(state.load(rec.id))
        if not state.is_running(rec):
            raise CocinError(f"container {rec.name} is not running")
        if (rec.network or {}).get("network"):
            raise CocinError(
                f"container {rec.name} is already connected to network {rec.network['network']}: disconnect it first"
            )
        if rec.config.get("network_mode") == "host":
            raise CocinError(f"container {rec.name} uses the host's network")
        endpoint = resources.connect(rec, rec.pid, net, ip)
        state.update(rec.id, network=endpoint)


def disconnect(rec: Container, net: str) -> None:
    with state.container_lock(rec.id):
        rec = state.load(rec.id)
        if (rec.network or {}).get("network") != net:
            raise CocinError(f"container {rec.name} is not connected to network {net}")
        resources.disconnect(rec)
        state.update(rec.id, network={})
