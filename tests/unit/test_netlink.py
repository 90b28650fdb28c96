"""Unit tests of cocin.network.netlink: the byte layout of rtnetlink messages.

Everything here is pure (bytes in, bytes out); requests to the kernel
through a real socket are in tests/host/test_netlink_host.py.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import struct

import pytest

from cocin.network import netlink as nl

# ----------------------------------------------------------------- layout --


def test_struct_sizes_match_the_kernel():
    assert nl.NLMSGHDR.size == 16
    assert nl.IFINFOMSG.size == 16
    assert nl.IFADDRMSG.size == 8
    assert nl.RTMSG.size == 12
    assert nl.RTATTR.size == 4


@pytest.mark.skipif(
    not os.path.exists("/usr/include/linux/netlink.h"), reason="kernel headers (linux-libc-dev) not installed"
)
def test_constants_match_the_kernel_headers():
    defines = {}
    for header in ("netlink.h", "rtnetlink.h"):
        with open(f"/usr/include/linux/{header}") as f:
            for name, value in re.findall(r"#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", f.read()):
                defines.setdefault(name, int(value, 0))
    for name in (
        "NETLINK_ROUTE",
        "NLM_F_REQUEST",
        "NLM_F_MULTI",
        "NLM_F_ACK",
        "NLM_F_ROOT",
        "NLM_F_MATCH",
        "NLM_F_EXCL",
        "NLM_F_CREATE",
        "NLM_F_CAPPED",
        "NLM_F_ACK_TLVS",
        "NLMSG_ERROR",
        "NLMSG_DONE",
        "NETLINK_EXT_ACK",
        "RTPROT_BOOT",
    ):
        assert getattr(nl, name) == defines[name], name


def test_attribute_is_padded_to_four_bytes():
    raw = nl.attr_str(nl.IFLA_IFNAME, "eth0")  # 4 + "eth0\0" = 9 bytes
    assert len(raw) == 12
    length, attr_type = struct.unpack_from("=HH", raw)
    assert (length, attr_type) == (9, nl.IFLA_IFNAME)
    assert raw[9:] == b"\0\0\0"
    assert nl.align(9) == 12 and nl.align(12) == 12


def test_attributes_round_trip():
    raw = (
        nl.attr_str(nl.IFLA_IFNAME, "cocin0")
        + nl.attr_u32(nl.IFLA_MTU, 1500)
        + nl.attr_mac(nl.IFLA_ADDRESS, "02:42:ac:1d:00:01")
        + nl.attr_ipv4(nl.IFA_LOCAL, "172.29.0.1")
    )
    attrs = nl.parse_attrs(raw)
    assert nl.decode_str(attrs[nl.IFLA_IFNAME]) == "cocin0"
    assert nl.decode_u32(attrs[nl.IFLA_MTU]) == 1500
    assert nl.decode_mac(attrs[nl.IFLA_ADDRESS]) == "02:42:ac:1d:00:01"
    assert attrs[nl.IFA_LOCAL] == socket.inet_aton("172.29.0.1")


def test_nested_flag_is_masked_when_parsing():
    raw = nl.pack_attr(nl.IFLA_LINKINFO | nl.NLA_F_NESTED, nl.attr_str(nl.IFLA_INFO_KIND, "veth"))
    attrs = nl.parse_attrs(raw)
    assert list(attrs) == [nl.IFLA_LINKINFO]
    assert nl.decode_str(nl.parse_attrs(attrs[nl.IFLA_LINKINFO])[nl.IFLA_INFO_KIND]) == "veth"


def test_truncated_attribute_is_an_error():
    raw = nl.attr_str(nl.IFLA_IFNAME, "eth0")
    with pytest.raises(ValueError):
        nl.parse_attrs(struct.pack("=HH", 40, 3) + raw[4:])


def test_messages_round_trip_several_in_one_buffer():
    one = nl.pack_message(nl.RTM_NEWLINK, nl.NLM_F_REQUEST, 7, nl.pack_ifinfomsg(3) + b"x")
    two = nl.pack_message(nl.NLMSG_DONE, nl.NLM_F_MULTI, 8, struct.pack("=i", 0), pid=42)
    # A receive buffer holds messages back to back, each padded to 4 bytes.
    data = one + b"\0" * (nl.align(len(one)) - len(one)) + two
    first, second = nl.parse_messages(data)
    assert (first.type, first.flags, first.seq) == (nl.RTM_NEWLINK, nl.NLM_F_REQUEST, 7)
    assert first.payload == nl.pack_ifinfomsg(3) + b"x"
    assert (second.type, second.seq, second.pid) == (nl.NLMSG_DONE, 8, 42)
    length = struct.unpack_from("=I", one)[0]
    assert length == len(one) == 16 + 16 + 1


def test_ifinfomsg_fields():
    raw = nl.pack_ifinfomsg(index=5, flags=nl.IFF_UP, change=nl.IFF_UP)
    assert nl.IFINFOMSG.unpack(raw) == (nl.AF_UNSPEC, 0, 5, nl.IFF_UP, nl.IFF_UP)


def test_parse_link_of_a_veth_bridge_port():
    body = (
        nl.pack_ifinfomsg(index=12, flags=nl.IFF_UP)
        + nl.attr_str(nl.IFLA_IFNAME, "veth1234567")
        + nl.attr_u32(nl.IFLA_MASTER, 9)
        + nl.attr_u32(nl.IFLA_MTU, 1500)
        + nl.attr_mac(nl.IFLA_ADDRESS, "aa:bb:cc:dd:ee:ff")
        + nl.attr_nested(nl.IFLA_LINKINFO, nl.attr_str(nl.IFLA_INFO_KIND, "veth"))
    )
    link = nl.parse_link(body)
    assert (link.index, link.name, link.master, link.mtu) == (12, "veth1234567", 9, 1500)
    assert link.kind == "veth" and link.mac == "aa:bb:cc:dd:ee:ff" and link.up


def test_parse_route_and_address():
    route = nl.parse_route(
        nl.pack_rtmsg(dst_len=16, protocol=nl.RTPROT_KERNEL, scope=nl.RT_SCOPE_LINK)
        + nl.attr_ipv4(nl.RTA_DST, "172.29.0.0")
        + nl.attr_u32(nl.RTA_OIF, 4)
    )
    assert (route.dst, route.dst_len, route.oif, route.table) == ("172.29.0.0", 16, 4, 254)
    assert str(route.network) == "172.29.0.0/16"
    default = nl.parse_route(nl.pack_rtmsg() + nl.attr_ipv4(nl.RTA_GATEWAY, "10.0.0.1"))
    assert (default.dst, default.dst_len, default.gateway) == ("0.0.0.0", 0, "10.0.0.1")
    addr = nl.parse_address(nl.pack_ifaddrmsg(4, 24) + nl.attr_ipv4(nl.IFA_LOCAL, "192.0.2.2"))
    assert (addr.index, addr.address, addr.prefixlen) == (4, "192.0.2.2", 24)


# ------------------------------------------------------------- errors/ACK --


def _error_message(code: int, request: bytes, ext_text: str | None = None) -> nl.Message:
    flags = 0
    payload = struct.pack("=i", -code) + request[:16]
    if ext_text is not None:
        flags = nl.NLM_F_CAPPED | nl.NLM_F_ACK_TLVS
        payload += nl.attr_str(nl.NLMSGERR_ATTR_MSG, ext_text)
    return nl.Message(nl.NLMSG_ERROR, flags, 1, 0, payload)


def test_ack_is_error_zero():
    request = nl.pack_message(nl.RTM_NEWLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 1, b"")
    assert nl.parse_error(_error_message(0, request)) == (0, "")


def test_error_with_extended_ack_text():
    request = nl.pack_message(nl.RTM_NEWLINK, nl.NLM_F_REQUEST, 1, nl.pack_ifinfomsg())
    code, text = nl.parse_error(_error_message(errno.EOPNOTSUPP, request, "Unknown device type"))
    assert (code, text) == (errno.EOPNOTSUPP, "Unknown device type")


def test_netlink_error_is_an_oserror_naming_the_request():
    err = nl.netlink_error(nl.RTM_NEWLINK, errno.EEXIST, "cocin0", "")
    assert isinstance(err, OSError) and err.errno == errno.EEXIST
    assert err.strerror == f"netlink RTM_NEWLINK: {os.strerror(errno.EEXIST)}"
    assert err.filename == "cocin0"
    assert isinstance(err, FileExistsError)  # OSError picks the subclass by errno


def test_interface_names_are_checked():
    nl.check_ifname("veth1234567")
    for bad in ("", "a" * 16, "a/b", "a b"):
        with pytest.raises(ValueError):
            nl.check_ifname(bad)


# ------------------------------------------------- requests, as bytes sent --


@pytest.fixture
def sent(monkeypatch):
    """Capture requests instead of sending them; links "exist" with index 7."""
    calls = []

    def fake_request(msg_type, body, flags=0, what=None):
        calls.append((msg_type, body, flags))
        if msg_type == nl.RTM_GETLINK:
            reply = nl.pack_ifinfomsg(index=7) + nl.attr_str(nl.IFLA_IFNAME, "x")
            return [nl.Message(nl.RTM_NEWLINK, 0, 1, 0, reply)]
        return []

    monkeypatch.setattr(nl, "_request", fake_request)
    return calls


def test_create_veth_request_nests_the_peer(sent):
    nl.create_veth("veth1234567", "ceth1234567", "02:42:0a:00:00:02")
    ((msg_type, body, flags),) = sent
    assert msg_type == nl.RTM_NEWLINK and flags == nl.NLM_F_CREATE | nl.NLM_F_EXCL
    attrs = nl.parse_attrs(body[nl.IFINFOMSG.size :])
    assert nl.decode_str(attrs[nl.IFLA_IFNAME]) == "veth1234567"
    info = nl.parse_attrs(attrs[nl.IFLA_LINKINFO])
    assert nl.decode_str(info[nl.IFLA_INFO_KIND]) == "veth"
    peer = nl.parse_attrs(info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER]
    # The peer is a whole ifinfomsg followed by its own attributes.
    peer_attrs = nl.parse_attrs(peer[nl.IFINFOMSG.size :])
    assert nl.decode_str(peer_attrs[nl.IFLA_IFNAME]) == "ceth1234567"
    assert nl.decode_mac(peer_attrs[nl.IFLA_ADDRESS]) == "02:42:0a:00:00:02"


def test_create_veth_plugged_up_and_peer_born_in_another_namespace(sent):
    nl.create_veth("veth1234567", "eth0", "02:42:0a:00:00:02", master=9, up=True, peer_netns_pid=4242)
    ((_type, body, _flags),) = sent
    assert nl.IFINFOMSG.unpack_from(body)[3:] == (nl.IFF_UP, nl.IFF_UP)  # flags, change
    attrs = nl.parse_attrs(body[nl.IFINFOMSG.size :])
    assert nl.decode_u32(attrs[nl.IFLA_MASTER]) == 9
    info = nl.parse_attrs(attrs[nl.IFLA_LINKINFO])
    peer = nl.parse_attrs(info[nl.IFLA_INFO_DATA])[nl.VETH_INFO_PEER]
    assert nl.IFINFOMSG.unpack_from(peer)[3:] == (0, 0)  # the peer comes up later
    peer_attrs = nl.parse_attrs(peer[nl.IFINFOMSG.size :])
    assert nl.decode_str(peer_attrs[nl.IFLA_IFNAME]) == "eth0"
    assert nl.decode_u32(peer_attrs[nl.IFLA_NET_NS_PID]) == 4242


def test_using_sends_requests_through_the_given_socket():
    class FakeSocket:
        def __init__(self):
            self.sent = []

        def request(self, msg_type, body, flags=0, what=None):
            self.sent.append((msg_type, what))
            return []

    fake = FakeSocket()
    with nl.using(fake):
        nl.delete_link("veth1234567")
    assert fake.sent == [(nl.RTM_DELLINK, "veth1234567")]
    assert nl._current is None  # and afterwards a fresh socket again


def test_create_bridge_request(sent):
    nl.create_bridge("cocin0")
    ((_type, body, _flags),) = sent
    info = nl.parse_attrs(nl.parse_attrs(body[16:])[nl.IFLA_LINKINFO])
    assert nl.decode_str(info[nl.IFLA_INFO_KIND]) == "bridge"


def test_link_changes_name_the_link_in_the_same_request(sent):
    nl.set_up("veth1234567")
    nl.move_to_netns("ceth1234567", 4242)
    up, netns = sent
    # One request each, no lookup: index 0 and the name as IFLA_IFNAME; no
    # NLM_F_CREATE, so the kernel changes that link or answers ENODEV.
    assert up[0] == netns[0] == nl.RTM_NEWLINK and up[2] == netns[2] == 0
    assert nl.IFINFOMSG.unpack_from(up[1]) == (0, 0, 0, nl.IFF_UP, nl.IFF_UP)
    assert nl.decode_str(nl.parse_attrs(up[1][16:])[nl.IFLA_IFNAME]) == "veth1234567"
    attrs = nl.parse_attrs(netns[1][16:])
    assert nl.decode_str(attrs[nl.IFLA_IFNAME]) == "ceth1234567"
    assert nl.decode_u32(attrs[nl.IFLA_NET_NS_PID]) == 4242
    # A bridge is named by its index: looked up first.
    nl.set_master("veth1234567", "cocin0")
    lookup, master = sent[2:]
    assert lookup[0] == nl.RTM_GETLINK
    assert nl.decode_u32(nl.parse_attrs(master[1][16:])[nl.IFLA_MASTER]) == 7


def test_rename_names_the_link_by_index(sent):
    nl.rename_link("ceth1234567", "eth0")
    lookup, rename = sent
    assert lookup[0] == nl.RTM_GETLINK
    assert nl.IFINFOMSG.unpack_from(rename[1])[2] == 7
    assert nl.decode_str(nl.parse_attrs(rename[1][16:])[nl.IFLA_IFNAME]) == "eth0"


def test_add_address_and_default_route_requests(sent):
    nl.add_address("eth0", "172.29.0.2", 16)
    addr = sent[-1]
    assert addr[0] == nl.RTM_NEWADDR
    assert nl.IFADDRMSG.unpack_from(addr[1]) == (socket.AF_INET, 16, 0, 0, 7)
    attrs = nl.parse_attrs(addr[1][nl.IFADDRMSG.size :])
    assert attrs[nl.IFA_LOCAL] == attrs[nl.IFA_ADDRESS] == socket.inet_aton("172.29.0.2")
    assert attrs[nl.IFA_BROADCAST] == socket.inet_aton("172.29.255.255")
    nl.add_default_route("172.29.0.1", "eth0")
    route = sent[-1]
    assert route[0] == nl.RTM_NEWROUTE
    fields = nl.RTMSG.unpack_from(route[1])
    assert fields[1] == 0 and fields[4] == nl.RT_TABLE_MAIN  # dst_len 0: default
    attrs = nl.parse_attrs(route[1][nl.RTMSG.size :])
    assert attrs[nl.RTA_GATEWAY] == socket.inet_aton("172.29.0.1")
    assert nl.decode_u32(attrs[nl.RTA_OIF]) == 7


def test_a_known_index_saves_the_lookup(sent):
    nl.add_address("eth0", "10.231.0.130", 25, index=3)
    nl.add_default_route("10.231.0.129", index=3)
    (addr, route) = sent  # no RTM_GETLINK
    assert nl.IFADDRMSG.unpack_from(addr[1]) == (socket.AF_INET, 25, 0, 0, 3)
    attrs = nl.parse_attrs(addr[1][nl.IFADDRMSG.size :])
    assert attrs[nl.IFA_BROADCAST] == socket.inet_aton("10.231.0.255")
    assert nl.decode_u32(nl.parse_attrs(route[1][nl.RTMSG.size :])[nl.RTA_OIF]) == 3
