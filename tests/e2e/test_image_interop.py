"""End-to-end: cocin's images read and written by real clients (Debian's
``skopeo`` and ``podman``), through archives and the local test registries
of ../shared/registry (127.0.0.1 only, nothing reaches the internet).

What must survive every trip: the image ID (the sha256 of the config's bytes),
the layers' diff_ids, and the manifest digest a push printed. (Only one trip
changes the ID, on purpose: skopeo converting a Docker archive to an OCI
layout rewrites the config as an OCI config; the layers stay.)

podman runs with its own ``--root``/``--runroot``/``--tmpdir`` under the
test's temporary directory, the ``vfs`` driver (no mounts left behind) and no
event log, so it touches nothing of the host's container storage. skopeo and
podman keep a blob-info cache in /var/lib/containers/cache, as the registry
kit's own skopeo runs do.
"""

from __future__ import annotations

import hashlib
import json
import shlex

import pytest
import test_pull as kit

OUTPUT = kit.OUTPUT


@pytest.fixture(scope="module")
def registry(cocin_session):
    yield from kit.registry_kit(cocin_session)


@pytest.fixture
def fresh(cocin, target_tmp):
    env = {"COCIN_ROOT": target_tmp / "root"}
    yield env
    for cid in cocin("ps", "-aq", env=env).stdout.split():
        cocin("rm", "-f", cid, env=env)


def _need(cocin, tool: str) -> None:
    if cocin.sh(f"command -v {tool}").rc != 0:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")


def _run(cocin, argv: list[str]) -> str:
    r = cocin.sh(" ".join(shlex.quote(a) for a in argv))
    assert r.rc == 0, f"{' '.join(argv)} failed rc={r.rc}: {r.stderr}"
    return r.stdout


def skopeo(cocin, *args: str) -> str:
    _need(cocin, "skopeo")
    return _run(cocin, ["skopeo", "--insecure-policy", *args])


def podman(cocin, target_tmp, *args: str) -> str:
    _need(cocin, "podman")
    d = target_tmp / "podman"
    return _run(
        cocin,
        [
            "podman",
            "--root",
            f"{d}/root",
            "--runroot",
            f"{d}/run",
            "--tmpdir",
            f"{d}/tmp",
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ],
    )


def _committed(cocin, env, name: str) -> str:
    """An image made here (busybox + one committed layer) tagged ``name``; its ID."""
    cocin.ok("run", "--name", "interop", "--network", "none", "busybox", "sh", "-c", "echo interop > /i.txt", env=env)
    image_id = cocin.ok("commit", "-c", "CMD cat /i.txt", "interop", name, env=env).stdout.strip()
    cocin.ok("rm", "interop", env=env)
    return image_id


def _inspect(cocin, ref: str, env) -> dict:
    return json.loads(cocin.ok("image", "inspect", ref, env=env).stdout)[0]


def test_skopeo_reads_and_converts_a_cocin_save(cocin, registry, fresh, target_tmp):
    _need(cocin, "skopeo")
    name = "interop/made:1"
    image_id = _committed(cocin, fresh, name)
    diff_ids = _inspect(cocin, name, fresh)["RootFS"]["Layers"]
    save = target_tmp / "save.tar"
    cocin.ok("save", "-o", save, name, env=fresh)
    # as a Docker archive (Docker 20.10's manifest.json) ...
    info = json.loads(skopeo(cocin, "inspect", f"docker-archive:{save}"))
    assert info["Layers"] == diff_ids and info["Architecture"] and info["Os"] == "linux"
    raw = skopeo(cocin, "inspect", "--raw", "--config", f"docker-archive:{save}")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == image_id
    # ... and as an OCI layout (Docker 25's index.json, in the same tar)
    info = json.loads(skopeo(cocin, "inspect", f"oci-archive:{save}"))
    assert info["Layers"] == diff_ids
    raw = skopeo(cocin, "inspect", "--raw", "--config", f"oci-archive:{save}")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == image_id
    # skopeo's copies load back: a Docker archive with the same ID, an OCI layout with the same layers
    other = {"COCIN_ROOT": target_tmp / "root2"}
    skopeo(cocin, "copy", "-q", f"docker-archive:{save}", f"docker-archive:{target_tmp / 'copy.tar'}:{name}")
    assert cocin.ok("load", "-i", target_tmp / "copy.tar", env=other).stdout == f"Loaded image: {name}\n"
    assert _inspect(cocin, name, other)["Id"] == image_id
    skopeo(cocin, "copy", "-q", f"docker-archive:{save}", f"oci:{target_tmp / 'layout'}:{name}")
    config = json.loads(skopeo(cocin, "inspect", "--config", f"oci:{target_tmp / 'layout'}:{name}"))
    assert config["rootfs"]["diff_ids"] == diff_ids  # (its layers gzipped by skopeo on the way)
    cocin.sh(f"tar -C {target_tmp / 'layout'} -cf {target_tmp / 'oci.tar'} .")
    cocin.ok("rmi", name, env=other)
    out = cocin.ok("load", "-i", target_tmp / "oci.tar", env=other).stdout
    assert out == f"Loaded image: {name}\n"  # the layout's ref.name annotation
    assert _inspect(cocin, name, other)["RootFS"]["Layers"] == diff_ids
    assert cocin.ok("run", "--rm", "--network", "none", name, env=other).stdout == "interop\n"


