"""The command line: parse Docker-style flags, call one verb, print, exit.

This is the only module that parses flags or prints tables. Exit codes follow
Docker: 125 when cocin itself fails (bad flag, unknown container, ...), 126
when the command cannot be executed, 127 when it is not found, otherwise the
container's own exit code.
"""

from __future__ import annotations

import os
import sys
import time

from . import state
from .state import CocinError

# Names used only in annotations: importing typing costs milliseconds at start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


# --- helpers ------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """Docker's wording for a span of time ("About a minute", "3 hours")."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 3:
        return f"{h // (24 * 7)} weeks"
    if h < 24 * 365 * 2:
        return f"{h // (24 * 30)} months"
    return f"{h // (24 * 365)} years"


def status_text(rec: state.Container, now: float) -> str:
    if rec.state == "running":
        return f"Up {human_duration(now - rec.started)}"
    if rec.state == "restarting":
        return f"Restarting ({rec.exit_code}) {human_duration(now - rec.finished)} ago"
    if rec.state == "exited":
        return f"Exited ({rec.exit_code}) {human_duration(now - rec.finished)} ago"
    return "Created"


def command_text(argv: list[str], width: int = 20) -> str:
    """The COMMAND column: argv shell-quoted, truncated with an ellipsis."""
    import shlex

    text = " ".join(shlex.quote(a) for a in argv)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f'"{text}"'


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def parse_env(items: list[str], files: list[str]) -> list[str]:
    """``-e KEY=VALUE``, ``-e KEY`` (value from our environment) and --env-file."""
    out = []
    for path in files:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise CocinError(f"cannot read env file {path}: {e.strerror}") from None
        out += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    out += items
    env = []
    for item in out:
        key, eq, _ = item.partition("=")
        if not key or " " in key:
            raise CocinError(f"invalid environment variable: {item!r}")
        if eq:
            env.append(item)
        elif key in os.environ:
            env.append(f"{key}={os.environ[key]}")
    return env


def parse_volume(spec: str) -> tuple[str, str, bool]:
    parts = spec.split(":")
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        return os.path.normpath(parts[0]), parts[1], parts[2] == "ro"
    if len(parts) == 2:
        return os.path.normpath(parts[0]), parts[1], False
    raise CocinError(f"invalid volume specification {spec!r}: use HOST:CONTAINER[:ro]")


# --- verbs ----------------------------------------------------------------------


def _limits(a: argparse.Namespace) -> dict:
    """Resource flags -> validated limits, checked against this host's cgroups."""
    from . import cgroups

    try:
        limits = cgroups.parse_limits(
            memory=a.memory,
            memory_swap=a.memory_swap,
            cpus=a.cpus,
            cpu_shares=a.cpu_shares,
            cpuset_cpus=a.cpuset_cpus,
            cpuset_mems=a.cpuset_mems,
            pids_limit=a.pids_limit,
        )
        cgroups.check(limits)
    except cgroups.CgroupError as e:
        raise CocinError(str(e)) from None
    return limits.to_dict()


def _run_options(a: argparse.Namespace):
    from .runtime import RunOptions

    return RunOptions(
        limits=_limits(a),
        image=a.image,
        argv=a.command,
        name=a.name,
        detach=getattr(a, "detach", False),
        interactive=a.interactive,
        tty=a.tty,
        rm=a.rm,
        env=parse_env(a.env, a.env_file),
        workdir=a.workdir,
        volumes=[parse_volume(v) for v in a.volume],
        hostname=a.hostname,
        network=a.network,
        publish=a.publish,
        ip=a.ip,
        dns=a.dns,
        restart=a.restart,
        init=a.init,
        privileged=a.privileged,
        cap_add=a.cap_add,
        cap_drop=a.cap_drop,
        security_opt=a.security_opt,
        read_only=a.read_only,
        tmpfs=a.tmpfs,
        user=a.user,
        group_add=a.group_add,
        devices=a.device,
        ulimits=a.ulimit,
        sysctls=a.sysctl,
        entrypoint=a.entrypoint,
        pull=a.pull,
    )


@command("run")
def cmd_run(a: argparse.Namespace) -> int:
    from . import runtime

    opts = _run_options(a)
    if opts.tty and not opts.detach and opts.interactive and not os.isatty(0):
        raise CocinError("the input device is not a TTY")
    rec, code = runtime.run(opts)
    if opts.detach:
        print(rec.id)
    return code


@command("create")
def cmd_create(a: argparse.Namespace) -> int:
    from . import runtime

    a.detach = False
    print(runtime.create(_run_options(a)).id)
    return 0


@command("start")
def cmd_start(a: argparse.Namespace) -> int:
    from . import runtime

    if a.attach and len(a.containers) > 1:
        raise CocinError("you cannot start and attach multiple containers at once")
    if a.attach:
        return runtime.start(state.find(a.containers[0]), attach=True) or 0
    return _each(a.containers, lambda r: runtime.start(r))


