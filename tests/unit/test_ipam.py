"""Unit tests of cocin.network.ipam and ipv4: which addresses are handed out,
when a subnet runs out, the address arithmetic, and concurrent allocation
from several processes through the network records.

No root needed: the state lives under a temporary ``COCIN_ROOT``.
"""

from __future__ import annotations

import ipaddress
import multiprocessing
import os

import pytest

from cocin.network import NetworkError, bridge, ipam, ipv4, state_dir, store

NET29 = {"name": "backend", "subnet": "10.77.0.0/29", "gateway": "10.77.0.1"}
NET24 = {"name": "front", "subnet": "10.78.0.0/24"}


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path))
    return tmp_path


def network(base: dict) -> dict:
    """A network record with no container yet."""
    return {**base, "containers": {}}


def take(net: dict, owner: str, requested: str | None = None) -> str:
    """Allocate and record the address, as ``bridge.attach`` does."""
    ip = ipam.allocate(net, owner, requested)
    net["containers"][owner] = {"ip": ip, "name": owner}
    return ip


# ------------------------------------------------------------------ ipam --


def test_a_29_serves_exactly_its_usable_addresses_then_fails():
    net = network(NET29)
    got = [take(net, f"c{i}") for i in range(5)]
    # .0 is the network, .1 the gateway, .7 the broadcast address.
    assert got == ["10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5", "10.77.0.6"]
    with pytest.raises(NetworkError) as info:
        ipam.allocate(net, "one-too-many")
    assert str(info.value) == "network backend has no free address (10.77.0.0/29)"


def test_a_detached_container_frees_its_address():
    net = network(NET29)
    for i in range(5):
        take(net, f"c{i}")
    del net["containers"]["c2"]  # what detach does to the record
    assert take(net, "new") == "10.77.0.4"


def test_same_owner_gets_the_same_address():
    net = network(NET24)
    first = take(net, "abc")
    assert ipam.allocate(net, "abc") == first
    assert ipam.allocations(net) == {first: "abc"}


def test_requested_address():
    net = network(NET24)
    assert take(net, "a", "10.78.0.9") == "10.78.0.9"
    with pytest.raises(NetworkError, match=r"10\.78\.0\.9 is already in use on network front"):
        ipam.allocate(net, "b", "10.78.0.9")
    with pytest.raises(NetworkError, match=r"10\.79\.0\.9 is outside network front \(10\.78\.0\.0/24\)"):
        ipam.allocate(net, "b", "10.79.0.9")
    for reserved in ("10.78.0.0", "10.78.0.1", "10.78.0.255"):
        with pytest.raises(NetworkError, match="reserved"):
            ipam.allocate(net, "b", reserved)
    for bad in ("10.78.0.300", "10.78.0", "10.78.0.09", "0x0a.78.0.9", " 10.78.0.9"):
        with pytest.raises(NetworkError, match="invalid IP address"):
            ipam.allocate(net, "b", bad)
    # The lowest free address skips the requested one.
    assert take(net, "c") == "10.78.0.2"


def test_custom_gateway_is_skipped():
    net = network({"name": "gw", "subnet": "10.80.0.0/30", "gateway": "10.80.0.2"})
    assert take(net, "a") == "10.80.0.1"
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate(net, "b")


# ------------------------------------------------------------------ ipv4 --


@pytest.mark.parametrize(
    "text", ["0.0.0.0", "10.77.0.2", "172.29.255.255", "255.255.255.255", "1.2.3.4", "192.168.100.10"]
)
def test_ipv4_agrees_with_ipaddress(text):
    value = ipv4.parse(text)
    assert value == int(ipaddress.IPv4Address(text))
    assert ipv4.text(value) == text
    assert ipv4.packed(text) == ipaddress.IPv4Address(text).packed
    assert ipv4.unpacked(ipv4.packed(text)) == text


@pytest.mark.parametrize(
    "text", ["256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.-4", "1.2.3.4 ", "a.b.c.d", "1..3.4", "１.2.3.4", ""]
)
def test_ipv4_parse_is_as_strict_as_ipaddress(text):
    with pytest.raises(ValueError):
        ipaddress.IPv4Address(text)
    with pytest.raises(ValueError):
        ipv4.parse(text)


