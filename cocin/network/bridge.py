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

Detaching is mostly bookkeeping. When a container's last process exits,
its network namespace dies and the kernel deletes both ends of the veth
pair by itself (a little later, from a work queue). Deleting a link
explicitly makes the caller wait for that same work (the kernel waits
until no CPU can still be using the link: ~20 ms), so cocin deletes the
host end only when the namespace is still alive (``network disconnect``
of a running container).

Records: ``<state dir>/<network>.json`` per network, and its endpoints
under ``"containers"`` in ``<state dir>/.runtime-<network>.json`` (see
``_with_runtime``); the endpoints are also the network's address table
(``ipam``). Everything changes under one lock, ``<state dir>/.lock``. The
host side of a network (bridge, MASQUERADE rule) is made with its first
container and then kept, empty or not, until ``network rm`` — as Docker
keeps ``docker0`` — so that starting a container is cheap; the record
says ``"active": true`` meanwhile. ``ip_forward`` is held only while some
container is attached. The firewall rules and sysctls are recomputed from
the records after every change, and applied only when they differ from
what is in place (``firewall``, ``sysctl``).

One module although it is long (~800 lines): the records and the links they
describe change together under the one lock, and attach, detach and their
rollbacks read best next to each other.
"""

from __future__ import annotations

import errno
import os
import time

from cocin import paths
from cocin.network import NetworkError, ipam, ipv4, netlink, state_dir, store

# Names for annotations only (see tests/unit/test_import_budget.py).
# ``ipaddress`` (~4 ms) is imported only when a network is created.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Iterable, Sequence
    from typing import Any

RESERVED_NAMES = ("none", "host")
DEFAULT_NAME = "bridge"
DEFAULT_BRIDGE = "cocin0"
DEFAULT_SUBNET = "172.29.0.0/16"
# Another state root's default network gets a /24 of this range, chosen by a
# hash of its directory (see default_bridge_and_subnet).
DERIVED_POOL = "172.30.0.0/16"
CONTAINER_IFNAME = "eth0"


# ----------------------------------------------------------------- records --


def _locked() -> store.locked:
    """``with _locked():`` — the one lock every change of the records takes."""
    return store.locked(os.path.join(state_dir(), ".lock"))


def _record_path(name: str) -> str:
    return os.path.join(state_dir(), f"{name}.json")


def _runtime_path(name: str) -> str:
    # A leading dot: network names cannot start with one, so no clash.
    return os.path.join(state_dir(), f".runtime-{name}.json")


RUNTIME_KEYS = ("active", "containers", "last_ip")


def _with_runtime(net: dict[str, Any]) -> dict[str, Any]:
    """Add what changes with every container to a network's definition.

    The two live apart: the definition (name, subnet, bridge...) is written
    once, durably; the endpoints and the "active" flag change twice per
    container and are written without ``fsync``, which would wait for the
    disk each time. They describe the running system only, so a power loss
    that takes the latest version (or tears the file) loses nothing that
    still exists.
    """
    try:
        runtime = store.read_json(_runtime_path(net["name"]))
    except ValueError:
        runtime = None
    if isinstance(runtime, dict):
        net["containers"] = runtime.get("containers") or {}
        net["active"] = bool(runtime.get("active"))
        net["last_ip"] = runtime.get("last_ip")
    else:  # none yet: no container has joined
        net["containers"] = {}
    return net


def _load(name: str) -> dict[str, Any] | None:
    net = store.read_json(_record_path(name))
    return _with_runtime(net) if net else None


def _save(net: dict[str, Any]) -> None:
    """Save the runtime part of ``net`` (its definition does not change)."""
    store.write_json(_runtime_path(net["name"]), {k: net.get(k) for k in RUNTIME_KEYS}, durable=False)


def _all() -> list[dict[str, Any]]:
    """Every network record, sorted by name. Attach and detach read them
    once, change them in memory and save what changed."""
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


def _find(nets: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((net for net in nets if net["name"] == name), None)


def _check_name(name: str) -> None:
    """Docker's rule, ``[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}``."""
    if not isinstance(name, str) or len(name) > 64 or not paths.valid_name(name):
        raise NetworkError(
            f"invalid network name {name!r}: use letters, digits, '_', '.' "
            "and '-', starting with a letter or digit (at most 64)"
        )
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


def addresses(network: str) -> dict[str, str]:
    """Container ID -> IP address of every container on ``network``."""
    net = _load(network)
    return {cid: ep["ip"] for cid, ep in net["containers"].items()} if net else {}


