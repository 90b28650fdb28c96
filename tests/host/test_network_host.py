"""Tests of cocin.network on a real host: bridges, veths, namespaces, NAT.

The first section is pure (publish-spec parsing, rule rendering, sysctl
bookkeeping on a fake /proc/sys) and runs anywhere. The rest needs root: it
uses ``COCIN_ROOT`` in a temporary directory, the bridge ``cocintest0`` and
the subnet 10.231.0.0/24, starts "containers" as ``unshare --net`` processes
and checks that they talk to each other and that a published port answers on
127.0.0.1 and on the host's own address. All traffic stays on this machine.
Every test ends by detaching everything and checking that no veth, port
rule, proxy or changed sysctl is left, then removes the network and checks
that its bridge and MASQUERADE rule are gone too (they stay between
containers, as docker0 does); the fixture cleans up also when a test fails.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

import cocin.network as network
from cocin.network import NetworkError, firewall, netlink, ports, store, sysctl
from cocin.network.firewall import Rule

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ------------------------------------------------------------------- pure --


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("80", ("0.0.0.0", 0, 80, "tcp")),
        ("8080:80", ("0.0.0.0", 8080, 80, "tcp")),
        ("8080:80/udp", ("0.0.0.0", 8080, 80, "udp")),
        ("8080:80/TCP", ("0.0.0.0", 8080, 80, "tcp")),
        ("127.0.0.1:8080:80", ("127.0.0.1", 8080, 80, "tcp")),
        ("127.0.0.1::80/udp", ("127.0.0.1", 0, 80, "udp")),
        ("0:53/udp", ("0.0.0.0", 0, 53, "udp")),
        ("::80", ("0.0.0.0", 0, 80, "tcp")),
    ],
)
def test_parse_publish(spec, expected):
    got = network.parse_publish(spec)
    assert (got["host_ip"], got["host_port"], got["container_port"], got["proto"]) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("80/sctp", "protocol must be tcp or udp"),
        ("8080:0", "container port 0 is out of range"),
        ("70000:80", "host port 70000 is out of range"),
        ("8080:http", "container port 'http' is not a number"),
        ("8000-8010:80", "port ranges are not supported"),
        ("1.2.3:8080:80", "'1.2.3' is not an IPv4 address"),
        ("[::1]:8080:80", "IPv6 addresses are not supported"),
        ("a:b:c:d", "expected [HOSTIP:][HOSTPORT:]CONTAINERPORT"),
    ],
)
def test_parse_publish_rejects(spec, message):
    with pytest.raises(NetworkError) as info:
        network.parse_publish(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_overlapping_host_ports():
    any80 = network.parse_publish("8080:80")
    lo80 = network.parse_publish("127.0.0.1:8080:80")
    other = network.parse_publish("10.0.0.1:8080:80")
    assert ports.overlaps(any80, lo80) and not ports.overlaps(lo80, other)
    assert not ports.overlaps(any80, network.parse_publish("8080:80/udp"))
    with pytest.raises(NetworkError, match="already published by container web"):
        ports.resolve(["127.0.0.1:8080:81"], {"web": [any80]})


def test_a_host_port_published_twice_by_one_container(monkeypatch):
    monkeypatch.setenv("COCIN_PORT_BACKEND", "userspace-proxy")  # no bind probe
    with pytest.raises(NetworkError, match="published twice"):
        ports.resolve(["9999:80", "9999:81"], {})


def test_host_port_zero_gets_a_free_port():
    (port,) = ports.resolve(["127.0.0.1::80"], {})
    assert 0 < port["host_port"] < 65536
    with socket.socket() as s:  # really free: we can bind it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port["host_port"]))


def test_host_port_used_by_a_host_program_is_refused(monkeypatch):
    monkeypatch.setattr(ports, "port_backend", lambda: "iptables")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(NetworkError, match="already in use on this host"):
            ports.resolve([f"127.0.0.1:{busy}:80"], {})


def _endpoint(**kw):
    ep = {
        "container": "0123456789abcdef",
        "ip": "10.231.0.2",
        "bridge": "cocintest0",
        "ports": [network.parse_publish("8080:80"), network.parse_publish("127.0.0.1:5353:53/udp")],
    }
    ep.update(kw)
    return ep


def test_port_rules_render_for_iptables_and_nft(monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", "/var/lib/cocin")  # the plain chain names
    rules = ports.rules(_endpoint(), forward_accept=True)
    text = firewall.iptables_restore_input(rules)
    assert "*nat\n:COCIN - [0:0]\n:COCIN-POSTROUTING - [0:0]\n" in text
    assert (
        "-A COCIN -p tcp --dport 8080 -m comment --comment cocin:0123456789ab -j DNAT --to-destination 10.231.0.2:80"
    ) in text
    assert "-A COCIN -d 127.0.0.1 -p udp --dport 5353" in text
    assert "-A COCIN-POSTROUTING -o cocintest0 -s 127.0.0.0/8" in text
    assert "*filter\n:COCIN-FORWARD - [0:0]\n" in text
    assert text.count("COMMIT") == 2
    script = firewall.nft_script(rules)
    assert script.startswith("table ip cocin\ndelete table ip cocin\n")
    assert 'tcp dport 8080 dnat to 10.231.0.2:80 comment "cocin:0123456789ab"' in script
    assert 'oifname "cocintest0" ip saddr 127.0.0.0/8 masquerade' in script
    assert "fib daddr type local jump ports" in script
    assert ports.sysctls(_endpoint()) == {"net.ipv4.conf.cocintest0.route_localnet": "1"}
    assert ports.sysctls(_endpoint(ports=[network.parse_publish("10.0.0.1:80:80")])) == {}


def test_masquerade_rule_renders_negated_interface(monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", "/var/lib/cocin")
    rule = Rule("postrouting", "MASQUERADE", src="10.231.0.0/24", out_iface="cocintest0", out_negated=True)
    assert firewall.iptables_args(rule) == ["!", "-o", "cocintest0", "-s", "10.231.0.0/24", "-j", "MASQUERADE"]
    assert firewall.nft_rule(rule) == 'oifname != "cocintest0" ip saddr 10.231.0.0/24 masquerade'
    assert firewall.nft_script([]) == "table ip cocin\ndelete table ip cocin\n"


SAVED = """# Generated by iptables-nft-save v1.8.9
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:COCIN - [0:0]
:COCIN-POSTROUTING - [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -m addrtype --dst-type LOCAL -j COCIN
-A POSTROUTING -j COCIN-POSTROUTING
-A COCIN-POSTROUTING -s 10.231.0.0/24 ! -o cocintest0 -m comment --comment cocin:bridge -j MASQUERADE
COMMIT
*filter
:FORWARD DROP [0:0]
COMMIT
"""


def test_iptables_save_is_read_for_our_chains_and_jumps(monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", "/var/lib/cocin")
    present = firewall.parse_iptables_save(SAVED)
    assert sorted(present["chains"]) == [["nat", "COCIN"], ["nat", "COCIN-POSTROUTING"]]
    assert present["jumps"] == [
        ["nat", "PREROUTING", "-m addrtype --dst-type LOCAL -j COCIN"],
        ["nat", "POSTROUTING", "-j COCIN-POSTROUTING"],
    ]
    assert present["forward_drops"] is True


def test_one_restore_adds_missing_jumps_and_removes_what_is_not_wanted(monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", "/var/lib/cocin")
    present = firewall.parse_iptables_save(SAVED)
    masquerade = Rule("postrouting", "MASQUERADE", src="10.231.0.0/24", out_iface="cocintest0", out_negated=True)
    text = firewall.iptables_transaction([masquerade], present)
    # Chains declared (emptied) and refilled; only the missing OUTPUT jump added.
    assert text == (
        "*nat\n:COCIN - [0:0]\n:COCIN-POSTROUTING - [0:0]\n"
        "-A COCIN-POSTROUTING ! -o cocintest0 -s 10.231.0.0/24 -j MASQUERADE\n"
        "-A OUTPUT -m addrtype --dst-type LOCAL -j COCIN\nCOMMIT\n"
    )
    # Nothing wanted: jumps deleted (as iptables-save spelled them), then chains.
    text = firewall.iptables_transaction([], present)
    assert text == (
        "*nat\n-D PREROUTING -m addrtype --dst-type LOCAL -j COCIN\n"
        "-D POSTROUTING -j COCIN-POSTROUTING\n"
        "-F COCIN\n-X COCIN\n-F COCIN-POSTROUTING\n-X COCIN-POSTROUTING\nCOMMIT\n"
    )
    # What the restore leaves is what the next one starts from: no more jumps to add.
    after = firewall._present_after([masquerade], False)
    assert "-A OUTPUT" not in firewall.iptables_transaction([masquerade], after)
    assert firewall.iptables_transaction([], {"chains": [], "jumps": []}) == ""


def test_which_tools_work_is_probed_once_per_boot(tmp_path, monkeypatch):
    monkeypatch.setattr(firewall, "RUN_DIR", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    signature = [["/usr/sbin/iptables", 1, 2]]
    monkeypatch.setattr(firewall, "_tool_signature", lambda tool: signature)
    probes = []
    monkeypatch.setattr(firewall, "_probe_tool", lambda tool: probes.append(tool) or True)
    firewall._works_cache.clear()
    try:
        assert firewall._works("iptables") and probes == ["iptables"]
        firewall._works_cache.clear()  # another cocin process
        assert firewall._works("iptables") and probes == ["iptables"]
        signature = [["/usr/sbin/iptables", 3, 4]]  # say iptables was upgraded
        firewall._works_cache.clear()
        assert firewall._works("iptables") and probes == ["iptables", "iptables"]
    finally:
        firewall._works_cache.clear()


def test_an_old_firewall_state_is_trusted_while_nftables_is_unchanged(monkeypatch):
    state = {
        "boot": "b",
        "backend": "iptables",
        "wanted": "",
        "applied": "k",
        "checked": time.time() - 3600,
        "version": ["/usr/sbin/xtables-nft-multi", 41],
    }
    generation = [41]
    monkeypatch.delenv("COCIN_PORT_BACKEND", raising=False)
    monkeypatch.setattr(firewall, "_load_state", lambda: dict(state))
    monkeypatch.setattr(firewall, "_choose_backend", lambda: "iptables")
    monkeypatch.setattr(firewall, "_ruleset_version", lambda chosen: ["/usr/sbin/xtables-nft-multi", generation[0]])
    monkeypatch.setattr(firewall, "_unchanged", {})
    assert firewall._trusted_state() == state  # too old, but nothing changed
    assert firewall.backend() == "iptables"
    generation[0] = 42  # someone changed a rule
    monkeypatch.setattr(firewall, "_unchanged", {})  # (another process)
    assert firewall._trusted_state() is None
    del state["version"]  # legacy iptables: no counter
    assert firewall._trusted_state() is None
    state["checked"] = time.time()  # but recent enough
    assert firewall._trusted_state() == state
    monkeypatch.setenv("COCIN_PORT_BACKEND", "nft")  # another choice: look again
    assert firewall._trusted_state() is None


@pytest.fixture
def fake_proc_sys(tmp_path, monkeypatch):
    """/proc/sys and /run/cocin in a temporary directory."""
    fake = tmp_path / "proc-sys"
    monkeypatch.setattr(sysctl, "path", lambda key: str(fake.joinpath(*key.split("."))))
    monkeypatch.setattr(sysctl, "RUN_DIR", str(tmp_path / "run"))
    (fake / "net" / "ipv4" / "conf" / "br0").mkdir(parents=True)
    (fake / "net" / "ipv4" / "ip_forward").write_text("0\n")
    (fake / "net" / "ipv4" / "conf" / "br0" / "route_localnet").write_text("0\n")
    return fake


def _use_root(monkeypatch, tmp_path, name):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path / name))
    os.makedirs(network.state_dir(), exist_ok=True)


def test_sysctl_values_are_saved_and_restored(tmp_path, monkeypatch, fake_proc_sys):
    _use_root(monkeypatch, tmp_path, "root")
    sysctl.apply({"net.ipv4.ip_forward": "1", "net.ipv4.conf.br0.route_localnet": "1"})
    assert sysctl.read("net.ipv4.ip_forward") == "1"
    assert sysctl.saved() == {"net.ipv4.ip_forward": "0", "net.ipv4.conf.br0.route_localnet": "0"}
    sysctl.apply({"net.ipv4.ip_forward": "1"})
    assert sysctl.read("net.ipv4.conf.br0.route_localnet") == "0"
    (fake_proc_sys / "net" / "ipv4" / "conf" / "br0" / "route_localnet").unlink()  # bridge gone
    sysctl.apply({})
    assert sysctl.read("net.ipv4.ip_forward") == "0"
    assert sysctl.saved() == {}
    assert not os.path.exists(os.path.join(sysctl.RUN_DIR, "network-sysctl.json"))


def test_sysctl_is_restored_only_when_no_state_root_needs_it(tmp_path, monkeypatch, fake_proc_sys):
    _use_root(monkeypatch, tmp_path, "a")
    sysctl.apply({"net.ipv4.ip_forward": "1"})
    _use_root(monkeypatch, tmp_path, "b")
    sysctl.apply({"net.ipv4.ip_forward": "1"})
    _use_root(monkeypatch, tmp_path, "a")
    sysctl.apply({})
    assert sysctl.read("net.ipv4.ip_forward") == "1"  # b still needs it
    _use_root(monkeypatch, tmp_path, "b")
    sysctl.apply({})
    assert sysctl.read("net.ipv4.ip_forward") == "0"


def test_ip_forward_is_wanted_only_while_a_container_is_attached(monkeypatch):
    """Issue 6: ``ip_forward`` goes back to the host's value when no container
    needs it any more, even though the network (and its bridge) stays."""
    from cocin.network import bridge

    wanted: list[dict] = []
    monkeypatch.setattr(firewall, "apply", lambda rules: None)
    monkeypatch.setattr(firewall, "forward_policy_drops", lambda: False)
    monkeypatch.setattr(sysctl, "apply", lambda values: wanted.append(dict(values)))
    net = {"name": "bridge", "bridge": "br0", "subnet": "10.9.0.0/24", "active": True, "containers": {}}
    bridge._reconcile_locked([net])
    net["containers"]["c1"] = {"name": "c1", "ip": "10.9.0.2", "ports": []}
    bridge._reconcile_locked([net])
    assert wanted == [{}, {"net.ipv4.ip_forward": "1"}]


def test_each_state_root_owns_its_own_chains(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", "/var/lib/cocin")
    assert firewall.chain_names()["dnat"] == ("nat", "COCIN")
    assert firewall.nft_table() == "cocin"
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path))
    table, chain = firewall.chain_names()["postrouting"]
    assert table == "nat" and chain.startswith("COCIN-") and chain.endswith("-POSTROUTING")
    assert len(chain) <= 28  # iptables' limit on chain names
    assert firewall.nft_table().startswith("cocin_")


def test_each_state_root_gets_its_own_default_bridge_and_subnet(tmp_path, monkeypatch):
    from cocin.network import bridge

    monkeypatch.delenv("COCIN_DEFAULT_BRIDGE", raising=False)
    monkeypatch.delenv("COCIN_DEFAULT_SUBNET", raising=False)
    monkeypatch.setattr(bridge, "_host_route_clash", lambda subnet, ours: None)
    monkeypatch.setenv("COCIN_ROOT", "/var/lib/cocin")
    assert bridge.default_bridge_and_subnet() == ("cocin0", "172.29.0.0/16")
    derived = {}
    for name in ("a", "b"):
        monkeypatch.setenv("COCIN_ROOT", str(tmp_path / name))
        br, subnet = bridge.default_bridge_and_subnet()
        # Named like the root's chains (COCIN-xxxxxx), at most IFNAMSIZ - 1 characters.
        assert br == "cocin" + firewall.root_suffix() and len(br) == 12 <= 15
        assert ipaddress.IPv4Network(subnet).subnet_of(ipaddress.IPv4Network("172.30.0.0/16"))
        assert ipaddress.IPv4Network(subnet).prefixlen == 24
        assert bridge.default_bridge_and_subnet() == (br, subnet)  # deterministic
        derived[name] = (br, subnet)
    assert derived["a"][0] != derived["b"][0]
    # The environment wins; a subnet the host (or another network) uses is passed over.
    monkeypatch.setenv("COCIN_DEFAULT_BRIDGE", "mybr0")
    assert bridge.default_bridge_and_subnet()[0] == "mybr0"
    taken = ipaddress.IPv4Network(derived["b"][1])
    monkeypatch.setattr(bridge, "_host_route_clash", lambda subnet, ours: "a host route" if subnet == taken else None)
    moved = ipaddress.IPv4Network(bridge.default_bridge_and_subnet()[1])
    assert moved != taken and not moved.overlaps(taken)
    other = {"name": "x", "bridge": "br-x", "subnet": str(moved)}
    assert not ipaddress.IPv4Network(bridge.default_bridge_and_subnet([other])[1]).overlaps(moved)


def test_chains_and_bridges_are_traced_to_their_state_root(tmp_path, monkeypatch):
    monkeypatch.setattr(firewall, "RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path / "root"))
    suffix = firewall.root_suffix()
    assert firewall.registered_roots() == {}
    firewall.register_root()
    state = os.path.abspath(network.state_dir())
    assert firewall.registered_roots() == {suffix: state}
    assert firewall.owner_of(f"COCIN{suffix}-POSTROUTING") == state
    assert firewall.owner_of(f"cocin{suffix}") == state
    assert firewall.owner_of("COCIN-zzzzzz") is None and firewall.owner_of("eth0") is None
    monkeypatch.setenv("COCIN_ROOT", "/var/lib/cocin")
    firewall.register_root()
    assert firewall.registered_roots()[""] == "/var/lib/cocin/networks"
    assert firewall.names_for(suffix)["forward"] == ("filter", f"COCIN{suffix}-FORWARD")


def test_importing_cocin_network_is_cheap():
    # cocin.state (imported by every command anyway) brings json; nothing more may come.
    code = (
        "import sys, cocin.state; before = set(sys.modules); import cocin.network; "
        "print(sorted(m for m in ('subprocess', 'ctypes', 'json', 'cocin.network.bridge') "
        "if m in sys.modules and m not in before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, check=True
    ).stdout
    assert out.strip() == "[]"


def test_attach_and_detach_import_nothing_costly():
    # What a container on the default network needs, -p or not, and the rules
    # of other containers' ports: none of these modules, each of which costs
    # "cocin run" milliseconds to import (the rare paths import them lazily).
    costly = (
        "enum",
        "re",
        "json",
        "socket",
        "signal",
        "shutil",
        "subprocess",
        "ipaddress",
        "hashlib",
        "threading",
        "typing",
        "contextlib",
        "collections",
        "functools",
    )
    code = (
        "import sys, cocin.state; before = set(sys.modules)\n"
        "import cocin.network.bridge, cocin.network.firewall, cocin.network.sysctl\n"
        "import cocin.network.ports, cocin.network.ipam, cocin.network.store\n"
        f"print(sorted(m for m in {costly!r} if m in sys.modules and m not in before))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, check=True
    ).stdout
    assert out.strip() == "[]"


def test_names_and_macs():
    from cocin.network import bridge

    assert bridge.veth_names("0f1e2d3c4b5a69788") == ("veth0f1e2d3", "ceth0f1e2d3")
    host, peer = bridge.veth_names("not-hex")
    assert len(host) == 11 and host.startswith("veth")
    assert bridge.mac_for("172.29.0.2") == "02:42:ac:1d:00:02"


# ------------------------------------------------------------------- root --

SUBNET = "10.231.0.0/24"
BRIDGE = "cocintest0"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: creates network namespaces, a bridge, veth pairs and NAT rules"
)


def _available_backends() -> list[str]:
    found = []
    for tool in ("iptables", "nft"):
        with contextlib.suppress(Exception):
            if os.geteuid() == 0 and firewall._works(tool):
                found.append(tool)
    return found + ["userspace-proxy"]


def _iptables_forward_drops() -> bool:
    if not shutil.which("iptables"):
        return False
    out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout
    return "-P FORWARD DROP" in out


def _host_address() -> str | None:
    """An IPv4 address of this host that is not loopback (e.g. eth0's)."""
    for addr in netlink.list_addresses():
        ip = ipaddress.IPv4Address(addr.address)
        if not ip.is_loopback and ip not in ipaddress.IPv4Network(SUBNET):
            return addr.address
    return None


class Host:
    """The test's handle: starts fake containers, remembers what to clean."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.helpers: list[subprocess.Popen] = []
        self.start = "0"  # what the host's switches were set to before the test

    def container(self) -> subprocess.Popen:
        """A process in a new, empty network namespace, like a container
        before it execs its command. ``--kill-child``: when unshare gets
        SIGKILL, so does its sleeping child."""
        proc = subprocess.Popen(["unshare", "--net", "--fork", "--kill-child", "sleep", "60"])
        self.procs.append(proc)
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == ours:  # not unshared yet
            assert time.monotonic() < deadline, "unshare did not create a namespace"
            time.sleep(0.01)
        return proc

    def serve(self, pid: int, port: int, reply: str) -> None:
        """A TCP server inside ``pid``'s namespace answering ``reply PEER``."""
        code = (
            "import socket, sys\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port})); s.listen()\n"
            "while True:\n"
            "    c, a = s.accept(); c.sendall(f'{sys.argv[1]} {a[0]}'.encode()); c.close()\n"
        )
        self.helpers.append(subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code, reply]))

    def serve_udp(self, pid: int, port: int) -> None:
        """A UDP server inside ``pid``'s namespace answering ``echo DATA``."""
        code = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('0.0.0.0', {port}))\n"
            "while True:\n"
            "    data, a = s.recvfrom(100); s.sendto(b'echo ' + data, a)\n"
        )
        self.helpers.append(subprocess.Popen(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code]))

    def kill_all(self) -> None:
        for proc in self.helpers + self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)


