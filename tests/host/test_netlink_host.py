"""cocin.network.netlink against the kernel: a real NETLINK_ROUTE socket, for
read-only requests (they work without root). The message layout is tested
without the kernel in tests/unit/test_netlink.py.
"""

from __future__ import annotations

import errno

import pytest

from cocin.network import netlink as nl

# ---------------------------------------------- a real socket, read only --


def test_list_links_and_routes_on_this_host():
    links = nl.list_links()
    assert any(link.name == "lo" for link in links)
    nl.list_routes()
    nl.list_addresses()


def test_missing_link_raises_enodev():
    with pytest.raises(OSError) as info:
        nl.link_index("nosuchlink0")
    assert info.value.errno == errno.ENODEV
    assert "netlink RTM_GETLINK" in str(info.value) and "nosuchlink0" in str(info.value)
    assert not nl.link_exists("nosuchlink0")
