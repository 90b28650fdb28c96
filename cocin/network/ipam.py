"""IPAM (IP address management): which container has which address.

A subnet such as 10.77.0.0/29 holds 8 addresses, but not all can go to
containers:

* the first, 10.77.0.0, names the network itself;
* the last, 10.77.0.7, is the broadcast address (sent to everyone);
* one more, by convention the first usable (10.77.0.1), is the gateway:
  it is put on the bridge, and containers route everything through it.

That leaves 10.77.0.2 ... 10.77.0.6 for containers. Allocations are kept in
``<state dir>/.ipam-<network>.json`` (``{"subnet", "gateway", "allocations":
{ip: owner}}``) and changed only under an exclusive lock, so concurrent
``cocin run`` commands never get the same address (see ``store``).

A *network* argument is a network record: a dict with at least ``name``,
``subnet`` and optionally ``gateway`` (default: the first usable address).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Collection, Iterator

from cocin.network import NetworkError, state_dir, store

# Only for annotations (never evaluated here, thanks to the __future__
# import): importing typing would cost every "cocin run" milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _paths(network: dict[str, Any]) -> tuple[str, str]:
    # A leading dot: network names cannot start with one, so no clash.
    base = os.path.join(state_dir(), f".ipam-{network['name']}")
    return base + ".json", base + ".lock"


def subnet_of(network: dict[str, Any]) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(network["subnet"])
    except ValueError as e:
        raise NetworkError(f"invalid subnet {network['subnet']!r}: {e}") from None


def gateway_of(network: dict[str, Any]) -> ipaddress.IPv4Address:
    """The gateway: as recorded, or else the first usable address."""
    if network.get("gateway"):
        return ipaddress.IPv4Address(network["gateway"])
    return next(subnet_of(network).hosts())


def reserved(network: dict[str, Any]) -> set[ipaddress.IPv4Address]:
    """Addresses never given to a container: network, broadcast, gateway."""
    net = subnet_of(network)
    return {net.network_address, net.broadcast_address, gateway_of(network)}


def candidates(network: dict[str, Any]) -> Iterator[ipaddress.IPv4Address]:
    """Every address a container could get, lowest first.

    ``hosts()`` already leaves out the network and broadcast addresses
    (except in a /31 or /32, which cocin does not accept).
    """
    skip = reserved(network)
    return (ip for ip in subnet_of(network).hosts() if ip not in skip)


def _read(path: str) -> dict[str, Any] | None:
    """The allocation file. It is written without ``fsync`` (each would wait
    for the disk, twice per container); so a power loss may leave an older
    version, or on some file systems a torn one. Either way no container
    survived that, so a torn file counts as "no allocations"."""
    try:
        return store.read_json(path)
    except ValueError:
        return None


def _load(path: str, network: dict[str, Any]) -> dict[str, Any]:
    data = _read(path)
    if not data or data.get("subnet") != str(subnet_of(network)):
        # No file yet, or a leftover of a removed network of the same name.
        data = {"subnet": str(subnet_of(network)), "gateway": str(gateway_of(network)),
                "allocations": {}}
    return data


def allocate(network: dict[str, Any], owner_id: str, requested_ip: str | None = None,
             owners: Collection[str] | None = None) -> str:
    """Give ``owner_id`` an address of ``network`` and return it.

    With ``requested_ip`` that exact address, or an error saying why not. An
    owner that already holds an address gets the same one back. ``owners``,
    if given, names everyone who may hold an address (the caller's records
    say so): addresses of anyone else are left over from a crash or a power
    loss (see ``_read``) and are taken back first.
    """
    name, net = network["name"], subnet_of(network)
    wanted = None
    if requested_ip:
        try:
            wanted = ipaddress.IPv4Address(requested_ip)
        except ValueError:
            raise NetworkError(f"invalid IP address {requested_ip!r}") from None
        if wanted not in net:
            raise NetworkError(f"address {wanted} is outside network {name} ({net})")
        if wanted in reserved(network):
            raise NetworkError(f"address {wanted} is reserved in network {name} ({net}): "
                               "network, gateway or broadcast address")
    path, lock = _paths(network)
    with store.locked(lock):
        data = _load(path, network)
        taken: dict[str, str] = data["allocations"]
        stale = [ip for ip, owner in taken.items()
                 if owners is not None and owner != owner_id and owner not in owners]
        for ip in stale:
            del taken[ip]
        for ip, owner in taken.items():
            if owner == owner_id and (wanted is None or ip == str(wanted)):
                if stale:
                    store.write_json(path, data, durable=False)
                return ip
        if wanted is not None:
            owner = taken.get(str(wanted))
            if owner is not None:
                raise NetworkError(f"address {wanted} is already in use on network {name} "
                                   f"(by {owner[:12]})")
            chosen = wanted
        else:
            chosen = next((ip for ip in candidates(network) if str(ip) not in taken), None)
            if chosen is None:
                raise NetworkError(f"network {name} has no free address ({net})")
        taken[str(chosen)] = owner_id
        store.write_json(path, data, durable=False)
        return str(chosen)


def release(network: dict[str, Any], owner_id: str) -> list[str]:
    """Return ``owner_id``'s addresses to the pool; the released addresses."""
    path, lock = _paths(network)
    with store.locked(lock):
        data = _read(path)
        if not data:
            return []
        freed = [ip for ip, owner in data["allocations"].items() if owner == owner_id]
        if freed:
            for ip in freed:
                del data["allocations"][ip]
            store.write_json(path, data, durable=False)
        return freed


def allocations(network: dict[str, Any]) -> dict[str, str]:
    """``{ip: owner}`` currently handed out on ``network``."""
    path, lock = _paths(network)
    with store.locked(lock):
        return dict(_load(path, network)["allocations"])


def forget(network: dict[str, Any]) -> None:
    """Delete the allocation file of a removed network."""
    path, lock = _paths(network)
    store.remove(path)
    store.remove(lock)
