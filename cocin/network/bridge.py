"""Bridge networks: a virtual switch on the host, one virtual cable per container.

Attaching a container (whose process already has its own, empty, network
namespace) takes these steps, each a netlink request (see ``netlink``):

1. make sure the **bridge** exists and holds the gateway address, say
   172.29.0.1/16: the host is now a member of the containers' LAN;
2. create a **veth pair** in one request: the host end ``vethXXXXXXX``
   plugged into the bridge, the other end created directly *inside* the
   container's namespace (by PID) under its final name ``eth0``;
3. **enter** that namespace — a thread calls ``setns()`` and opens a
   netlink socket there, because a socket talks to the namespace it was
   created in — and through it give ``eth0`` the container's address,
   bring ``lo`` up and route everything else via the gateway.

The host then forwards the containers' packets (``net.ipv4.ip_forward``)
and masquerades them behind its own address (``firewall``).

Records: ``<state dir>/<network>.json`` per network, and its endpoints
under ``"containers"`` in ``<state dir>/.runtime-<network>.json`` (see
``_with_runtime``). Everything changes under one lock, ``<state
dir>/.lock``. The host side of a network (bridge, MASQUERADE rule) is made
with its first container and then kept, empty or not, until ``network rm``
— as Docker keeps ``docker0`` — so that starting a container is cheap; the
record says ``"active": true`` meanwhile. The firewall rules and sysctls
are recomputed from the records after every change, and applied only when
they differ from what is in place (``firewall``, ``sysctl``);
``ip_forward`` is held only while some container is attached.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import re
import time
from collections.abc import Iterable, Iterator

from cocin.network import NetworkError, ipam, netlink, state_dir, store

# Only for annotations (never evaluated here, thanks to the __future__
# import): importing typing would cost every "cocin run" milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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


def _runtime_path(name: str) -> str:
    # A leading dot: network names cannot start with one, so no clash.
    return os.path.join(state_dir(), f".runtime-{name}.json")


RUNTIME_KEYS = ("active", "containers")


def _with_runtime(net: dict[str, Any]) -> dict[str, Any]:
    """Add what changes with every container to a network's definition.

    The two live apart: the definition (name, subnet, bridge...) is written
    once, durably; the endpoints and the "active" flag change twice per
    container and are written without ``fsync``, which would wait for the
    disk each time. They describe the running system only, so a power loss
    that takes the latest version (or tears the file) loses nothing that
    still exists. (A definition file written before the split carries its
    endpoints itself: they are used until a runtime file exists.)
    """
    try:
        runtime = store.read_json(_runtime_path(net["name"]))
    except ValueError:
        runtime = {}
    if isinstance(runtime, dict):
        net["containers"] = runtime.get("containers") or {}
        net["active"] = bool(runtime.get("active"))
    net.setdefault("containers", {})
    return net


def _load(name: str) -> dict[str, Any] | None:
    net = store.read_json(_record_path(name))
    return _with_runtime(net) if net else None


def _save(net: dict[str, Any]) -> None:
    """Save the runtime part of ``net`` (its definition does not change)."""
    store.write_json(_runtime_path(net["name"]), {k: net.get(k) for k in RUNTIME_KEYS},
                     durable=False)


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
                nets.append(_with_runtime(net))
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
    net_id = os.urandom(32).hex()   # what secrets.token_hex(32) does
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
    }
    store.remove(_runtime_path(name))   # a leftover of a crash, if any
    store.write_json(_record_path(name), record)
    return _with_runtime(record)


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
        store.remove(_runtime_path(name))
        _reconcile_locked()


# ------------------------------------------------------------- host links --

def veth_names(cid: str) -> tuple[str, str]:
    """Host end ``veth`` + 7 hex characters of the container id (so ``ip
    link`` and ``cocin ps`` can be matched by eye), and a name for the other
    end should it ever appear on the host (it is created directly as eth0
    in the container's namespace)."""
    short = cid[:7].lower()
    if len(short) < 7 or any(c not in "0123456789abcdef" for c in short):
        import hashlib
        short = hashlib.sha256(cid.encode()).hexdigest()[:7]
    return f"veth{short}", f"ceth{short}"


def mac_for(ip: str) -> str:
    """A MAC address derived from the IP address, as Docker does.

    The first byte 0x02 marks a *locally administered* unicast address,
    one no hardware vendor uses. Tying it to the IP keeps neighbours' ARP
    caches right when an address is reused by the next container.
    """
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def _ensure_bridge(net: dict[str, Any]) -> int:
    """``ip link add BRIDGE type bridge; ip addr add GATEWAY/PREFIX dev
    BRIDGE; ip link set BRIDGE up`` — skipping what already exists.
    Returns the bridge's interface index."""
    bridge = net["bridge"]
    prefixlen = ipaddress.IPv4Network(net["subnet"]).prefixlen
    try:
        link = netlink.get_link(bridge)
    except OSError as e:
        if e.errno != errno.ENODEV:
            raise
        netlink.create_bridge(bridge)
        # A bridge otherwise takes the lowest MAC of its ports, changing as
        # containers come and go; a fixed one keeps ARP caches valid.
        netlink.set_mac(bridge, mac_for(net["gateway"]))
        link = netlink.get_link(bridge)
    try:
        netlink.add_address(bridge, net["gateway"], prefixlen)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
    if not link.up:
        netlink.set_up(bridge)
    return link.index


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
    """Move the calling *thread* into the network namespace of ``pid``."""
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


def netlink_in(pid: int) -> netlink.NetlinkSocket:
    """A netlink socket that talks to the network namespace of ``pid``.

    A netlink socket belongs to the namespace its creator was in when it
    was created, and ``setns(2)`` on a network namespace moves only the
    calling *thread*. So a short-lived thread enters the namespace, creates
    the socket and ends; the socket keeps working from any thread, and this
    process never leaves its own namespace (no ``fork`` either).
    """
    import threading
    result: list[Any] = []

    def enter_and_open() -> None:
        try:
            _setns_net(pid)
            result.append(netlink.NetlinkSocket())
        except BaseException as e:  # reported in the caller's thread
            result.append(e)

    thread = threading.Thread(target=enter_and_open, name="cocin-netns", daemon=True)
    thread.start()
    thread.join()
    if not result or isinstance(result[0], BaseException):
        error = result[0] if result else None
        raise NetworkError(f"cannot enter the network namespace of process {pid}: "
                           f"{error or 'no answer'}") from None
    return result[0]


def _configure_inside(pid: int, ip: str, prefixlen: int, gateway: str) -> None:
    """Set up the container's side: ``eth0`` (created there by ``attach``)
    gets its address, ``lo`` and ``eth0`` come up, and everything else is
    routed via the gateway — netlink requests on a socket in its namespace."""
    with netlink_in(pid) as nl, netlink.using(nl):
        netlink.add_address(CONTAINER_IFNAME, ip, prefixlen)
        netlink.set_up("lo")
        netlink.set_up(CONTAINER_IFNAME)
        netlink.add_default_route(gateway, CONTAINER_IFNAME)


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
        veth = veth_names(cid)[0]
        prefixlen = ipaddress.IPv4Network(net["subnet"]).prefixlen
        endpoint: dict[str, Any] = {
            "network": net["name"], "container": cid, "name": name, "ip": None,
            "prefixlen": prefixlen, "gateway": net["gateway"], "mac": None,
            "veth": veth, "bridge": net["bridge"], "ports": [],
            "port_backend": backend, "proxy": None,
        }
        try:
            endpoint["ports"] = ports.resolve(wanted_ports, published)
            endpoint["ip"] = ipam.allocate(net, cid, ip, owners=net["containers"].keys())
            endpoint["mac"] = mac_for(endpoint["ip"])
            if not net.get("active"):
                # From now on the host side exists, until "network rm".
                net["active"] = True
                _save(net)
            bridge_index = _ensure_bridge(net)
            _delete_link(veth)       # a leftover of a crash, if any
            # Both ends in one request: the host end plugged into the bridge,
            # the other one born as eth0 in the container's namespace.
            netlink.create_veth(veth, CONTAINER_IFNAME, endpoint["mac"], master=bridge_index,
                                up=True, peer_netns_pid=pid)
            if endpoint["ports"] and backend != "userspace-proxy":
                netlink.set_hairpin(veth)  # reaching its own published port
            _configure_inside(pid, endpoint["ip"], prefixlen, net["gateway"])
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
    # The bridge stays, empty, until "network rm" (as Docker keeps docker0):
    # the next container finds it ready instead of paying for it again.


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

def _is_active(net: dict[str, Any]) -> bool:
    """Has the host side of ``net`` been made (and not removed since)?
    (Records written before the flag existed: while they have containers.)"""
    return bool(net.get("active") or net["containers"])


def _reconcile_locked() -> None:
    """Recompute every firewall rule and sysctl cocin needs from the records
    and apply them: MASQUERADE (and FORWARD ACCEPTs, if the policy drops)
    per active network, ports per endpoint, ``ip_forward`` while any
    container is attached. Both ``apply`` calls do nothing when nothing
    changed, which is the common case of a container coming or going."""
    from cocin.network import firewall, ports, sysctl
    from cocin.network.firewall import Rule
    active = [n for n in _all() if _is_active(n)]
    forward = bool(active) and firewall.forward_policy_drops()
    rules: list[Rule] = []
    wanted = {"net.ipv4.ip_forward": "1"} if any(n["containers"] for n in active) else {}
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
