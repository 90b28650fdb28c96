"""``save`` and ``load``: images as ``docker save`` archives.

A ``docker save`` archive is a tar holding, for each image, its config and
its layers as plain tarballs, plus two indexes: ``manifest.json`` (Docker's:
which config, which tags, which layer files, bottom first) and, since Docker
25, an OCI image layout (``oci-layout``, ``index.json`` and every file as a
content-addressed blob ``blobs/sha256/<digest>``). A layer's file is its
uncompressed tarball, so its digest *is* its diff_id, and the config is
stored byte for byte, so the image ID survives the trip: ``load`` checks both
and rebuilds the same store entries (layers already there are shared).
``load`` also takes an OCI layout alone (skopeo's and podman's
``oci-archive``): ``index.json`` names manifests (or indexes: the host's
platform is picked) by digest, each blob is checked against its name, and
its layers may be gzip, zstd or plain tars (told apart by their first bytes).

A layer made here is written as ``layers.write_layer_tar`` makes it (the
bytes its diff_id was computed from); a pulled one from the original tarball
kept next to it (``orig``), since a re-made tarball of the same files need
not have the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile

from . import images, state
from .state import CocinError

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


def _layer_tar(chain: str, diff_id: str, dest: str) -> None:
    """The layer's tarball, with exactly the bytes of its diff_id, into ``dest``."""
    with open(dest, "wb") as out:
        write_layer(chain, diff_id, out.write)


def write_layer(chain: str, diff_id: str, write) -> None:
    """The layer's tarball, with exactly the bytes of its diff_id, to ``write``
    (checked at the end: a caller must drop what it wrote on an error)."""
    from . import layers

    top = images.layer_path(chain)
    orig = os.path.join(top, "orig")
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(b)
        write(b)

    if os.path.exists(orig):
        import gzip

        with gzip.open(orig, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                put(chunk)
    else:
        layers.write_layer_tar(os.path.join(top, "diff"), put)
    if "sha256:" + h.hexdigest() != diff_id:
        raise CocinError(f"cannot save layer {diff_id}: its files no longer make that tarball")


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    tf.addfile(info, io.BytesIO(data))


def _blob(data: bytes) -> tuple[str, str]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return digest, "blobs/sha256/" + digest[7:]


def write_archive(refs: list[str], fileobj, stream: bool) -> None:
    """The images ``refs`` as one archive, written to ``fileobj``."""
    from .reference import parse

    imgs = []
    for ref in refs:
        image_id, key = images.resolve(ref)
        imgs.append((images.load_image(image_id), key))
    scratch = images.staging()
    try:
        with tarfile.open(mode="w|" if stream else "w", fileobj=fileobj, format=tarfile.PAX_FORMAT) as tf:
            _add_bytes(tf, "oci-layout", OCI_LAYOUT)
            done: set[str] = set()
            sizes: dict[str, int] = {}
            manifest_json, index, repositories = [], [], {}
            for img, key in imgs:
                with open(os.path.join(images.imagedb(), img.id), "rb") as f:
                    config = f.read()
                cdigest, cpath = _blob(config)
                if cpath not in done:
                    _add_bytes(tf, cpath, config)
                    done.add(cpath)
                layer_descs, paths = [], []
                for chain, did in zip(img.meta["chains"], img.diff_ids):
                    path = "blobs/sha256/" + did[7:]
                    tmp = os.path.join(scratch, "layer.tar")
                    if path not in sizes:
                        _layer_tar(chain, did, tmp)
                        tf.add(tmp, arcname=path, recursive=False, filter=_plain)
                        sizes[path] = os.stat(tmp).st_size
                        os.unlink(tmp)
                    layer_descs.append(
                        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": did, "size": sizes[path]}
                    )
                    paths.append(path)
                manifest = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {
                            "mediaType": "application/vnd.oci.image.config.v1+json",
                            "digest": cdigest,
                            "size": len(config),
                        },
                        "layers": layer_descs,
                    },
                    separators=(",", ":"),
                ).encode()
                mdigest, mpath = _blob(manifest)
                if mpath not in done:
                    _add_bytes(tf, mpath, manifest)
                    done.add(mpath)
                tags = [key] if key else [t for t in img.tags if "@" not in t]
                for t in tags or [None]:
                    entry = {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": mdigest,
                        "size": len(manifest),
                    }
                    if t:
                        ref = parse(t)
                        entry["annotations"] = {
                            "io.containerd.image.name": f"{ref.name}:{ref.tag}",
                            "org.opencontainers.image.ref.name": ref.tag,
                        }
                        repositories.setdefault(ref.familiar_name, {})[ref.tag] = img.diff_ids[-1][7:]
                    index.append(entry)
                manifest_json.append({"Config": cpath, "RepoTags": tags, "Layers": paths})
            _add_bytes(
                tf,
                "index.json",
                json.dumps(
                    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index},
                    separators=(",", ":"),
                ).encode(),
            )
            _add_bytes(tf, "manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode())
            if repositories:
                _add_bytes(tf, "repositories", json.dumps(repositories, separators=(",", ":")).encode())
    finally:
        state.remove_tree(scratch)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o444
    info.mtime = 0
    return info


def save(refs: list[str], out: str) -> None:
    """``docker save``: to the file ``out`` (complete or not at all), a device or FIFO, or ``-`` (stdout)."""
    for ref in refs:
        images.resolve(ref)  # every name checked before anything is written
    state.write_output(out, lambda f, stream: write_archive(refs, f, stream))


# --- load ---------------------------------------------------------------------------


def spool_stdin() -> str:
    """Standard input copied into a file in the state root (a tar needs to seek)."""
    images.make_layers_dir()
    path = os.path.join(images.layers_dir(), f".stdin-{os.getpid()}-{os.urandom(4).hex()}")
    with open(path, "wb") as out:
        for chunk in iter(lambda: sys.stdin.buffer.read(1 << 20), b""):
            out.write(chunk)
    return path


def is_docker_archive(path: str) -> bool:
    """A ``docker save`` archive (``manifest.json``) or an OCI image layout
    (``index.json``), as against the single-tree format of older cocin versions."""
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.name.lstrip("./") in ("manifest.json", "index.json"):
                    return True
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def _member_bytes(tf: tarfile.TarFile, name: str, limit: int = 64 << 20) -> bytes:
    try:
        m = tf.getmember(name)
    except KeyError:
        try:
            m = tf.getmember("./" + name)
        except KeyError:
            raise CocinError(f"invalid archive: {name} is missing") from None
    if not m.isfile() or m.size > limit:
        raise CocinError(f"invalid archive: {name} is not a file")
    f = tf.extractfile(m)
    return f.read() if f else b""


def load(path: str) -> list[str]:
    """``docker load`` of a docker-save archive, or of an OCI image layout
    (``index.json``, ``blobs/sha256/...``: what ``skopeo copy ... oci-archive:``
    and ``podman save --format oci-archive`` write); the names (or IDs) it loaded."""
    try:
        tf = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError):
        raise CocinError(f"cannot read {path}: not a valid tar archive") from None
    out: list[str] = []
    with tf:
        names = {m.name[2:] if m.name.startswith("./") else m.name for m in tf.getmembers()}
        if "manifest.json" in names:
            try:
                manifest = json.loads(_member_bytes(tf, "manifest.json"))
            except ValueError:
                raise CocinError("invalid archive: manifest.json is not JSON") from None
            if not isinstance(manifest, list):
                raise CocinError("invalid archive: manifest.json is not a list")
        elif "index.json" in names:
            manifest = _oci_entries(tf)
        else:
            raise CocinError("invalid archive: neither manifest.json nor index.json is in it")
        for entry in manifest:
            out += _load_one(tf, entry)
    return out


