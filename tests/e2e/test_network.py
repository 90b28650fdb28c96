"""End-to-end networking: bridges, addresses, names, published ports.

All traffic stays on this machine: loopback, the host's own address, and the
bridges and network namespaces cocin creates.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time

import pytest

HOST_PY = ["-v", "/usr:/usr:ro", "-v", "/lib:/lib:ro", "-v", "/lib64:/lib64:ro"]
UDP_ECHO = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 53))\n"
    "while True:\n"
    "    d, a = s.recvfrom(100); s.sendto(b'got-' + d, a)\n"
)


@pytest.fixture
def net(cocin):
    """Networks made by a test are removed after it (after its containers)."""
    made = []

    def create(name, subnet, *extra):
        cocin.ok("network", "create", "--subnet", subnet, *extra, name)
        made.append(name)
        return name

    yield create
    for cid in cocin.containers():
        cocin("rm", "-f", cid)
    for name in made:
        cocin("network", "rm", name)


def http_get(cocin, url: str) -> str:
    # (not wget -T: Debian's static busybox 1.35 wget crashes with it)
    return cocin.sh(f"timeout 5 busybox wget -qO- {shlex.quote(url)}").stdout


def host_address(cocin) -> str:
    """The host's own first non-loopback IPv4 address."""
    out = cocin.sh("ip -4 -o addr show scope global").stdout.split()
    return out[out.index("inet") + 1].split("/")[0]


