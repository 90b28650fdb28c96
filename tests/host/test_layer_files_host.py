"""Layer files only root can make: owners, device nodes, whiteouts (0/0
character devices) and opaque directories (``trusted.*`` xattrs), through
cocin.tarball and cocin.layers, in pytest's temporary directories.

What needs no root is tested in tests/unit/test_host_files.py and
tests/unit/test_layer_store.py.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest
from layertools import layer_tar, make_tar

from cocin import layers, tarball

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (owners, device nodes, trusted.* xattrs)")


@needs_root
def test_extract_keeps_owners_modes_times_links_and_nodes(tmp_path, layer):
    tar = make_tar(
        tmp_path / "t.tar",
        ("ro/", tarfile.DIRTYPE, {"mode": 0o555, "uid": 7, "mtime": 1000}, b""),
        ("ro/f", tarfile.REGTYPE, {"mode": 0o4750, "uid": 7, "gid": 8, "mtime": 2000}, b"data"),
        ("ro/hard", tarfile.LNKTYPE, {"linkname": "ro/f"}, b""),
        ("sym", tarfile.SYMTYPE, {"linkname": "/bin/busybox", "uid": 9, "mtime": 3000}, b""),
        ("null", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3, "mode": 0o666}, b""),
        ("fifo", tarfile.FIFOTYPE, {"mode": 0o640}, b""),
    )
    tarball.extract(tar, str(layer))
    st = os.lstat(layer / "ro/f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime, st.st_nlink) == (0o4750, 7, 8, 2000, 2)
    assert (layer / "ro/f").read_bytes() == b"data"
    st = os.lstat(layer / "ro")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_mtime) == (0o555, 7, 1000)
    st = os.lstat(layer / "sym")
    assert (os.readlink(layer / "sym"), st.st_uid, st.st_mtime) == ("/bin/busybox", 9, 3000)
    st = os.lstat(layer / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3) and stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_ISFIFO(os.lstat(layer / "fifo").st_mode)


@needs_root
def test_flatten_applies_whiteouts_and_opaque_directories(overlay):
    lower, upper, dst = overlay
    for rel in ("gone", "opaque/old", "kept/old"):
        (lower / rel).parent.mkdir(exist_ok=True)
        (lower / rel).write_text("lower\n")
    os.mknod(upper / "gone", stat.S_IFCHR | 0o600, 0)  # a whiteout
    (upper / "opaque").mkdir()
    os.setxattr(upper / "opaque", layers.OPAQUE_XATTR, b"y")
    (upper / "opaque" / "new").write_text("upper\n")
    (upper / "kept").mkdir()
    (upper / "kept" / "new").write_text("upper\n")
    layers.flatten(str(lower), str(upper), str(dst))
    assert not os.path.lexists(dst / "gone")
    assert sorted(os.listdir(dst / "opaque")) == ["new"]
    assert sorted(os.listdir(dst / "kept")) == ["new", "old"]


@needs_root
def test_overlay_markers_become_oci_whiteouts_and_back(tmp_path):
    src = tmp_path / "src"
    (src / "opq").mkdir(parents=True)
    os.setxattr(src / "opq", layers.OPAQUE_XATTR, b"y")
    (src / "opq" / "new").write_text("kept\n")
    os.mknod(src / "gone", stat.S_IFCHR | 0o600, 0)
    data = layer_tar(src)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = [(m.name, m.type, m.size) for m in tf.getmembers()]
    assert names == [
        (".wh.gone", tarfile.REGTYPE, 0),
        ("opq", tarfile.DIRTYPE, 0),
        ("opq/.wh..wh..opq", tarfile.REGTYPE, 0),
        ("opq/new", tarfile.REGTYPE, 5),
    ]
    (tmp_path / "l.tar").write_bytes(data)
    dst = tmp_path / "dst"
    dst.mkdir()
    tarball.extract(str(tmp_path / "l.tar"), str(dst))
    assert sorted(os.listdir(dst)) == ["gone", "opq"]
    st = os.lstat(dst / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dst / "opq", layers.OPAQUE_XATTR) == b"y"
    assert os.listdir(dst / "opq") == ["new"]  # a whiteout hides lower layers only
    assert layer_tar(dst) == data  # the round trip keeps the diff_id


@needs_root
def test_opaque_marker_before_or_after_the_directorys_files(tmp_path):
    """A registry layer may list ``opq/new`` before ``opq/.wh..wh..opq``."""
    path = tmp_path / "l.tar"
    with tarfile.open(path, "w") as t:
        for name, kind, data in (
            ("opq", tarfile.DIRTYPE, b""),
            ("opq/new", tarfile.REGTYPE, b"x"),
            ("opq/.wh..wh..opq", tarfile.REGTYPE, b""),
            ("d/.wh.sub", tarfile.REGTYPE, b""),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.size, info.mode = kind, len(data), 0o755
            t.addfile(info, io.BytesIO(data))
    dst = tmp_path / "dst"
    dst.mkdir()
    tarball.extract(str(path), str(dst))
    assert os.listdir(dst / "opq") == ["new"]
    assert os.getxattr(dst / "opq", layers.OPAQUE_XATTR) == b"y"
    assert stat.S_ISCHR(os.lstat(dst / "d" / "sub").st_mode)
    assert not os.path.lexists(dst / "d" / ".wh.sub")


@needs_root
def test_flatten_stacks_several_layers_top_first(tmp_path):
    base, mid, top, dst = (tmp_path / n for n in ("base", "mid", "top", "dst"))
    for d in (base, mid, top, dst):
        d.mkdir()
    (base / "a").write_text("base\n")
    (base / "dir").mkdir()
    (base / "dir" / "old").write_text("base\n")
    os.mknod(mid / "a", stat.S_IFCHR | 0o600, 0)  # mid deletes a
    (mid / "dir").mkdir()
    os.setxattr(mid / "dir", layers.OPAQUE_XATTR, b"y")
    (mid / "dir" / "mid").write_text("mid\n")
    (top / "a").write_text("top\n")  # and top makes it again
    layers.flatten(f"{top}:{mid}:{base}", None, str(dst))
    assert (dst / "a").read_text() == "top\n"
    assert os.listdir(dst / "dir") == ["mid"]
