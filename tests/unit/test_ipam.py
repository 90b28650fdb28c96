"""Unit tests of cocin.network.ipam: which addresses are handed out, when it
runs out, persistence, and concurrent allocation from several processes.

No root needed: the state lives under a temporary ``COCIN_ROOT``.
"""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest

from cocin.network import NetworkError, ipam, state_dir

NET29 = {"name": "backend", "subnet": "10.77.0.0/29", "gateway": "10.77.0.1"}
NET24 = {"name": "front", "subnet": "10.78.0.0/24"}


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path))
    return tmp_path


def test_a_29_serves_exactly_its_usable_addresses_then_fails():
    got = [ipam.allocate(NET29, f"c{i}") for i in range(5)]
    # .0 is the network, .1 the gateway, .7 the broadcast address.
    assert got == ["10.77.0.2", "10.77.0.3", "10.77.0.4", "10.77.0.5", "10.77.0.6"]
    with pytest.raises(NetworkError) as info:
        ipam.allocate(NET29, "one-too-many")
    assert str(info.value) == "network backend has no free address (10.77.0.0/29)"


def test_release_returns_the_address_to_the_pool():
    for i in range(5):
        ipam.allocate(NET29, f"c{i}")
    assert ipam.release(NET29, "c2") == ["10.77.0.4"]
    assert ipam.release(NET29, "c2") == []           # idempotent
    assert ipam.allocate(NET29, "new") == "10.77.0.4"


def test_same_owner_gets_the_same_address():
    first = ipam.allocate(NET24, "abc")
    assert ipam.allocate(NET24, "abc") == first
    assert ipam.allocations(NET24) == {first: "abc"}


def test_allocations_persist_in_a_json_file(root):
    ipam.allocate(NET24, "abc")
    ipam.allocate(NET24, "def", "10.78.0.200")
    path = os.path.join(state_dir(), ".ipam-front.json")
    assert path.startswith(str(root))
    with open(path) as f:
        data = json.load(f)
    assert data["subnet"] == "10.78.0.0/24" and data["gateway"] == "10.78.0.1"
    assert data["allocations"] == {"10.78.0.2": "abc", "10.78.0.200": "def"}
    # Another "run" (nothing is cached in memory) sees them and skips them.
    assert ipam.allocate(NET24, "ghi") == "10.78.0.3"
    # Atomic writes leave no temporary files behind.
    assert not [n for n in os.listdir(state_dir()) if n.startswith(".tmp")]


def test_requested_address():
    assert ipam.allocate(NET24, "a", "10.78.0.9") == "10.78.0.9"
    with pytest.raises(NetworkError, match=r"10\.78\.0\.9 is already in use on network front"):
        ipam.allocate(NET24, "b", "10.78.0.9")
    with pytest.raises(NetworkError, match=r"10\.79\.0\.9 is outside network front \(10\.78\.0\.0/24\)"):
        ipam.allocate(NET24, "b", "10.79.0.9")
    for reserved in ("10.78.0.0", "10.78.0.1", "10.78.0.255"):
        with pytest.raises(NetworkError, match="reserved"):
            ipam.allocate(NET24, "b", reserved)
    with pytest.raises(NetworkError, match="invalid IP address"):
        ipam.allocate(NET24, "b", "10.78.0.300")


def test_custom_gateway_is_skipped():
    net = {"name": "gw", "subnet": "10.80.0.0/30", "gateway": "10.80.0.2"}
    assert ipam.allocate(net, "a") == "10.80.0.1"
    with pytest.raises(NetworkError, match="no free address"):
        ipam.allocate(net, "b")


def test_a_recreated_network_with_another_subnet_starts_empty():
    ipam.allocate(NET24, "a")
    moved = dict(NET24, subnet="10.99.0.0/24")
    assert ipam.allocate(moved, "b") == "10.99.0.2"
    ipam.forget(moved)
    assert ipam.allocations(moved) == {}


def _allocate_many(args):
    root, worker, count = args
    os.environ["COCIN_ROOT"] = root
    return [ipam.allocate(NET24, f"w{worker}-{i}") for i in range(count)]


def test_concurrent_processes_get_distinct_addresses(root):
    workers, per_worker = 6, 15
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        results = pool.map(_allocate_many, [(str(root), w, per_worker) for w in range(workers)])
    addresses = [ip for chunk in results for ip in chunk]
    assert len(addresses) == workers * per_worker
    assert len(set(addresses)) == len(addresses), "an address was handed out twice"
    assert len(ipam.allocations(NET24)) == workers * per_worker


def test_allocations_of_unknown_owners_are_taken_back():
    # The caller's records know only "a": "b" is left over from a power loss.
    ipam.allocate(NET29, "a")
    ipam.allocate(NET29, "b")
    assert ipam.allocate(NET29, "c", owners={"a"}) == "10.77.0.3"
    assert ipam.allocations(NET29) == {"10.77.0.2": "a", "10.77.0.3": "c"}


def test_a_torn_allocation_file_counts_as_empty(root):
    # Written without fsync: a power loss may tear it; no container survived that.
    ipam.allocate(NET24, "a")
    with open(os.path.join(state_dir(), ".ipam-front.json"), "w") as f:
        f.write('{"subnet": "10.78.')
    assert ipam.allocate(NET24, "b") == "10.78.0.2"
    assert ipam.release(NET24, "b") == ["10.78.0.2"]
