"""Bridge networks: a virtual switch on the host, one virtual cable per container.

Attaching a container (whose process already has its own, empty, network
namespace) takes these steps, each a netlink request (see ``netlink``):

1. make sure the **bridge** exists and holds the gateway address, say
   172.29.0.1/16: the host is now a member of the containers' LAN;
2. create a **veth pair** ``vethXXXXXXX`` / ``cethXXXXXXX``; plug the first
   end into the bridge;
3. **move** the other end into the container's namespace (by PID);
4. **enter** that namespace — ``fork()``, then ``setns()`` in the child,
   because a process can only configure the namespace it is in — and there
   rename the link to ``eth0``, give it the container's address, bring
   ``lo`` and ``eth0`` up and route everything else via the gateway.

The host then forwards the containers' packets (``net.ipv4.ip_forward``)
and masquerades them behind its own address (``firewall``).

Records: ``<state dir>/<network>.json`` per network, with its endpoints
under ``"containers"``. Everything changes under one lock, ``<state
dir>/.lock``. The host side exists only while containers are attached: the
bridge is created with the first endpoint and deleted with the last, and
the firewall rules and sysctls are recomputed from the records each time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from typing import Any

from cocin.network import NetworkError, ipam, netlink, state_dir, store

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}\Z")
RESERVED_NAMES = ("none", "host")
DEFAULT_NAME = "bridge"
DEFAULT_BRIDGE = "cocin0"
DEFAULT_SUBNET = "172.29.0.0/16"
CONTAINER_IFNAME = "eth0"


# ----------------------------------------------------------------- records --

@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with store.locked(os.path.join(state_dir(), ".lock")):
        yield


def _record_path(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.json")


def _load(name: str) -> dict[str, Any] | None:
    return store.read_json(_record_path(name))


def _save(net: dict[str, Any]) -> None:
    store.write_json(_record_path(net["name"]), net)


def _all() -> list[dict[str, Any]]:
    try:
        names = sorted(os.listdir(state_dir()))
    except FileNotFoundError:
        return []
    nets = []
    for entry in names:
        # cocin's own files start with a dot, which no network name can.
        if entry.endswith(".json") and not entry.startswith("."):
            net = store.read_json(os.path.join(state_dir(), entry))
            if net:
                nets.append(net)
    return nets


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise NetworkError(f"invalid network name {name!r}: use letters, digits, '_', '.' "
                           "and '-', starting with a letter or digit (at most 64)")
    if name in RESERVED_NAMES:
        raise NetworkError(f"network name {name!r} is reserved")


def list_networks() -> list[dict[str, Any]]:
    """Every network record, sorted by name."""
    return _all()


def inspect_network(name: str) -> dict[str, Any]:
    net = _load(name)
    if net is None:
        raise NetworkError(f"network {name} not found")
    return net


def hosts_entries(network: str) -> list[tuple[str, str]]:
    """``(ip, name)`` of the containers on ``network``, for /etc/hosts."""
    net = _load(network)
    if not net:
        return []
    return sorted((ep["ip"], ep["name"]) for ep in net["containers"].values())


# ---------------------------------------------------------------- creation --

def _host_route_clash(subnet: ipaddress.IPv4Network,
                      ours: set[str]) -> str | None:
    """Describe a host route or address inside/around ``subnet``, if any.

    If the host already routes (part of) that range somewhere, containers
    could not reach those machines, and the host could not tell which way
    to send. The default route (0.0.0.0/0) overlaps everything and is
    the way *out*, so it does not count; nor do cocin's own bridges.
    """
    names = {link.index: link.name for link in netlink.list_links()}
    for route in netlink.list_routes():
        dev = names.get(route.oif or -1, "?")
        if route.dst_len == 0 or dev in ours:
            continue
        if route.network.overlaps(subnet):
            via = f" via {route.gateway}" if route.gateway else ""
            return f"host route {route.network}{via} dev {dev}"
    for addr in netlink.list_addresses():
        if (ipaddress.IPv4Address(addr.address) in subnet
                and names.get(addr.index) not in ours):
            return f"host address {addr.address} on {names.get(addr.index, '?')}"
    return None


def _create_locked(name: str, subnet: str, gateway: str | None,
                   bridge: str | None = None) -> dict[str, Any]:
    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as e:
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f" (did you mean {ipaddress.IPv4Network(subnet, strict=False)}?)"
        raise NetworkError(f"invalid subnet {subnet!r}: {e}{hint}") from None
    if net.prefixlen > 30:
        raise NetworkError(f"subnet {net} is too small: use at most /30")
    gw = ipaddress.IPv4Address(gateway) if gateway else next(net.hosts())
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise NetworkError(f"gateway {gw} is not a usable address of {net}")
    others = _all()
    for other in others:
        if ipaddress.IPv4Network(other["subnet"]).overlaps(net):
            raise NetworkError(f"subnet {net} overlaps network {other['name']} "
                               f"({other['subnet']})")
    net_id = secrets.token_hex(32)
    bridge = bridge or f"cocin-{net_id[:8]}"
    try:
        netlink.check_ifname(bridge)
    except ValueError as e:
        raise NetworkError(f"bridge name: {e}") from None
    if any(other["bridge"] == bridge for other in others):
        raise NetworkError(f"bridge {bridge} is already used by another network")
    if netlink.link_exists(bridge):
        raise NetworkError(f"a network interface named {bridge} already exists on this host "
                           f"(left over? remove it with: ip link delete {bridge})")
    clash = _host_route_clash(net, {o["bridge"] for o in others})
    if clash:
        hint = " (set COCIN_DEFAULT_SUBNET)" if name == DEFAULT_NAME else ""
        raise NetworkError(f"subnet {net} overlaps the {clash}; choose another subnet{hint}")
    record = {
        "name": name,
        "id": net_id,
        "driver": "bridge",
        "bridge": bridge,
        "subnet": str(net),
        "gateway": str(gw),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "containers": {},
    }
    _save(record)
    return record


def create_network(name: str, subnet: str, gateway: str | None = None) -> dict[str, Any]:
    """Record a new network. Its bridge appears with the first container."""
    _check_name(name)
    with _locked():
        if _load(name):
            raise NetworkError(f"network {name} already exists")
        return _create_locked(name, subnet, gateway)


def default_network() -> dict[str, Any]:
    """The "bridge" network, created on first use from the environment."""
    with _locked():
        return _default_locked()


def _default_locked() -> dict[str, Any]:
    return _load(DEFAULT_NAME) or _create_locked(
        DEFAULT_NAME,
        os.environ.get("COCIN_DEFAULT_SUBNET") or DEFAULT_SUBNET,
        None,
        os.environ.get("COCIN_DEFAULT_BRIDGE") or DEFAULT_BRIDGE,
    )


def remove_network(name: str) -> None:
    """Delete a network; refused while a live container is attached."""
    with _locked():
        _prune_locked()
        net = _load(name)
        if net is None:
            raise NetworkError(f"network {name} not found")
        if net["containers"]:
            users = ", ".join(sorted(ep["name"] for ep in net["containers"].values()))
            raise NetworkError(f"network {name} is in use by container(s): {users}")
        _dismantle(net)
        ipam.forget(net)
        store.remove(_record_path(name))
        _reconcile_locked()


# ------------------------------------------------------------- host links --

def veth_names(cid: str) -> tuple[str, str]:
    """Host end ``veth`` + 7 hex characters of the container id (so ``ip
    link`` and ``cocin ps`` can be matched by eye), and the temporary name of
    the container end, before it becomes eth0."""
    short = cid[:7].lower()
    if len(short) < 7 or any(c not in "0123456789abcdef" for c in short):
        short = hashlib.sha256(cid.encode()).hexdigest()[:7]
    return f"veth{short}", f"ceth{short}"


def mac_for(ip: str) -> str:
    """A MAC address derived from the IP address, as Docker does.

    The first byte 0x02 marks a *locally administered* unicast address,
    one no hardware vendor uses. Tying it to the IP keeps neighbours' ARP
    caches right when an address is reused by the next container.
    """
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def _ensure_bridge(net: dict[str, Any]) -> None:
    """``ip link add BRIDGE type bridge; ip addr add GATEWAY/PREFIX dev
    BRIDGE; ip link set BRIDGE up`` — skipping what already exists."""
    bridge = net["bridge"]
    prefixlen = ipaddress.IPv4Network(net["subnet"]).prefixlen
    if not netlink.link_exists(bridge):
        netlink.create_bridge(bridge)
        # A bridge otherwise takes the lowest MAC of its ports, changing as
        # containers come and go; a fixed one keeps ARP caches valid.
        netlink.set_mac(bridge, mac_for(net["gateway"]))
    try:
        netlink.add_address(bridge, net["gateway"], prefixlen)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
    netlink.set_up(bridge)


def _dismantle(net: dict[str, Any]) -> None:
    """Delete the bridge (its address and route go with it)."""
    _delete_link(net["bridge"])


def _delete_link(name: str) -> None:
    try:
        netlink.delete_link(name)
    except OSError as e:
        if e.errno != errno.ENODEV:
            raise


def _same_netns(pid: int) -> bool:
    """Is process ``pid`` in our network namespace? Namespaces are identified
    by the inode of their ``/proc/PID/ns/net`` file."""
    try:
        theirs = os.stat(f"/proc/{pid}/ns/net")
    except FileNotFoundError:
        raise NetworkError(f"process {pid} does not exist") from None
    ours = os.stat("/proc/self/ns/net")
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def _setns_net(pid: int) -> None:
    """Move the calling process into the network namespace of ``pid``."""
    try:
        from cocin.libc import CLONE_NEWNET, setns
    except ImportError:  # a minimal binding, should cocin.libc lack it
        import ctypes
        CLONE_NEWNET = 0x40000000
        libc = ctypes.CDLL(None, use_errno=True)

        def setns(fd: int, nstype: int) -> None:
            if libc.setns(fd, nstype) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def _configure_inside(pid: int, ifname: str, ip: str, prefixlen: int, gateway: str) -> None:
    """Set up the container's side, from inside its network namespace.

    ``setns(2)`` changes the namespace of the calling process for good, and
    netlink sockets talk to the namespace they were created in. So a child
    is forked: it enters the namespace, opens its own netlink sockets, does
    the work and exits; the parent stays where it was. The child reports a
    failure through a pipe.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child is not traced by coverage
        status = 1
        try:
            os.close(read_end)
            _setns_net(pid)
            netlink.rename_link(ifname, CONTAINER_IFNAME)
            netlink.add_address(CONTAINER_IFNAME, ip, prefixlen)
            netlink.set_up("lo")
            netlink.set_up(CONTAINER_IFNAME)
            netlink.add_default_route(gateway, CONTAINER_IFNAME)
            status = 0
        except BaseException as e:
            with contextlib.suppress(BaseException):
                os.write(write_end, str(e).encode()[:1000])
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode(errors="replace")
    _pid, status = os.waitpid(child, 0)
    if status != 0:
        raise NetworkError(f"configuring the container's network namespace failed: "
                           f"{message or f'wait status {status}'}")


