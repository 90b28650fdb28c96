"""Images: a stack of layers, stored once, described by a config, named by tags.

As in Docker (and the OCI image spec), an image is

* a list of **layers**, each the set of changes one step made to the files
  (a directory in overlay's own format: deleted files are whiteouts, see
  ``layers``). A layer is known by its ``diff_id``, the sha256 of its
  uncompressed tarball, and stored once under its **chain ID**, which names
  it *together with everything below it*: ``chain(L0) = diff_id(L0)``,
  ``chain(Ln) = sha256(chain(Ln-1) + " " + diff_id(Ln))``. Two images built
  on the same base share the base's directories on disk;
* a **config** (JSON): the layers' diff_ids (``rootfs.diff_ids``), how to
  run it (``config``: Env, Cmd, Entrypoint, WorkingDir, User, ...), its
  ``history`` and ``created`` time. The image **ID** is the sha256 of these
  very bytes, so it names the content: the same config is the same image;
* **tags**, names such as ``busybox:latest`` pointing at an ID.

A container's root filesystem is an overlay mount with the image's layer
directories as ``lowerdir``s (top first) and the container's own writable
``upper`` directory: nothing is copied at ``run``. ``commit`` makes one new
layer from the container's ``upper`` directory and a new config on top of
its image's. On disk, below the state root::

    layers/sha256/<chain>/diff       the layer's files (overlay format)
    layers/sha256/<chain>/diff_id    its diff_id; parent: the chain ID below it
    l/<short>                        -> ../layers/sha256/<chain>/diff
    imagedb/<id>                     the config, byte for byte (its sha256 is <id>)
    imagedb/<id>.meta                what ``run`` needs at once: the lowerdir list
    repositories.json                {"busybox:latest": "sha256:<id>", ...}

The ``l/`` links keep the overlay mount options short: the kernel takes
them in one page (4096 bytes), which 64-digit paths fill after a few dozen
layers (Docker's overlay2 driver does the same).
"""

from __future__ import annotations

import os
import stat

from . import fastjson, reference, state
from .state import CocinError, NotFound

BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")
LINK_LEN = 26  # characters of a chain ID in its l/ name (Docker's l/ names are 26 long)
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


class Image:
    """One image: its ID, config, tags and (from its .meta file) its layers."""

    def __init__(self, id: str, config: dict, meta: dict, tags: list[str]):
        self.id, self.config, self.meta, self.tags = id, config, meta, tags

    @property
    def name(self) -> str:
        """The first tag's repository (``<none>`` for an untagged image)."""
        for t in self.tags:
            return t.partition("@")[0] if "@" in t else t.rpartition(":")[0]
        return "<none>"

    @property
    def lower(self) -> str:
        """overlay's ``lowerdir`` value: the layers' links, top first."""
        links = os.path.join(state.root(), "l")
        return ":".join(os.path.join(links, n) for n in self.meta["links"])

    @property
    def size(self) -> int:
        return self.meta.get("size", 0)

    @property
    def created(self) -> float:
        return self.meta.get("created", 0.0)

    @property
    def comment(self) -> str:
        return self.config.get("comment", "")

    @property
    def author(self) -> str:
        return self.config.get("author", "")

    @property
    def source(self) -> str:
        hist = self.config.get("history") or [{}]
        return hist[-1].get("created_by", "")

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))


# --- paths ---------------------------------------------------------------------------


def images_dir() -> str:  # the flat store before layers (upgraded on first use)
    return os.path.join(state.root(), "images")


def imagedb() -> str:
    return os.path.join(state.root(), "imagedb")


def layers_dir() -> str:
    return os.path.join(state.root(), "layers", "sha256")


def make_layers_dir() -> None:
    for d in (os.path.dirname(layers_dir()), layers_dir()):
        os.makedirs(d, 0o700, exist_ok=True)  # each level its own mode (makedirs gives only the last)


def layer_path(chain: str) -> str:
    return os.path.join(layers_dir(), chain.partition(":")[2])


def repos_file() -> str:
    return os.path.join(state.root(), "repositories.json")


# --- names and lookups -------------------------------------------------------------------


def tag_key(ref: str) -> str:
    """The key of a tag in repositories.json: the familiar reference, ``busybox:latest``."""
    return reference.parse(ref).key()


def normalize(ref: str) -> str:
    """How a container's record names its image: familiar, ``:latest`` left out
    (``docker.io/library/busybox:latest`` is ``busybox``); a bad reference is refused."""
    if reference.is_id_prefix(ref) and len(ref) >= 12:
        return ref
    key = tag_key(ref)
    return key[:-7] if key.endswith(":latest") else key


def _read_repos() -> dict[str, str]:
    try:
        with open(repos_file(), "rb") as f:
            return fastjson.loads(f.read())
    except FileNotFoundError:
        return {}


def repositories() -> dict[str, str]:
    """Tag -> ``sha256:<id>``; an old flat store (``images/NAME.json``) is
    upgraded on first use (``image_upgrade``). Not under the lock."""
    if not os.path.exists(repos_file()) and os.path.isdir(images_dir()):
        from . import image_upgrade

        image_upgrade.upgrade()
    return _read_repos()


def _write_repos(repos: dict[str, str]) -> None:
    state.atomic_write(repos_file(), fastjson.dumps(dict(sorted(repos.items()))))


