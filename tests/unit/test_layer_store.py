"""Unit tests of the layer store's pure parts: canonical layer tarballs and
their diff_ids, OCI whiteouts <-> overlay markers (cocin.layers,
cocin.tarball), chain IDs, image IDs and configs (cocin.images), and the
flattening of several layers.

Everything happens in pytest's temporary directories. Whiteouts are device
nodes 0/0 and opaque directories trusted.* xattrs: making them needs root, so
those tests are in tests/host/test_layer_files_host.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest
from layertools import layer_tar

from cocin import images, layers, tarball


def test_empty_layer_has_dockers_empty_diff_id(tmp_path):
    """An empty tarball is two zero blocks, with no padding to tar's 10 KiB
    record (as Go's archive/tar writes it): Docker's well-known empty layer."""
    assert layers.diff_id(str(tmp_path)) == "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


def test_layer_tar_is_canonical(tmp_path):
    """The same tree gives the same bytes: sorted names, whole seconds, no owner names."""
    for top in (tmp_path / "a", tmp_path / "b"):
        (top / "dir").mkdir(parents=True)
        for name in ("z", "a", "dir/m"):
            (top / name).write_text(name)
            os.utime(top / name, (1000.7, 1000.7))
        os.utime(top / "dir", (5, 5))
        os.link(top / "a", top / "hard")
        os.symlink("/etc/passwd", top / "sym")
    a, b = layer_tar(tmp_path / "a"), layer_tar(tmp_path / "b")
    assert a == b
    with tarfile.open(fileobj=io.BytesIO(a)) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["a", "dir", "dir/m", "hard", "sym", "z"]
    assert all(m.mtime == int(m.mtime) and m.uname == "" for m in members)
    assert members[0].mtime == 1000
    assert members[3].islnk() and members[3].linkname == "a"
    assert members[4].issym() and members[4].linkname == "/etc/passwd"
    assert layers.diff_id(str(tmp_path / "a")) == "sha256:" + hashlib.sha256(a).hexdigest()


@pytest.mark.parametrize("name", [".wh..", ".wh.", ".wh..wh.x"])
def test_bad_whiteout_names_are_refused(tmp_path, name):
    path = tmp_path / "l.tar"
    with tarfile.open(path, "w") as t:
        t.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    dst = tmp_path / "dst"
    dst.mkdir()
    with pytest.raises(images.CocinError, match="refusing tarball member"):
        tarball.extract(str(path), str(dst))


def test_chain_ids_as_the_oci_spec_defines_them():
    a = "sha256:" + "a" * 64
    b = "sha256:" + "b" * 64
    assert images.chain_id(None, a) == a
    expect = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert images.chain_id(a, b) == expect
    assert images._chains([a, b]) == [a, expect]


def test_config_of_a_commit_adds_one_layer_and_one_history_step():
    base = images.new_config(None, "sha256:" + "1" * 64, 0, "base", {"Cmd": ["sh"]})
    assert base["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}
    assert base["config"]["Cmd"] == ["sh"] and base["config"]["Env"][0].startswith("PATH=")
    assert base["created"] == "1970-01-01T00:00:00.000000000Z" and base["os"] == "linux"
    child = images.new_config(base, "sha256:" + "2" * 64, 60.5, "commit x", comment="m", author="me")
    assert child["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64, "sha256:" + "2" * 64]
    assert child["config"]["Cmd"] == ["sh"]
    assert child["history"][-1] == {
        "created": "1970-01-01T00:01:00.500000000Z",
        "created_by": "commit x",
        "comment": "m",
        "author": "me",
    }
    assert len(base["history"]) == 1  # the base config is not changed


def test_image_id_is_the_sha256_of_the_config_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path / "root"))
    os.makedirs(tmp_path / "root", 0o700)
    layer = tmp_path / "root" / "layers" / "sha256"
    did = "sha256:" + "c" * 64
    os.makedirs(layer / ("c" * 64) / "diff")
    raw = images._compact(images.new_config(None, did, 0, "x")).encode()
    image_id = images.store_config(raw)
    assert image_id == hashlib.sha256(raw).hexdigest()
    assert (tmp_path / "root" / "imagedb" / image_id).read_bytes() == raw
    img = images.load_image(image_id, [])
    assert img.lower == str(tmp_path / "root" / "l" / ("c" * 26))


def test_store_config_refuses_missing_layers(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path / "root"))
    os.makedirs(tmp_path / "root", 0o700)
    raw = images._compact(images.new_config(None, "sha256:" + "d" * 64, 0, "x")).encode()
    with pytest.raises(images.CocinError, match="missing"):
        images.store_config(raw)
    assert not os.path.exists(tmp_path / "root" / "imagedb")


@pytest.mark.parametrize(
    "text,t",
    [
        ("1970-01-01T00:01:00Z", 60.0),
        ("1970-01-01T00:01:00.25Z", 60.25),
        ("1970-01-01T01:01:00+01:00", 60.0),
        ("garbage", 0.0),
    ],
)
def test_parse_time(text, t):
    assert images.parse_time(text) == t


def test_commit_changes_as_dockerfile_instructions():
    base = {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]}
    cfg = images.apply_changes(
        base,
        [
            'CMD ["echo", "hi"]',
            "ENTRYPOINT /bin/run it",
            'ENV A=2 B="x y"',
            "env C some value",
            "WORKDIR /app",
            "USER 1000:1000",
            "EXPOSE 80 53/udp",
            "LABEL k=v",
            "STOPSIGNAL SIGINT",
            "VOLUME /data /logs",
        ],
    )
    assert cfg == {
        "Env": ["PATH=/bin", "A=2", "B=x y", "C=some value"],
        "Cmd": ["echo", "hi"],
        "Entrypoint": ["/bin/sh", "-c", "/bin/run it"],
        "WorkingDir": "/app",
        "User": "1000:1000",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Labels": {"k": "v"},
        "StopSignal": "SIGINT",
        "Volumes": {"/data": {}, "/logs": {}},
    }
    assert base == {"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"]}  # not changed in place
    assert images.apply_changes({}, ["CMD echo $HOME"])["Cmd"] == ["/bin/sh", "-c", "echo $HOME"]


@pytest.mark.parametrize(
    "change,text",
    [("RUN make", "run is not a valid change command"), ("ENV =x", "blank"), ("", "not a valid change command")],
)
def test_bad_commit_changes(change, text):
    with pytest.raises(images.CocinError, match=text):
        images.apply_changes({}, [change])


def test_history_maps_layers_to_steps_newest_first(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path))
    chains = ["sha256:" + "e" * 64, "sha256:" + "f" * 64]
    for c, size in zip(chains, ("10", "20")):
        os.makedirs(tmp_path / "layers" / "sha256" / c[7:])
        (tmp_path / "layers" / "sha256" / c[7:] / "size").write_text(size)
    cfg = {
        "history": [
            {"created": "1970-01-01T00:00:01Z", "created_by": "base"},
            {"created": "1970-01-01T00:00:02Z", "created_by": "ENV x", "empty_layer": True},
            {"created": "1970-01-01T00:00:03Z", "created_by": "top", "comment": "c"},
        ]
    }
    img = images.Image("1" * 64, cfg, {"chains": chains}, [])
    assert [(s["id"][:1], s["created_by"], s["size"], s["created"]) for s in images.history(img)] == [
        ("1", "top", 20, 3.0),
        ("", "ENV x", 0, 2.0),
        ("", "base", 10, 1.0),
    ]
