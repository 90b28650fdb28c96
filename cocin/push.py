"""``push``: sending a local image to a registry (Docker Registry HTTP API v2).

A registry stores **blobs** (the config, each layer's compressed tarball) by
digest, and **manifests** that list them under a tag. Pushing is the pull
protocol run backwards, bottom layer first:

1. ``HEAD /v2/NAME/blobs/DIGEST``: is the blob already in this repository?
   (``200``: nothing to send, "Layer already exists".)
2. If another repository of the same registry has it (cocin remembers where
   each layer's compressed blob was seen, as Docker's ``v2metadata`` does),
   ask for a **cross-repository mount**: ``POST /v2/NAME/blobs/uploads/?
   mount=DIGEST&from=OTHER``. ``201``: the registry linked it, no bytes sent.
3. Otherwise the layer is compressed (gzip, as Docker sends it: the registry
   stores what it is given, so its digest is the sha256 of the *compressed*
   bytes, computed while compressing; a pulled layer's blob, kept as it came,
   is sent as it is) and uploaded **monolithically**:
   ``POST /v2/NAME/blobs/uploads/`` opens an upload and answers its URL in
   ``Location``; ``PUT <Location>?digest=DIGEST`` with the bytes closes it.
   The registry checks the digest and refuses a mismatch.
4. The config blob the same way, then ``PUT /v2/NAME/manifests/TAG`` with a
   Docker schema2 manifest (``application/vnd.docker.distribution.manifest.v2+json``)
   naming the config and the layers. The manifest's own digest (the sha256 of
   its bytes) is what ``pull NAME@sha256:...`` later asks for: it is printed
   as Docker prints it and kept as the image's ``RepoDigests`` entry.

The image ID (the config's sha256) and the layers' diff_ids travel unchanged,
so a ``pull`` of what was pushed gives the very same image. Auth is pull's
(``registry.Client``), asking for ``pull,push`` on the repository (and
``pull`` on a mount's source).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os

from . import images, reference, registry, state
from .state import CocinError, NotFound

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class _Hashing:
    """A file wrapper counting and hashing what is written through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def compress_layer(chain: str, diff_id: str, dest: str) -> dict:
    """The layer gzip-compressed into ``dest`` (no name, mtime 0: the same
    layer always gives the same blob); its descriptor."""
    from . import archive

    with open(dest, "wb") as raw:
        out = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=out, mtime=0) as z:
            archive.write_layer(chain, diff_id, z.write)
    return {"mediaType": DOCKER_LAYER, "size": out.n, "digest": "sha256:" + out.h.hexdigest()}


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def _exists(client: registry.Client, digest: str) -> bool:
    resp = client.send("HEAD", f"blobs/{digest}", allow=(404, 301, 302, 303, 307, 308))
    resp.close()
    return resp.getcode() != 404  # 200, or a redirect to where the registry keeps it


class _Reporting:
    """A file read through for an upload, reporting the bytes sent so far."""

    def __init__(self, path: str, size: int, progress):
        self.f, self.size, self.n, self.progress = open(path, "rb"), size, 0, progress

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.n += len(b)
        self.progress(self.n, self.size)
        return b

    def close(self) -> None:
        self.f.close()


def _upload(client: registry.Client, digest: str, body, size: int, location: str | None = None, progress=None) -> None:
    """A monolithic upload: POST opens it (unless a failed mount already did), PUT sends it all."""
    if location is None:
        resp = client.send("POST", "blobs/uploads/", {"Content-Length": "0"}, b"")
        resp.close()
        location = resp.headers.get("Location")
        if not location:
            raise CocinError(f"the registry {client.base} gave no upload location")
    url = client.url(location)
    url += ("&" if "?" in url else "?") + "digest=" + digest
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if progress and isinstance(body, str):
        path = body
        body = lambda: _Reporting(path, size, progress)  # noqa: E731 (made again for a retry)
    resp = client.send("PUT", url, headers, body)
    resp.close()
    got = resp.headers.get("Docker-Content-Digest")
    if got and got != digest:
        raise CocinError(f"the registry stored {got} for the blob {digest}")


def _mount(client: registry.Client, digest: str, source: str) -> tuple[bool, str | None]:
    """Ask the registry to link ``digest`` from the repository ``source``:
    (mounted, the upload URL it opened instead when it would not)."""
    from urllib.parse import urlencode

    query = urlencode({"mount": digest, "from": source})
    resp = client.send("POST", f"blobs/uploads/?{query}", {"Content-Length": "0"}, b"")
    resp.close()
    if resp.getcode() == 201:
        return True, None
    return False, resp.headers.get("Location")


