"""Two cocin state roots on one host, and what a deleted one leaves behind.

A state root other than /var/lib/cocin gets a default bridge and subnet of its
own (as a second Docker daemon needs its own bridge), so a user's containers
and a test session's run side by side. A state directory deleted by hand
leaves its netfilter chains and bridge: ``cocin network prune`` removes them,
and nothing of a live root or of anybody else.
"""

from __future__ import annotations

import json
import re
import shlex
import uuid

import pytest


@pytest.fixture
def other_root(cocin):
    """``make()`` -> env of a new state root with cocin's defaults (no
    COCIN_DEFAULT_BRIDGE/SUBNET), sharing the session's cgroup parent; each
    is emptied and removed after the test, also when it fails."""
    roots = []

    def make():
        root = f"/tmp/cocin-test-other-{uuid.uuid4().hex[:8]}"
        env = {k: v for k, v in cocin.env.items() if not k.startswith("COCIN_DEFAULT_")}
        env["COCIN_ROOT"] = root
        roots.append(env)
        return env

    yield make
    for env in roots:
        for cid in run_without_defaults(cocin, env, "ps", "-aq", "--no-trunc").stdout.split():
            run_without_defaults(cocin, env, "rm", "-f", cid)
        for net in run_without_defaults(cocin, env, "network", "ls", "-q").stdout.split():
            run_without_defaults(cocin, env, "network", "rm", net)
        cocin.sh(f"rm -rf {shlex.quote(env['COCIN_ROOT'])}")


def run_without_defaults(cocin, env, *args):
    """cocin with ``env``, the session's COCIN_DEFAULT_* removed (the
    harness passes its env as KEY=VALUE words: override them with empty)."""
    return cocin(*args, env={**env, "COCIN_DEFAULT_BRIDGE": "", "COCIN_DEFAULT_SUBNET": ""})


def default_net(cocin, env) -> dict:
    return json.loads(run_without_defaults(cocin, env, "network", "inspect", "bridge").stdout)[0]


def test_two_state_roots_run_on_their_default_networks_at_once(cocin, other_root):
    second = other_root()
    cocin.ok("run", "-d", "--name", "first", "busybox", "sleep", "300")
    r = run_without_defaults(cocin, second, "run", "-d", "--name", "second", "busybox", "sleep", "300")
    assert r.rc == 0, r.stderr
    mine, theirs = default_net(cocin, cocin.env), default_net(cocin, second)
    # The second root's own bridge and /24, named after its directory's hash.
    assert re.fullmatch(r"cocin-[0-9a-f]{6}", theirs["bridge"]), theirs
    assert theirs["subnet"].startswith("172.30.") and theirs["subnet"].endswith(".0/24")
    assert theirs["bridge"] != mine["bridge"] and theirs["subnet"] != mine["subnet"]
    # Both containers are up on their networks and reach their own gateways.
    for env, name, net in ((cocin.env, "first", mine), (second, "second", theirs)):
        out = run_without_defaults(cocin, env, "exec", name, "ping", "-c", "1", "-W", "5", net["gateway"])
        assert out.rc == 0, (name, out.stdout, out.stderr)
    # A third root told to use the second's bridge is refused before anything is
    # made, with whose it is and what to do.
    third = other_root()
    r = cocin(
        "run",
        "--rm",
        "busybox",
        "true",
        env={**third, "COCIN_DEFAULT_BRIDGE": theirs["bridge"], "COCIN_DEFAULT_SUBNET": ""},
    )
    assert r.rc == 125
    assert r.stderr.startswith("cocin: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert second["COCIN_ROOT"] in r.stderr and "COCIN_DEFAULT_BRIDGE" in r.stderr
    assert run_without_defaults(cocin, third, "ps", "-aq").stdout.strip() == ""


def iptables_save(cocin) -> str:
    r = cocin.sh("iptables-save")
    if r.rc != 0:
        pytest.skip(f"iptables-save does not work here: {r.stderr.strip()}")
    return r.stdout


def test_network_prune_removes_what_a_deleted_state_root_left(cocin, other_root):
    if cocin.sh("command -v iptables-save").rc != 0:
        pytest.skip("iptables is not installed (the nft table is pruned the same way)")
    live, gone = other_root(), other_root()
    for env in (live, gone):
        r = run_without_defaults(cocin, env, "run", "-d", "busybox", "sleep", "300")
        assert r.rc == 0, r.stderr
    live_bridge, gone_bridge = default_net(cocin, live)["bridge"], default_net(cocin, gone)["bridge"]
    live_chain, gone_chain = "COCIN" + live_bridge[5:], "COCIN" + gone_bridge[5:]
    # Somebody else's chain, which prune must leave alone.
    foreign = f"H11-{uuid.uuid4().hex[:6]}"
    assert cocin.sh(f"iptables -w -t nat -N {foreign}").rc == 0
    try:
        # The state directory is deleted by hand, its container killed.
        for cid in run_without_defaults(cocin, gone, "ps", "-q", "--no-trunc").stdout.split():
            pid = run_without_defaults(cocin, gone, "inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
            cocin.sh(f"kill -9 {pid}")
        run_without_defaults(
            cocin, gone, "rm", "-f", *run_without_defaults(cocin, gone, "ps", "-aq", "--no-trunc").stdout.split()
        )
        cocin.sh(f"rm -rf {shlex.quote(gone['COCIN_ROOT'])}")
        saved = iptables_save(cocin)
        assert f":{gone_chain}-POSTROUTING" in saved and cocin.sh(f"ip link show {gone_bridge}").rc == 0

        r = cocin.ok("network", "prune")
        assert f"chain {gone_chain}-POSTROUTING (of {gone['COCIN_ROOT']})" in r.stdout
        assert f"bridge {gone_bridge}" in r.stdout
        saved = iptables_save(cocin)
        assert gone_chain not in saved, saved
        assert cocin.sh(f"ip link show {gone_bridge}").rc != 0
        # The live root's chains and bridge, and the foreign chain, are untouched.
        assert f":{live_chain}-POSTROUTING" in saved and f"-j {live_chain}-POSTROUTING" in saved
        assert f":{foreign}" in saved
        assert cocin.sh(f"ip link show {live_bridge}").rc == 0
        # Nothing more to do the second time.
        assert cocin.ok("network", "prune").stdout.strip() == ""
    finally:
        cocin.sh(f"iptables -w -t nat -X {foreign}")