def _each(refs: list[str], fn) -> int:
    """Docker's way with several containers: print each one done, report each
    failure on its own line and go on; exit 125 if any failed (cocin's code for its
    own failures; Docker exits 1)."""
    code = 0
    for ref in refs:
        try:
            fn(state.find(ref))
            print(ref)
        except CocinError as e:
            print(f"cocin: error: {e}", file=sys.stderr)
            code = 125
    return code


@command("restart")
def cmd_restart(a: argparse.Namespace) -> int:
    from . import runtime

    return _each(a.containers, lambda r: runtime.restart(r, a.time))


def parse_signal(text: str) -> int:
    import signal

    name = text.upper()
    if name.isdigit():
        num = int(name)
        if not 0 < num < signal.NSIG:
            raise CocinError(f"invalid signal: {text}")
        return num
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(getattr(signal.Signals, name))
    except AttributeError:
        raise CocinError(f"invalid signal: {text}") from None


@command("kill")
def cmd_kill(a: argparse.Namespace) -> int:
    from . import runtime

    sig = parse_signal(a.signal)
    return _each(a.containers, lambda r: runtime.kill(r, sig))


@command("wait")
def cmd_wait(a: argparse.Namespace) -> int:
    from . import runtime

    for ref in a.containers:
        print(runtime.wait(state.find(ref)), flush=True)
    return 0


@command("rename")
def cmd_rename(a: argparse.Namespace) -> int:
    from . import runtime

    runtime.rename(state.find(a.container), a.new_name)
    return 0


@command("top")
def cmd_top(a: argparse.Namespace) -> int:
    """Docker's way: run ``ps`` with the given options (default ``-ef``), keep the
    header and the lines whose PID column is one of the container's processes."""
    import subprocess

    from . import gotemplate, runtime

    pids = {str(p) for p in runtime.top_pids(state.find(a.container))}
    r = subprocess.run(["ps", *(a.ps_args or ["-ef"])], capture_output=True, text=True)
    if r.returncode != 0:
        first = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[0]
        raise CocinError(f"ps: {first}")
    lines = r.stdout.splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise CocinError("Couldn't find PID field in ps output")
    col, rows = titles.index("PID"), ["\t".join(titles)]
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > col and fields[col] in pids:  # the last column keeps its spaces
            rows.append("\t".join(fields[: len(titles) - 1] + [" ".join(fields[len(titles) - 1 :])]))
    print(gotemplate.tabwrite("\n".join(rows), minwidth=20, padding=3))
    return 0


@command("container")
def cmd_container(a: argparse.Namespace) -> int:
    from . import runtime

    if a.container_verb != "prune":
        raise CocinError("usage: cocin container prune [-f] (see 'cocin container --help')")
    if not a.force and not _confirm("WARNING! This will remove all stopped containers."):
        return 0
    removed, freed = runtime.prune()
    print("Deleted Containers:")
    for cid in removed:
        print(cid)
    print(f"\nTotal reclaimed space: {_human_size(freed)}")
    return 0


def _confirm(warning: str) -> bool:
    """Docker's prompt: the warning, then ``Are you sure you want to continue? [y/N]``."""
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    if not answer:
        sys.stdout.write("\n")
    return answer in ("y", "yes")


@command("inspect")
def cmd_inspect(a: argparse.Namespace) -> int:
    import json

    from . import inspect

    tmpl = inspect.template(a.format) if a.format and a.format != "json" else None
    out, code = [], 0
    for ref in a.objects:
        try:
            out.append(inspect.describe(ref, a.type))
        except state.NotFound:
            sys.stderr.write(f"Error: No such object: {ref}\n")
            code = 1
    if tmpl is not None:
        for obj in out:
            print(inspect.render(tmpl, obj))
    elif a.format == "json":
        print(json.dumps(out, separators=(",", ":")))
    else:
        print(json.dumps(out, indent=4))
    return code


@command("exec")
def cmd_exec(a: argparse.Namespace) -> int:
    from . import nsexec

    rec = state.find(a.container)
    if a.tty and a.interactive and not os.isatty(0):
        raise CocinError("the input device is not a TTY")
    opts = nsexec.ExecOptions(
        argv=a.command,
        env=parse_env(a.env, a.env_file),
        workdir=a.workdir,
        interactive=a.interactive,
        tty=a.tty,
        detach=a.detach,
        user=a.user,
        privileged=a.privileged,
    )
    return nsexec.exec_in(rec, opts)


@command("ps")
def cmd_ps(a: argparse.Namespace) -> int:
    now = time.time()
    recs = [state.reconcile(r) for r in state.load_all()]
    if not a.all:  # Docker hides only the stopped: restarting ones are listed
        recs = [r for r in recs if r.state in ("running", "restarting")]
    recs.reverse()  # newest first, as Docker
    if a.format and not a.quiet:
        return _print_format(a.format, [_ps_fields(r, now, a.no_trunc) for r in recs], _PS_HEADERS)
    if a.quiet:
        for r in recs:
            print(r.short_id if not a.no_trunc else r.id)
        return 0
    rows = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]]
    for r in recs:
        rows.append(
            [
                r.id if a.no_trunc else r.short_id,
                r.image,
                command_text(r.argv, 10**6 if a.no_trunc else 20),
                f"{human_duration(now - r.created)} ago",
                status_text(r, now),
                ", ".join(port_lines(r, arrow="->")) if r.state == "running" else "",
                r.name,
            ]
        )
    print(table(rows))
    return 0


