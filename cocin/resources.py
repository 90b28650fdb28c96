"""What a container holds *outside* its own namespaces: cgroups and network.

Mounts need no cleaning: they live in the container's mount namespace and
vanish with it. Cgroups, veth pairs, addresses and firewall rules live in the
host's namespaces and outlast the container unless removed. ``teardown`` is
idempotent and works from any process (monitor, ``rm``, ``start`` after a
crash), so whoever comes last cleans up.
"""

from __future__ import annotations

import os
import sys

from . import state
from .state import CocinError, Container, NotFound


def _warn(e: Exception) -> None:
    sys.stderr.write(f"cocin: warning: {e}\n")


# --- cgroups -------------------------------------------------------------------


def make_cgroup(rec: Container):
    """Make the container's cgroups and write its limits; returns the Cgroup.

    Done before the container process exists: it joins them itself, first
    thing after the fork, so the limits hold from the command's first
    instruction on (see Cgroup.join_self).
    """
    from . import cgroups, devices

    return cgroups.create(rec.id, cgroups.Limits.from_dict(rec.config.get("limits")), devices.rules_for(rec.config))


def release_cgroup(rec: Container) -> bool:
    """Remove the container's cgroups; return whether the OOM killer struck."""
    from . import cgroups

    cg = cgroups.open_existing(rec.id)
    oom = cg.oom_killed()
    try:
        cg.destroy()
    except CocinError as e:
        _warn(e)
    return oom


# --- network -------------------------------------------------------------------


def hosts_text(hostname: str, own_ip: str | None = None, peers: list = ()) -> str:
    """/etc/hosts: localhost, the container itself, and its network's peers."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"{own_ip}\t{hostname}" if own_ip else f"127.0.1.1\t{hostname}")
    lines += [f"{ip}\t{name}" for ip, name in peers]
    return "\n".join(lines) + "\n"


def bridged(rec: Container) -> str | None:
    """The network a container's config puts it on, or None (none/host)."""
    mode = rec.config.get("network_mode", "none")
    return None if mode in ("none", "host") else mode


def connect(rec: Container, pid: int, net: str | None = None, ip: str | None = None) -> dict:
    """Plug ``pid``'s network namespace into its network; return the endpoint."""
    net = net or bridged(rec)
    if not net:
        return {}
    from . import network

    endpoint = network.attach(
        net,
        rec.id,
        rec.name,
        pid,
        ip or rec.config.get("ip"),
        rec.config.get("publish", []) if net == bridged(rec) else [],
    )
    update_hosts(endpoint["network"], {rec.id: endpoint["ip"]})
    return endpoint


def disconnect(rec: Container) -> None:
    """Release the container's address, veth and port rules (if any)."""
    ep = rec.network or {}
    net = ep.get("network") or bridged(rec)
    if not net:
        return
    from . import network

    try:
        network.detach(net, rec.id, ep or None)
    except CocinError as e:
        if "not found" not in str(e):
            _warn(e)
    update_hosts(net, gone=rec.id)


def renamed(rec: Container) -> None:
    """After ``rename``: peers on the container's network resolve the new name."""
    net = (rec.network or {}).get("network")
    if not net:
        return
    from . import network

    network.rename_endpoint(net, rec.id, rec.name)  # for "network inspect"
    update_hosts(net)


def update_hosts(net: str, extra: dict | None = None, gone: str | None = None) -> None:
    """Rewrite /etc/hosts of every container on ``net`` so peers resolve by name.

    Addresses come from the network's endpoints, names from the containers'
    records (so a rename shows at the next rewrite, whatever happened in
    between). The file is bind-mounted into the container, so it is
    rewritten *in place*: a rename would leave the mount on the old file;
    and under the state lock, so that two rewrites never mix.
    ``extra``: ID -> IP of a container whose record does not say it yet.
    """
    from . import network

    try:
        ips = {**network.addresses(net), **(extra or {})}
    except CocinError:
        return
    ips.pop(gone, None)
    with state.locked():
        recs = []
        for cid in ips:  # only the containers on this network: not every record
            try:
                recs.append(state.load(cid))
            except NotFound:
                pass
        peers = sorted((ips[r.id], r.name) for r in recs)
        for r in recs:
            text = hosts_text(
                r.config.get("hostname", r.short_id), ips[r.id], [(ip, name) for ip, name in peers if name != r.name]
            )
            try:
                with open(os.path.join(r.dir, "hosts"), "r+") as f:
                    f.truncate(0)
                    f.write(text)
            except OSError:
                pass


# --- both -------------------------------------------------------------------------


def teardown(rec: Container) -> bool:
    """Release cgroups and network of a container whose process is gone.

    Returns whether the OOM killer had struck. Safe to call more than once
    and from any process.
    """
    oom = release_cgroup(rec)
    try:
        rec = state.load(rec.id)  # the endpoint is in the latest record
    except NotFound:
        pass
    disconnect(rec)
    return oom