def load_image(image_id: str, tags: list[str] | None = None) -> Image:
    """The image ``image_id`` (hex digits), from imagedb."""
    path = os.path.join(imagedb(), image_id)
    try:
        with open(path, "rb") as f:
            config = fastjson.loads(f.read())
        with open(path + ".meta", "rb") as f:
            meta = fastjson.loads(f.read())
    except FileNotFoundError:
        raise NotFound(f"No such image: {image_id[:12]}") from None
    if tags is None:
        tags = sorted(t for t, i in _read_repos().items() if i == "sha256:" + image_id)
    return Image(image_id, config, meta, tags)


def resolve(ref: str, repos: dict[str, str] | None = None) -> tuple[str, str | None]:
    """(image ID, tag key or None) of ``ref``: a full ID (``sha256:`` optional),
    a reference whose tag exists, else a unique prefix of an ID, as Docker
    looks an image up."""
    repos = repositories() if repos is None else repos
    hexpart = ref[7:] if ref.startswith("sha256:") else ref
    if len(hexpart) == 64 and reference.is_id_prefix(hexpart):
        if os.path.exists(os.path.join(imagedb(), hexpart)):
            return hexpart, None
        raise NotFound(f"No such image: {ref}")
    try:
        key = tag_key(ref)
    except CocinError:
        if not reference.is_id_prefix(ref):
            raise
        key = None
    if key is not None and key in repos:
        return repos[key].partition(":")[2], key
    if reference.is_id_prefix(ref):
        found = [i for i in all_ids() if i.startswith(hexpart)]
        if len(found) == 1:
            return found[0], None
        if len(found) > 1:
            raise CocinError(f"image ID prefix {ref} is ambiguous: give more of the ID")
    raise NotFound(f"No such image: {key or ref}")


def get(ref: str) -> Image:
    """Look an image up; ``busybox`` is built from the host on first use."""
    try:
        image_id, key = resolve(ref)
    except NotFound:
        if tag_key(ref) == "busybox:latest":
            from .image_build import build_busybox

            return build_busybox()
        raise
    return load_image(image_id, [key] if key else None)


def find(ref: str) -> Image:
    """An image by reference or ID, never built (``inspect``, ``history``)."""
    return load_image(resolve(ref)[0])


def all_ids() -> list[str]:
    try:
        return sorted(n for n in os.listdir(imagedb()) if len(n) == 64)
    except FileNotFoundError:
        return []


def tree_size(path: str) -> int:
    """Bytes of the files under ``path`` (as ``du --apparent-size`` counts)."""
    from .layers import entries

    return sum(st.st_size for _fd, _name, _rel, st in entries(path) if not stat.S_ISDIR(st.st_mode))


# --- deleting what no image and no container uses -----------------------------------------


def _used_image_ids(repos: dict[str, str]) -> set[str]:
    ids = {v.partition(":")[2] for v in repos.values()}
    ids.update(r.config.get("image_id") for r in state.load_all())
    ids.update(build_cache_ids())
    return ids


def build_cache_ids() -> set[str]:
    """The images ``build`` keeps as its cache (one file per step: the step's
    image ID), untagged until ``builder prune``."""
    d = os.path.join(state.root(), "buildcache")
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return set()
    out = set()
    for n in names:
        try:
            with open(os.path.join(d, n)) as f:
                out.add(f.read().strip())
        except OSError:
            continue
    return out


def chains_in_use() -> set[str]:
    """The chain IDs of every layer some stored image stands on."""
    keep: set[str] = set()
    for other in all_ids():
        try:
            with open(os.path.join(imagedb(), other + ".meta"), "rb") as f:
                keep.update(fastjson.loads(f.read())["chains"])
        except (OSError, ValueError, KeyError):
            continue
    return keep


def _drop_image_if_unused(image_id: str, repos: dict[str, str]) -> list[str]:
    """Delete an image no tag and no container refers to, and the layers no
    other image has (under the lock); what was deleted (IDs, chain IDs)."""
    used = _used_image_ids(repos)
    if image_id in used:
        return []
    path = os.path.join(imagedb(), image_id)
    try:
        with open(path + ".meta", "rb") as f:
            chains = fastjson.loads(f.read())["chains"]
    except (OSError, ValueError, KeyError):
        chains = []
    for p in (path, path + ".meta"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
    keep = chains_in_use()
    gone = ["sha256:" + image_id]
    for chain in reversed(chains):
        if chain not in keep:
            _remove_layer(chain)
            gone.append(chain)
    return gone


def _remove_layer(chain: str) -> None:
    hexid = chain.partition(":")[2]
    try:
        os.unlink(os.path.join(state.root(), "l", hexid[:LINK_LEN]))
    except FileNotFoundError:
        pass
    trash = os.path.join(layers_dir(), f".rm-{hexid}")
    try:
        os.rename(layer_path(chain), trash)
    except FileNotFoundError:
        return
    state.remove_tree(trash)


def gc_layer(image_id: str, name: str = "") -> None:
    """Called when a container is removed: its image may now be unused.

    The common case is answered by one file: a tag still points at the image.
    (An ``rmi`` racing with us sees the container gone and drops it itself.)
    """
    if not image_id:
        return
    try:
        if "sha256:" + image_id in repositories().values():
            return
    except (OSError, ValueError):
        pass
    repositories()
    with state.locked():
        _drop_image_if_unused(image_id, _read_repos())


def __getattr__(name: str):
    """What makes, changes and lists images lives in ``image_build``, imported
    only when asked for (``images.commit``...): ``run`` needs none of it."""
    from . import image_build

    try:
        return getattr(image_build, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