OCI_INDEXES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")


def _blob_bytes(tf: tarfile.TarFile, digest: str) -> bytes:
    from .reference import is_digest

    if not is_digest(str(digest)):
        raise CocinError(f"invalid archive: unsupported digest {digest!r}")
    data = _member_bytes(tf, "blobs/sha256/" + digest[7:])
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise CocinError(f"invalid archive: the blob {digest} does not match its digest")
    return data


def _oci_name(annotations: dict) -> str | None:
    """The image's name in an OCI layout: containerd's full name, or a
    ``ref.name`` that is a whole reference (a bare tag names no repository)."""
    from .reference import parse

    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        text = annotations.get(key) or ""
        if "/" in text or (key == "io.containerd.image.name" and text):
            try:
                return parse(text).key()
            except CocinError:
                continue
    return None


def _oci_entries(tf: tarfile.TarFile) -> list[dict]:
    """``manifest.json``-style entries (Config, RepoTags, Layers) for the images
    an OCI layout's ``index.json`` names; an index inside picks the host's platform."""
    from .reference import is_digest
    from .registry import pick_platform

    try:
        index = json.loads(_member_bytes(tf, "index.json"))
    except ValueError:
        raise CocinError("invalid archive: index.json is not JSON") from None
    entries: dict[str, dict] = {}
    todo = [(d, _oci_name(d.get("annotations") or {})) for d in index.get("manifests") or []]
    while todo:
        desc, name = todo.pop(0)
        raw = _blob_bytes(tf, desc.get("digest"))
        body = json.loads(raw)
        kind = desc.get("mediaType") or body.get("mediaType")
        if kind in OCI_INDEXES or "manifests" in body:
            child = pick_platform(body, "linux", images.host_arch())
            todo.append((child, name))
            continue
        cdigest = (body.get("config") or {}).get("digest", "")
        _blob_bytes(tf, cdigest)
        for ld in body.get("layers") or []:
            if not is_digest(str(ld.get("digest"))):
                raise CocinError(f"invalid archive: unsupported layer digest {ld.get('digest')!r}")
        entry = entries.setdefault(
            desc["digest"],
            {
                "Config": "blobs/sha256/" + cdigest[7:],
                "RepoTags": [],
                "Layers": ["blobs/sha256/" + ld["digest"][7:] for ld in body.get("layers") or []],
            },
        )
        if name and name not in entry["RepoTags"]:
            entry["RepoTags"].append(name)
    return list(entries.values())


