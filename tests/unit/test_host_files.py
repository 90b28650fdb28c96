"""Unit tests of host-side file handling: tarball extraction and overlay
flattening by directory fds (cocin.tarball, cocin.layers), output files
(state.AtomicFile) and the private state root (state.make_private).

Everything happens in pytest's own temporary directories; "host" files are
files the test made there. Tests that make device nodes or set owners or
trusted.* xattrs need root: they are in tests/host/test_layer_files_host.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile

import pytest
from layertools import make_tar

from cocin import layers, state, tarball
from cocin.errors import CocinError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def fingerprint(path) -> tuple:
    st = os.lstat(path)
    data = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else b""
    return st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_ino, st.st_mtime_ns, data


@pytest.fixture
def host(tmp_path):
    """A "host" directory with a 0600 file, outside the layer."""
    d = tmp_path / "host"
    d.mkdir()
    (d / "victim").write_text("host secret\n")
    os.chmod(d / "victim", 0o600)
    return d


# --- tarball.extract ------------------------------------------------------------------------


def test_hard_link_through_a_symlink_is_refused(tmp_path, host, layer):
    before = fingerprint(host / "victim")
    tar = make_tar(
        tmp_path / "t.tar",
        ("h", tarfile.SYMTYPE, {"linkname": str(host)}, b""),
        ("stolen", tarfile.LNKTYPE, {"linkname": "h/victim", "mode": 0o4777, "uid": 65534}, b""),
    )
    with pytest.raises(CocinError, match="goes through the symlink 'h'"):
        tarball.extract(tar, str(layer))
    assert fingerprint(host / "victim") == before


def test_hard_link_to_a_symlink_links_the_symlink(tmp_path, host, layer):
    before = fingerprint(host / "victim")
    tar = make_tar(
        tmp_path / "t.tar",
        ("s", tarfile.SYMTYPE, {"linkname": str(host / "victim")}, b""),
        ("l", tarfile.LNKTYPE, {"linkname": "s", "mode": 0o4777, "uid": 65534}, b""),
    )
    tarball.extract(tar, str(layer))
    assert fingerprint(host / "victim") == before
    assert os.readlink(layer / "l") == str(host / "victim")
    assert os.lstat(layer / "l").st_ino == os.lstat(layer / "s").st_ino


def test_directory_member_replaces_a_symlink(tmp_path, host, layer):
    before = fingerprint(host)
    tar = make_tar(
        tmp_path / "t.tar",
        ("x", tarfile.SYMTYPE, {"linkname": str(host)}, b""),
        ("x/", tarfile.DIRTYPE, {"mode": 0o7777, "mtime": 0}, b""),
    )
    tarball.extract(tar, str(layer))
    assert fingerprint(host) == before
    st = os.lstat(layer / "x")
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o7777 and st.st_mtime == 0


def test_file_member_replaces_a_symlink_instead_of_writing_through_it(tmp_path, host, layer):
    before = fingerprint(host / "victim")
    tar = make_tar(
        tmp_path / "t.tar",
        ("v", tarfile.SYMTYPE, {"linkname": str(host / "victim")}, b""),
        ("v", tarfile.REGTYPE, {"mode": 0o4755}, b"image\n"),
    )
    tarball.extract(tar, str(layer))
    assert fingerprint(host / "victim") == before
    assert (layer / "v").read_bytes() == b"image\n" and not (layer / "v").is_symlink()


@pytest.mark.parametrize(
    "members,text",
    [
        (
            [("d", tarfile.SYMTYPE, {"linkname": "/tmp"}, b""), ("d/f", tarfile.REGTYPE, {}, b"x")],
            "goes through the symlink 'd'",
        ),
        (
            [
                ("rel", tarfile.SYMTYPE, {"linkname": "sub"}, b""),
                ("sub/", tarfile.DIRTYPE, {}, b""),
                ("rel/f", tarfile.REGTYPE, {}, b"x"),
            ],
            "goes through the symlink 'rel'",
        ),
        ([("f", tarfile.REGTYPE, {}, b"x"), ("f/g", tarfile.REGTYPE, {}, b"x")], "'f' is not a directory"),
        ([("l", tarfile.LNKTYPE, {"linkname": "missing"}, b"")], "not in the image"),
        ([("d/", tarfile.DIRTYPE, {}, b""), ("l", tarfile.LNKTYPE, {"linkname": "d"}, b"")], "directory"),
    ],
)
def test_refused_members(tmp_path, layer, members, text):
    with pytest.raises(CocinError, match=text):
        tarball.extract(make_tar(tmp_path / "t.tar", *members), str(layer))


# --- layers.flatten -----------------------------------------------------------------------------


def test_flatten_copies_symlinks_never_follows_them(overlay, host):
    lower, upper, dst = overlay
    os.symlink(str(host), upper / "s")
    (upper / "d").mkdir()
    os.symlink(str(host / "victim"), upper / "d" / "v")
    before = fingerprint(host / "victim"), sorted(os.listdir(host))
    layers.flatten(str(lower), str(upper), str(dst))
    assert (fingerprint(host / "victim"), sorted(os.listdir(host))) == before
    assert os.readlink(dst / "s") == str(host) and os.readlink(dst / "d/v") == str(host / "victim")


def test_flatten_replaces_a_lower_symlink_by_an_upper_directory(overlay, host):
    """lower has ``lib -> /host``; upper a real directory ``lib`` with a file:
    the file lands in the new tree's own ``lib``, never in the host directory."""
    lower, upper, dst = overlay
    os.symlink(str(host), lower / "lib")
    (upper / "lib").mkdir()
    (upper / "lib" / "victim").write_text("container\n")
    before = fingerprint(host / "victim")
    layers.flatten(str(lower), str(upper), str(dst))
    assert fingerprint(host / "victim") == before
    assert (dst / "lib").is_dir() and not (dst / "lib").is_symlink()
    assert (dst / "lib" / "victim").read_text() == "container\n"


