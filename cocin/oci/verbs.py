"""The verbs of the runtime's command line, one function each (flags already parsed).

Each function gets the context (global flags, the log, the state store), the
verb's flags and its positional arguments, and returns the exit status or
raises OCIError. The lifecycle and its checks follow runc 1.1 (statuses
created -> running -> (paused) -> stopped; which verb is allowed in which
status, and its message); the container work itself goes through
``cocin.oci.core``.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from ..fastjson import dumps, loads
from . import OCIError, config, core
from .store import FIFO, check_id, freezer_state, hook_state, now_rfc3339, public_state, write_pid_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cli import Context

VERB_FUNCS: dict = {}


def verb(name: str):
    def register(fn):
        VERB_FUNCS[name] = fn
        return fn

    return register


def _need(verb_name: str, args: list[str], exact: int | None = None, least: int | None = None) -> None:
    if exact is not None and len(args) != exact:
        raise OCIError(f'"{verb_name}" requires exactly {exact} argument(s)')
    if least is not None and len(args) < least:
        raise OCIError(f'"{verb_name}" requires a minimum of {least} argument(s)')


def parse_signal(text: str) -> int:
    """``9``, ``KILL`` or ``SIGKILL`` -> 9 (runc accepts all three)."""
    if text.isdigit():
        n = int(text)
        if 0 < n < 65:
            return n
    else:
        name = text.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if isinstance(sig, signal.Signals):
            return int(sig)
    raise OCIError(f'unknown signal "{text}"')


def _wait_gone(pid: int, start: int, timeout: float = 10.0) -> bool:
    """Wait for a process that is not our child to be gone (or a zombie)."""
    from .store import proc_start_time

    deadline = time.monotonic() + timeout
    while proc_start_time(pid) == start and start:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _run_hooks(ctx: Context, rec: dict, kind: str, status: str) -> None:
    """poststart/poststop hooks of the recorded spec (failures are warnings)."""
    spec = rec.get("spec") or {}
    if (spec.get("hooks") or {}).get(kind):
        from . import hooks  # subprocess: imported only when there is a hook to run

        hooks.run_hooks(spec, kind, hook_state(rec, status), rec.get("bundle"), ctx.log.warn)


def _procs(rec: dict) -> list[int]:
    """Host pids in the container's cgroup (the init alone when there is none)."""
    from ..cgroups import Cgroup

    dirs = rec.get("cgroup_dirs") or {}
    pids = Cgroup(rec["id"], dirs).procs() if dirs else []
    if not pids and rec.get("status") != "stopped" and rec.get("pid"):
        pids = [rec["pid"]]
    return pids


# --- create, start, run ------------------------------------------------------------


def _create(ctx: Context, opts: dict, cid: str, detach: bool = True, console=None) -> dict:
    """The work of ``create`` (and of ``run``): returns the saved record."""
    from . import hooks

    ctx.refuse_cgroup_managers()
    check_id(cid)
    bundle = os.path.abspath(opts.get("bundle") or ".")
    spec, rootfs = config.load(bundle)
    preserve = opts.get("preserve-fds", 0)
    if preserve < 0:
        raise OCIError("--preserve-fds must not be negative")
    terminal = bool(spec["process"].get("terminal"))
    sock_path = opts.get("console-socket")
    if terminal and detach and not sock_path and console is None:
        raise OCIError("cannot allocate tty if cocin-oci will detach without setting console socket")
    if sock_path and not terminal:
        raise OCIError("cannot use console socket if cocin-oci will not detach or allocate tty")
    pid_file = os.path.abspath(opts["pid-file"]) if opts.get("pid-file") else None
    store = ctx.store
    d = store.claim(cid)  # from here on, a failure removes everything made
    made = None
    try:
        os.mkfifo(os.path.join(d, FIFO), 0o622)
        os.chmod(os.path.join(d, FIFO), 0o622)  # whatever the umask
        if sock_path:
            from . import console as con

            console = con.connect(sock_path)
        rec = {
            "id": cid,
            "pid": 0,
            "bundle": bundle,
            "rootfs": rootfs,
            "annotations": spec.get("annotations") or {},
        }
        made = core.create(
            spec,
            rootfs=rootfs,
            bundle=bundle,
            container_id=cid,
            state_dir=d,
            console=console,
            preserve_fds=preserve,
            no_pivot=opts.get("no-pivot", False),
            no_new_keyring=opts.get("no-new-keyring", False),
            hook_state=lambda status, pid: hook_state(dict(rec, pid=pid), status),
            run_hooks=hooks.run_hooks,
        )
        pid = int(made["pid"])
        from .store import proc_start_time

        rec.update(
            pid=pid,
            pid_start=proc_start_time(pid),
            created=now_rfc3339(),
            owner="",
            cgroup_dirs=made.get("cgroup_dirs") or {},  # none: kill --all, ps, pause see the pid alone
            owned_cgroups=sorted((made.get("cgroup_dirs") or {}).values()),
            spec=spec,
        )
        store.save(rec)
        if pid_file:
            write_pid_file(pid_file, pid)
        return rec
    except BaseException:
        if made and made.get("pid"):  # the core made it, then we failed: undo all of it
            from .store import proc_start_time

            pid = int(made["pid"])
            half = dict(rec, pid=pid, pid_start=rec.get("pid_start") or proc_start_time(pid), status="created")
            half["cgroup_dirs"] = made.get("cgroup_dirs") or {}
            half["owned_cgroups"] = sorted(half["cgroup_dirs"].values())
            _destroy(ctx, half, hooks=False)
        store.remove(cid)
        raise
    finally:
        if console is not None and sock_path:
            console.close()