def rename_endpoint(network: str, cid: str, name: str) -> bool:
    """A container on ``network`` was renamed: its peers must now resolve the
    new name. Returns whether it had an endpoint there."""
    with _locked():
        net = _load(network)
        ep = (net or {}).get("containers", {}).get(cid)
        if net is None or ep is None:
            return False
        ep["name"] = name
        _save(net)
        return True


# ---------------------------------------------------------------- creation --


def _host_route_clash(subnet: ipaddress.IPv4Network, ours: set[str]) -> str | None:
    """Describe a host route or address inside/around ``subnet``, if any.

    If the host already routes (part of) that range somewhere, containers
    could not reach those machines, and the host could not tell which way
    to send. The default route (0.0.0.0/0) overlaps everything and is
    the way *out*, so it does not count; nor do cocin's own bridges.
    """
    import ipaddress

    names = {link.index: link.name for link in netlink.list_links()}
    for route in netlink.list_routes():
        dev = names.get(route.oif or -1, "?")
        if route.dst_len == 0 or dev in ours:
            continue
        if route.network.overlaps(subnet):
            via = f" via {route.gateway}" if route.gateway else ""
            return f"host route {route.network}{via} dev {dev}"
    for addr in netlink.list_addresses():
        if ipaddress.IPv4Address(addr.address) in subnet and names.get(addr.index) not in ours:
            return f"host address {addr.address} on {names.get(addr.index, '?')}"
    return None


def _create_locked(
    name: str, subnet: str, gateway: str | None, bridge: str | None, others: list[dict[str, Any]]
) -> dict[str, Any]:
    """Check and record a new network; ``others`` are the existing ones.
    (User input: ``ipaddress``, imported here, explains what is wrong.)"""
    import ipaddress

    try:
        net = ipaddress.IPv4Network(subnet)
    except ValueError as e:
        hint = ""
        try:
            hint = f" (did you mean {ipaddress.IPv4Network(subnet, strict=False)}?)"
        except ValueError:
            pass
        raise NetworkError(f"invalid subnet {subnet!r}: {e}{hint}") from None
    if net.prefixlen > 30:
        raise NetworkError(f"subnet {net} is too small: use at most /30")
    try:
        gw = ipaddress.IPv4Address(gateway) if gateway else next(net.hosts())
    except ValueError as e:
        raise NetworkError(f"invalid gateway {gateway!r}: {e}") from None
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise NetworkError(f"gateway {gw} is not a usable address of {net}")
    for other in others:
        if ipaddress.IPv4Network(other["subnet"]).overlaps(net):
            raise NetworkError(f"subnet {net} overlaps network {other['name']} ({other['subnet']})")
    net_id = os.urandom(32).hex()  # what secrets.token_hex(32) does
    bridge = bridge or f"cocin-{net_id[:8]}"
    try:
        netlink.check_ifname(bridge)
    except ValueError as e:
        raise NetworkError(f"bridge name: {e}") from None
    if any(other["bridge"] == bridge for other in others):
        raise NetworkError(f"bridge {bridge} is already used by another network")
    if netlink.link_exists(bridge):
        raise NetworkError(
            f"a network interface named {bridge} already exists on this host: "
            f"{_whose_link(bridge)}"
            + ("; set COCIN_DEFAULT_BRIDGE to use another name" if name == DEFAULT_NAME else "")
        )
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
    store.remove(_runtime_path(name))  # a leftover of a crash, if any
    store.write_json(_record_path(name), record)
    return _with_runtime(record)


def _whose_link(link: str) -> str:
    """Who an existing interface belongs to, as far as cocin can tell."""
    from cocin.network import firewall

    roots = set(firewall.registered_roots().values()) | {os.path.join(paths.DEFAULT_ROOT, "networks")}
    for directory in sorted(roots):
        if os.path.abspath(directory) == os.path.abspath(state_dir()):
            continue
        try:
            entries = os.listdir(directory)
        except OSError:
            entries = []
        for entry in entries:
            if entry.endswith(".json") and not entry.startswith("."):
                try:
                    other = store.read_json(os.path.join(directory, entry)) or {}
                except (OSError, ValueError):
                    continue
                if other.get("bridge") == link:
                    return (
                        f"it is the bridge of network {other.get('name')!r} of another cocin "
                        f"state root ({os.path.dirname(directory)})"
                    )
    owner = firewall.owner_of(link)
    if owner and not os.path.isdir(owner):
        return (
            f"it was made for the cocin state root {os.path.dirname(owner)}, which no longer "
            f"exists (remove what it left with: cocin network prune)"
        )
    if link.startswith("cocin"):
        return (
            "it looks like a bridge of another cocin state root, or a leftover of one "
            "(cocin network prune removes those of deleted state roots)"
        )
    return "it is not cocin's"


