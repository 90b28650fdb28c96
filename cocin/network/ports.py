"""Publishing container ports on the host: ``-p [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|udp]``.

A container's address (172.29.0.2) is only reachable from this host. To
offer its port 80 as the host's port 8080, cocin rewrites the *destination*
of packets addressed to the host on port 8080: a DNAT rule in the nat table
(see ``firewall``), consulted

* in PREROUTING for packets arriving from other machines, and
* in OUTPUT for connections made on the host itself (``curl localhost:8080``),

both only for destinations that are local addresses of the host
(``-m addrtype --dst-type LOCAL``). Connection tracking remembers the
rewrite and undoes it on the replies.

Publishing to 127.0.0.1 needs two more things. The kernel refuses to route
a packet with a loopback source address out of a real interface unless
``net.ipv4.conf.<bridge>.route_localnet=1``, and the container must not see
127.0.0.1 as the source (it would answer itself), so such packets are also
masqueraded to the gateway address on their way into the bridge. (A caveat,
as with Docker: route_localnet lets a container that forges packets to
127.0.0.1 reach the host's loopback services.)

Without iptables and nft, a **userspace proxy** does the same job in Python:
a small daemon listens on the host port and copies bytes to the container.
It sees every connection as coming from the gateway, but needs no firewall.
"""

from __future__ import annotations

import errno
import os

from cocin.network import NetworkError, ipv4
from cocin.process import FORWARDED_SIGNALS, alive, close_fds_except, kill, proc_start_time, stdio_to_devnull

# Names for annotations only (see tests/unit/test_import_budget.py).
# The rules of published ports are computed on every attach and detach, so
# ``socket`` (~6 ms) is imported only by the functions that open sockets.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Iterable
    from typing import Any

PROTOCOLS = ("tcp", "udp")
ANY = "0.0.0.0"


def port_backend() -> str:
    """ "iptables", "nft" or "userspace-proxy" (``$COCIN_PORT_BACKEND`` wins)."""
    if os.environ.get("COCIN_PORT_BACKEND") == "userspace-proxy":
        return "userspace-proxy"
    from cocin.network import firewall

    return firewall.backend() or "userspace-proxy"


# ----------------------------------------------------------------- parsing --


def _port(text: str, spec: str, what: str, allow_zero: bool) -> int:
    if "-" in text:
        raise NetworkError(f"invalid publish spec {spec!r}: port ranges are not supported")
    if not text.isdigit():
        raise NetworkError(f"invalid publish spec {spec!r}: {what} {text!r} is not a number")
    port = int(text)
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise NetworkError(
            f"invalid publish spec {spec!r}: {what} {port} is out of range ({0 if allow_zero else 1}-65535)"
        )
    return port


def parse_publish(spec: str) -> dict[str, Any]:
    """Parse and check one ``-p`` value without touching the system.

    ``80`` · ``8080:80`` · ``127.0.0.1:8080:80`` · ``127.0.0.1::80`` ·
    ``8080:80/udp``. A missing or 0 host port means "any free port".
    Returns ``{"host_ip", "host_port", "container_port", "proto"}``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise NetworkError("invalid publish spec: empty")
    spec = spec.strip()
    rest, slash, proto = spec.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in PROTOCOLS:
        raise NetworkError(f"invalid publish spec {spec!r}: protocol must be tcp or udp, not {proto!r}")
    if rest.startswith("["):
        raise NetworkError(f"invalid publish spec {spec!r}: IPv6 addresses are not supported")
    parts = rest.split(":")
    if len(parts) > 3:
        raise NetworkError(f"invalid publish spec {spec!r}: expected [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]")
    host_ip, host_port = ANY, "0"
    if len(parts) == 3:
        host_ip = parts[0] or ANY
        try:
            host_ip = ipv4.text(ipv4.parse(host_ip))
        except ValueError:
            raise NetworkError(f"invalid publish spec {spec!r}: {host_ip!r} is not an IPv4 address") from None
    if len(parts) >= 2:
        host_port = parts[-2] or "0"
    return {
        "host_ip": host_ip,
        "host_port": _port(host_port, spec, "host port", allow_zero=True),
        "container_port": _port(parts[-1], spec, "container port", allow_zero=False),
        "proto": proto,
    }


def normalize(publish: Iterable[dict[str, Any] | str]) -> list[dict[str, Any]]:
    """Accept specs or already-parsed dicts; return checked dicts."""
    result = []
    for item in publish:
        if isinstance(item, str):
            result.append(parse_publish(item))
        else:
            port = dict(item)
            text = (
                f"{port.get('host_ip') or ANY}:{port.get('host_port') or 0}:"
                f"{port.get('container_port')}/{port.get('proto') or 'tcp'}"
            )
            result.append(parse_publish(text))
    return result


# ------------------------------------------------------- host port choice --


def overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Would ``a`` and ``b`` claim the same host port? 0.0.0.0 means every
    address, so it clashes with any address on the same port."""
    return (
        a["proto"] == b["proto"]
        and a["host_port"] == b["host_port"]
        and (a["host_ip"] == b["host_ip"] or ANY in (a["host_ip"], b["host_ip"]))
    )


