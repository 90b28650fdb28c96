"""Unit tests of rootfs.inside: container paths resolved with the container's root as /.

Pure logic on a temporary directory tree: no root, no mounts."""

from __future__ import annotations

import errno
import os

import pytest

from cocin.rootfs import inside


@pytest.fixture
def tree(tmp_path):
    """An image-like tree with the links a hostile or careless image may hold."""
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "srv" / "www").mkdir(parents=True)
    os.symlink("/etc", root / "abs")                  # absolute: the container's /etc
    os.symlink("srv/www", root / "rel")               # relative to where it is
    os.symlink("../../../../../..", root / "up")      # climbs: stops at the root
    os.symlink(str(tmp_path / "outside"), root / "host")  # a host path, as seen from the container
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    return str(root)


def test_plain_paths(tree):
    assert inside(tree, "/etc/hosts") == os.path.join(tree, "etc/hosts")
    assert inside(tree, "/new/dir/") == os.path.join(tree, "new/dir")
    assert inside(tree, "/") == tree


def test_links_resolve_inside_the_root(tree):
    assert inside(tree, "/abs/hostname") == os.path.join(tree, "etc/hostname")
    assert inside(tree, "/rel/index.html") == os.path.join(tree, "srv/www/index.html")
    assert inside(tree, "/up/etc") == os.path.join(tree, "etc")
    assert inside(tree, "/srv/../../../etc") == os.path.join(tree, "etc")


def test_a_link_to_a_host_path_stays_in_the_root(tree, tmp_path):
    resolved = inside(tree, "/host/sub")
    assert resolved == os.path.join(tree, str(tmp_path / "outside").lstrip("/"), "sub")
    assert resolved.startswith(tree + "/")


def test_link_loops_are_refused(tree):
    with pytest.raises(OSError) as e:
        inside(tree, "/loop1/x")
    assert e.value.errno == errno.ELOOP