def default_bridge_and_subnet(others: Sequence[dict[str, Any]] = ()) -> tuple[str, str]:
    """The bridge and subnet of this root's default network.

    ``$COCIN_DEFAULT_BRIDGE`` and ``$COCIN_DEFAULT_SUBNET`` win. The normal
    root (/var/lib/cocin) uses cocin0 and 172.29.0.0/16. Any other root, as
    a second Docker daemon would, gets its own: the bridge ``cocin-xxxxxx``
    (the hash that also names its chains, so ``ip link`` and ``iptables -S``
    match by eye; at most 15 characters, IFNAMSIZ) and a /24 of 172.30.0.0/16
    picked by the same hash, moving on while one clashes with a host route
    or another network of this root (``others``).
    Asked only when the default network is first made, never per container.
    """
    bridge = os.environ.get("COCIN_DEFAULT_BRIDGE") or ""
    subnet = os.environ.get("COCIN_DEFAULT_SUBNET") or ""
    if paths.is_default_root():
        return bridge or DEFAULT_BRIDGE, subnet or DEFAULT_SUBNET
    from cocin.network import firewall

    suffix = firewall.root_suffix()
    bridge = bridge or "cocin" + suffix
    if not subnet:
        import ipaddress

        pool = list(ipaddress.IPv4Network(DERIVED_POOL).subnets(new_prefix=24))
        start = int(suffix[1:], 16) % len(pool)
        ours = {bridge} | {o["bridge"] for o in others}
        taken = [ipaddress.IPv4Network(o["subnet"]) for o in others]
        subnet = str(pool[start])
        for i in range(len(pool)):
            candidate = pool[(start + i) % len(pool)]
            if not any(t.overlaps(candidate) for t in taken) and not _host_route_clash(candidate, ours):
                subnet = str(candidate)
                break
    return bridge, subnet


def create_network(name: str, subnet: str | None, gateway: str | None = None) -> dict[str, Any]:
    """Record a new network. Its bridge appears with the first container.
    Without a subnet, the first free one of Docker's default pools."""
    _check_name(name)
    with _locked():
        nets = _all()
        if _find(nets, name):
            raise NetworkError(f"network {name} already exists")
        if not subnet:
            if gateway:
                raise NetworkError("a --gateway needs a --subnet")
            subnet = _free_subnet(nets)
        return _create_locked(name, subnet, gateway, None, nets)


def _free_subnet(others: list[dict[str, Any]]) -> str:
    """Docker's default address pools, in order: 172.17.0.0/16 ... 172.31.0.0/16,
    then 192.168.0.0/20 ... 192.168.240.0/20; skip what a network of this root
    or a host route or address (not cocin's own bridges) already covers."""
    import ipaddress

    pool = [ipaddress.IPv4Network(f"172.{i}.0.0/16") for i in range(17, 32)]
    pool += list(ipaddress.IPv4Network("192.168.0.0/16").subnets(new_prefix=20))
    taken = [ipaddress.IPv4Network(o["subnet"]) for o in others]
    ours = {o["bridge"] for o in others}
    for candidate in pool:
        if not any(t.overlaps(candidate) for t in taken) and not _host_route_clash(candidate, ours):
            return str(candidate)
    raise NetworkError(
        "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network"
    )


def default_network() -> dict[str, Any]:
    """The "bridge" network, created on first use from the environment."""
    with _locked():
        return _network_locked(_all(), DEFAULT_NAME)


