"""Upgrading a state root made before layers: each flat image becomes a one-layer image.

Before layers, an image was a name, ``images/NAME.json``, pointing at one
flattened tree, ``layers/<random id>/``. Each such tree is a complete root
filesystem, so it is a valid *base layer*: it is moved (renamed, not copied)
to ``layers/sha256/<chain>/diff``, hashed into its diff_id, and given a
config; the names become tags. Containers made from an old image get the new
image ID and lowerdir in their records. Runs once, under the state lock, the
first time an image is looked up (``images.repositories``).
"""

from __future__ import annotations

import os

from . import fastjson, images, state


def _old_images() -> dict[str, dict]:
    out = {}
    try:
        names = os.listdir(images.images_dir())
    except FileNotFoundError:
        return out
    for fname in names:
        if fname.endswith(".json"):
            try:
                with open(os.path.join(images.images_dir(), fname)) as f:
                    out[fname[:-5]] = fastjson.loads(f.read())
            except (OSError, ValueError):
                continue
    return out


def _old_layers() -> list[str]:
    top = os.path.join(state.root(), "layers")
    try:
        return sorted(n for n in os.listdir(top) if len(n) == 64 and os.path.isdir(os.path.join(top, n)))
    except FileNotFoundError:
        return []


def _convert(old_id: str, meta: dict) -> str:
    """The flat tree ``layers/<old_id>`` as a one-layer image; its new ID."""
    images.make_layers_dir()
    tmp = os.path.join(images.layers_dir(), f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(tmp, 0o700)
    os.rename(os.path.join(state.root(), "layers", old_id), os.path.join(tmp, "diff"))
    chain, did = images.prepare_layer(tmp, None)
    images.install_layer(tmp, chain)
    created = meta.get("created") or os.stat(images.layer_path(chain)).st_mtime
    cfg = images.new_config(None, did, created, meta.get("source") or "upgraded from a flat image")
    return images.store_config(images._compact(cfg).encode())


def upgrade() -> None:
    with state.locked():
        if os.path.exists(images.repos_file()):
            return  # done meanwhile by another cocin
        old = _old_images()
        by_layer = {m.get("id"): m for m in old.values()}
        new_ids = {old_id: _convert(old_id, by_layer.get(old_id, {})) for old_id in _old_layers()}
        repos = {name + ":latest": "sha256:" + new_ids[m["id"]] for name, m in old.items() if m.get("id") in new_ids}
        for rec in state.load_all():
            new = new_ids.get(rec.config.get("image_id"))
            if new is not None:
                rec.config["image_id"] = new
                rec.config["lower"] = images.load_image(new, []).lower
                state.save(rec)
        images._write_repos(repos)
        for name in old:
            try:
                os.unlink(os.path.join(images.images_dir(), name + ".json"))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(images.images_dir())
        except OSError:
            pass
    if new_ids:
        import sys

        sys.stderr.write(f"cocin: upgraded {len(new_ids)} image(s) to the layer store\n")