_PS_HEADERS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "State": "STATE",
    "Status": "STATUS",
    "Names": "NAMES",
    "Size": "SIZE",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "Networks": "NETWORKS",
}


def _ps_fields(r: state.Container, now: float, no_trunc: bool) -> dict:
    """The fields ``ps --format`` knows (Docker's container context)."""
    ep = r.network or {}
    return {
        "ID": r.id if no_trunc else r.short_id,
        "Image": r.image,
        "Command": command_text(r.argv, 10**6 if no_trunc else 20),
        "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(r.created)),
        "RunningFor": f"{human_duration(now - r.created)} ago",
        "State": r.state,
        "Status": status_text(r, now),
        "Names": r.name,
        "Size": "0B",
        "Labels": "",
        "Ports": ", ".join(port_lines(r, arrow="->")) if r.state == "running" else "",
        "Mounts": ",".join(c for _h, c, _ro in r.config.get("volumes", [])),
        "Networks": ep.get("network") or r.config.get("network_mode") or "",
    }


def _print_format(fmt: str, rows: list[dict], headers: dict[str, str]) -> int:
    """``--format``: a Go template per row, ``table`` for a header and columns."""
    from . import gotemplate

    if fmt == "table":
        fmt = "table " + "\t".join("{{." + k + "}}" for k in headers)
    try:
        sys.stdout.write(gotemplate.render_rows(fmt, rows, headers))
    except gotemplate.TemplateError as e:
        raise CocinError(f"template parsing error: {e}") from None
    return 0


def port_lines(rec: state.Container, arrow: str) -> list[str]:
    """Published ports: "0.0.0.0:8080->80/tcp" (ps) or "80/tcp -> 0.0.0.0:8080" (port)."""
    out = []
    for p in (rec.network or {}).get("ports", []):
        host = f"{p.get('host_ip') or '0.0.0.0'}:{p['host_port']}"
        ctr = f"{p['container_port']}/{p.get('proto', 'tcp')}"
        out.append(f"{host}->{ctr}" if arrow == "->" else f"{ctr} -> {host}")
    return out


@command("port")
def cmd_port(a: argparse.Namespace) -> int:
    rec = state.reconcile(state.find(a.container))
    lines = port_lines(rec, arrow=" -> ") if state.is_running(rec) else []
    if a.port:
        want = a.port if "/" in a.port else a.port + "/tcp"
        lines = [ln for ln in lines if ln.startswith(want + " ")]
        if not lines:
            raise CocinError(f"no public port '{want}' published for {rec.name}")
        lines = [ln.split(" -> ")[1] for ln in lines]
    for ln in lines:
        print(ln)
    return 0


@command("network")
def cmd_network(a: argparse.Namespace) -> int:
    import json

    from . import network, runtime

    if a.net_verb == "create":
        net = network.create_network(a.name, a.subnet, a.gateway)
        print(net.get("id", net["name"]))
    elif a.net_verb in ("ls", "list"):
        nets = network.list_networks()
        if a.quiet:
            print("\n".join(n["name"] for n in nets))
            return 0
        rows = [["NETWORK ID", "NAME", "DRIVER", "SCOPE"]]
        rows += [[str(n.get("id", n["name"]))[:12], n["name"], n.get("driver", "bridge"), "local"] for n in nets]
        print(table(rows))
    elif a.net_verb == "inspect":
        out = [_network_json(network.inspect_network(name), network.port_backend()) for name in a.names]
        if a.format:
            from . import inspect

            tmpl = inspect.template(a.format)
            for net in out:
                print(inspect.render(tmpl, net))
        else:
            print(json.dumps(out, indent=4))
    elif a.net_verb == "rm":
        for name in a.names:
            network.remove_network(name)
            print(name)
    elif a.net_verb == "prune":
        nets, orphans = network.prune_networks()
        if nets:
            print("Deleted Networks:\n" + "\n".join(nets))
        if orphans:
            print("Deleted leftovers of removed state roots:\n" + "\n".join(orphans))
    elif a.net_verb == "connect":
        rec = state.find(a.container)
        runtime.connect(rec, a.name, a.ip)
    elif a.net_verb == "disconnect":
        rec = state.find(a.container)
        runtime.disconnect(rec, a.name)
    else:
        raise CocinError("usage: cocin network create|ls|inspect|rm|prune|connect|disconnect")
    return 0