def test_cocin_pulls_what_skopeo_pushed(cocin, registry, fresh, target_tmp):
    reg = registry["REGISTRY_OPEN"]
    archive = target_tmp / "skopeo.tar"
    source = f"docker://{reg}/test/busybox:v2s2"
    skopeo(cocin, "copy", "-q", "--src-tls-verify=false", source, f"docker-archive:{archive}")
    ref = f"{reg}/interop/from-skopeo:1"
    skopeo(cocin, "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{ref}")
    digest = json.loads(skopeo(cocin, "inspect", "--tls-verify=false", f"docker://{ref}"))["Digest"]
    out = cocin.ok("pull", ref, env=fresh).stdout
    assert f"Digest: {digest}" in out
    info = _inspect(cocin, ref, fresh)
    assert info["Id"].startswith("sha256:325eba67") and f"{reg}/interop/from-skopeo@{digest}" in info["RepoDigests"]
    assert cocin.ok("run", "--rm", "--network", "none", ref, env=fresh).stdout == OUTPUT
    # and a skopeo-made archive loads as it is
    other = {"COCIN_ROOT": target_tmp / "root2"}
    out = cocin.ok("load", "-i", archive, env=other).stdout
    assert _inspect(cocin, out.split()[-1], other)["Id"] == info["Id"]


def test_skopeo_and_podman_fetch_what_cocin_pushed(cocin, registry, fresh, target_tmp):
    _need(cocin, "skopeo")
    reg = registry["REGISTRY_OPEN"]
    ref = f"{reg}/interop/pushed:1"
    image_id = _committed(cocin, fresh, ref)
    digest = cocin.ok("push", ref, env=fresh).stdout.splitlines()[-1].split()[2]
    info = json.loads(skopeo(cocin, "inspect", "--tls-verify=false", f"docker://{ref}"))
    assert info["Digest"] == digest
    raw = skopeo(cocin, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == digest
    manifest = json.loads(raw)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["digest"] == image_id
    assert [x["digest"] for x in manifest["layers"]] == info["Layers"]
    assert {x["mediaType"] for x in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    # copied back out, every blob is where its digest says and hashes to it
    layout = target_tmp / "out"
    skopeo(cocin, "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:1")
    for d in [x["digest"] for x in manifest["layers"]]:
        assert cocin.sh(f"sha256sum {layout}/blobs/sha256/{d[7:]}").stdout.split()[0] == d[7:]
    # a Docker archive of it loads with the same ID
    back = target_tmp / "back.tar"
    skopeo(cocin, "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"docker-archive:{back}:{ref}")
    other = {"COCIN_ROOT": target_tmp / "root2"}
    assert cocin.ok("load", "-i", back, env=other).stdout == f"Loaded image: {ref}\n"
    assert _inspect(cocin, ref, other)["Id"] == image_id
    # podman pulls it too, with the same ID
    if cocin.sh("command -v podman").rc == 0:
        podman(cocin, target_tmp, "pull", "-q", "--tls-verify=false", ref)
        assert podman(cocin, target_tmp, "image", "inspect", "--format", "{{.Id}}", ref).strip() == image_id[7:]


def test_podman_loads_a_cocin_save_and_cocin_loads_podmans(cocin, registry, fresh, target_tmp):
    _need(cocin, "podman")
    name = "localhost/interop/podman:1"
    image_id = _committed(cocin, fresh, name)
    save = target_tmp / "save.tar"
    cocin.ok("save", "-o", save, name, env=fresh)
    assert f"Loaded image: {name}" in podman(cocin, target_tmp, "load", "-q", "-i", save)
    assert podman(cocin, target_tmp, "image", "inspect", "--format", "{{.Id}}", name).strip() == image_id[7:]
    for fmt in ("docker-archive", "oci-archive"):
        out = target_tmp / f"podman-{fmt}.tar"
        podman(cocin, target_tmp, "save", "-q", "--format", fmt, "-o", out, name)
        other = {"COCIN_ROOT": target_tmp / f"root-{fmt}"}
        assert cocin.ok("load", "-i", out, env=other).stdout == f"Loaded image: {name}\n", fmt
        assert _inspect(cocin, name, other)["Id"] == image_id, fmt
        assert cocin.ok("run", "--rm", "--network", "none", name, env=other).stdout == "interop\n"


def test_skopeo_pushes_a_cocin_save_and_cocin_pulls_it_back(cocin, registry, fresh, target_tmp):
    _need(cocin, "skopeo")
    name = "interop/roundtrip:1"
    image_id = _committed(cocin, fresh, name)
    save = target_tmp / "save.tar"
    cocin.ok("save", "-o", save, name, env=fresh)
    ref = f"{registry['REGISTRY_OPEN']}/interop/roundtrip:1"
    skopeo(cocin, "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{save}", f"docker://{ref}")
    other = {"COCIN_ROOT": target_tmp / "root2"}
    cocin.ok("pull", "-q", ref, env=other)
    info = _inspect(cocin, ref, other)
    assert info["Id"] == image_id
    assert info["RootFS"]["Layers"] == _inspect(cocin, name, fresh)["RootFS"]["Layers"]
    assert cocin.ok("run", "--rm", "--network", "none", ref, env=other).stdout == "interop\n"