# ---------------------------------------------------------- attach/detach --

def attach(network: str, cid: str, name: str, pid: int, ip: str | None = None,
           publish: Iterable[dict[str, Any] | str] = ()) -> dict[str, Any]:
    """Connect process ``pid``'s network namespace to ``network``."""
    from cocin.network import ports
    wanted_ports = ports.normalize(publish)
    if _same_netns(pid):
        raise NetworkError(f"process {pid} is in the host's network namespace; "
                           "refusing to configure it")
    with _locked():
        _prune_locked()
        if network == DEFAULT_NAME:
            net = _default_locked()
        else:
            net = _load(network)
            if net is None:
                raise NetworkError(f"network {network} not found")
        if cid in net["containers"]:   # a restart without detach: start afresh
            _detach_locked(net, cid, net["containers"][cid])
        published = {ep["name"]: ep["ports"] for other in _all()
                     for ep in other["containers"].values()}
        backend = ports.port_backend()
        veth, peer = veth_names(cid)
        prefixlen = ipaddress.IPv4Network(net["subnet"]).prefixlen
        endpoint: dict[str, Any] = {
            "network": net["name"], "container": cid, "name": name, "ip": None,
            "prefixlen": prefixlen, "gateway": net["gateway"], "mac": None,
            "veth": veth, "bridge": net["bridge"], "ports": [],
            "port_backend": backend, "proxy": None,
        }
        try:
            endpoint["ports"] = ports.resolve(wanted_ports, published)
            endpoint["ip"] = ipam.allocate(net, cid, ip)
            endpoint["mac"] = mac_for(endpoint["ip"])
            _ensure_bridge(net)
            _delete_link(veth)       # a leftover of a crash, if any
            netlink.create_veth(veth, peer, endpoint["mac"])
            netlink.set_master(veth, net["bridge"])
            if endpoint["ports"] and backend != "userspace-proxy":
                netlink.set_hairpin(veth)  # reaching its own published port
            netlink.set_up(veth)
            netlink.move_to_netns(peer, pid)
            _configure_inside(pid, peer, endpoint["ip"], prefixlen, net["gateway"])
            if backend == "userspace-proxy" and endpoint["ports"]:
                endpoint["proxy"] = ports.start_proxy(endpoint["ports"], endpoint["ip"], pid)
            net["containers"][cid] = endpoint
            _save(net)
            _reconcile_locked()
        except BaseException as e:
            _rollback(net, cid, endpoint)
            if isinstance(e, OSError):
                raise NetworkError(f"cannot attach {name} to network {net['name']}: {e}") \
                    from e
            raise
    return dict(endpoint)