def test_flatten_keeps_hard_links_fifos_and_modes(overlay):
    lower, upper, dst = overlay
    (lower / "a").mkdir()
    (lower / "a" / "f").write_text("f\n")
    os.chmod(lower / "a" / "f", 0o4755)
    os.link(lower / "a" / "f", lower / "g")
    os.mkfifo(upper / "fifo")  # never opened (that would wait for a writer)
    os.chmod(lower / "a", 0o555)
    layers.flatten(str(lower), str(upper), str(dst))
    assert os.lstat(dst / "a/f").st_ino == os.lstat(dst / "g").st_ino
    assert stat.S_IMODE(os.lstat(dst / "a/f").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(dst / "a").st_mode) == 0o555
    assert stat.S_ISFIFO(os.lstat(dst / "fifo").st_mode)


def _deep(top, depth: int) -> None:
    d = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):  # names relative to fds: no path is ever that long
        os.mkdir("d", dir_fd=d)
        nd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
        os.close(d)
        d = nd
    os.close(d)


def _depth(top) -> int:
    depth, d = 0, os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    while "d" in os.listdir(d):
        nd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
        os.close(d)
        d, depth = nd, depth + 1
    os.close(d)
    return depth


def test_a_tree_deeper_than_the_recursion_limit_is_copied_and_removed(overlay):
    """A container can make a tree deeper than Python's recursion limit:
    flattening and removing it (state.remove_tree, also used by ``rm``) must
    not depend on recursion (os.fwalk, shutil.rmtree and os.walk do)."""
    lower, upper, dst = overlay
    try:
        _deep(upper, 1200)
        layers.flatten(str(lower), str(upper), str(dst))
        assert _depth(dst) == 1200
        state.remove_tree(str(dst))
        state.remove_tree(str(upper))
        assert not os.path.lexists(dst) and not os.path.lexists(upper)
    finally:  # what pytest's own clean-up (recursive) could not remove
        for d in (upper, dst):
            if os.path.lexists(d):
                subprocess.run(["rm", "-rf", str(d)], check=False)