def _push_layer(
    client: registry.Client, ref: reference.Reference, chain: str, did: str, tmp: str, show: registry.Progress
) -> tuple[dict, str]:
    """Send one layer (or find it there); its descriptor and what happened."""
    known = [
        b for b in registry.blobs_of(did) if b.get("Registry") == ref.domain and b.get("MediaType") in registry.GZIP
    ]
    for b in known:
        if _exists(client, b["Digest"]):
            return _desc(b), "Layer already exists"
    location = None
    for b in known:
        if b.get("Repository") and b["Repository"] != ref.path:
            mounted, location = _mount(client, b["Digest"], b["Repository"])
            if mounted:
                return _desc(b), f"Mounted from {b['Repository']}"
            break
    orig = os.path.join(images.layer_path(chain), "orig")
    if os.path.exists(orig):  # a gzip of exactly the layer's tarball (a pulled blob as it came): sent as it is
        blob, desc = orig, _file_desc(orig)
    else:
        blob = os.path.join(tmp, "layer.tar.gz")
        desc = compress_layer(chain, did, blob)
    if not any(b["Digest"] == desc["digest"] for b in known) and _exists(client, desc["digest"]):
        return desc, "Layer already exists"
    short = did[7:19]
    _upload(client, desc["digest"], blob, desc["size"], location, lambda n, size: show.bar(short, "Pushing", n, size))
    return desc, "Pushed"


def _file_desc(path: str) -> dict:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            n += len(chunk)
    return {"mediaType": DOCKER_LAYER, "size": n, "digest": "sha256:" + h.hexdigest()}


def _desc(b: dict) -> dict:
    return {"mediaType": DOCKER_LAYER, "size": b["Size"], "digest": b["Digest"]}


def push(text: str, quiet: bool = False, all_tags: bool = False) -> list[str]:
    """``docker push``: the image tagged ``text`` to its registry; the pushed
    manifests' digests. ``all_tags``: every local tag of the repository."""
    ref = reference.parse(text, default_tag=None if all_tags else "latest")
    if ref.digest:
        raise CocinError(f"cannot push a digest reference ({text}): push a tag")
    repos = images.repositories()
    if all_tags:
        if ref.tag:
            raise CocinError("tag can't be used with --all-tags/-a")
        tags = sorted(k.rpartition(":")[2] for k in repos if "@" not in k and k.rpartition(":")[0] == ref.familiar_name)
        if not tags:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
    else:
        if ref.key() not in repos:
            raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name}")
        tags = [ref.tag or "latest"]
    _say(quiet, f"The push refers to repository [{ref.name}]")
    digests = []
    for tag in tags:
        one = reference.Reference(ref.domain, ref.path, tag, None)
        digests.append(_push_one(one, repos[one.key()].partition(":")[2], quiet))
    if quiet:
        print(ref.key() if not all_tags else ref.familiar_name)
    return digests


def _push_one(ref: reference.Reference, image_id: str, quiet: bool) -> str:
    img = images.load_image(image_id)
    with open(os.path.join(images.imagedb(), image_id), "rb") as f:
        config = f.read()
    pairs = list(zip(img.meta["chains"], img.diff_ids))
    sources = {
        b["Repository"]
        for _chain, did in pairs
        for b in registry.blobs_of(did)
        if b.get("Registry") == ref.domain and b.get("Repository") not in (None, ref.path)
    }
    client = registry.Client(ref, "pull,push", tuple(f"repository:{s}:pull" for s in sorted(sources)))
    show = registry.Progress(quiet)
    for _chain, did in reversed(pairs):  # top first, as Docker lists them
        show.say(did[7:19], "Preparing")
    tmp = images.staging()
    try:
        layers, done = [], []
        for chain, did in pairs:
            desc, what = _push_layer(client, ref, chain, did, tmp, show)
            layers.append(desc)
            done.append((did, desc))
            show.say(did[7:19], what)
        cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
        if not _exists(client, cdigest):
            _upload(client, cdigest, config, len(config))
    finally:
        state.remove_tree(tmp)
    registry.record_blobs(ref, done)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": registry.DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": cdigest},
            "layers": layers,
        },
        indent=3,
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    resp = client.send("PUT", f"manifests/{ref.tag}", {"Content-Type": registry.DOCKER_MANIFEST}, manifest)
    resp.close()
    got = resp.headers.get("Docker-Content-Digest")
    if got and got != digest:
        raise CocinError(f"the registry stored the manifest as {got}, cocin sent {digest}")
    with state.locked():
        repos = images._read_repos()
        repos[f"{ref.familiar_name}@{digest}"] = "sha256:" + image_id
        images._write_repos(repos)
    _say(quiet, f"{ref.tag}: digest: {digest} size: {len(manifest)}")
    return digest