def _rollback(net: dict[str, Any], cid: str, endpoint: dict[str, Any]) -> None:
    """Undo a half-done attach, ignoring errors (the first one is reported)."""
    with contextlib.suppress(Exception):
        _detach_locked(net, cid, endpoint)
    with contextlib.suppress(Exception):
        _reconcile_locked()


def detach(network: str, cid: str, endpoint: dict[str, Any] | None = None) -> None:
    """Disconnect a container; idempotent, fine after the process died.

    When the container's namespace is gone, the kernel has already deleted
    both ends of the veth pair; what is left is cocin's bookkeeping, the
    firewall rules and maybe the bridge.
    """
    with _locked():
        net = _load(network)
        _detach_locked(net, cid, (net or {}).get("containers", {}).get(cid) or endpoint)
        _reconcile_locked()


def _detach_locked(net: dict[str, Any] | None, cid: str,
                   endpoint: dict[str, Any] | None) -> None:
    from cocin.network import ports
    _delete_link((endpoint or {}).get("veth") or veth_names(cid)[0])
    if endpoint:
        ports.stop_proxy(endpoint.get("proxy"))
    if net is None:
        return
    ipam.release(net, cid)
    if net["containers"].pop(cid, None) is not None:
        _save(net)
    if not net["containers"]:
        _dismantle(net)


