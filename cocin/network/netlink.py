"""rtnetlink: how programs like ``ip`` talk to the kernel's network stack.

There is no system call "create a bridge". Instead a program opens a socket of
family ``AF_NETLINK`` / protocol ``NETLINK_ROUTE`` and *sends messages* to the
kernel; the kernel answers with messages on the same socket. Every message is

    struct nlmsghdr   (16 bytes: length, type, flags, sequence, port id)
    a fixed header    (ifinfomsg for links, ifaddrmsg for addresses,
                       rtmsg for routes)
    attributes        (rtattr: length, type, value, padded to 4 bytes;
                       a value may itself be a list of attributes: "nested")

A request carries ``NLM_F_REQUEST`` and usually ``NLM_F_ACK``: the kernel then
always answers with an ``NLMSG_ERROR`` message whose error code is 0 for
success or ``-errno``. A *dump* request (``NLM_F_DUMP``) is answered with many
messages flagged ``NLM_F_MULTI`` and closed by ``NLMSG_DONE``.

The first half of this module packs and unpacks these bytes with ``struct``
and does no I/O, so it can be unit-tested anywhere. The second half is a
small socket class and one function per operation cocin needs, each the
equivalent of an ``ip`` command named in its docstring.

Constants are named exactly as in the kernel headers (``<linux/netlink.h>``,
``<linux/rtnetlink.h>``, ``<linux/if_link.h>``, ``<linux/if_addr.h>``,
``<linux/veth.h>``) so the two can be read side by side.

A netlink socket talks to the network namespace its creator was in *when the
socket was created*: to configure a container, create the socket after
entering the container's namespace (see ``cocin.network.bridge``).

One module although it is long (~770 lines): most of it is the kernel's
constants and message layouts, kept in the order of the headers they mirror.
"""

from __future__ import annotations

# The C module behind ``socket``: socket.py builds enums of every constant
# on import (~6 ms with ``enum`` itself), paid by every "cocin run". The C
# socket has all this module needs (bind, send, recv, close), and its
# constants are plain ints.
import _socket
import errno as _errno
import os
import struct

from cocin.network import ipv4
from cocin.record import Factory, Record

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ipaddress

# <linux/netlink.h>
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
# Flags on an NLMSG_ERROR reply (extended ACK).
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3

NLMSGERR_ATTR_MSG = 1

NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# <linux/rtnetlink.h>: message types.
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_SETLINK = 19
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26

# <linux/rtnetlink.h>: route attributes and rtmsg values.
RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_TABLE = 15
RT_TABLE_MAIN = 254
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RTN_UNICAST = 1

# <linux/if_link.h>: link attributes.
IFLA_ADDRESS = 1
IFLA_BROADCAST = 2
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINK = 5
IFLA_MASTER = 10
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_NET_NS_PID = 19
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
IFLA_INFO_SLAVE_KIND = 4
IFLA_INFO_SLAVE_DATA = 5
IFLA_BRPORT_MODE = 4  # a bridge port attribute: hairpin mode (u8)

# <linux/veth.h>
VETH_INFO_PEER = 1

# <linux/if_addr.h>
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_LABEL = 3
IFA_BROADCAST = 4

# <linux/if.h>
IFF_UP = 0x1
IFNAMSIZ = 16  # including the terminating NUL: names have at most 15 bytes

AF_UNSPEC = 0
AF_INET = _socket.AF_INET

MESSAGE_NAMES = {
    RTM_NEWLINK: "RTM_NEWLINK",
    RTM_DELLINK: "RTM_DELLINK",
    RTM_GETLINK: "RTM_GETLINK",
    RTM_SETLINK: "RTM_SETLINK",
    RTM_NEWADDR: "RTM_NEWADDR",
    RTM_DELADDR: "RTM_DELADDR",
    RTM_GETADDR: "RTM_GETADDR",
    RTM_NEWROUTE: "RTM_NEWROUTE",
    RTM_DELROUTE: "RTM_DELROUTE",
    RTM_GETROUTE: "RTM_GETROUTE",
}

