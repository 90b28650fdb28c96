"""Container networking: the interface the runtime calls.

A container started with ``--network bridge`` (the default) or a network made
with ``create_network`` gets its own network namespace, joined to the host by
a veth pair whose host end is plugged into a Linux bridge::

    host namespace                                container namespace
    ┌────────────────────────────────────┐        ┌──────────────────────┐
    │  bridge cocin0  172.29.0.1/16      │        │                      │
    │    ├── vethXXXXXXX ═══════════════════════════ eth0 172.29.0.2/16  │
    │    └── vethYYYYYYY ═══ (another container)     default via .0.1   │
    │  iptables: MASQUERADE, DNAT        │        │  lo                  │
    └────────────────────────────────────┘        └──────────────────────┘

The pieces, one idea per module:

* ``netlink``  — talking to the kernel's network stack (what ``ip`` does);
* ``ipam``     — handing out addresses of a subnet;
* ``ipv4``     — the address arithmetic that needs (cheaper than ``ipaddress``);
* ``bridge``   — network records, the bridge, the veth pair, the namespace;
* ``ports``    — publishing container ports on the host (``-p``);
* ``firewall`` — the iptables/nft rules cocin owns, rebuilt from the records;
* ``sysctl``   — kernel switches cocin turns on, and restores afterwards;
* ``store``    — small JSON state files: a lock, and atomic replacement.

This module only defines the interface; the submodules are imported when a
function needs them, so ``import cocin.network`` stays cheap.

Runtime call order: create the container process in a new network namespace,
``attach()`` it (it must not have exec'd the user's command yet, so that the
network is ready when that command starts), and ``detach()`` when it exits.
"""

from __future__ import annotations

from cocin import paths
from cocin.errors import CocinError

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any


class NetworkError(CocinError):
    """A networking problem explained in one human-readable line (exit 125)."""


def state_dir() -> str:
    """Where network records live: ``$COCIN_ROOT/networks``."""
    return paths.networks_dir()


def default_network() -> dict[str, Any]:
    """The network called "bridge", created on first use.

    Its bridge link is ``$COCIN_DEFAULT_BRIDGE`` (default ``cocin0``) and its
    subnet ``$COCIN_DEFAULT_SUBNET`` (default 172.29.0.0/16); a state root
    other than /var/lib/cocin gets a bridge and a /24 of its own, derived from
    its path (``bridge.default_bridge_and_subnet``). Creation fails with a
    clear message when a host route already covers that subnet.
    """
    from cocin.network import bridge

    return bridge.default_network()


def check_default_network() -> None:
    """Refuse early (before a container is made) when the default network
    cannot be created here, e.g. its bridge name is another root's."""
    from cocin.network import bridge

    bridge.check_default_network()


def prune_networks() -> tuple[list[str], list[str]]:
    """Remove unused networks of this state root, and the chains, nft table
    and default bridge left by state roots whose directory was deleted."""
    from cocin.network import bridge

    return bridge.prune_networks()


def create_network(name: str, subnet: str | None, gateway: str | None = None) -> dict[str, Any]:
    """Record a new bridge network (its bridge appears with its first container
    and stays until ``remove_network``); no subnet: a free one of Docker's pools."""
    from cocin.network import bridge

    return bridge.create_network(name, subnet, gateway)


def list_networks() -> list[dict[str, Any]]:
    from cocin.network import bridge

    return bridge.list_networks()


def inspect_network(name: str) -> dict[str, Any]:
    from cocin.network import bridge

    return bridge.inspect_network(name)


def remove_network(name: str) -> None:
    """Remove a network, its bridge and firewall rules (which otherwise stay
    between containers, as docker0 does); refused while containers are
    attached. The default network "bridge" too: it is made again on first use."""
    from cocin.network import bridge

    bridge.remove_network(name)


def parse_publish(spec: str) -> dict[str, Any]:
    """Check ``[HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]``; no side effects.

    Returns ``{"host_ip", "host_port", "container_port", "proto"}``, host port
    0 meaning "pick a free one at attach time".
    """
    from cocin.network import ports

    return ports.parse_publish(spec)


def attach(
    network: str, cid: str, name: str, pid: int, ip: str | None = None, publish: Iterable[dict[str, Any] | str] = ()
) -> dict[str, Any]:
    """Connect the network namespace of process ``pid`` to ``network``.

    Returns the endpoint record to keep in the container's record and pass
    back to ``detach``: ``network, ip, prefixlen, gateway, mac, veth, bridge,
    ports`` (with host ports resolved) and, with the userspace proxy,
    ``proxies``.
    """
    from cocin.network import bridge

    return bridge.attach(network, cid, name, pid, ip, publish)


def detach(network: str, cid: str, endpoint: dict[str, Any] | None = None) -> None:
    """Undo ``attach``; safe to call twice and after the process died.

    After the process died it is cheap: the kernel deletes the veth pair
    with the namespace. While the namespace lives (``network disconnect``)
    the host end is deleted, which takes the kernel ~20 ms.
    """
    from cocin.network import bridge

    bridge.detach(network, cid, endpoint)


def hosts_entries(network: str) -> list[tuple[str, str]]:
    """``(ip, container name)`` for every container on ``network``."""
    from cocin.network import bridge

    return bridge.hosts_entries(network)


def addresses(network: str) -> dict[str, str]:
    """Container ID -> IP address of every container on ``network``."""
    from cocin.network import bridge

    return bridge.addresses(network)


def rename_endpoint(network: str, cid: str, name: str) -> bool:
    """Record a container's new name in its endpoint on ``network`` (``network inspect``)."""
    from cocin.network import bridge

    return bridge.rename_endpoint(network, cid, name)


def port_backend() -> str:
    """How ports are published here: "iptables", "nft" or "userspace-proxy"."""
    from cocin.network import ports

    return ports.port_backend()