def _prune_locked() -> None:
    """Forget endpoints whose container died without a ``detach``.

    The kernel deletes a veth pair when either namespace dies, so an
    endpoint whose host end is gone belongs to a dead container.
    """
    nets = [n for n in _all() if n["containers"]]
    if not nets:
        return
    links = {link.name for link in netlink.list_links()}
    changed = False
    for net in nets:
        for cid, ep in list(net["containers"].items()):
            if ep["veth"] not in links:
                _detach_locked(net, cid, ep)
                changed = True
    if changed:
        _reconcile_locked()


# ---------------------------------------------------- firewall and sysctls --

def _reconcile_locked() -> None:
    """Recompute every firewall rule and sysctl cocin needs from the records
    and apply them: MASQUERADE per active network, ports per endpoint,
    ``ip_forward`` while any network is active."""
    from cocin.network import firewall, ports, sysctl
    from cocin.network.firewall import Rule
    active = [n for n in _all() if n["containers"]]
    forward = bool(active) and firewall.forward_policy_drops()
    rules: list[Rule] = []
    wanted = {"net.ipv4.ip_forward": "1"} if active else {}
    for net in active:
        tag = f"cocin:{net['name']}"
        rules.append(Rule("postrouting", "MASQUERADE", src=net["subnet"],
                          out_iface=net["bridge"], out_negated=True, comment=tag))
        if forward:
            rules.append(Rule("forward", "ACCEPT", in_iface=net["bridge"], comment=tag))
            rules.append(Rule("forward", "ACCEPT", out_iface=net["bridge"], established=True,
                              comment=tag))
        for ep in net["containers"].values():
            if ep.get("port_backend") in ("iptables", "nft"):
                rules += ports.rules(ep, forward)
                wanted.update(ports.sysctls(ep))
    firewall.apply(list(dict.fromkeys(rules)))  # drop duplicates, keep order
    sysctl.apply(wanted)
