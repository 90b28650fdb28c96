"""``inspect``: a container or image as Docker-shaped JSON, and ``-f`` templates.

``-f`` runs a Go template (cocin/gotemplate.py) on the same JSON-shaped value,
as Docker does: ``-f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}'``.
"""

from __future__ import annotations

import time

from . import state
from .state import Container, NotFound

# Names used only in annotations: importing typing costs milliseconds at start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _rfc3339(t: float) -> str:
    if not t:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def container(rec: Container) -> dict[str, Any]:
    cfg = rec.config
    limits = cfg.get("limits") or {}
    restart = cfg.get("restart") or {"name": "no", "max": 0}
    ep = rec.network or {}
    ports = {
        f"{p['container_port']}/{p.get('proto', 'tcp')}": [
            {"HostIp": p.get("host_ip") or "0.0.0.0", "HostPort": str(p["host_port"])}
        ]
        for p in ep.get("ports", [])
    }
    return {
        "Id": rec.id,
        "Created": _rfc3339(rec.created),
        "Path": rec.argv[0],
        "Args": rec.argv[1:],
        "State": {
            "Status": rec.state,
            "Running": rec.state == "running",
            "Restarting": rec.state == "restarting",
            "OOMKilled": rec.oom_killed,
            "Dead": False,
            "Pid": rec.pid if rec.state == "running" else 0,
            "ExitCode": rec.exit_code or 0,
            "StartedAt": _rfc3339(rec.started),
            "FinishedAt": _rfc3339(rec.finished),
        },
        "Image": rec.config.get("image_id", ""),
        "Name": "/" + rec.name,
        "RestartCount": rec.restart_count,
        "HostConfig": {
            "Binds": [f"{h}:{c}{':ro' if ro else ''}" for h, c, ro in cfg.get("volumes", [])],
            "NetworkMode": cfg.get("network_mode", "none"),
            "PortBindings": ports,
            "RestartPolicy": {"Name": restart["name"], "MaximumRetryCount": restart.get("max", 0)},
            "AutoRemove": bool(cfg.get("rm")),
            "Init": bool(cfg.get("init")),
            "Memory": limits.get("memory") or 0,
            "MemorySwap": limits.get("memory_swap") or 0,
            "NanoCpus": int((limits.get("cpus") or 0) * 1e9),
            "CpuShares": limits.get("cpu_shares") or 0,
            "CpusetCpus": limits.get("cpuset_cpus") or "",
            "CpusetMems": limits.get("cpuset_mems") or "",
            "PidsLimit": limits.get("pids_limit"),
            **_security(cfg),
        },
        "Mounts": [
            {"Type": "bind", "Source": h, "Destination": c, "RW": not ro} for h, c, ro in cfg.get("volumes", [])
        ],
        "Config": {
            "Hostname": cfg.get("hostname", ""),
            "Tty": bool(cfg.get("tty")),
            "OpenStdin": bool(cfg.get("interactive")),
            "Env": cfg.get("env", []),
            "Cmd": rec.argv,
            "Image": rec.image,
            "WorkingDir": cfg.get("workdir", "/"),
            "User": cfg.get("user") or "",
        },
        "NetworkSettings": {
            "IPAddress": ep.get("ip") or "",
            "Gateway": ep.get("gateway") or "",
            "MacAddress": ep.get("mac") or "",
            "Ports": ports,
            "Networks": {
                ep["network"]: {"IPAddress": ep.get("ip"), "Gateway": ep.get("gateway"), "MacAddress": ep.get("mac")}
            }
            if ep.get("network")
            else {},
        },
        "LogPath": f"{rec.dir}/container.log",
    }


def _security(cfg: dict) -> dict[str, Any]:
    """The confinement part of HostConfig, in Docker's shapes (null when empty, as Docker)."""
    return {
        "Privileged": bool(cfg.get("privileged")),
        "CapAdd": cfg.get("cap_add") or None,
        "CapDrop": cfg.get("cap_drop") or None,
        "SecurityOpt": cfg.get("security_opt") or None,
        "ReadonlyRootfs": bool(cfg.get("read_only")),
        "Tmpfs": {path: opts for path, opts in cfg.get("tmpfs") or []} or None,
        "Devices": [
            {"PathOnHost": h, "PathInContainer": c, "CgroupPermissions": p} for h, c, p in cfg.get("devices") or []
        ],
        "Ulimits": [{"Name": n, "Hard": hard, "Soft": soft} for n, soft, hard in cfg.get("ulimits") or []] or None,
        "Sysctls": {k: v for k, v in cfg.get("sysctls") or []} or None,
        "GroupAdd": cfg.get("group_add") or None,
    }


def describe(ref: str, kind: str | None = None) -> dict[str, Any]:
    """A container (by name or ID), else an image, else NotFound (``kind``: only that type)."""
    if kind != "image":
        try:
            return container(state.reconcile(state.find(ref)))
        except NotFound:
            if kind == "container":
                raise
    from . import images

    try:
        img = images.find(ref)
    except (NotFound, FileNotFoundError, state.CocinError):
        raise NotFound(ref) from None
    return images.inspect(img)


def template(fmt: str):
    """``-f``: a Go template (cocin/gotemplate.py), parsed once before any lookup.
    A bad one is an error in Docker's words, never printed back."""
    from . import gotemplate

    try:
        return gotemplate.Template(fmt)
    except gotemplate.TemplateError as e:
        raise state.CocinError(f"template parsing error: {e}") from None


def render(tmpl, obj: dict[str, Any]) -> str:
    """One object through a parsed template (Docker's inspect: the decoded JSON)."""
    from . import gotemplate

    if isinstance(tmpl, str):
        tmpl = template(tmpl)
    try:
        return tmpl.execute(obj)
    except gotemplate.TemplateError as e:
        raise state.CocinError(f"template parsing error: {e}") from None