def fetch(host: str, port: int, timeout: float = 8.0) -> str:
    """Connect (retrying while the server starts) and read the reply."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                data = s.recv(200).decode()
                if data:
                    return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer from {host}:{port}")
        time.sleep(0.1)


def fetch_udp(host: str, port: int, timeout: float = 8.0) -> str:
    """Send datagrams until one is answered."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            s.sendto(b"ping", (host, port))
            with contextlib.suppress(OSError):
                return s.recv(100).decode()
    raise AssertionError(f"no UDP answer from {host}:{port}")


def fetch_inside(pid: int, host: str, port: int) -> str:
    """``fetch`` from inside ``pid``'s network namespace."""
    code = (
        "import socket, sys, time\n"
        "for _ in range(80):\n"
        "    try:\n"
        "        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)\n"
        "        print(s.recv(200).decode()); break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
    )
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", code, host, str(port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip()


def _nat_table_exists() -> bool:
    if not shutil.which("nft"):
        return False
    return subprocess.run(["nft", "list", "table", "ip", "nat"], capture_output=True).returncode == 0


def lingering(names: list[str], timeout: float = 5.0) -> list[str]:
    """The links among ``names`` still there after waiting up to ``timeout``.

    When a namespace dies the kernel deletes its veth pairs itself, a little
    later, from a work queue; cocin does not wait for that (see
    ``bridge._detach_locked``), so a test must.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = [n for n in names if netlink.link_exists(n)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def leftovers(cids: list[str], bridges: tuple[str, ...] = (BRIDGE,)) -> list[str]:
    """Everything this test's state root may have left on the host, described
    (after giving the kernel time to delete the veth pairs of dead namespaces).

    Only what belongs to it: cocin networks of other state roots (a real
    installation, another test run) keep their bridges and rules meanwhile.
    """
    from cocin.network import bridge

    lingering([name for cid in cids for name in bridge.veth_names(cid)])
    found = []
    links = {link.name for link in netlink.list_links()}
    for cid in cids:
        found += [f"link {n}" for n in bridge.veth_names(cid) if n in links]
    found += [f"link {n}" for n in links if n in bridges]
    if shutil.which("iptables-save"):
        out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
        ours = firewall.chain_names()["dnat"][1]  # every chain's name starts with it
        for line in out.splitlines():
            words = [w.lstrip(":") for w in line.split()]
            if any(w == ours or w.startswith(ours + "-") or w in bridges for w in words):
                found.append(f"iptables: {line}")
    if shutil.which("nft"):
        if subprocess.run(["nft", "list", "table", "ip", firewall.nft_table()], capture_output=True).returncode == 0:
            found.append(f"nft table ip {firewall.nft_table()}")
    return found


# The host switches cocin changes, and the one that decides what a new
# bridge starts with (cocin sets route_localnet on its bridge only).
HOST_SWITCHES = ("net.ipv4.ip_forward", "net.ipv4.conf.default.route_localnet")


def _sysctl_holders(key: str) -> list[str]:
    """Other live state roots that hold ``key`` in cocin's host-wide
    bookkeeping (another test session, a user's containers)."""
    me = os.path.abspath(network.state_dir())
    state = store.read_json(os.path.join(sysctl.RUN_DIR, "network-sysctl.json"), {}) or {}
    return sorted(
        root
        for root, values in state.get("holders", {}).items()
        if root != me and key in values and os.path.isdir(root)
    )


def _host_value(key: str) -> str | None:
    """The host's own value of ``key``: while another state root holds it,
    the one cocin saved before changing it, not the held one."""
    state = store.read_json(os.path.join(sysctl.RUN_DIR, "network-sysctl.json"), {}) or {}
    if _sysctl_holders(key) and key in state.get("saved", {}):
        return state["saved"][key]
    return sysctl.read(key)


def _set_host_switch(key: str, value: str) -> None:
    """Write a host switch, unless another state root holds it: then its
    recorded "value before cocin" becomes ``value`` (it restores that when
    it lets go), so the other root is not disturbed meanwhile."""
    with store.locked(os.path.join(sysctl.RUN_DIR, "network-sysctl.lock")):
        path = os.path.join(sysctl.RUN_DIR, "network-sysctl.json")
        state = store.read_json(path, {}) or {}
        if _sysctl_holders(key) and key in state.get("saved", {}):
            state["saved"][key] = value
            store.write_json(path, state, durable=False)
        elif sysctl.read(key) != value:
            sysctl.write(key, value)


@pytest.fixture(params=["0", "1"], ids=["host-switches-0", "host-switches-1"])
def host(tmp_path, monkeypatch, request):
    """A state root of its own on a host whose ``ip_forward`` and default
    ``route_localnet`` start as ``request.param`` (both values run: what the
    test expects must not depend on how the machine was left); everything is
    put back afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces, a bridge, veth pairs and NAT rules")
    for tool in ("unshare", "nsenter"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} (util-linux) is not installed")
    subnet = ipaddress.IPv4Network(SUBNET)
    for route in netlink.list_routes():
        if route.dst_len and route.network.overlaps(subnet):
            pytest.skip(f"{SUBNET} clashes with host route {route.network}")
    if netlink.link_exists(BRIDGE):
        pytest.skip(f"a link {BRIDGE} already exists (left over from an earlier run?)")
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("COCIN_DEFAULT_BRIDGE", BRIDGE)
    monkeypatch.setenv("COCIN_DEFAULT_SUBNET", SUBNET)
    for key in HOST_SWITCHES:
        holders = _sysctl_holders(key)
        if holders and request.param != "1":
            pytest.skip(
                f"{key} is held at 1 by another cocin state root ({', '.join(holders)}) "
                f"with containers attached; setting it to {request.param} would disturb them"
            )
    keys = [*HOST_SWITCHES, "net.ipv4.conf.all.route_localnet", "net.ipv4.conf.lo.route_localnet"]
    before = {key: _host_value(key) for key in keys}
    nat_before = _nat_table_exists()
    handle = Host()
    handle.start = request.param
    try:
        for key in HOST_SWITCHES:
            _set_host_switch(key, handle.start)
        yield handle
    finally:
        handle.kill_all()
        # Detach whatever the test left attached, then make sure by hand.
        for net in network.list_networks():
            for cid, ep in net["containers"].items():
                with contextlib.suppress(Exception):
                    network.detach(net["name"], cid, ep)
            with contextlib.suppress(Exception):
                netlink.delete_link(net["bridge"])
            for ep in net["containers"].values():
                with contextlib.suppress(Exception):
                    netlink.delete_link(ep["veth"])
                with contextlib.suppress(Exception):
                    ports.stop_proxy(ep.get("proxy"))
        with contextlib.suppress(Exception):
            firewall.apply([])
        with contextlib.suppress(Exception):
            sysctl.apply({})
        # cocin must have put back the values the test started with...
        changed = {
            key: sysctl.read(key)
            for key in HOST_SWITCHES
            if sysctl.read(key) != handle.start and not _sysctl_holders(key)
        }
        # ...and the fixture puts back the machine's own.
        for key, value in before.items():
            if value is not None:
                _set_host_switch(key, value)
        # iptables-nft creates an empty "ip nat" table with base chains on
        # first use and never deletes it; remove it if we caused it and it
        # holds no rules.
        if not nat_before and _nat_table_exists():
            listing = subprocess.run(["nft", "list", "table", "ip", "nat"], capture_output=True, text=True).stdout
            if not any(
                line.strip() and not line.strip().startswith(("table", "chain", "type", "}"))
                for line in listing.splitlines()
            ):
                subprocess.run(["nft", "delete", "table", "ip", "nat"], capture_output=True)
        after = {key: _host_value(key) for key in keys}
        assert after == before, "sysctls were not restored"
        assert not changed, f"cocin left host switches changed (the test started with {handle.start})"


def _cid(n: int) -> str:
    return f"{n:x}" * 64  # 10 -> "aaaa...", a 64-hex-digit id


@needs_root
@pytest.mark.parametrize("backend", _available_backends())
def test_two_containers_talk_and_publish_a_port(host, monkeypatch, backend):
    monkeypatch.setenv("COCIN_PORT_BACKEND", backend)
    assert network.port_backend() == backend
    if backend == "nft" and _iptables_forward_drops():
        pytest.skip(
            "iptables' FORWARD policy is DROP, which rules in cocin's own nft table "
            "cannot overrule (the nft backend is for hosts without iptables)"
        )
    assert sysctl.read("net.ipv4.ip_forward") == host.start
    web, client = host.container(), host.container()
    cid_web, cid_client = _cid(10), _cid(11)

    ep_web = network.attach("bridge", cid_web, "web", web.pid, publish=["8080", "127.0.0.1::5353/udp"])
    ep_client = network.attach("bridge", cid_client, "client", client.pid, ip="10.231.0.77")
    assert ep_web["ip"] == "10.231.0.2" and ep_client["ip"] == "10.231.0.77"
    assert ep_web["gateway"] == "10.231.0.1" and ep_web["veth"] == "vethaaaaaaa"
    assert ep_web["port_backend"] == backend
    port, udp = ep_web["ports"]
    assert port["container_port"] == 8080 and port["host_port"] > 0
    assert (udp["host_ip"], udp["container_port"], udp["proto"]) == ("127.0.0.1", 5353, "udp")
    assert network.hosts_entries("bridge") == [("10.231.0.2", "web"), ("10.231.0.77", "client")]
    assert netlink.get_link(BRIDGE).up
    assert netlink.get_link("vethaaaaaaa").master == netlink.link_index(BRIDGE)
    # While containers are attached the host routes for them, and 127.0.0.1
    # reaches the bridge when a port is published there through netfilter.
    localnet = f"net.ipv4.conf.{BRIDGE}.route_localnet"
    assert sysctl.read("net.ipv4.ip_forward") == "1"
    assert sysctl.read(localnet) == ("1" if backend != "userspace-proxy" else host.start)

    host.serve(web.pid, 8080, "pong")
    host.serve_udp(web.pid, 5353)
    # Container to container, over the bridge: the peer is the client itself.
    assert fetch_inside(client.pid, "10.231.0.2", 8080) == "pong 10.231.0.77"
    # The published port, from the host via loopback and via its own address.
    assert fetch("127.0.0.1", port["host_port"]).startswith("pong ")
    address = _host_address()
    if address:
        assert fetch(address, port["host_port"]).startswith("pong ")
    assert fetch_udp("127.0.0.1", udp["host_port"]) == "echo ping"
    if address:
        # Another container, like another machine, through the host address;
        # and a container reaching its own published port that way.
        assert fetch_inside(client.pid, address, port["host_port"]).startswith("pong ")
        assert fetch_inside(web.pid, address, port["host_port"]).startswith("pong ")

    # The host port is taken now.
    third = host.container()
    with pytest.raises(NetworkError, match="already published by container web"):
        network.attach("bridge", _cid(12), "third", third.pid, publish=[f"{port['host_port']}:80"])
    assert network.hosts_entries("bridge") == [("10.231.0.2", "web"), ("10.231.0.77", "client")]

    # Detach: once with the process alive, once after it died; twice each.
    # Alive, the veth pair is deleted at once (the container loses eth0).
    network.detach("bridge", cid_client, ep_client)
    assert not netlink.link_exists(ep_client["veth"])
    network.detach("bridge", cid_client, ep_client)
    web.kill()
    web.wait()
    network.detach("bridge", cid_web, ep_web)
    network.detach("bridge", cid_web, None)

    # What belongs to the network itself stays until "network rm", as
    # docker0 does: the bridge and its MASQUERADE rule. Nothing of the
    # containers: no veth, port rule, proxy or address; and the host's own
    # switches are back as they were, since no container needs them (issue 6).
    left = leftovers([cid_web, cid_client, _cid(12)])
    assert f"link {BRIDGE}" in left
    assert any("MASQUERADE" in x or x.startswith("nft table") for x in left)
    assert not [x for x in left if "veth" in x or "ceth" in x or "DNAT" in x]
    assert not [x for x in left if "--comment" in x and "cocin:bridge" not in x]
    if ep_web["proxy"]:
        assert ports.proc_start_time(ep_web["proxy"]["pid"]) != ep_web["proxy"]["start"]
    assert sysctl.read("net.ipv4.ip_forward") == host.start
    assert sysctl.read(localnet) == host.start  # the bridge's own value, from the default
    assert network.inspect_network("bridge")["containers"] == {}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port["host_port"]), timeout=1).close()
    network.remove_network("bridge")
    assert leftovers([cid_web, cid_client, _cid(12)]) == []
    assert sysctl.read("net.ipv4.ip_forward") == host.start


@needs_root
def test_user_network_lifecycle(host):
    net = network.create_network("testnet", "10.231.0.0/25", gateway="10.231.0.126")
    assert net["bridge"].startswith("cocin-") and len(net["bridge"]) <= 15
    with pytest.raises(NetworkError, match="already exists"):
        network.create_network("testnet", "10.231.0.128/25")
    with pytest.raises(NetworkError, match="overlaps network testnet"):
        network.create_network("other", "10.231.0.0/24")
    with pytest.raises(NetworkError, match="did you mean 10.231.0.128/25"):
        network.create_network("other", "10.231.0.130/25")
    with pytest.raises(NetworkError, match="reserved"):
        network.create_network("host", "10.231.0.128/25")
    # No bridge until a container joins.
    assert not netlink.link_exists(net["bridge"])
    proc = host.container()
    ep = network.attach("testnet", _cid(13), "c", proc.pid)
    assert ep["ip"] == "10.231.0.1" and ep["gateway"] == "10.231.0.126"
    assert netlink.link_exists(net["bridge"])
    assert [n["name"] for n in network.list_networks()] == ["testnet"]
    with pytest.raises(NetworkError, match="in use by container"):
        network.remove_network("testnet")
    with pytest.raises(NetworkError, match="not found"):
        network.attach("nope", _cid(14), "c", proc.pid)
    # The container dies without a detach: remove_network notices.
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while netlink.link_exists(ep["veth"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    network.remove_network("testnet")
    assert network.list_networks() == []
    assert leftovers([_cid(13)], (BRIDGE, net["bridge"])) == []


@needs_root
def test_the_bridge_stays_and_the_next_container_costs_no_iptables_process(host, monkeypatch):
    first = host.container()
    ep = network.attach("bridge", _cid(1), "first", first.pid)
    network.detach("bridge", _cid(1), ep)
    # Kept for the next container, as docker0 is; the container's part is gone.
    assert netlink.get_link(BRIDGE).up
    assert network.inspect_network("bridge")["active"] is True
    assert [x for x in leftovers([_cid(1)]) if "veth" in x] == []

    calls = []
    real_run = firewall._run
    monkeypatch.setattr(firewall, "_run", lambda args, *a, **kw: calls.append(args) or real_run(args, *a, **kw))
    second = host.container()
    ep = network.attach("bridge", _cid(2), "second", second.pid)
    assert netlink.get_link(ep["veth"]).master == netlink.link_index(BRIDGE)
    from cocin.network import bridge

    with bridge.netlink_in(second.pid) as nl, netlink.using(nl):  # its namespace
        assert [link.name for link in netlink.list_links() if link.up] == ["lo", "eth0"]
        assert [(a.address, a.prefixlen) for a in netlink.list_addresses() if a.address != "127.0.0.1"] == [
            ("10.231.0.3", 24)
        ]  # in turn: .2 was first's
        assert [r.gateway for r in netlink.list_routes() if r.dst_len == 0] == ["10.231.0.1"]
    network.detach("bridge", _cid(2), ep)
    assert calls == [], "nothing changed, yet iptables ran"

    # "network rm" takes the bridge and its rule; first use makes them again.
    network.remove_network("bridge")
    assert leftovers([_cid(1), _cid(2)]) == []
    third = host.container()
    ep = network.attach("bridge", _cid(3), "third", third.pid)
    assert netlink.get_link(BRIDGE).up and ep["ip"] == "10.231.0.2"
    network.detach("bridge", _cid(3), ep)
    network.remove_network("bridge")
    assert leftovers([_cid(3)]) == []


@needs_root
def test_a_dead_namespace_is_left_to_the_kernel_and_a_leftover_link_replaced(host, monkeypatch):
    from cocin.network import bridge

    deleted = []
    real_delete = netlink.delete_link
    monkeypatch.setattr(netlink, "delete_link", lambda name: deleted.append(name) or real_delete(name))
    proc = host.container()
    ep = network.attach("bridge", _cid(5), "c", proc.pid)
    assert ep["pid"] == proc.pid and ep["netns"] == bridge.netns_id(proc.pid)
    assert deleted == []  # nothing was in the way
    proc.kill()
    proc.wait()
    network.detach("bridge", _cid(5), ep)
    assert deleted == [], "the namespace is gone: deleting the veth is the kernel's job"
    assert network.inspect_network("bridge")["containers"] == {}
    assert lingering([ep["veth"]]) == [], "the kernel did not delete the veth pair"

    # A link of that name left over (the kernel not done yet, or a crash):
    # attach deletes it and tries again.
    netlink.create_veth(ep["veth"], "cethleftover")
    again = host.container()
    ep = network.attach("bridge", _cid(5), "c", again.pid)
    assert deleted == [ep["veth"]] and not netlink.link_exists("cethleftover")
    assert netlink.get_link(ep["veth"]).master == netlink.link_index(BRIDGE)
    with bridge.netlink_in(again.pid) as nl, netlink.using(nl):
        assert netlink.get_link("eth0").up

    # The container dies and nobody detaches: the next attach notices by
    # its namespace, without listing links.
    again.kill()
    again.wait()
    third = host.container()
    real_list = netlink.list_links
    monkeypatch.setattr(netlink, "list_links", lambda: pytest.fail("links listed"))
    ep3 = network.attach("bridge", _cid(6), "d", third.pid)
    assert list(network.inspect_network("bridge")["containers"]) == [_cid(6)]
    assert ep["ip"] not in [e["ip"] for e in network.inspect_network("bridge")["containers"].values()]
    monkeypatch.setattr(netlink, "list_links", real_list)
    network.detach("bridge", _cid(6), ep3)
    network.remove_network("bridge")
    assert leftovers([_cid(5), _cid(6)]) == []


@needs_root
def test_the_nftables_generation_counts_every_change():
    try:
        before = netlink.nftables_generation()
    except OSError as e:
        pytest.skip(f"nftables cannot be asked here: {e}")
    if not shutil.which("nft"):
        pytest.skip("nft is not installed")
    table = "cocin_generation_test"
    subprocess.run(["nft", "add", "table", "ip", table], check=True)
    subprocess.run(["nft", "delete", "table", "ip", table], check=True)
    assert netlink.nftables_generation() >= before + 2


@needs_root
def test_rules_removed_behind_cocins_back_are_put_back(host, monkeypatch):
    if "iptables" not in _available_backends():
        pytest.skip("needs a working iptables")
    monkeypatch.setenv("COCIN_PORT_BACKEND", "iptables")
    _table, chain = firewall.chain_names()["postrouting"]
    jump = ["iptables", "-w", "-t", "nat", "{}", "POSTROUTING", "-j", chain]

    def iptables(op):
        return subprocess.run([op if a == "{}" else a for a in jump], capture_output=True)

    proc = host.container()
    ep = network.attach("bridge", _cid(4), "c", proc.pid)
    assert iptables("-C").returncode == 0
    # Someone deletes the jump; once the recorded state is too old to be
    # trusted, the next reconcile looks and puts it back.
    assert iptables("-D").returncode == 0
    monkeypatch.setattr(firewall, "REVALIDATE_SECONDS", 0.0)
    network.detach("bridge", _cid(4), ep)
    assert iptables("-C").returncode == 0
    # Deleted again while the state is trusted: removing the network then
    # wants to delete a jump that is not there; cocin looks, and cleans up.
    monkeypatch.setattr(firewall, "REVALIDATE_SECONDS", 3600.0)
    assert iptables("-D").returncode == 0
    network.remove_network("bridge")
    assert leftovers([_cid(4)]) == []


@needs_root
def test_default_network_refuses_a_subnet_used_by_the_host(host, monkeypatch):
    routes = [r for r in netlink.list_routes() if r.dst_len]
    if not routes:
        pytest.skip("this host has no non-default route to clash with")
    monkeypatch.setenv("COCIN_DEFAULT_SUBNET", str(routes[0].network))
    with pytest.raises(NetworkError, match="overlaps the host route"):
        network.default_network()
    assert network.list_networks() == []


@needs_root
def test_attach_refuses_a_process_in_the_host_namespace(host):
    with pytest.raises(NetworkError, match="host's network namespace"):
        network.attach("bridge", _cid(15), "oops", os.getpid())
    assert leftovers([_cid(15)]) == []