def _network_json(net: dict, port_backend: str) -> dict:
    """``network inspect`` in Docker's shape; cocin's own record keys follow
    (bridge, subnet, gateway, containers: what older scripts and tests read)."""
    prefix = net["subnet"].partition("/")[2]
    return {
        "Name": net["name"],
        "Id": net.get("id", ""),
        "Created": net.get("created", ""),
        "Scope": "local",
        "Driver": net.get("driver", "bridge"),
        "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": net["subnet"], "Gateway": net["gateway"]}]},
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "Containers": {
            cid: {
                "Name": ep.get("name", ""),
                "MacAddress": ep.get("mac", ""),
                "IPv4Address": f"{ep.get('ip', '')}/{prefix}",
                "IPv6Address": "",
            }
            for cid, ep in (net.get("containers") or {}).items()
        },
        "Options": {"com.docker.network.bridge.name": net.get("bridge", "")},
        "Labels": {},
        "PortBackend": port_backend,
        **net,
    }


@command("logs")
def cmd_logs(a: argparse.Namespace) -> int:
    from .monitor import LOG_NAME

    rec = state.find(a.container)
    path = os.path.join(rec.dir, LOG_NAME)
    out = sys.stdout.buffer
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return 0
    with f:
        data = f.read()
        if a.tail is not None and a.tail != "all":
            try:
                n = int(a.tail)
            except ValueError:
                raise CocinError(f"invalid --tail value {a.tail!r}") from None
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        out.write(data)
        out.flush()
        while a.follow:
            chunk = f.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not state.is_running(state.reconcile(state.find(rec.id))):
                out.write(f.read())
                break
            time.sleep(0.1)
    return 0


@command("stop")
def cmd_stop(a: argparse.Namespace) -> int:
    from . import runtime

    return _each(a.containers, lambda r: runtime.stop(r, a.time))


@command("rm")
def cmd_rm(a: argparse.Namespace) -> int:
    from . import runtime

    return _each(a.containers, lambda r: runtime.remove(r, a.force))