@verb("create")
def create(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("create", args, exact=1)
    _create(ctx, opts, args[0])
    return 0


def _start(ctx: Context, rec: dict) -> None:
    status = rec["status"]
    if status == "stopped":
        raise OCIError("cannot start a container that has stopped")
    if status != "created":
        raise OCIError(f"cannot start an already {status} container")
    fifo = os.path.join(ctx.store.dir(rec["id"]), FIFO)
    try:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OCIError("cannot start an already running container") from None
    try:
        # The waiting process blocks in open(fifo, O_WRONLY) until we opened it for
        # reading, then writes one byte and execs. poll() waits for that byte; a
        # reader that never saw a writer gets no POLLHUP, so it does not wake early.
        from .store import proc_start_time

        data = b""
        while not data:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                data = os.read(fd, 1)
                if not data:
                    raise OCIError("cannot start an already running container")
            elif proc_start_time(rec["pid"]) != rec.get("pid_start"):
                raise OCIError("container process is already dead")
    finally:
        os.close(fd)
    try:
        os.unlink(fifo)
    except FileNotFoundError:
        pass
    _run_hooks(ctx, rec, "poststart", "running")


@verb("start")
def start(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("start", args, exact=1)
    _start(ctx, ctx.store.load(args[0]))
    return 0


@verb("run")
def run(ctx: Context, opts: dict, args: list[str]) -> int:
    """create + start; in the foreground, wait for the process and delete the container.

    In the foreground cocin-oci makes itself a *child subreaper* first, so the
    container's first process, re-parented when the core's helpers exit, becomes
    its child: it can wait for it and return its exit status, as conmon does.
    """
    _need("run", args, exact=1)
    detach = opts.get("detach", False)
    console = peer = None
    if not detach:
        from .. import libc

        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        if not opts.get("console-socket"):
            import socket

            console, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        rec = _create(ctx, opts, args[0], detach=detach, console=console)
    finally:
        if console is not None:
            console.close()
    master = None
    if peer is not None and (rec.get("spec") or {}).get("process", {}).get("terminal"):
        from .console import recv_master

        _name, master = recv_master(peer)
    if peer is not None:
        peer.close()
    rec["status"] = "created"
    _start(ctx, rec)
    if detach:
        return 0
    from ..process import forward_signals

    forward_signals(rec["pid"])
    if master is not None:
        from ..tty import relay

        relay(master, rec["pid"], sys.stdin.isatty())
    status = _reap(rec["pid"])
    if not opts.get("keep"):
        _destroy(ctx, ctx.store.load(rec["id"]))
    return status


def _reap(pid: int) -> int:
    while True:
        try:
            _, st = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0
        return os.waitstatus_to_exitcode(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st)


# --- state, list, ps ------------------------------------------------------------------


@verb("state")
def state(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("state", args, exact=1)
    rec = ctx.store.load(args[0])
    sys.stdout.write(dumps(public_state(rec)) + "\n")
    return 0


def _owner(path: str) -> str:
    import pwd

    try:
        uid = os.stat(path).st_uid
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "#?"


@verb("list")
def list_(ctx: Context, opts: dict, args: list[str]) -> int:
    fmt = opts.get("format", "table")
    if fmt not in ("table", "json"):
        raise OCIError(f"invalid format option {fmt!r}")
    recs = []
    for cid in ctx.store.ids():
        try:
            rec = ctx.store.load(cid)
        except OCIError:
            continue  # removed meanwhile
        st = public_state(rec)
        st["owner"] = _owner(ctx.store.dir(cid))
        recs.append(st)
    if opts.get("quiet"):
        sys.stdout.write("".join(r["id"] + "\n" for r in recs))
    elif fmt == "json":
        sys.stdout.write(dumps(recs) + "\n")
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"]] for r in recs]
        sys.stdout.write(table(rows))
    return 0


def table(rows: list[list[str]]) -> str:
    """Go's tabwriter as runc sets it (minwidth 12, padding 3); the last column unpadded."""
    widths = [max(12, max(len(r[i]) for r in rows) + 3) for i in range(len(rows[0]) - 1)]
    return "".join("".join(c.ljust(w) for c, w in zip(r, widths)) + r[-1] + "\n" for r in rows)


@verb("ps")
def ps(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("ps", args, least=1)
    rec = ctx.store.load(args[0])
    fmt = opts.get("format", "table")
    if fmt not in ("table", "json"):
        raise OCIError(f"invalid format option {fmt!r}")
    if rec["status"] == "stopped":
        pids: list[int] = []
    else:
        pids = _procs(rec)
    if fmt == "json":
        sys.stdout.write(dumps(pids) + "\n")
        return 0
    import subprocess

    ps_args = args[1:] or ["-ef"]
    try:
        out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise OCIError(f"ps: {e}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    try:
        col = lines[0].split().index("PID")
    except ValueError:
        raise OCIError("couldn't find PID field in ps output") from None
    wanted = set(pids)
    keep = [lines[0]] + [ln for ln in lines[1:] if len(ln.split()) > col and ln.split()[col].isdigit()]
    keep = keep[:1] + [ln for ln in keep[1:] if int(ln.split()[col]) in wanted]
    sys.stdout.write("".join(ln + "\n" for ln in keep))
    return 0


# --- kill, delete -----------------------------------------------------------------------


@verb("kill")
def kill(ctx: Context, opts: dict, args: list[str]) -> int:
    if not 1 <= len(args) <= 2:
        _need("kill", args, least=1)
        raise OCIError('"kill" requires a maximum of 2 argument(s)')
    sig = parse_signal(args[1]) if len(args) > 1 else signal.SIGTERM
    rec = ctx.store.load(args[0])
    if rec["status"] == "stopped":
        if opts.get("all"):
            return 0
        raise OCIError("container not running")
    targets = _procs(rec) if opts.get("all") else [rec["pid"]]
    for pid in targets:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        except OSError as e:
            raise OCIError(f"kill {pid}: {e.strerror.lower()}") from None
    if sig == signal.SIGKILL and rec["status"] == "paused":
        _freeze(rec, False)  # a frozen v1 task dies only once thawed
    return 0


def _destroy(ctx: Context, rec: dict, hooks: bool = True) -> None:
    """Kill what is left, remove the cgroups the core made, poststop hooks, forget it."""
    for pid in _procs(rec):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if rec.get("status") == "paused":
        _freeze(rec, False)
    if rec.get("pid"):
        _wait_gone(rec["pid"], rec.get("pid_start", 0))
    owned = rec.get("owned_cgroups") or []
    if owned:
        from ..cgroups import Cgroup, CgroupError

        try:
            Cgroup(rec["id"], {str(i): p for i, p in enumerate(owned)}).destroy()
        except CgroupError as e:
            ctx.log.warn(str(e))
    if hooks:
        _run_hooks(ctx, rec, "poststop", "stopped")
    ctx.store.remove(rec["id"])


@verb("delete")
def delete(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("delete", args, exact=1)
    cid = args[0]
    force = opts.get("force", False)
    try:
        rec = ctx.store.load(cid)
    except OCIError:
        if not force:
            raise
        check_id(cid)
        ctx.store.remove(cid)  # a half-made container: its directory only
        return 0
    status = rec["status"]
    if status in ("running", "paused") and not force:
        raise OCIError(f"cannot delete container {cid} that is not stopped: {status}")
    _destroy(ctx, rec)
    return 0


# --- pause, resume ----------------------------------------------------------------------


def _freeze(rec: dict, frozen: bool, timeout: float = 5.0) -> None:
    """The cgroup freezer: v1 ``freezer.state`` FROZEN/THAWED, v2 ``cgroup.freeze`` 1/0."""
    dirs = rec.get("cgroup_dirs") or {}
    v1 = next((p for n, p in dirs.items() if "freezer" in n.split(",")), None)
    if v1:
        path, value, want = os.path.join(v1, "freezer.state"), "FROZEN" if frozen else "THAWED", None
    else:
        v2 = dirs.get("") or dirs.get("unified")
        if not v2:
            raise OCIError("the container has no freezer cgroup")
        path, value, want = os.path.join(v2, "cgroup.freeze"), "1" if frozen else "0", None
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            raise OCIError(f"write {path}: {e.strerror.lower()}") from None
        want = "FROZEN" if frozen else "THAWED"
        if freezer_state(dirs) == want:
            return
        if time.monotonic() > deadline:
            raise OCIError(f"timeout waiting for the freezer to say {want}")
        time.sleep(0.01)


@verb("pause")
def pause(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("pause", args, exact=1)
    rec = ctx.store.load(args[0])
    if rec["status"] not in ("running", "created"):
        raise OCIError("container not running")
    _freeze(rec, True)
    return 0


@verb("resume")
def resume(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("resume", args, exact=1)
    rec = ctx.store.load(args[0])
    if rec["status"] != "paused":
        raise OCIError("container not paused")
    _freeze(rec, False)
    return 0


# --- exec, update -------------------------------------------------------------------------


def exec_process_from(opts: dict, args: list[str], spec_process: dict) -> dict:
    """The process an ``exec`` runs: ``--process FILE``, or the container's own
    process with the command line's args and --cwd/--env/--tty/--user/--cap applied
    (what runc does)."""
    if opts.get("process"):
        path = opts["process"]
        try:
            with open(path, "rb") as f:
                proc = loads(f.read())
        except FileNotFoundError:
            raise OCIError(f"open {path}: no such file or directory") from None
        except (OSError, ValueError) as e:
            raise OCIError(f"process file {path}: {e}") from None
        return config.validate_process(proc, "process")
    proc = loads(dumps(spec_process or {}))
    proc["args"] = args
    proc.pop("terminal", None)
    if opts.get("cwd"):
        proc["cwd"] = opts["cwd"]
    proc.setdefault("cwd", "/")
    if opts.get("env"):
        proc["env"] = list(proc.get("env") or []) + opts["env"]
    if opts.get("tty"):
        proc["terminal"] = True
    user = dict(proc.get("user") or {})
    if opts.get("user"):
        uid, _, gid = opts["user"].partition(":")
        try:
            user["uid"] = int(uid)
            user["gid"] = int(gid) if gid else 0
        except ValueError:
            raise OCIError(f"parsing {opts['user']} as uid:gid (numbers) failed") from None
    if opts.get("additional-gids"):
        try:
            user["additionalGids"] = [int(g) for g in opts["additional-gids"]]
        except ValueError:
            raise OCIError("--additional-gids takes numbers") from None
    proc["user"] = user
    if opts.get("cap"):
        caps = dict(proc.get("capabilities") or {})
        for kind in ("bounding", "effective", "permitted", "ambient"):
            caps[kind] = list(caps.get(kind) or []) + [c for c in opts["cap"] if c not in (caps.get(kind) or [])]
        proc["capabilities"] = caps
    if opts.get("no-new-privs"):
        proc["noNewPrivileges"] = True
    return config.validate_process(proc, "process")


@verb("exec")
def exec_(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("exec", args, least=1 if opts.get("process") else 2)
    try:
        rec = ctx.store.load(args[0])
        proc = exec_process_from(opts, args[1:], (rec.get("spec") or {}).get("process") or {})
        if rec["status"] == "stopped":
            raise OCIError("cannot exec in a stopped container")
        if rec["status"] == "paused" and not opts.get("ignore-paused"):
            raise OCIError("cannot exec in a paused container (use --ignore-paused to override)")
        detach = opts.get("detach", False)
        sock_path = opts.get("console-socket")
        if proc.get("terminal") and detach and not sock_path:
            raise OCIError("cannot allocate tty if cocin-oci will detach without setting console socket")
        if sock_path and not proc.get("terminal"):
            raise OCIError("cannot use console socket if cocin-oci will not detach or allocate tty")
        console = None
        if sock_path:
            from . import console as con

            console = con.connect(sock_path)
        try:
            result = core.exec_process(
                proc,
                pid=rec["pid"],
                container_id=rec["id"],
                cgroup_dirs=rec.get("cgroup_dirs") or {},
                spec=rec.get("spec") or {},
                console=console,
                preserve_fds=opts.get("preserve-fds", 0),
                detach=detach,
            )
        finally:
            if console is not None:
                console.close()
        if detach:
            if opts.get("pid-file"):
                write_pid_file(opts["pid-file"], int(result))
            return 0
        return int(result)
    except OCIError as e:
        raise OCIError(f"exec failed: {e}", 255) from None
    except OSError as e:
        raise OCIError(f"exec failed: {e.strerror or e}", 255) from None


def read_resources(opts: dict) -> dict:
    """``--resources FILE`` (``-``: stdin, as containerd sends it) merged with the
    single-value flags (``--memory 128m``...)."""
    res: dict = {}
    src = opts.get("resources")
    if src:
        try:
            data = sys.stdin.buffer.read() if src == "-" else open(src, "rb").read()
        except OSError as e:
            raise OCIError(f"open {src}: {e.strerror.lower()}") from None
        try:
            res = loads(data)
        except ValueError as e:
            raise OCIError(f"resources: invalid JSON: {e}") from None
        config.validate_resources(res, "resources")
    from .cli import UPDATE_FLAGS

    for flag, (group, key) in UPDATE_FLAGS.items():
        if flag not in opts:
            continue
        value = opts[flag]
        if key in ("cpus", "mems"):
            res.setdefault(group, {})[key] = value
            continue
        try:
            num = int(value) if group != "memory" else _size(value)
        except ValueError:
            raise OCIError(f"invalid value for --{flag}: {value}") from None
        res.setdefault(group, {})[key] = num
    return config.validate_resources(res, "resources")


def _size(text: str) -> int:
    """Docker's sizes: 128m, 1g, 512k, plain bytes; -1 is unlimited."""
    t = text.strip().lower()
    if t == "-1":
        return -1
    units = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


@verb("update")
def update(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("update", args, exact=1)
    ctx.refuse_cgroup_managers()
    rec = ctx.store.load(args[0])
    res = read_resources(opts)
    if rec["status"] == "stopped":
        raise OCIError("container not running")
    core.update_resources(res, container_id=rec["id"], cgroup_dirs=rec.get("cgroup_dirs") or {})
    spec = rec.get("spec") or {}
    merged = spec.setdefault("linux", {}).setdefault("resources", {})
    for key, value in res.items():
        merged[key] = dict(merged.get(key) or {}, **value) if isinstance(value, dict) else value
    rec.pop("status", None)
    ctx.store.save(rec)
    return 0


# --- spec, features ------------------------------------------------------------------------


@verb("spec")
def spec(ctx: Context, opts: dict, args: list[str]) -> int:
    _need("spec", args, exact=0)
    if opts.get("rootless"):
        raise OCIError("--rootless: rootless containers are not supported by cocin-oci yet (no user namespaces)")
    bundle = opts.get("bundle") or "."
    path = os.path.join(bundle, "config.json")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise OCIError("File config.json exists. Remove it first") from None
    except OSError as e:
        raise OCIError(f"open {path}: {(e.strerror or '').lower()}") from None
    with os.fdopen(fd, "w") as f:
        import json

        json.dump(config.default_spec(), f, indent="\t")
    return 0


@verb("features")
def features(ctx: Context, opts: dict, args: list[str]) -> int:
    from . import VERSION

    _need("features", args, exact=0)
    import json

    sys.stdout.write(json.dumps(config.features(VERSION), indent=4) + "\n")
    return 0