def _probe(host_ip: str, port: int, proto: str) -> int:
    """Bind a socket to the host address and port, close it, return the port.

    Binding to port 0 makes the kernel choose a free port: that is how cocin
    picks one. Binding to a given port tells whether a host program already
    uses it.
    """
    import _socket as socket  # socket.py's enums cost milliseconds on every "run -p"

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    try:
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host_ip, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise NetworkError(f"host port {host_ip}:{port}/{proto} is already in use on this host") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise NetworkError(f"cannot publish on {host_ip}: not an address of this host") from None
            raise NetworkError(f"cannot use host port {host_ip}:{port}/{proto}: {e.strerror}") from None
        return s.getsockname()[1]
    finally:
        s.close()


def resolve(
    publish: Iterable[dict[str, Any] | str], published: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Check the ports a container wants and give host port 0 a real number.

    ``published`` maps other containers (by name) to their resolved ports;
    claiming one of those host ports is an error. With the userspace proxy
    the bind happens later, when the proxy starts, so it is not probed here.
    """
    probe = port_backend() != "userspace-proxy"
    resolved: list[dict[str, Any]] = []
    for port in normalize(publish):
        for owner, ports in published.items():
            for other in ports:
                if port["host_port"] and overlaps(port, other):
                    raise NetworkError(
                        f"host port {other['host_ip']}:{other['host_port']}/"
                        f"{other['proto']} is already published by "
                        f"container {owner}"
                    )
        for other in resolved:
            if port["host_port"] and overlaps(port, other):
                raise NetworkError(f"host port {port['host_port']}/{port['proto']} is published twice")
        if port["host_port"] == 0:
            taken = [p for ps in published.values() for p in ps] + resolved
            for _ in range(100):
                port["host_port"] = _probe(port["host_ip"], 0, port["proto"])
                if not any(overlaps(port, other) for other in taken):
                    break
        elif probe:
            _probe(port["host_ip"], port["host_port"], port["proto"])
        resolved.append(port)
    return resolved


# ---------------------------------------------------------- firewall rules --


def wants_localhost(port: dict[str, Any]) -> bool:
    """Is the port reachable as 127.0.0.1 (published on it or on 0.0.0.0)?"""
    return port["host_ip"] == ANY or port["host_ip"].startswith("127.")  # 127.0.0.0/8


def rules(endpoint: dict[str, Any], forward_accept: bool) -> list[Any]:
    """The firewall rules publishing ``endpoint``'s ports.

    Per port: DNAT host port → container; MASQUERADE for a container that
    reaches its own published port through the host ("hairpin"), else it
    would get the answer from an unexpected address; and, if the host's
    FORWARD policy drops, an ACCEPT for the new connections.
    """
    from cocin.network.firewall import Rule

    result = []
    ip, bridge = endpoint["ip"], endpoint["bridge"]
    tag = f"cocin:{endpoint.get('container', '')[:12]}"
    for port in endpoint.get("ports", ()):
        proto, cport = port["proto"], port["container_port"]
        result.append(
            Rule(
                "dnat",
                "DNAT",
                proto=proto,
                dport=port["host_port"],
                dst=None if port["host_ip"] == ANY else port["host_ip"],
                to=f"{ip}:{cport}",
                comment=tag,
            )
        )
        result.append(Rule("postrouting", "MASQUERADE", proto=proto, src=ip, dst=ip, dport=cport, comment=tag))
        if forward_accept:
            result.append(Rule("forward", "ACCEPT", proto=proto, dst=ip, dport=cport, out_iface=bridge, comment=tag))
    if any(wants_localhost(p) for p in endpoint.get("ports", ())):
        result.append(Rule("postrouting", "MASQUERADE", src="127.0.0.0/8", out_iface=bridge, comment=f"cocin:{bridge}"))
    return result


def sysctls(endpoint: dict[str, Any]) -> dict[str, str]:
    """``route_localnet`` on the bridge when 127.0.0.1 must reach the container."""
    if any(wants_localhost(p) for p in endpoint.get("ports", ())):
        return {f"net.ipv4.conf.{endpoint['bridge']}.route_localnet": "1"}
    return {}


# ---------------------------------------------------------- userspace proxy --


def start_proxy(ports: list[dict[str, Any]], target_ip: str, watch_pid: int) -> dict[str, int]:
    """Start a daemon forwarding each host port to ``target_ip``.

    The listening sockets are bound here, so a busy port is reported at
    once; then a double ``fork`` + ``setsid`` detaches the daemon from the
    caller (it outlives ``cocin run -d``). It exits by itself when the
    container process (``watch_pid``) is gone. Returns ``{"pid", "start"}``.
    """
    import socket

    listeners = []
    try:
        for port in ports:
            kind = socket.SOCK_STREAM if port["proto"] == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(socket.AF_INET, kind)
            listeners.append((s, port))
            if port["proto"] == "tcp":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((port["host_ip"], port["host_port"]))
            except OSError as e:
                raise NetworkError(
                    f"cannot listen on {port['host_ip']}:{port['host_port']}/{port['proto']}: {e.strerror}"
                ) from None
            if port["proto"] == "tcp":
                s.listen(128)
        watch_start = proc_start_time(watch_pid)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the forked daemon
            try:
                os.close(read_end)
                os.setsid()
                if os.fork():
                    os._exit(0)
                os.write(write_end, str(os.getpid()).encode())
                keep = {s.fileno() for s, _ in listeners}
                _daemonize(keep)
                _serve(listeners, target_ip, watch_pid, watch_start)
            finally:
                os._exit(0)
        os.close(write_end)
        os.waitpid(child, 0)
        with os.fdopen(read_end, "rb") as f:
            pid = int(f.read() or 0)
        if not pid:
            raise NetworkError("the userspace port proxy did not start")
        return {"pid": pid, "start": proc_start_time(pid)}
    finally:
        for s, _ in listeners:
            s.close()


def stop_proxy(proxy: dict[str, int] | None) -> None:
    """Stop a proxy daemon, if that PID is still the same process."""
    if not proxy:
        return
    import signal
    import time

    pid = proxy["pid"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(pid, proxy["start"]):
            return
        kill(pid, sig)
        for _ in range(50):
            if not alive(pid, proxy["start"]):
                return
            time.sleep(0.02)


def _daemonize(keep: set[int]) -> None:  # pragma: no cover - in the daemon
    """Close every inherited descriptor (the caller's locks, pipes and
    terminal) except ``keep``, point stdin/out/err at /dev/null, and undo
    signal settings inherited from the caller so SIGTERM stops the proxy."""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    try:
        from cocin.libc import set_process_name

        set_process_name("cocin-proxy")  # what ps -o comm and top show
    except Exception:
        pass
    close_fds_except(*keep)
    stdio_to_devnull()


def _serve(
    listeners: list[tuple[socket.socket, dict[str, Any]]], target_ip: str, watch_pid: int, watch_start: int
) -> None:  # pragma: no cover
    """The proxy's main loop: one thread per listening socket."""
    import threading
    import time

    for sock, port in listeners:
        target = (target_ip, port["container_port"])
        loop = _tcp_accept_loop if port["proto"] == "tcp" else _udp_loop
        threading.Thread(target=loop, args=(sock, target), daemon=True).start()
    while alive(watch_pid, watch_start):
        time.sleep(1)


def _tcp_accept_loop(listener: socket.socket, target: tuple[str, int]) -> None:
    import threading

    while True:
        client, _addr = listener.accept()
        threading.Thread(target=_tcp_relay, args=(client, target), daemon=True).start()


def _tcp_relay(client: socket.socket, target: tuple[str, int]) -> None:
    """Connect to the container and copy bytes both ways until both close."""
    import socket
    import threading

    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy until end of file, then pass the end of file on (half-close)."""
    import socket  # already loaded in the proxy: a dictionary lookup

    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _udp_loop(listener: socket.socket, target: tuple[str, int]) -> None:
    """UDP has no connections: keep one upstream socket per client address,
    forgotten after 60 idle seconds."""
    import socket
    import threading

    sessions: dict[Any, socket.socket] = {}

    def replies(upstream: socket.socket, client: Any) -> None:
        upstream.settimeout(60)
        try:
            while True:
                listener.sendto(upstream.recv(65535), client)
        except OSError:
            pass
        finally:
            sessions.pop(client, None)
            upstream.close()

    while True:
        data, client = listener.recvfrom(65535)
        upstream = sessions.get(client)
        if upstream is None:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            upstream.connect(target)
            sessions[client] = upstream
            threading.Thread(target=replies, args=(upstream, client), daemon=True).start()
        try:
            upstream.send(data)
        except OSError:
            pass