def _network_locked(nets: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The network ``name`` among ``nets``; the default one is created (and
    added to ``nets``) on first use."""
    net = _find(nets, name)
    if net is not None:
        return net
    if name != DEFAULT_NAME:
        raise NetworkError(f"network {name} not found")
    bridge, subnet = default_bridge_and_subnet(nets)
    net = _create_locked(DEFAULT_NAME, subnet, None, bridge, nets)
    nets.append(net)
    return net


def check_default_network() -> None:
    """Before a container is made for the default network: make sure that
    network can exist (created on first use, or the one-line reason why
    not), so that no container is left behind half-made. Costs one
    ``stat`` once the network exists."""
    if not os.path.exists(_record_path(DEFAULT_NAME)):
        default_network()


def prune_networks() -> tuple[list[str], list[str]]:
    """``network prune``: remove this root's networks no container uses (not
    the default one, as Docker keeps ``bridge``), and what state roots whose
    directory was deleted left on the host (``firewall.prune_orphans``).
    Returns (networks removed, other things removed)."""
    from cocin.network import firewall

    removed = []
    with _locked():
        nets = _all()
        _prune_locked(nets)
        for net in [n for n in nets if n["name"] != DEFAULT_NAME and not n["containers"]]:
            _dismantle(net)
            store.remove(_record_path(net["name"]))
            store.remove(_runtime_path(net["name"]))
            nets.remove(net)
            removed.append(net["name"])
        orphans = firewall.prune_orphans()
        _reconcile_locked(nets)  # also drops the sysctl holds of deleted roots
    return removed, orphans


def remove_network(name: str) -> None:
    """Delete a network; refused while a live container is attached."""
    with _locked():
        nets = _all()
        _prune_locked(nets)
        net = _find(nets, name)
        if net is None:
            raise NetworkError(f"network {name} not found")
        if net["containers"]:
            users = ", ".join(sorted(ep["name"] for ep in net["containers"].values()))
            raise NetworkError(f"network {name} is in use by container(s): {users}")
        _dismantle(net)
        store.remove(_record_path(name))
        store.remove(_runtime_path(name))
        nets.remove(net)
        _reconcile_locked(nets)


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
    return "02:42:" + ":".join(f"{b:02x}" for b in ipv4.packed(ip))


def _ensure_bridge(net: dict[str, Any]) -> int:
    """``ip link add BRIDGE type bridge; ip addr add GATEWAY/PREFIX dev
    BRIDGE; ip link set BRIDGE up`` — skipping what already exists (usually
    everything: one lookup, and an address the kernel says it has).
    Returns the bridge's interface index."""
    bridge = net["bridge"]
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
        netlink.add_address(bridge, net["gateway"], ipv4.prefixlen_of(net["subnet"]), index=link.index)
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


def _create_veth(veth: str, mac: str, bridge_index: int, pid: int) -> None:
    """Both ends in one request: the host end plugged into the bridge and
    up, the other one born as eth0 in the namespace of ``pid``.

    A host end of that name may be left over: by a crash, or by this same
    container's previous run, whose namespace the kernel may still be
    dismantling (see ``_detach_locked``). Then it is deleted and the
    request sent once more.
    """
    try:
        netlink.create_veth(veth, CONTAINER_IFNAME, mac, master=bridge_index, up=True, peer_netns_pid=pid)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise
        _delete_link(veth)
        netlink.create_veth(veth, CONTAINER_IFNAME, mac, master=bridge_index, up=True, peer_netns_pid=pid)


# -------------------------------------------------------- the namespace --


def netns_id(pid: int | str) -> str:
    """Which network namespace process ``pid`` (or "self") is in.

    A namespace is identified by the device and inode numbers of its
    ``/proc/PID/ns/net`` file (``readlink`` shows ``net:[INODE]``); they
    stay the same for as long as the namespace exists. A process that has
    exited has no namespaces any more: its file is gone (ENOENT), zombie
    or not.
    """
    st = os.stat(f"/proc/{pid}/ns/net")
    return f"{st.st_dev}:{st.st_ino}"


def _netns_alive(endpoint: dict[str, Any]) -> bool:
    """Is the container's namespace still held by its process?

    The endpoint remembers the process and its namespace; a namespace
    lives as long as something holds it (usually: its processes). When
    the container's process is gone, so are the others of its PID
    namespace, and the namespace dies with them. An endpoint that names
    neither (none known to detach) counts as alive.
    """
    pid, netns = endpoint.get("pid"), endpoint.get("netns")
    if not pid or not netns:
        return True
    try:
        return netns_id(pid) == netns  # another one: the PID was reused
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: treat as alive, the safe side


