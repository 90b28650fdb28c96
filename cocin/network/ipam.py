"""IPAM (IP address management): which container gets which address.

A subnet such as 10.77.0.0/29 holds 8 addresses, but not all can go to
containers:

* the first, 10.77.0.0, names the network itself;
* the last, 10.77.0.7, is the broadcast address (sent to everyone);
* one more, by convention the first usable (10.77.0.1), is the gateway:
  it is put on the bridge, and containers route everything through it.

That leaves 10.77.0.2 ... 10.77.0.6 for containers.

There is no allocation table of its own: a network record's endpoints
(``network["containers"]``, one per attached container, each with its
``ip``) *are* the table. The caller holds the network lock from choosing an
address until the endpoint that holds it is saved (see ``bridge.attach``),
so concurrent ``cocin run`` commands never get the same address; and
detaching a container, which deletes its endpoint, frees its address. One
file written per attach or detach, and no second copy that could disagree.

A *network* argument is a network record: a dict with ``name``, ``subnet``,
optionally ``gateway`` (default: the first usable address) and
``containers``.
"""

from __future__ import annotations

from cocin.network import NetworkError, ipv4

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


def subnet_of(network: dict[str, Any]) -> tuple[int, int]:
    """``(network address, prefix length)`` as integers (see ``ipv4``)."""
    try:
        return ipv4.parse_subnet(network["subnet"])
    except ValueError as e:
        raise NetworkError(f"invalid subnet {network['subnet']!r}: {e}") from None


def gateway_of(network: dict[str, Any]) -> int:
    """The gateway: as recorded, or else the first usable address."""
    if network.get("gateway"):
        return ipv4.parse(network["gateway"])
    return subnet_of(network)[0] + 1


def reserved(network: dict[str, Any]) -> set[int]:
    """Addresses never given to a container: network, broadcast, gateway."""
    net, prefixlen = subnet_of(network)
    return {net, ipv4.broadcast(net, prefixlen), gateway_of(network)}


def candidates(network: dict[str, Any]) -> Iterator[str]:
    """Every address a container could get: the subnet minus its network,
    broadcast and gateway addresses. (A /31 or /32 has no room for that;
    cocin refuses subnets smaller than /30.)

    In turn, as Docker does, starting after the last one handed out
    (``network["last_ip"]``) and wrapping around: an address just freed is
    the last to be given again. The kernel deletes a dead container's veth a
    little later; a new container with that address (and so that MAC) on the
    bridge meanwhile would share them with the dying link."""
    net, prefixlen = subnet_of(network)
    skip = reserved(network)
    first, end = net + 1, ipv4.broadcast(net, prefixlen)
    try:
        start = ipv4.parse(network.get("last_ip") or "") + 1
    except ValueError:
        start = first
    if not first <= start < end:
        start = first
    return (ipv4.text(ip) for span in (range(start, end), range(first, start)) for ip in span if ip not in skip)


def allocations(network: dict[str, Any]) -> dict[str, str]:
    """``{ip: owner}`` handed out on ``network``: its endpoints' addresses."""
    return {ep["ip"]: owner for owner, ep in network.get("containers", {}).items() if ep.get("ip")}


def check_requested(network: dict[str, Any], requested_ip: str) -> str:
    """A user's ``--ip``, checked: an address of the subnet that is not
    reserved. Returns it in canonical spelling."""
    name, subnet = network["name"], network["subnet"]
    try:
        wanted = ipv4.parse(requested_ip)
    except ValueError:
        raise NetworkError(f"invalid IP address {requested_ip!r}") from None
    if not ipv4.contains(*subnet_of(network), wanted):
        raise NetworkError(f"address {ipv4.text(wanted)} is outside network {name} ({subnet})")
    if wanted in reserved(network):
        raise NetworkError(
            f"address {ipv4.text(wanted)} is reserved in network {name} "
            f"({subnet}): network, gateway or broadcast address"
        )
    return ipv4.text(wanted)


def allocate(network: dict[str, Any], owner_id: str, requested_ip: str | None = None) -> str:
    """Choose the address ``owner_id`` gets on ``network`` (nothing is
    recorded: the caller's endpoint does that).

    With ``requested_ip`` that exact address, or an error saying why not.
    Otherwise the next free one (see ``candidates``). An owner that already holds an address
    gets the same one back.
    """
    taken = allocations(network)
    wanted = check_requested(network, requested_ip) if requested_ip else None
    for ip, owner in taken.items():
        if owner == owner_id and wanted in (None, ip):
            return ip
    if wanted is not None:
        holder = taken.get(wanted)
        if holder is not None:
            raise NetworkError(f"address {wanted} is already in use on network {network['name']} (by {holder[:12]})")
        return wanted
    chosen = next((ip for ip in candidates(network) if ip not in taken), None)
    if chosen is None:
        raise NetworkError(f"network {network['name']} has no free address ({network['subnet']})")
    return chosen