def _load_one(tf: tarfile.TarFile, entry: dict) -> list[str]:
    from . import tarball

    config = _member_bytes(tf, entry["Config"])
    image_id = hashlib.sha256(config).hexdigest()
    base = os.path.basename(entry["Config"])
    named = base[:-5] if base.endswith(".json") else base
    if len(named) == 64 and named != image_id:
        raise CocinError(f"invalid archive: the config {entry['Config']} has the digest sha256:{image_id}")
    cfg = json.loads(config)
    diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(entry.get("Layers") or []):
        raise CocinError("invalid archive: the config's diff_ids do not match its layers")
    tags = [images.check_new_name(t, replace=True) for t in entry.get("RepoTags") or []]
    added, parent = [], None
    try:
        for did, name in zip(diff_ids, entry["Layers"]):
            chain = images.chain_id(parent, did)
            if not os.path.isdir(images.layer_path(chain)):
                stage = images.staging()
                try:
                    tar = os.path.join(stage, "orig.tar")
                    got = _copy_member(tf, name, tar)
                    if got != did:
                        raise CocinError(f"invalid archive: layer {name} is {got}, the config says {did}")
                    tarball.extract(tar, os.path.join(stage, "diff"))
                    keep_orig(stage, tar, did)
                    for fname, text in (
                        ("diff_id", did),
                        ("parent", parent or ""),
                        ("size", str(images.tree_size(os.path.join(stage, "diff")))),
                    ):
                        if text:
                            with open(os.path.join(stage, fname), "w") as f:
                                f.write(text)
                    with state.locked():
                        images.install_layer(stage, chain)
                except BaseException:
                    state.remove_tree(stage)
                    raise
                added.append(chain)
            parent = chain
        from .registry import _publish

        _publish(config, tags)
    except BaseException:
        with state.locked():
            images._drop_orphan_layers(added)
        raise
    return tags or ["sha256:" + image_id]


def _copy_member(tf: tarfile.TarFile, name: str, dest: str) -> str:
    """A layer file of the archive into ``dest`` (uncompressed); the sha256 of its tar."""
    import gzip

    try:
        m = tf.getmember(name)
    except KeyError:
        try:
            m = tf.getmember("./" + name)
        except KeyError:
            raise CocinError(f"invalid archive: {name} is missing") from None
    if not m.isfile():
        raise CocinError(f"invalid archive: {name} is not a file")
    src = tf.extractfile(m)
    head = src.read(4)
    src.seek(0)
    if head[:2] == b"\x1f\x8b":
        src = gzip.GzipFile(fileobj=src)
    elif head == b"\x28\xb5\x2f\xfd":  # zstd: through the zstd command, as pull does
        return _unzstd(src, dest)
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
    return "sha256:" + h.hexdigest()


def _unzstd(src, dest: str) -> str:
    import shutil
    import subprocess
    import threading

    if shutil.which("zstd") is None:
        raise CocinError("the archive has zstd-compressed layers: install the zstd command (apt-get install zstd)")
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        proc = subprocess.Popen(["zstd", "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        def feed() -> None:
            try:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass
            finally:
                proc.stdin.close()

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
        t.join()
        if proc.wait() != 0:
            raise CocinError("cannot decompress a zstd layer of the archive")
    return "sha256:" + h.hexdigest()


def keep_orig(stage: str, tar: str, diff_id: str, gz_blob: str | None = None) -> None:
    """The layer's own tarball, gzipped as ``orig`` (``save`` gives it back byte
    for byte), unless cocin's own tarball of its files has the same bytes.
    ``gz_blob``, a gzip file of exactly that tarball (a pulled blob, checked),
    is moved there rather than compressing again; it and ``tar`` are gone after."""
    import gzip

    from . import layers

    if layers.diff_id(os.path.join(stage, "diff")) != diff_id:
        if gz_blob:
            os.rename(gz_blob, os.path.join(stage, "orig"))
        else:
            with open(tar, "rb") as src, gzip.GzipFile(os.path.join(stage, "orig"), "wb", 6, mtime=0) as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    out.write(chunk)
    for path in (tar, gz_blob):
        if path and os.path.exists(path):
            os.unlink(path)