def _setns_net(pid: int) -> None:
    """Move the calling *thread* into the network namespace of ``pid``."""
    from cocin.libc import CLONE_NEWNET, setns

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
    process never leaves its own namespace (no ``fork`` either). The
    thread comes from ``_thread``, the C module under ``threading``, which
    costs milliseconds to import.
    """
    import _thread

    result: list[Any] = []
    done = _thread.allocate_lock()
    done.acquire()

    def enter_and_open() -> None:
        try:
            _setns_net(pid)
            result.append(netlink.NetlinkSocket())
        except BaseException as e:  # reported in the caller's thread
            result.append(e)
        finally:
            done.release()

    _thread.start_new_thread(enter_and_open, ())
    done.acquire()  # released by the thread when it is done
    if not result or isinstance(result[0], BaseException):
        error = result[0] if result else None
        raise NetworkError(f"cannot enter the network namespace of process {pid}: {error or 'no answer'}") from None
    return result[0]


def _configure_inside(pid: int, ip: str, prefixlen: int, gateway: str) -> None:
    """Set up the container's side: ``eth0`` (created there by ``attach``)
    gets its address, ``lo`` and ``eth0`` come up, and everything else is
    routed via the gateway — netlink requests on a socket in its namespace."""
    with netlink_in(pid) as nl, netlink.using(nl):
        eth0 = netlink.link_index(CONTAINER_IFNAME)
        netlink.add_address(CONTAINER_IFNAME, ip, prefixlen, index=eth0)
        netlink.set_up("lo")
        netlink.set_up(CONTAINER_IFNAME)
        netlink.add_default_route(gateway, index=eth0)


# ---------------------------------------------------------- attach/detach --


def attach(
    network: str, cid: str, name: str, pid: int, ip: str | None = None, publish: Iterable[dict[str, Any] | str] = ()
) -> dict[str, Any]:
    """Connect process ``pid``'s network namespace to ``network``."""
    try:
        netns = netns_id(pid)
    except FileNotFoundError:
        raise NetworkError(f"process {pid} does not exist") from None
    if netns == netns_id("self"):
        raise NetworkError(f"process {pid} is in the host's network namespace; refusing to configure it")
    wanted_ports: list[dict[str, Any]] = []
    if publish:
        from cocin.network import ports

        wanted_ports = ports.normalize(publish)
    with _locked():
        nets = _all()
        _prune_locked(nets)
        net = _network_locked(nets, network)
        if cid in net["containers"]:  # a restart without detach: start afresh
            _detach_locked(net, cid, net["containers"][cid])
        endpoint: dict[str, Any] = {
            "network": net["name"],
            "container": cid,
            "name": name,
            "ip": None,
            "prefixlen": ipv4.prefixlen_of(net["subnet"]),
            "gateway": net["gateway"],
            "mac": None,
            "veth": veth_names(cid)[0],
            "bridge": net["bridge"],
            "ports": [],
            "port_backend": None,
            "proxy": None,
            # The namespace, to tell later whether it is still alive.
            "pid": pid,
            "netns": netns,
        }
        try:
            _attach_locked(nets, net, endpoint, ip, wanted_ports)
        except BaseException as e:
            _rollback(nets, net, cid, endpoint)
            if isinstance(e, OSError):
                raise NetworkError(f"cannot attach {name} to network {net['name']}: {e}") from e
            raise
    return dict(endpoint)


def _attach_locked(
    nets: list[dict[str, Any]],
    net: dict[str, Any],
    endpoint: dict[str, Any],
    ip: str | None,
    wanted_ports: list[dict[str, Any]],
) -> None:
    """Fill in ``endpoint`` (address, ports) and make it real; the record is
    saved last, so a failure leaves nothing to forget but what
    ``_rollback`` undoes."""
    cid, pid = endpoint["container"], endpoint["pid"]
    if wanted_ports:
        from cocin.network import ports

        endpoint["port_backend"] = ports.port_backend()
        published = {ep["name"]: ep["ports"] for other in nets for ep in other["containers"].values()}
        endpoint["ports"] = ports.resolve(wanted_ports, published)
    endpoint["ip"] = net["last_ip"] = ipam.allocate(net, cid, ip)
    endpoint["mac"] = mac_for(endpoint["ip"])
    if not net.get("active"):
        # From now on the host side exists, until "network rm".
        net["active"] = True
        _save(net)
    # The host side, on one socket: bridge, veth pair, maybe hairpin.
    with netlink.NetlinkSocket() as nl, netlink.using(nl):
        bridge_index = _ensure_bridge(net)
        _create_veth(endpoint["veth"], endpoint["mac"], bridge_index, pid)
        if endpoint["ports"] and endpoint["port_backend"] != "userspace-proxy":
            netlink.set_hairpin(endpoint["veth"])  # reaching its own published port
    _configure_inside(pid, endpoint["ip"], endpoint["prefixlen"], net["gateway"])
    if endpoint["ports"] and endpoint["port_backend"] == "userspace-proxy":
        from cocin.network import ports

        endpoint["proxy"] = ports.start_proxy(endpoint["ports"], endpoint["ip"], pid)
    net["containers"][cid] = endpoint  # this also takes the address (ipam)
    _save(net)
    _reconcile_locked(nets)