def test_deep_trees_with_a_low_limit_on_open_files(overlay):
    """One descriptor stays open per level: with the usual soft limit (1024,
    here 256) the walks raise it to the hard limit instead of failing. Run in
    a child process, which may change its own limits."""
    lower, upper, dst = overlay
    _deep(upper, 1500)
    code = (
        "import resource, sys\n"
        f"sys.path.insert(0, {REPO!r})\n"
        "from cocin import layers, state\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "if hard < 4000: sys.exit(77)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        f"layers.flatten({str(lower)!r}, {str(upper)!r}, {str(dst)!r})\n"
        f"assert sum(1 for _ in layers.entries({str(dst)!r})) == 1500\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        f"state.remove_tree({str(upper)!r})\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        f"state.remove_tree({str(dst)!r})\n"
    )
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode == 77:
            pytest.skip("the hard limit on open files is below 4000")
        assert r.returncode == 0, r.stderr[-2000:]
        assert not os.path.lexists(upper) and not os.path.lexists(dst)
    finally:
        for d in (upper, dst):
            if os.path.lexists(d):
                subprocess.run(["rm", "-rf", str(d)], check=False)


def test_remove_tree_removes_symlinks_never_their_targets(tmp_path, host):
    before = fingerprint(host / "victim"), sorted(os.listdir(host))
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    os.symlink(host, top / "a" / "dirlink")
    os.symlink(host / "victim", top / "filelink")
    state.remove_tree(str(top))
    assert not os.path.lexists(top)
    assert (fingerprint(host / "victim"), sorted(os.listdir(host))) == before
    os.symlink(host, tmp_path / "toplink")  # the top itself a symlink: only it goes
    state.remove_tree(str(tmp_path / "toplink"))
    assert not os.path.lexists(tmp_path / "toplink") and fingerprint(host / "victim") == before[0]


# --- state.AtomicFile -------------------------------------------------------------------------


def test_atomic_file_replaces_a_symlink_at_the_name_without_following_it(tmp_path, host):
    before = fingerprint(host / "victim")
    out = tmp_path / "out"
    os.symlink(host / "victim", out)
    with state.AtomicFile(str(out)) as f:
        f.write(b"new\n")
    assert fingerprint(host / "victim") == before
    assert not out.is_symlink() and out.read_bytes() == b"new\n"
    assert stat.S_IMODE(os.lstat(out).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["host", "out"]


def test_atomic_file_leaves_nothing_when_the_writer_fails(tmp_path):
    out = tmp_path / "out"
    out.write_text("old\n")
    with pytest.raises(RuntimeError):
        with state.AtomicFile(str(out)) as f:
            f.write(b"half")
            raise RuntimeError("writer died")
    assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["out"]


def test_atomic_file_temporary_names_cannot_be_guessed(tmp_path):
    a, b = state.AtomicFile(str(tmp_path / "out")), state.AtomicFile(str(tmp_path / "out"))
    try:
        assert a.tmp != b.tmp and str(os.getpid()) not in os.path.basename(a.tmp)
    finally:
        a.abort()
        b.abort()


# --- state.make_private -------------------------------------------------------------------------


def test_a_new_state_root_is_private(tmp_path):
    root = tmp_path / "new" / "root"
    state.make_private(str(root))
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700


def test_an_open_state_root_is_tightened_and_layers_keep_their_modes(tmp_path):
    root = tmp_path / "root"
    for d in ("layers/abc/bin", "images", "names", "containers/c1/upper"):
        (root / d).mkdir(parents=True)
    files = {
        "images/busybox.json": 0o600,
        "names/web": 0o600,
        "containers/c1/config.json": 0o600,
        "containers/c1/container.log": 0o640,
        "lock": 0o600,
    }
    for f in [*files, "layers/abc/bin/sh", "containers/c1/hosts"]:
        (root / f).write_text("x")
        os.chmod(root / f, 0o644)
    for d in root.rglob("*"):
        if d.is_dir():
            os.chmod(d, 0o755)
    os.chmod(root, 0o755)
    state.make_private(str(root))
    mode = {
        p: stat.S_IMODE(os.stat(root / p).st_mode) for p in [".", "layers", "images", "names", "containers", *files]
    }
    assert mode == {".": 0o700, "layers": 0o700, "images": 0o700, "names": 0o700, "containers": 0o700, **files}
    # An image's files and a container's bind-mounted files keep theirs.
    for p in ("layers/abc", "layers/abc/bin"):
        assert stat.S_IMODE(os.stat(root / p).st_mode) == 0o755
    for p in ("layers/abc/bin/sh", "containers/c1/hosts"):
        assert stat.S_IMODE(os.stat(root / p).st_mode) == 0o644