# struct formats; "=" means native byte order, no implicit padding.
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table,
# protocol, scope, type, flags
RTATTR = struct.Struct("=HH")  # len, type
NLMSGERR = struct.Struct("=i")  # error, followed by the request header


# ---------------------------------------------------------------- encoding --


def align(length: int) -> int:
    """Round up to a multiple of 4: netlink pads every header and attribute."""
    return (length + 3) & ~3


def pack_attr(attr_type: int, value: bytes) -> bytes:
    """One ``rtattr``: a 4-byte header (length without padding, type), the
    value, then zero padding to the next multiple of 4."""
    length = RTATTR.size + len(value)
    return RTATTR.pack(length, attr_type) + value + b"\0" * (align(length) - length)


def attr_str(attr_type: int, text: str) -> bytes:
    """A string attribute: the kernel expects C strings, NUL-terminated."""
    return pack_attr(attr_type, text.encode() + b"\0")


def attr_u32(attr_type: int, value: int) -> bytes:
    return pack_attr(attr_type, struct.pack("=I", value))


def attr_u8(attr_type: int, value: int) -> bytes:
    return pack_attr(attr_type, struct.pack("=B", value))


def attr_ipv4(attr_type: int, address: str) -> bytes:
    """An IPv4 address attribute: 4 bytes in network order."""
    return pack_attr(attr_type, ipv4.packed(address))


def attr_mac(attr_type: int, mac: str) -> bytes:
    """A hardware address attribute: 6 raw bytes."""
    return pack_attr(attr_type, bytes.fromhex(mac.replace(":", "")))


def attr_nested(attr_type: int, *attrs: bytes) -> bytes:
    """An attribute whose value is more attributes (or a header + attributes).

    The kernel does not require ``NLA_F_NESTED`` for the old rtnetlink
    attributes used here, and ``ip`` does not set it either.
    """
    return pack_attr(attr_type, b"".join(attrs))


def pack_ifinfomsg(
    index: int = 0, flags: int = 0, change: int = 0, family: int = AF_UNSPEC, dev_type: int = 0
) -> bytes:
    """``struct ifinfomsg``: which link (by index; 0 = "by IFLA_IFNAME") and
    which IFF_* flags to change (``change`` is the mask, ``flags`` the value)."""
    return IFINFOMSG.pack(family, dev_type, index, flags, change)


def pack_ifaddrmsg(
    index: int, prefixlen: int, family: int = AF_INET, scope: int = RT_SCOPE_UNIVERSE, flags: int = 0
) -> bytes:
    """``struct ifaddrmsg``: the link an address belongs to and its prefix."""
    return IFADDRMSG.pack(family, prefixlen, flags, scope, index)


def pack_rtmsg(
    dst_len: int = 0,
    table: int = RT_TABLE_MAIN,
    protocol: int = RTPROT_BOOT,
    scope: int = RT_SCOPE_UNIVERSE,
    route_type: int = RTN_UNICAST,
    family: int = AF_INET,
) -> bytes:
    """``struct rtmsg``: family, destination prefix length, table, who made
    the route (protocol), how far it reaches (scope) and its type."""
    return RTMSG.pack(family, dst_len, 0, 0, table, protocol, scope, route_type, 0)


def pack_message(msg_type: int, flags: int, seq: int, body: bytes, pid: int = 0) -> bytes:
    """Put an ``nlmsghdr`` in front of ``body``; the length covers both."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags, seq, pid) + body


# ---------------------------------------------------------------- decoding --


class Message(Record):
    """One decoded netlink message; ``payload`` starts after the nlmsghdr."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


