"""IPv4 addresses as plain integers: the little arithmetic a network needs.

An IPv4 address is a 32-bit number; ``10.77.0.2`` is only its usual
spelling, four bytes in decimal. A subnet ``10.77.0.0/29`` is an address and
a *prefix length*: the first 29 bits name the network, the last 3 number its
8 addresses. With the *mask* (29 one bits, then zeros) the rest is
arithmetic:

    network address   = address & mask          10.77.0.0
    broadcast address = network | ~mask         10.77.0.7
    "x is in subnet"  = x & mask == network

The standard library's ``ipaddress`` does all this and much more, but
importing it costs milliseconds, paid by every ``cocin run``. cocin uses it
only where a user's text deserves its detailed error messages (``network
create --subnet``); the per-container path uses these few functions.
"""

from __future__ import annotations

ALL_ONES = 0xFFFFFFFF


def parse(text: str) -> int:
    """``"10.77.0.2"`` → ``0x0A4D0002``, as strictly as ``ipaddress``: four
    decimal numbers 0-255 without leading zeros. (``inet_aton`` would also
    take ``"10.2"`` or ``"0x0a.0.0.1"``; a user's ``--ip`` must not.)"""
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) != 4 or not all(_octet(p) for p in parts):
        raise ValueError(f"{text!r} is not an IPv4 address")
    return int.from_bytes(bytes(int(p) for p in parts), "big")


def _octet(part: str) -> bool:
    return part.isascii() and part.isdigit() and len(part) <= 3 and int(part) <= 255 and (part == "0" or part[0] != "0")


def text(value: int) -> str:
    """``0x0A4D0002`` → ``"10.77.0.2"``."""
    return ".".join(str(b) for b in value.to_bytes(4, "big"))


def packed(address: str) -> bytes:
    """The 4 bytes in network order (big-endian) that the kernel expects."""
    return parse(address).to_bytes(4, "big")


def unpacked(raw: bytes) -> str:
    """4 bytes in network order → ``"10.77.0.2"``."""
    return text(int.from_bytes(raw[:4], "big"))


def mask(prefixlen: int) -> int:
    """``/24`` → ``0xFFFFFF00``: ``prefixlen`` one bits, then zeros."""
    return (ALL_ONES << (32 - prefixlen)) & ALL_ONES


def parse_subnet(subnet: str) -> tuple[int, int]:
    """``"10.77.0.0/29"`` → ``(network address, prefix length)``.

    The address must be the network's own (no host bits set), as cocin
    records it; user input is checked more verbosely at ``network create``.
    """
    address, slash, length = subnet.partition("/")
    if not slash or not (length.isascii() and length.isdigit()) or int(length) > 32:
        raise ValueError(f"{subnet!r} is not an IPv4 subnet (ADDRESS/PREFIXLEN)")
    network, prefixlen = parse(address), int(length)
    if network & ~mask(prefixlen) & ALL_ONES:
        raise ValueError(f"{subnet!r} has host bits set")
    return network, prefixlen


def prefixlen_of(subnet: str) -> int:
    return parse_subnet(subnet)[1]


def broadcast(network: int, prefixlen: int) -> int:
    """The last address of the subnet: every host bit set."""
    return network | (~mask(prefixlen) & ALL_ONES)


def contains(network: int, prefixlen: int, address: int) -> bool:
    return address & mask(prefixlen) == network