def _rollback(nets: list[dict[str, Any]], net: dict[str, Any], cid: str, endpoint: dict[str, Any]) -> None:
    """Undo a half-done attach, ignoring errors (the first one is reported)."""
    try:
        _detach_locked(net, cid, endpoint)
    except Exception:
        pass
    try:
        _reconcile_locked(nets)
    except Exception:
        pass


def detach(network: str, cid: str, endpoint: dict[str, Any] | None = None) -> None:
    """Disconnect a container; idempotent, fine after the process died.

    When the container's namespace is gone, the kernel deletes both ends of
    the veth pair itself; what is left is cocin's bookkeeping, and the
    firewall rules of published ports.
    """
    with _locked():
        nets = _all()
        net = _find(nets, network)
        current = net["containers"].get(cid) if net else None
        _detach_locked(net, cid, current or endpoint)
        _reconcile_locked(nets)


def _detach_locked(net: dict[str, Any] | None, cid: str, endpoint: dict[str, Any] | None) -> None:
    """Forget the endpoint (which frees its address), stop its port proxy,
    and delete the host end of the veth pair if the namespace is alive."""
    endpoint = endpoint or {}
    if _netns_alive(endpoint):
        # Deleting one end deletes the pair; eth0 disappears from the container.
        _delete_link(endpoint.get("veth") or veth_names(cid)[0])
    # Else the namespace died with the container's processes: the kernel
    # deletes the pair itself, asynchronously. Until it has, a link of that
    # name may linger: _create_veth knows.
    if endpoint.get("proxy"):
        from cocin.network import ports

        ports.stop_proxy(endpoint["proxy"])
    if net is not None and net["containers"].pop(cid, None) is not None:
        _save(net)
    # The bridge stays, empty, until "network rm" (as Docker keeps docker0):
    # the next container finds it ready instead of paying for it again.


def _prune_locked(nets: list[dict[str, Any]]) -> None:
    """Forget endpoints whose container died without a ``detach``."""
    changed = False
    for net in nets:
        for cid, ep in list(net["containers"].items()):
            if not _netns_alive(ep):
                _detach_locked(net, cid, ep)
                changed = True
    if changed:
        _reconcile_locked(nets)


# ---------------------------------------------------- firewall and sysctls --


def _is_active(net: dict[str, Any]) -> bool:
    """Has the host side of ``net`` been made (and not removed since)?
    (Records written before the flag existed: while they have containers.)"""
    return bool(net.get("active") or net["containers"])


def _reconcile_locked(nets: list[dict[str, Any]]) -> None:
    """Recompute every firewall rule and sysctl cocin needs from the records
    and apply them: MASQUERADE (and FORWARD ACCEPTs, if the policy drops)
    per active network, ``ip_forward`` while any container is attached,
    ports per endpoint. Both ``apply`` calls do nothing when nothing
    changed, which is the common case of a container coming or going."""
    from cocin.network import firewall, sysctl
    from cocin.network.firewall import Rule

    active = [n for n in nets if _is_active(n)]
    forward = bool(active) and firewall.forward_policy_drops()
    rules: list[Rule] = []
    # Only while some container needs it: the host's own setting comes back
    # when the last one goes (issue 6), for one small write per toggle.
    wanted = {"net.ipv4.ip_forward": "1"} if any(n["containers"] for n in active) else {}
    for net in active:
        tag = f"cocin:{net['name']}"
        rules.append(
            Rule("postrouting", "MASQUERADE", src=net["subnet"], out_iface=net["bridge"], out_negated=True, comment=tag)
        )
        if forward:
            rules.append(Rule("forward", "ACCEPT", in_iface=net["bridge"], comment=tag))
            rules.append(Rule("forward", "ACCEPT", out_iface=net["bridge"], established=True, comment=tag))
        for ep in net["containers"].values():
            if ep.get("ports") and ep.get("port_backend") in ("iptables", "nft"):
                from cocin.network import ports

                rules += ports.rules(ep, forward)
                wanted.update(ports.sysctls(ep))
    firewall.apply(list(dict.fromkeys(rules)))  # drop duplicates, keep order
    sysctl.apply(wanted)