def parse_messages(data: bytes) -> list[Message]:
    """Split a buffer received from the socket into messages (one ``recv``
    may return several, each padded to 4 bytes)."""
    messages = []
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, msg_type, flags, seq, pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise ValueError(f"truncated netlink message at offset {offset}")
        messages.append(Message(msg_type, flags, seq, pid, data[offset + NLMSGHDR.size : offset + length]))
        offset += align(length)
    return messages


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """Decode a run of ``rtattr`` into ``{type: value}``.

    The ``NLA_F_NESTED`` / ``NLA_F_NET_BYTEORDER`` bits are masked off the
    type. A nested value is returned as bytes: call ``parse_attrs`` again.
    """
    attrs: dict[int, bytes] = {}
    offset = 0
    while offset + RTATTR.size <= len(data):
        length, attr_type = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size or offset + length > len(data):
            raise ValueError(f"truncated netlink attribute at offset {offset}")
        attrs[attr_type & NLA_TYPE_MASK] = data[offset + RTATTR.size : offset + length]
        offset += align(length)
    return attrs


def decode_str(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def decode_u32(value: bytes) -> int:
    return struct.unpack("=I", value[:4])[0]


def decode_mac(value: bytes) -> str:
    return ":".join(f"{b:02x}" for b in value)


def parse_error(message: Message) -> tuple[int, str]:
    """Decode an ``NLMSG_ERROR`` message into ``(errno, kernel's text)``.

    The payload is ``struct nlmsgerr``: a negative errno (0 means "ACK, it
    worked") then a copy of the request's header. With ``NETLINK_EXT_ACK``
    the kernel may append attributes (flag ``NLM_F_ACK_TLVS``), the useful
    one being a human-readable ``NLMSGERR_ATTR_MSG`` such as "Unknown device
    type". They come after the copied request, which is only its header when
    the flag ``NLM_F_CAPPED`` is set, or header + body otherwise.
    """
    (error,) = NLMSGERR.unpack_from(message.payload)
    text = ""
    offset = NLMSGERR.size
    if message.flags & NLM_F_ACK_TLVS and len(message.payload) >= offset + NLMSGHDR.size:
        request_len = NLMSGHDR.unpack_from(message.payload, offset)[0]
        offset += NLMSGHDR.size if message.flags & NLM_F_CAPPED else align(request_len)
        tlvs = parse_attrs(message.payload[offset:])
        if NLMSGERR_ATTR_MSG in tlvs:
            text = decode_str(tlvs[NLMSGERR_ATTR_MSG])
    return -error, text


class Link(Record):
    """What ``ip link`` shows about one network interface."""

    index: int
    name: str
    flags: int
    kind: str | None = None  # "bridge", "veth", ... (None for plain devices)
    master: int | None = None  # index of the bridge this link is a port of
    mac: str | None = None
    mtu: int | None = None
    attrs: dict[int, bytes] = Factory(dict)

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


def parse_link(payload: bytes) -> Link:
    """Decode an RTM_NEWLINK message: ``ifinfomsg`` then IFLA_* attributes."""
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(payload)
    attrs = parse_attrs(payload[IFINFOMSG.size :])
    kind = None
    if IFLA_LINKINFO in attrs:
        info = parse_attrs(attrs[IFLA_LINKINFO])
        if IFLA_INFO_KIND in info:
            kind = decode_str(info[IFLA_INFO_KIND])
    return Link(
        index=index,
        name=decode_str(attrs.get(IFLA_IFNAME, b"")),
        flags=flags,
        kind=kind,
        master=decode_u32(attrs[IFLA_MASTER]) if IFLA_MASTER in attrs else None,
        mac=decode_mac(attrs[IFLA_ADDRESS]) if IFLA_ADDRESS in attrs else None,
        mtu=decode_u32(attrs[IFLA_MTU]) if IFLA_MTU in attrs else None,
        attrs=attrs,
    )


class Route(Record):
    """One IPv4 route: ``dst``/``dst_len`` reached via ``gateway`` or ``oif``."""

    dst: str
    dst_len: int
    table: int
    protocol: int
    scope: int
    type: int
    gateway: str | None = None
    oif: int | None = None

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The destination as an ``ipaddress`` network (imported here: only
        ``network create`` compares routes with a subnet)."""
        import ipaddress

        return ipaddress.IPv4Network(f"{self.dst}/{self.dst_len}", strict=False)


def parse_route(payload: bytes) -> Route:
    """Decode an RTM_NEWROUTE message: ``rtmsg`` then RTA_* attributes."""
    (_family, dst_len, _src_len, _tos, table, protocol, scope, route_type, _flags) = RTMSG.unpack_from(payload)
    attrs = parse_attrs(payload[RTMSG.size :])
    if RTA_TABLE in attrs:  # tables above 255 only fit in the attribute
        table = decode_u32(attrs[RTA_TABLE])
    dst = ipv4.unpacked(attrs[RTA_DST]) if RTA_DST in attrs else "0.0.0.0"
    gateway = ipv4.unpacked(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
    oif = decode_u32(attrs[RTA_OIF]) if RTA_OIF in attrs else None
    return Route(dst, dst_len, table, protocol, scope, route_type, gateway, oif)


class Address(Record):
    """One IPv4 address on a link (``ip -4 addr``)."""

    index: int
    address: str
    prefixlen: int


def parse_address(payload: bytes) -> Address:
    """Decode an RTM_NEWADDR message: ``ifaddrmsg`` then IFA_* attributes.

    ``IFA_LOCAL`` is the interface's own address; ``IFA_ADDRESS`` is the same
    except on point-to-point links, where it is the peer's.
    """
    _family, prefixlen, _flags, _scope, index = IFADDRMSG.unpack_from(payload)
    attrs = parse_attrs(payload[IFADDRMSG.size :])
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS) or bytes(4)
    return Address(index, ipv4.unpacked(raw), prefixlen)


# ------------------------------------------------------------------ socket --


class NetlinkSocket:
    """A ``NETLINK_ROUTE`` socket that sends one request at a time.

    Use as a context manager, or call ``close()``. Each request gets a new
    sequence number; replies with another number are ignored. (Other
    netlink families speak the same framing: ``protocol`` picks one, say
    ``NETLINK_NETFILTER`` for nftables, see ``nftables_generation``.)
    """

    def __init__(self, protocol: int = NETLINK_ROUTE) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, protocol)
        try:
            # Port id 0: let the kernel choose a unique address for us.
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        try:
            # Ask for human-readable error text alongside the errno.
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass  # a kernel older than 4.12: errno only
        self.seq = 0

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def request(self, msg_type: int, body: bytes, flags: int = 0, what: str | None = None) -> list[Message]:
        """Send one request and collect the kernel's answer.

        Returns the data messages (for a GET or a dump); raises ``OSError``
        when the kernel answers with an error. ``what`` (a link name, an
        address...) only makes the error message clearer.
        """
        self.seq += 1
        seq = self.seq
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        if not dump:
            flags |= NLM_F_ACK  # a dump ends with NLMSG_DONE instead
        self.sock.send(pack_message(msg_type, flags | NLM_F_REQUEST, seq, body))
        replies: list[Message] = []
        while True:
            for message in parse_messages(self.sock.recv(1 << 16)):
                if message.seq != seq:
                    continue  # a late answer to an earlier request
                if message.type == NLMSG_ERROR:
                    code, text = parse_error(message)
                    if code:
                        raise netlink_error(msg_type, code, what, text)
                    return replies  # the ACK: the request is complete
                if message.type == NLMSG_DONE:
                    # The end of a dump; its payload is an int error code too.
                    if len(message.payload) >= NLMSGERR.size:
                        code = -NLMSGERR.unpack_from(message.payload)[0]
                        if code:
                            raise netlink_error(msg_type, code, what, "")
                    return replies
                if message.type != NLMSG_NOOP:
                    replies.append(message)


def netlink_error(msg_type: int, code: int, what: str | None, text: str) -> OSError:
    """``OSError(errno, "netlink RTM_NEWLINK: File exists", what)``."""
    name = MESSAGE_NAMES.get(msg_type, str(msg_type))
    message = f"netlink {name}: {os.strerror(code)}"
    if text:
        message += f" ({text})"
    return OSError(code, message, what)


# The socket requests go through while a ``using()`` block is active.
_current: NetlinkSocket | None = None


class using:
    """``with using(nl):`` sends every request of this module through ``nl``.

    That is how cocin configures a container: ``nl`` was created in the
    container's network namespace (see ``cocin.network.bridge``), so the
    same functions (``add_address``, ``set_up``...) act there, not here.
    It also saves opening a socket per request. (A class, not a
    ``contextlib`` generator: that module costs milliseconds to import.)
    """

    def __init__(self, nl: NetlinkSocket) -> None:
        self.nl = nl
        self.previous: NetlinkSocket | None = None

    def __enter__(self) -> NetlinkSocket:
        global _current
        self.previous, _current = _current, self.nl
        return self.nl

    def __exit__(self, *exc: object) -> None:
        global _current
        _current = self.previous


def _request(msg_type: int, body: bytes, flags: int = 0, what: str | None = None) -> list[Message]:
    """Send one request: through the ``using()`` socket if there is one, else
    on a new socket, which talks to the namespace the caller is in *now*."""
    if _current is not None:
        return _current.request(msg_type, body, flags, what)
    with NetlinkSocket() as nl:
        return nl.request(msg_type, body, flags, what)


# -------------------------------------------------------------- operations --


def check_ifname(name: str) -> None:
    """Interface names are at most 15 bytes, without "/" or whitespace."""
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or any(c in raw for c in b" \t\n:"):
        raise ValueError(f"invalid interface name {name!r} (at most 15 characters, no '/', ':' or spaces)")


def get_link(name: str) -> Link:
    """``ip link show NAME``: RTM_GETLINK with IFLA_IFNAME instead of an index.

    Raises ``OSError(ENODEV)`` when there is no such link.
    """
    check_ifname(name)
    replies = _request(RTM_GETLINK, pack_ifinfomsg() + attr_str(IFLA_IFNAME, name), what=name)
    if not replies:
        raise OSError(_errno.ENODEV, f"netlink RTM_GETLINK: {os.strerror(_errno.ENODEV)}", name)
    return parse_link(replies[0].payload)


def link_index(name: str) -> int:
    """The interface index (what ``/sys/class/net/NAME/ifindex`` says)."""
    return get_link(name).index


def link_exists(name: str) -> bool:
    try:
        get_link(name)
    except OSError as e:
        if e.errno == _errno.ENODEV:
            return False
        raise
    return True


def list_links() -> list[Link]:
    """``ip link``: an RTM_GETLINK dump of every link in this namespace."""
    replies = _request(RTM_GETLINK, pack_ifinfomsg(), NLM_F_DUMP)
    return [parse_link(m.payload) for m in replies if m.type == RTM_NEWLINK]


def _linkinfo(kind: str, data: bytes = b"") -> bytes:
    """IFLA_LINKINFO { IFLA_INFO_KIND "kind", IFLA_INFO_DATA {...} }: the part
    of a RTM_NEWLINK that says which driver makes the new link."""
    parts = [attr_str(IFLA_INFO_KIND, kind)]
    if data:
        parts.append(attr_nested(IFLA_INFO_DATA, data))
    return attr_nested(IFLA_LINKINFO, *parts)


_CREATE = NLM_F_CREATE | NLM_F_EXCL


def create_bridge(name: str) -> None:
    """``ip link add NAME type bridge``: a virtual switch. Links made its ports
    (``set_master``) exchange Ethernet frames; an address on the bridge itself
    makes the host a member of that LAN (the containers' gateway)."""
    check_ifname(name)
    body = pack_ifinfomsg() + attr_str(IFLA_IFNAME, name) + _linkinfo("bridge")
    _request(RTM_NEWLINK, body, _CREATE, what=name)


def create_veth(
    name: str,
    peer: str,
    peer_mac: str | None = None,
    *,
    master: int | None = None,
    up: bool = False,
    peer_netns_pid: int | None = None,
) -> None:
    """``ip link add NAME [master BRIDGE] [up] type veth peer name PEER
    [address MAC] [netns PID]``.

    A veth pair is a virtual cable: a frame sent into one end comes out of
    the other. The peer is described inside IFLA_INFO_DATA as
    VETH_INFO_PEER, whose value is a whole ``ifinfomsg`` plus attributes.

    One request can do more than create: ``master`` (a bridge's index)
    plugs this end into a bridge, ``up`` brings this end up (not the peer:
    the kernel configures the peer before this end exists, and a veth end
    cannot come up without its other half, ENOTCONN), and
    ``peer_netns_pid`` creates the peer directly inside the network
    namespace of that process, where its name only has to be unique. That
    is cheaper than ``move_to_netns`` afterwards: moving a link makes the
    kernel wait for every CPU to let go of it.
    """
    check_ifname(name)
    check_ifname(peer)
    peer_attrs = attr_str(IFLA_IFNAME, peer)
    if peer_mac:
        peer_attrs += attr_mac(IFLA_ADDRESS, peer_mac)
    if peer_netns_pid is not None:
        peer_attrs += attr_u32(IFLA_NET_NS_PID, peer_netns_pid)
    peer_info = attr_nested(VETH_INFO_PEER, pack_ifinfomsg(), peer_attrs)
    flags = IFF_UP if up else 0
    body = pack_ifinfomsg(flags=flags, change=flags) + attr_str(IFLA_IFNAME, name)
    if master is not None:
        body += attr_u32(IFLA_MASTER, master)
    body += _linkinfo("veth", peer_info)
    _request(RTM_NEWLINK, body, _CREATE, what=name)


def _set_link(name: str, attrs: bytes = b"", flags: int = 0, change: int = 0) -> None:
    """RTM_NEWLINK on an existing link changes it. Without NLM_F_CREATE the
    kernel never makes a new link: it finds this one by IFLA_IFNAME (index
    0 in the header), or answers ENODEV. One request, no index lookup."""
    check_ifname(name)
    body = pack_ifinfomsg(0, flags, change) + attr_str(IFLA_IFNAME, name) + attrs
    _request(RTM_NEWLINK, body, what=name)


def set_master(name: str, master: str) -> None:
    """``ip link set NAME master BRIDGE``: plug a link into a bridge."""
    _set_link(name, attr_u32(IFLA_MASTER, link_index(master)))


def set_up(name: str) -> None:
    """``ip link set NAME up``: set IFF_UP (``change`` says which bit)."""
    _set_link(name, flags=IFF_UP, change=IFF_UP)


def set_hairpin(name: str, on: bool = True) -> None:
    """``ip link set NAME type bridge_slave hairpin on``.

    A bridge never sends a frame back out of the port it came in on, unless
    that port is in *hairpin* mode. That is needed when a container reaches
    its own published port through a host address: with the
    ``br_netfilter`` module loaded, the DNAT happens inside the bridge and
    the rewritten frame must go back to where it came from. The setting
    belongs to the port, so it travels as IFLA_INFO_SLAVE_DATA.
    """
    info = attr_nested(
        IFLA_LINKINFO,
        attr_str(IFLA_INFO_SLAVE_KIND, "bridge"),
        attr_nested(IFLA_INFO_SLAVE_DATA, attr_u8(IFLA_BRPORT_MODE, int(on))),
    )
    _set_link(name, info)


def move_to_netns(name: str, pid: int) -> None:
    """``ip link set NAME netns PID``: move a link into the network namespace
    of process PID. It disappears here and appears there, down, with its
    addresses removed."""
    _set_link(name, attr_u32(IFLA_NET_NS_PID, pid))


def rename_link(name: str, new_name: str) -> None:
    """``ip link set NAME name NEW``: only possible while the link is down.
    IFLA_IFNAME carries the new name here, so the link goes by its index."""
    check_ifname(new_name)
    body = pack_ifinfomsg(link_index(name)) + attr_str(IFLA_IFNAME, new_name)
    _request(RTM_NEWLINK, body, what=name)


def set_mac(name: str, mac: str) -> None:
    """``ip link set NAME address MAC``."""
    _set_link(name, attr_mac(IFLA_ADDRESS, mac))


def delete_link(name: str) -> None:
    """``ip link del NAME``. Deleting one end of a veth deletes both; deleting
    a bridge releases its ports."""
    check_ifname(name)
    _request(RTM_DELLINK, pack_ifinfomsg() + attr_str(IFLA_IFNAME, name), what=name)


def add_address(name: str, address: str, prefixlen: int, index: int | None = None) -> None:
    """``ip addr add ADDRESS/PREFIX brd + dev NAME``.

    Adding an address also makes the kernel add a route to the subnet
    through this link (the "proto kernel scope link" routes). Addresses
    name their link by index only: pass ``index`` if known, to save asking.
    """
    value = ipv4.parse(address)
    body = (
        pack_ifaddrmsg(link_index(name) if index is None else index, prefixlen)
        + attr_ipv4(IFA_LOCAL, address)
        + attr_ipv4(IFA_ADDRESS, address)
    )
    if prefixlen < 31:
        network = value & ipv4.mask(prefixlen)
        body += attr_ipv4(IFA_BROADCAST, ipv4.text(ipv4.broadcast(network, prefixlen)))
    _request(RTM_NEWADDR, body, _CREATE, what=f"{address}/{prefixlen} on {name}")


def list_addresses() -> list[Address]:
    """``ip -4 addr``: an RTM_GETADDR dump."""
    replies = _request(RTM_GETADDR, pack_ifaddrmsg(0, 0), NLM_F_DUMP)
    return [parse_address(m.payload) for m in replies if m.type == RTM_NEWADDR]


def add_default_route(gateway: str, dev: str | None = None, index: int | None = None) -> None:
    """``ip route add default via GATEWAY [dev DEV]``: destination 0.0.0.0/0
    (``dst_len`` 0, no RTA_DST) in the main table, next hop RTA_GATEWAY. The
    device goes by index (RTA_OIF): pass ``index`` if known, to save asking."""
    body = pack_rtmsg(dst_len=0) + attr_ipv4(RTA_GATEWAY, gateway)
    if dev or index is not None:
        body += attr_u32(RTA_OIF, link_index(dev or "") if index is None else index)
    _request(RTM_NEWROUTE, body, _CREATE, what=f"default via {gateway}")


def list_routes(table: int | None = RT_TABLE_MAIN) -> list[Route]:
    """``ip route``: an RTM_GETROUTE dump, keeping one table (None = all;
    the kernel also keeps "local" and "broadcast" routes in table 255)."""
    replies = _request(RTM_GETROUTE, pack_rtmsg(table=0, protocol=0, route_type=0), NLM_F_DUMP)
    routes = [parse_route(m.payload) for m in replies if m.type == RTM_NEWROUTE]
    return [r for r in routes if table is None or r.table == table]


# ---------------------------------------------------------------- nftables --

# <linux/netlink.h>, <linux/netfilter/nfnetlink.h>, <linux/netfilter/nf_tables.h>
NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NFGENMSG = struct.Struct("!BBH")  # family, version, resource id (big-endian)


def nftables_generation() -> int:
    """The generation of the nftables ruleset: a counter the kernel
    increments at every change, of any table (``nft list ruleset`` shows
    it as a comment). iptables-nft keeps its rules in nftables too, so an
    unchanged number means that no rule, chain or policy has changed since
    it was read — a cheaper question than listing them all.

    NETLINK_NETFILTER speaks the same framing as rtnetlink: the message type
    is the subsystem in the high byte and the command in the low one, and
    the fixed header is ``struct nfgenmsg``. The answer carries
    NFTA_GEN_ID, a big-endian u32. Raises ``OSError`` where nftables
    cannot be asked (no nf_tables in this kernel, no CAP_NET_ADMIN).
    """
    with NetlinkSocket(NETLINK_NETFILTER) as nl:
        replies = nl.request(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN, NFGENMSG.pack(AF_UNSPEC, 0, 0), what="nftables generation"
        )
    for message in replies:
        attrs = parse_attrs(message.payload[NFGENMSG.size :])
        if NFTA_GEN_ID in attrs:
            return int.from_bytes(attrs[NFTA_GEN_ID][:4], "big")
    raise OSError(_errno.ENODATA, "netlink NFT_MSG_GETGEN: no generation in the answer")