def _stats_rows(recs: list[state.Container], interval: float) -> list[list[str]]:
    """CPU % from two samples of the cgroup's CPU time, ``interval`` apart."""
    from . import cgroups

    first = {r.id: (time.monotonic(), cgroups.open_existing(r.id).stats()) for r in recs}
    time.sleep(interval)
    rows = [["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]]
    for r in recs:
        t0, s0 = first[r.id]
        s1 = cgroups.open_existing(r.id).stats()
        cpu = (s1["cpu_usage_ns"] - s0["cpu_usage_ns"]) / max(1e-9, time.monotonic() - t0) / 1e7
        limit = s1["memory_limit"] or _host_memory()
        rows.append(
            [
                r.short_id,
                r.name,
                f"{cpu:.2f}%",
                f"{_human_size(s1['memory_usage'], 1024)} / {_human_size(limit, 1024)}",
                f"{100 * s1['memory_usage'] / limit:.2f}%",
                str(s1["pids"]),
            ]
        )
    return rows


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024


@command("stats")
def cmd_stats(a: argparse.Namespace) -> int:
    if a.containers:
        recs = [state.find(ref) for ref in a.containers]
        for r in recs:
            if not state.is_running(state.reconcile(r)):
                raise CocinError(f"container {r.name} is not running")
    else:
        recs = [r for r in map(state.reconcile, state.load_all()) if state.is_running(r)]
    if a.no_stream:
        print(table(_stats_rows(recs, 0.5)))
        return 0
    while True:
        rows = _stats_rows(recs, 1.0)
        sys.stdout.write("\x1b[2J\x1b[H" + table(rows) + "\n")
        sys.stdout.flush()
        recs = [r for r in recs if state.is_running(state.reconcile(state.load(r.id)))]


@command("import")
def cmd_import(a: argparse.Namespace) -> int:
    from . import archive, images

    if a.file == "-":  # the tarball on standard input
        path = archive.spool_stdin()
        try:
            img = images.import_tarball(path, a.name, a.force, "import -", a.change, a.message or "")
        finally:
            os.unlink(path)
    else:
        img = images.import_tarball(a.file, a.name, a.force, "", a.change, a.message or "")
    print(f"sha256:{img.id}")
    return 0


def _output(a: argparse.Namespace) -> str:
    if a.output:
        return a.output
    if os.isatty(1):
        raise CocinError("refusing to write a tarball to a terminal: use -o FILE or redirect")
    return "-"


@command("commit")
def cmd_commit(a: argparse.Namespace) -> int:
    from . import images

    img = images.commit(
        state.find(a.container), a.image, a.force, changes=a.change, comment=a.message or "", author=a.author or ""
    )
    print(f"sha256:{img.id}")
    return 0


@command("export")
def cmd_export(a: argparse.Namespace) -> int:
    from . import images

    rec = state.find(a.container)
    images.export(rec, _output(a))
    return 0


@command("save")
def cmd_save(a: argparse.Namespace) -> int:

    from . import archive

    archive.save(a.images, _output(a))
    return 0


@command("load")
def cmd_load(a: argparse.Namespace) -> int:
    from . import archive, images

    path = a.input
    if path is None and os.isatty(0):
        raise CocinError("requested load from stdin, but stdin is empty: use -i FILE or redirect")
    spooled = path is None or path == "-"
    if spooled:
        path = archive.spool_stdin()
    try:
        if archive.is_docker_archive(path):
            names = archive.load(path)
        else:  # the single-tree format of older cocin versions
            img = images.load(path, a.force)
            names = [img.tags[0] if img.tags else "sha256:" + img.id]
    finally:
        if spooled:
            os.unlink(path)
    if not a.quiet:
        for n in names:
            print(f"Loaded image ID: {n}" if n.startswith("sha256:") else f"Loaded image: {n}")
    return 0


@command("images")
def cmd_images(a: argparse.Namespace) -> int:
    from . import images

    now = time.time()
    rows = images.image_rows(a.reference, a.all)
    ident = (lambda i: "sha256:" + i) if a.no_trunc else (lambda i: i[:12])
    if a.quiet:
        seen: list[str] = []
        for r in rows:
            if r["id"] not in seen:
                seen.append(r["id"])
                print(ident(r["id"]))
        return 0
    if a.format:
        return _print_format(
            a.format,
            [
                {
                    "Repository": r["repository"],
                    "Tag": r["tag"],
                    "ID": ident(r["id"]),
                    "Digest": r["digest"],
                    "CreatedSince": f"{human_duration(now - r['created'])} ago",
                    "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(r["created"])),
                    "Size": _human_size(r["size"]),
                }
                for r in rows
            ],
            _IMAGE_HEADERS,
        )
    head = ["REPOSITORY", "TAG"] + (["DIGEST"] if a.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    out = [head]
    for r in rows:
        out.append(
            [r["repository"], r["tag"]]
            + ([r["digest"]] if a.digests else [])
            + [ident(r["id"]), f"{human_duration(now - r['created'])} ago", _human_size(r["size"])]
        )
    print(table(out))
    return 0


@command("pull")
def cmd_pull(a: argparse.Namespace) -> int:
    from . import registry

    registry.pull(a.image, quiet=a.quiet, platform=a.platform)
    return 0


@command("push")
def cmd_push(a: argparse.Namespace) -> int:
    from . import push

    push.push(a.image, quiet=a.quiet, all_tags=a.all_tags)
    return 0


@command("login")
def cmd_login(a: argparse.Namespace) -> int:
    from . import auth

    password = a.password
    if a.password_stdin:
        if password is not None:
            raise CocinError("--password and --password-stdin are mutually exclusive")
        if a.username is None:
            raise CocinError("Must provide --username with --password-stdin")
        password = auth.password_from_stdin()
    elif password is not None:
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n")
    auth.login(a.server, a.username, password)
    return 0


@command("logout")
def cmd_logout(a: argparse.Namespace) -> int:
    from . import auth

    auth.logout(a.server)
    return 0


@command("tag")
def cmd_tag(a: argparse.Namespace) -> int:
    from . import images

    images.tag(a.source, a.target)
    return 0


@command("history")
def cmd_history(a: argparse.Namespace) -> int:
    from . import images

    now = time.time()
    steps = images.history(images.find(a.image))
    if a.quiet:
        for s in steps:
            print(("sha256:" + s["id"] if a.no_trunc else s["id"][:12]) if s["id"] else "<missing>")
        return 0
    rows = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for s in steps:
        by = s["created_by"]
        if not a.no_trunc and len(by) > 45:
            by = by[:44] + "…"
        ident = ("sha256:" + s["id"] if a.no_trunc else s["id"][:12]) if s["id"] else "<missing>"
        rows.append([ident, f"{human_duration(now - s['created'])} ago", by, _human_size(s["size"]), s["comment"]])
    print(table(rows))
    return 0


_IMAGE_HEADERS = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "ID": "IMAGE ID",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
}


def _human_size(n: float, base: int = 1000) -> str:
    """1234567 -> "1.23MB" (Docker's sizes), or "1.18MiB" with base 1024."""
    prefixes = ("", "k", "M", "G", "T") if base == 1000 else ("", "Ki", "Mi", "Gi", "Ti")
    for prefix in prefixes:
        if n < base or prefix == prefixes[-1]:
            return f"{n:.3g}{prefix}B"
        n /= base
    return ""


@command("rmi")
def cmd_rmi(a: argparse.Namespace) -> int:
    from . import images

    code = 0
    for ref in a.images:  # as Docker: every name tried, each failure reported
        try:
            for line in images.remove(ref, a.force):
                print(line)
        except CocinError as e:
            print(f"cocin: error: {e}", file=sys.stderr)
            code = 125
    return code


# --- the parser -------------------------------------------------------------------


class _Skipped:
    """Stands in for the parser of a verb that was not asked for: every call
    (add_argument, add_argument_group, ...) is accepted and ignored."""

    def __getattr__(self, _name: str):
        return lambda *a, **k: self


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every verb but ``run``, ``create`` and ``exec`` (flags.py).

    With ``only``, just that verb's part of it: building all 30-odd
    sub-parsers costs ~10 ms (argparse looks up gettext translations for each).
    """
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse, but a usage error is one ``cocin: error:`` line and exit 125,
        and ``--help`` is laid out as Docker's (Usage, what it does, Options)."""

        def error(self, message: str):
            if message.startswith("the following arguments are required"):
                message = _arity_error(self)
            prog = f"cocin {only}" if self.prog == "cocin" and only else self.prog
            sys.stderr.write(f"cocin: error: {message} (see '{prog} --help')\n")
            sys.exit(125)

        def format_help(self) -> str:
            if self.prog == "cocin":
                return super().format_help()
            return _docker_help(self)

    parser = Parser(prog="cocin", description="A small Docker-like container runtime.")
    subparsers = parser.add_subparsers(dest="verb", metavar="COMMAND")

    class _Verbs:
        def add_parser(self, name: str, **kw):
            if only is not None and name != only:
                return _Skipped()
            if kw.get("help") and "description" not in kw:
                kw["description"] = kw["help"][0].upper() + kw["help"][1:]
            return subparsers.add_parser(name, **kw)

    sub = _Verbs()

    # Listed for "cocin --help" only (with exec): main() parses their flags with flags.py.
    sub.add_parser("run", help="run a command in a new container", add_help=False)
    sub.add_parser("create", help="create a container without starting it", add_help=False)

    p = sub.add_parser("start", help="start created or stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="attach output, pass the exit code")
    p.add_argument("-i", "--interactive", action="store_true", help="attach stdin (with -a)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("restart", help="restart containers")
    p.add_argument("-t", "--time", type=float, default=10.0, help="seconds to wait before killing")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("kill", help="send a signal to containers (default KILL)")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("wait", help="block until containers stop, print their exit codes")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("inspect", help="details of containers or images, as JSON")
    p.add_argument("-f", "--format", help="a Go-template-like format, e.g. '{{.State.Pid}}'")
    p.add_argument("--type", choices=["container", "image"], help="only objects of this type")
    p.add_argument("objects", nargs="+", metavar="NAME")

    p = sub.add_parser(
        "top", help="display the running processes of a container", usage="cocin top CONTAINER [ps OPTIONS]"
    )
    p.add_argument("container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, help="ps options (default -ef)")

    p = sub.add_parser("rename", help="rename a container")
    p.add_argument("container")
    p.add_argument("new_name")

    p = sub.add_parser("container", help="manage containers (prune)")
    csub = _described(p.add_subparsers(dest="container_verb", metavar="COMMAND"))
    q = csub.add_parser("prune", help="remove all stopped containers", usage="cocin container prune [OPTIONS]")
    q.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")

    sub.add_parser("exec", help="run a command in a running container", add_help=False)

    p = sub.add_parser("ps", help="list containers")
    p.add_argument("-a", "--all", action="store_true", help="show all containers")
    p.add_argument("-q", "--quiet", action="store_true", help="only display IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    p.add_argument("--format", help="a Go template ('table' for a header), e.g. 'table {{.ID}}\\t{{.Names}}'")

    p = sub.add_parser("port", help="list a container's published ports")
    p.add_argument("container")
    p.add_argument("port", nargs="?", help="PORT[/PROTO] to look up")

    p = sub.add_parser("network", help="manage networks")
    nsub = _described(p.add_subparsers(dest="net_verb", metavar="COMMAND"))
    q = nsub.add_parser("create", help="create a bridge network")
    q.add_argument(
        "--subnet",
        help="IPv4 subnet in CIDR form, e.g. 10.77.0.0/24 (default: a free one of 172.17-31.0.0/16, 192.168.N.0/20)",
    )
    q.add_argument("--gateway", help="the bridge's address (default: the first one)")
    q.add_argument("-d", "--driver", default="bridge", choices=["bridge"], help="only bridge")
    q.add_argument("name")
    q = nsub.add_parser("ls", aliases=["list"], help="list networks")
    q.add_argument("-q", "--quiet", action="store_true", help="only names")
    q = nsub.add_parser("inspect", help="show networks as JSON")
    q.add_argument("-f", "--format", help="a Go template, e.g. '{{range .IPAM.Config}}{{.Subnet}}{{end}}'")
    q.add_argument("names", nargs="+", metavar="NETWORK")
    q = nsub.add_parser("rm", help="remove networks no container uses")
    q.add_argument("names", nargs="+", metavar="NETWORK")
    q = nsub.add_parser("prune", help="remove unused networks, and the chains and bridges of deleted state roots")
    q.add_argument("-f", "--force", action="store_true", help="do not prompt (cocin never does)")
    q = nsub.add_parser("connect", help="connect a running container (on --network none) to a network")
    q.add_argument("--ip", help="a fixed IPv4 address")
    q.add_argument("name", metavar="NETWORK")
    q.add_argument("container")
    q = nsub.add_parser("disconnect", help="disconnect a container from a network")
    q.add_argument("name", metavar="NETWORK")
    q.add_argument("container")

    p = sub.add_parser("logs", help="fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="follow log output")
    p.add_argument("-n", "--tail", default="all", help="number of lines from the end")
    p.add_argument("container")

    p = sub.add_parser("stop", help="stop running containers")
    p.add_argument("-t", "--time", type=float, default=10.0, help="seconds to wait before killing (default 10)")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("rm", help="remove containers")
    p.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = sub.add_parser("stats", help="live resource usage of containers")
    p.add_argument("--no-stream", action="store_true", help="print one table and exit")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")

    p = sub.add_parser("import", help="create an image from a filesystem tarball")
    p.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        help="apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER, ...)",
    )
    p.add_argument("-m", "--message", help="set a commit message for the imported image")
    p.add_argument("--force", action="store_true", help="replace an existing image")
    p.add_argument("file")
    p.add_argument("name")

    p = sub.add_parser("commit", help="create a new image from a container's changes")
    p.add_argument("-a", "--author", help='author (e.g. "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument(
        "-c",
        "--change",
        action="append",
        default=[],
        help="apply a Dockerfile instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER, ...)",
    )
    p.add_argument("-m", "--message", help="commit message")
    p.add_argument("--force", action="store_true", help="replace an existing image of that name")
    p.add_argument("container")
    p.add_argument("image")

    p = sub.add_parser("export", help="a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", help="write to a file instead of stdout")
    p.add_argument("container")

    p = sub.add_parser("save", help="an image as a tar archive")
    p.add_argument("-o", "--output", help="write to a file instead of stdout")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = sub.add_parser("load", help="load an image saved by 'cocin save'")
    p.add_argument("-i", "--input", help="the tar archive to read (default: standard input)")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the load output")
    p.add_argument("--force", action="store_true", help="replace an existing image of that name")

    p = sub.add_parser("images", help="list images")
    p.add_argument("-a", "--all", action="store_true", help="show all images (untagged ones too)")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show IDs")
    p.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("--format", help="a Go template ('table' for a header)")

    p = sub.add_parser("pull", help="download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument("--platform", help="os/arch[/variant] to pull from a multi-platform image (default: the host's)")
    p.add_argument("image", metavar="NAME[:TAG|@DIGEST]")

    p = sub.add_parser("push", help="upload an image to a registry")
    p.add_argument("-a", "--all-tags", action="store_true", help="push all tags of the repository")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress verbose output")
    p.add_argument("image", metavar="NAME[:TAG]")

    p = sub.add_parser("login", help="log in to a registry (Docker Hub by default)")
    p.add_argument("-u", "--username", help="username")
    p.add_argument("-p", "--password", help="password")
    p.add_argument("--password-stdin", action="store_true", help="take the password from stdin")
    p.add_argument("server", nargs="?", metavar="SERVER")

    p = sub.add_parser("logout", help="log out from a registry (Docker Hub by default)")
    p.add_argument("server", nargs="?", metavar="SERVER")

    p = sub.add_parser("tag", help="create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")

    p = sub.add_parser("history", help="show the history of an image")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    p.add_argument("image")

    p = sub.add_parser("rmi", help="remove images")
    p.add_argument("-f", "--force", action="store_true", help="remove the name even if a container uses the image")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = sub.add_parser("build", help="build an image from a Dockerfile")
    _build_flags(p)

    p = sub.add_parser("builder", help="manage the build cache ('builder prune')")
    p.add_argument("builder_verb", choices=["prune"], metavar="prune")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    return parser


def _build_flags(p) -> None:
    """``cocin build``'s flags (issue 15); the verb lives in ``build.main``."""
    p.add_argument("-t", "--tag", action="append", default=[], help="name and optionally a tag (NAME[:TAG])")
    p.add_argument("-f", "--file", help="name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)")
    p.add_argument("--build-arg", action="append", default=[], help="set a build-time variable (K=V)")
    p.add_argument("--target", help="the build stage to build")
    p.add_argument("--no-cache", action="store_true", help="do not use the cache when building the image")
    p.add_argument("--pull", action="store_true", help="always attempt to pull a newer version of the image")
    p.add_argument("--network", default="bridge", help="the RUN steps' network: bridge, none or host")
    p.add_argument("--label", action="append", default=[], help="set metadata for the image (K=V)")
    p.add_argument("-q", "--quiet", action="store_true", help="suppress the build output, print the image ID")
    p.add_argument("--iidfile", help="write the image ID to the file")
    p.add_argument("context", metavar="PATH|-")


@command("build")
def cmd_build(a: argparse.Namespace) -> int:
    from . import build

    return build.main(a)


@command("builder")
def cmd_builder(a: argparse.Namespace) -> int:
    from . import build

    if not a.force and not _confirm("WARNING! This will remove all build cache."):
        return 0
    gone = build.prune_cache()
    for line in gone:
        print(f"Deleted: {line}")
    return 0


def _described(subparsers):
    """Nested verbs (``network create``) get their help line as description too."""
    add = subparsers.add_parser

    def add_parser(name: str, **kw):
        if kw.get("help") and "description" not in kw:
            kw["description"] = kw["help"][0].upper() + kw["help"][1:]
        return add(name, **kw)

    subparsers.add_parser = add_parser
    return subparsers


def _arity_error(parser: argparse.ArgumentParser) -> str:
    """Docker's words for missing arguments: '"cocin top" requires at least 1 argument.'"""
    least, exact = 0, True
    for action in parser._actions:
        if action.option_strings or action.dest == "help":
            continue
        nargs = action.nargs
        if nargs is None or nargs == "+":
            least += 1
        if nargs not in (None,) and not isinstance(nargs, int):
            exact = False
        if isinstance(nargs, int):
            least += nargs
    if least == 0:
        return "missing arguments"
    plural = "s" if least != 1 else ""
    return f'"{parser.prog}" requires {"exactly" if exact else "at least"} {least} argument{plural}'


def _docker_help(parser: argparse.ArgumentParser) -> str:
    """``cocin VERB --help`` as Docker prints it."""
    import argparse

    usage = parser.usage
    if not usage:
        words = [parser.prog]
        if any(a.option_strings and a.dest != "help" for a in parser._actions):
            words.append("[OPTIONS]")
        for a in parser._actions:
            if a.option_strings or a.dest == "help":
                continue
            if isinstance(a, argparse._SubParsersAction):
                words.append("COMMAND")
                continue
            name = (a.metavar or a.dest).upper()
            words.append({"+": f"{name} [{name}...]", "*": f"[{name}...]", "?": f"[{name}]"}.get(a.nargs, name))
        usage = " ".join(words)
    lines = [f"Usage:  {usage}", "", parser.description or "", ""]
    sub = parser._subparsers._group_actions[0] if parser._subparsers else None
    if sub is not None:
        lines.append("Commands:")
        for choice in sub._choices_actions:
            lines.append(f"  {choice.dest:<12}{(choice.help or '')[:1].upper()}{(choice.help or '')[1:]}")
        lines.append("")
    opts = []
    for a in parser._actions:
        if not a.option_strings or a.dest == "help":
            continue
        short = [o for o in a.option_strings if not o.startswith("--")]
        long = [o for o in a.option_strings if o.startswith("--")]
        flag = (short[0] + ", " if short else "    ") + (long[0] if long else "")
        if a.nargs != 0:
            flag += " " + ("int" if a.type is int else "float" if a.type is float else "string")
        opts.append((flag, (a.help or "")[:1].upper() + (a.help or "")[1:]))
    if opts:
        width = max(len(f) for f, _ in opts) + 3
        lines.append("Options:")
        lines += [f"  {f:<{width}}{h}".rstrip() for f, h in opts]
        lines.append("")
    if sub is not None:
        lines.append(f"Run '{parser.prog} COMMAND --help' for more information on a command.")
    return "\n".join(lines).rstrip("\n") + "\n"


def _container_flags(verb: str, argv: list[str]):
    """``run``/``create``/``exec`` flags, by flags.py: argparse's imports cost ~8 ms."""
    from . import flags

    try:
        args = flags.parse(verb, argv)
    except flags.HelpRequested:
        print(flags.help_text(verb))
        sys.exit(0)
    except flags.FlagError as e:
        sys.stderr.write(f"cocin: error: {e} (see 'cocin {verb} --help')\n")
        sys.exit(125)
    args.verb = verb
    return args


def _stdout_closed() -> bool:
    """Is standard output a pipe whose reader has gone? (``poll`` says POLLERR.)"""
    import select

    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))


# ``cocin image VERB``: the image verbs under Docker's management command.
IMAGE_VERBS = {
    "ls": ["images"],
    "list": ["images"],
    "rm": ["rmi"],
    "remove": ["rmi"],
    "tag": ["tag"],
    "history": ["history"],
    "inspect": ["inspect", "--type", "image"],
    "import": ["import"],
    "save": ["save"],
    "load": ["load"],
    "pull": ["pull"],
    "build": ["build"],
    "push": ["push"],
}


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["image"] and len(argv) > 1 and argv[1] in IMAGE_VERBS:
        argv = IMAGE_VERBS[argv[1]] + argv[2:]
    verb = argv[0] if argv and argv[0] in COMMANDS else None
    if verb in ("run", "create", "exec"):
        args = _container_flags(verb, argv[1:])
    else:
        parser = build_parser(verb)
        if verb == "top" and "--help" in argv:  # not a ps option: cocin's own help
            argv = ["top", "--help"]
        args = parser.parse_args(argv)
        if not args.verb:
            parser.print_help()
            return 0
    if os.geteuid() != 0:
        sys.stderr.write("cocin: error: cocin needs root (run it with sudo)\n")
        return 125
    return COMMANDS[args.verb](args)


def main(argv: list[str] | None = None) -> int:
    try:
        return _dispatch(sys.argv[1:] if argv is None else argv)
    except CocinError as e:
        sys.stderr.write(f"cocin: error: {e}\n")
        return e.exit_code
    except BrokenPipeError as e:
        if _stdout_closed():  # "cocin ps | head": the reader has all it wanted
            return 0
        sys.stderr.write(f"cocin: error: {e}\n")
        return 125
    except OSError as e:
        sys.stderr.write(f"cocin: error: {e}\n")
        return 125
    except KeyboardInterrupt:
        return 130