@pytest.mark.parametrize(
    "subnet", ["10.0.0.0/8", "172.29.0.0/16", "10.77.0.0/29", "10.80.0.0/30", "0.0.0.0/0", "1.2.3.4/32"]
)
def test_ipv4_subnets_agree_with_ipaddress(subnet):
    ref = ipaddress.IPv4Network(subnet)
    network_address, prefixlen = ipv4.parse_subnet(subnet)
    assert (network_address, prefixlen) == (int(ref.network_address), ref.prefixlen)
    assert ipv4.mask(prefixlen) == int(ref.netmask)
    assert ipv4.broadcast(network_address, prefixlen) == int(ref.broadcast_address)
    assert ipv4.contains(network_address, prefixlen, int(ref.broadcast_address))
    after = (int(ref.broadcast_address) + 1) & 0xFFFFFFFF  # wraps to 0.0.0.0 for /0
    assert ipv4.contains(network_address, prefixlen, after) == (prefixlen == 0)


@pytest.mark.parametrize("subnet", ["10.0.0.1/8", "10.0.0.0/33", "10.0.0.0", "10.0.0.0/", "10.0.0/8"])
def test_ipv4_rejects_bad_subnets(subnet):
    with pytest.raises(ValueError):
        ipv4.parse_subnet(subnet)


# ------------------------------------------------- through the records --


def _record(base: dict) -> None:
    """A network definition on disk, as ``network create`` writes it."""
    store.write_json(bridge._record_path(base["name"]), dict(base))


def _attach_many(args):
    """Allocate under the network lock and save the endpoint: the steps of
    ``bridge.attach`` that decide the address."""
    root, worker, count = args
    os.environ["COCIN_ROOT"] = root
    got = []
    for i in range(count):
        with bridge._locked():
            net = bridge._load("front")
            got.append(take(net, f"w{worker}-{i}"))
            bridge._save(net)
    return got


def test_concurrent_processes_get_distinct_addresses(root):
    _record(NET24)
    workers, per_worker = 6, 15
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        results = pool.map(_attach_many, [(str(root), w, per_worker) for w in range(workers)])
    addresses = [ip for chunk in results for ip in chunk]
    assert len(addresses) == workers * per_worker
    assert len(set(addresses)) == len(addresses), "an address was handed out twice"
    assert len(ipam.allocations(bridge._load("front"))) == workers * per_worker
    # Atomic writes leave no temporary files behind.
    assert not [n for n in os.listdir(state_dir()) if n.startswith(".tmp")]


def test_a_torn_runtime_file_counts_as_no_containers(root):
    # Written without fsync: a power loss may tear it; no container survived that.
    _record(NET24)
    net = bridge._load("front")
    take(net, "a")
    bridge._save(net)
    assert bridge._load("front")["containers"]["a"]["ip"] == "10.78.0.2"
    with open(bridge._runtime_path("front"), "w") as f:
        f.write('{"containers": {"a": {"ip": "10.78.')
    net = bridge._load("front")
    assert net["containers"] == {}
    assert take(net, "b") == "10.78.0.2"


def test_addresses_are_handed_out_in_turn_and_wrap_around():
    """As Docker does: an address just freed is the last one given again."""
    net = {"name": "t", "subnet": "10.9.0.0/29", "containers": {}}

    def attach(owner: str) -> str:  # what bridge.attach records
        ip = net["last_ip"] = ipam.allocate(net, owner)
        net["containers"][owner] = {"ip": ip}
        return ip

    assert [attach("c0"), attach("c1"), attach("c2")] == ["10.9.0.2", "10.9.0.3", "10.9.0.4"]
    del net["containers"]["c0"]  # c0 goes: its address is not the next one given
    assert [attach("c3"), attach("c4")] == ["10.9.0.5", "10.9.0.6"]
    assert attach("c5") == "10.9.0.2"  # wrapped around to the freed one
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate(net, "c6")