def eventually(check, timeout: float = 5.0):
    """Poll ``check()`` until it is true or ``timeout`` has passed; its last value.

    A container's veth pair outlives it a little: when its network namespace
    dies, the kernel deletes the pair from a work queue, and cocin does not
    wait for that (``network disconnect`` of a running container does).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def sysctls(cocin) -> tuple:
    """The host switches as far as this session's state root goes: what it
    holds in cocin's host-wide bookkeeping, and the host's values, unless
    another state root (another test session, a user's containers) holds
    ip_forward now (then None: not this test's to compare)."""
    text = cocin.sh("cat /run/cocin/network-sysctl.json 2>/dev/null").stdout
    holders = json.loads(text).get("holders", {}) if text.strip() else {}
    mine = holders.pop(f"{cocin.root}/networks", None)
    if any("net.ipv4.ip_forward" in values for values in holders.values()):
        return mine, None
    return mine, cocin.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/route_localnet").stdout


def same_sysctls(before: tuple, after: tuple) -> bool:
    return before[0] == after[0] and None in (before[1], after[1]) or before == after


def test_tcp_between_containers_by_address_and_name(cocin, net, wait_for):
    net("backend", "10.214.0.0/24")
    cocin.ok("run", "-d", "--name", "api", "--network", "backend", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    ip = cocin.record("api")["network"]["ip"]
    assert ip.startswith("10.214.0.") and ip not in ("10.214.0.0", "10.214.0.1", "10.214.0.255")
    wait_for(lambda: cocin.listening("api", 80))
    r = cocin(
        "run",
        "--rm",
        "--network",
        "backend",
        "busybox",
        "sh",
        "-c",
        f"timeout 5 wget -qO- http://{ip}/hostname; timeout 5 wget -qO- http://api/hostname",
    )
    hostname = cocin.record("api")["config"]["hostname"]
    assert r.rc == 0, r.stderr
    assert r.stdout == f"{hostname}\n{hostname}\n"
    # A rename reaches the peers' /etc/hosts: a running peer resolves the new name only.
    cocin.ok("run", "-d", "--name", "peer", "--network", "backend", "busybox", "sleep", "300")
    assert f"{ip}\tapi" in cocin.ok("exec", "peer", "cat", "/etc/hosts").stdout
    cocin.ok("rename", "api", "api2")
    hosts = cocin.ok("exec", "peer", "cat", "/etc/hosts").stdout
    assert f"{ip}\tapi2" in hosts and f"{ip}\tapi\n" not in hosts
    r = cocin("exec", "peer", "timeout", "5", "wget", "-qO-", "http://api2/hostname")
    assert r.rc == 0 and r.stdout == f"{hostname}\n", r.stderr


def test_networks_are_isolated(cocin, net, wait_for):
    net("neta", "10.215.1.0/24")
    net("netb", "10.215.2.0/24")
    cocin.ok("run", "-d", "--name", "srv", "--network", "neta", "busybox", "httpd", "-f", "-p", "80")
    ip = cocin.record("srv")["network"]["ip"]
    wait_for(lambda: cocin.listening("srv", 80))
    r = cocin("run", "--rm", "--network", "netb", "busybox", "timeout", "3", "wget", "-qO-", f"http://{ip}/")
    assert r.rc != 0
    r = cocin("run", "--rm", "--network", "netb", "busybox", "timeout", "3", "wget", "-qO-", "http://srv/")
    assert r.rc != 0 and "bad address" in r.stderr


def test_published_tcp_port_reachable_from_host(cocin, net, wait_for):
    before = sysctls(cocin)
    cocin.ok("run", "-d", "--name", "web", "-p", "18080:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    wait_for(lambda: cocin.listening("web", 80))
    hostname = cocin.record("web")["config"]["hostname"]
    assert http_get(cocin, "http://127.0.0.1:18080/hostname") == hostname + "\n"
    assert http_get(cocin, f"http://{host_address(cocin)}:18080/hostname") == hostname + "\n"
    assert cocin.ok("port", "web").stdout == "80/tcp -> 0.0.0.0:18080\n"
    assert "0.0.0.0:18080->80/tcp" in cocin.ok("ps").stdout
    r = cocin("run", "--rm", "-p", "18080:80", "busybox", "true")
    assert r.rc == 125 and "18080" in r.stderr
    cocin.ok("rm", "-f", "web")
    assert same_sysctls(before, sysctls(cocin))


def test_published_udp_port_on_loopback(cocin, wait_for):
    cocin.ok(
        "run",
        "-d",
        "--name",
        "udp",
        "-p",
        "127.0.0.1:15353:53/udp",
        *HOST_PY,
        "busybox",
        "/usr/bin/python3",
        "-c",
        UDP_ECHO,
    )
    wait_for(lambda: cocin.listening("udp", 53, "udp"))
    probe = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
        "s.sendto(b'ping', ('127.0.0.1', 15353)); print(s.recvfrom(100)[0].decode())"
    )
    assert cocin.sh(f"{cocin.python} -c {shlex.quote(probe)}").stdout == "got-ping\n"


def test_host_port_zero_picks_a_free_one(cocin, wait_for):
    cocin.ok("run", "-d", "--name", "any", "-p", "80", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    out = cocin.ok("port", "any", "80").stdout.strip()
    port = int(out.rsplit(":", 1)[1])
    assert port > 0
    wait_for(lambda: cocin.listening("any", 80))
    assert http_get(cocin, f"http://127.0.0.1:{port}/hostname").strip()


def test_small_subnet_fills_up(cocin, net):
    net("tiny", "10.216.0.0/29")
    ips = []
    for i in range(5):
        cocin.ok("run", "-d", "--name", f"t{i}", "--network", "tiny", "busybox", "sleep", "300")
        ips.append(cocin.record(f"t{i}")["network"]["ip"])
    assert sorted(ips) == [f"10.216.0.{n}" for n in range(2, 7)]
    before = cocin.sh(f"ls -A {cocin.root}/containers").stdout
    r = cocin("run", "-d", "--name", "t5", "--network", "tiny", "busybox", "sleep", "300")
    assert r.rc == 125 and "no free address" in r.stderr
    assert cocin.sh(f"ls -A {cocin.root}/containers").stdout.count("\n") == before.count("\n") + 1
    cocin("rm", "-f", "t5")
    cocin.ok("rm", "-f", "t2")
    cocin.ok("run", "-d", "--name", "t6", "--network", "tiny", "--ip", "10.216.0.4", "busybox", "sleep", "300")
    assert cocin.record("t6")["network"]["ip"] == "10.216.0.4"


def test_network_rm_refuses_in_use_and_cleans_up(cocin, net):
    net("busy", "10.217.0.0/24")
    cocin.ok("run", "-d", "--name", "user", "--network", "busy", "busybox", "sleep", "300")
    bridge = cocin.record("user")["network"]["bridge"]
    r = cocin("network", "rm", "busy")
    assert r.rc == 125 and "in use" in r.stderr
    inspect = cocin.ok("network", "inspect", "busy").stdout
    assert '"PortBackend"' in inspect
    cocin.ok("rm", "-f", "user")
    cocin.ok("network", "rm", "busy")
    assert cocin.sh(f"ip link show {bridge}").rc != 0
    assert "busy" not in cocin.ok("network", "ls").stdout


def test_none_and_host_modes(cocin):
    r = cocin("run", "--rm", "--network", "none", "busybox", "cat", "/proc/net/dev")
    assert [ln.split(":")[0].strip() for ln in r.stdout.splitlines()[2:]] == ["lo"]
    host_links = cocin.sh("ls /sys/class/net").stdout.split()
    r = cocin("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net")
    assert r.stdout.split() == host_links
    r = cocin("run", "--rm", "--dns", "192.0.2.53", "busybox", "cat", "/etc/resolv.conf")
    assert r.stdout == "nameserver 192.0.2.53\n"


def test_connect_disconnect(cocin, net):
    net("late", "10.218.0.0/24")
    cocin.ok("run", "-d", "--name", "lonely", "--network", "none", "busybox", "sleep", "300")
    cocin.ok("network", "connect", "late", "lonely")
    r = cocin.ok("exec", "lonely", "cat", "/proc/net/dev").stdout
    assert "eth0" in r
    veth = cocin.record("lonely")["network"]["veth"]
    cocin.ok("network", "disconnect", "late", "lonely")
    # Running, so the pair is deleted at once, not left to the kernel.
    assert "eth0" not in cocin.ok("exec", "lonely", "cat", "/proc/net/dev").stdout
    assert cocin.sh(f"ip link show {veth}").rc != 0


def test_run_rm_cycles_leave_nothing(cocin):
    # This session's links and rules only: other cocin users on the host (another
    # test session, a user's containers) come and go meanwhile.
    bridge = cocin.env["COCIN_DEFAULT_BRIDGE"]
    links = f"ip -o link show | grep -E 'veth|{bridge}' | grep -F {bridge} | cut -d: -f2"
    chain = "COCIN-" + hashlib.sha256(f"{cocin.root}/networks".encode()).hexdigest()[:6]
    rules = f"iptables-save 2>/dev/null | grep -v '^#' | grep -E '{chain}|{bridge}' | sort"
    before_links = cocin.sh(links).stdout
    before_rules = cocin.sh(rules).stdout
    before_sysctl = sysctls(cocin)
    for i in range(50):
        r = cocin("run", "--rm", "-p", "18181:80", "busybox", "true")
        assert r.rc == 0, (i, r.stderr)
    assert eventually(lambda: cocin.sh(links).stdout == before_links), cocin.sh(links).stdout
    assert cocin.sh(f"ip -o link show master {bridge} | grep -c veth").stdout.strip() == "0"
    assert cocin.sh(rules).stdout == before_rules
    assert same_sysctls(before_sysctl, sysctls(cocin))
    # No address is still handed out: the endpoints are the address table.
    (net,) = json.loads(cocin.ok("network", "inspect", "bridge").stdout)
    assert net["containers"] == {}
