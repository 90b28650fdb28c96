"""Making, changing and listing images: the parts of the image store ``run`` does not need.

``images`` looks images up and removes what nothing uses; this module adds
layers (``staging`` -> ``prepare_layer`` -> ``install_layer``), writes
configs (``new_config``, ``store_config``) and tags (``publish``, ``tag``),
and implements ``import``, ``commit`` (with ``-c`` Dockerfile
instructions), ``export``, ``history``, ``rmi`` and the ``images`` listing.
It is imported on first use through ``images`` (``images.commit``): the
few milliseconds of its import (and of ``json``) stay off ``cocin run``.
"""

from __future__ import annotations

import os
import time

from . import fastjson, reference, state
from .images import (
    BUSYBOX_PATHS,
    DEFAULT_ENV,
    LINK_LEN,
    Image,
    _drop_image_if_unused,
    _read_repos,
    _remove_layer,
    _write_repos,
    all_ids,
    chains_in_use,
    get,
    imagedb,
    layer_path,
    layers_dir,
    load_image,
    make_layers_dir,
    repositories,
    resolve,
    tree_size,
)
from .state import CocinError, NotFound


def inspect(img: Image) -> dict:
    """``docker image inspect``'s view of an image."""
    cfg = img.config
    return {
        "Id": "sha256:" + img.id,
        "RepoTags": [t for t in img.tags if "@" not in t],
        "RepoDigests": [t for t in img.tags if "@" in t],
        "Parent": "",
        "Comment": img.comment or img.source,
        "Created": cfg.get("created", ""),
        "Author": img.author,
        "Config": cfg.get("config") or {},
        "Architecture": cfg.get("architecture", ""),
        "Os": cfg.get("os", ""),
        "Size": img.size,
        "RootFS": {"Type": "layers", "Layers": img.diff_ids},
        "Metadata": {"LastTagTime": ""},
    }


def list_images() -> list[Image]:
    """Every image, tagged ones once per tag (``<none>`` for the untagged), by name."""
    repos = repositories()
    out = []
    for image_id in all_ids():
        tags = sorted(t for t, i in repos.items() if i == "sha256:" + image_id)
        try:
            img = load_image(image_id, tags)
        except (NotFound, ValueError):
            continue
        out.append(img)
    return sorted(out, key=lambda i: (i.name == "<none>", i.name))


def image_rows(filter_ref: str | None = None, show_all: bool = False) -> list[dict]:
    """``docker images``: one row per tag (and per digest of an untagged
    name), newest first; an untagged image (one a container still holds) as
    ``<none>``, with ``-a`` only. ``filter_ref``: ``REPOSITORY[:TAG]``,
    shell wildcards allowed."""
    import fnmatch

    want_repo = want_tag = None
    if filter_ref:
        repo, colon, want = filter_ref.rpartition(":")
        if colon and "/" not in want:
            want_repo, want_tag = repo, want
        else:
            want_repo = filter_ref
        if not any(c in want_repo for c in "*?["):
            want_repo = reference.parse(want_repo, None).familiar_name
    rows = []
    for img in list_images():
        names = [t.rpartition(":") for t in img.tags if "@" not in t]
        digests = {t.partition("@")[0]: t.partition("@")[2] for t in img.tags if "@" in t}
        entries = [(repo, tag, digests.get(repo, "<none>")) for repo, _c, tag in names]
        entries += [(repo, "<none>", d) for repo, d in digests.items() if repo not in {n[0] for n in names}]
        if not entries:
            if filter_ref or not show_all:  # kept only for a container: Docker would have deleted it
                continue
            entries = [("<none>", "<none>", "<none>")]
        for repo, tag, digest in entries:
            if want_repo and not fnmatch.fnmatchcase(repo, want_repo):
                continue
            if want_tag and not fnmatch.fnmatchcase(tag, want_tag):
                continue
            rows.append(
                {
                    "repository": repo,
                    "tag": tag,
                    "digest": digest,
                    "id": img.id,
                    "created": img.created,
                    "size": img.size,
                }
            )
    rows.sort(key=lambda r: (-r["created"], r["repository"], r["tag"]))
    return rows


def chain_id(parent: str | None, diff_id: str) -> str:
    import hashlib

    if not parent:
        return diff_id
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def staging() -> str:
    """A fresh layer directory (with its ``diff/``), published when complete.

    Until then it is named ``layers/sha256/.tmp-*``, which a crash may leave
    behind but nothing ever points at.
    """
    make_layers_dir()
    tmp = os.path.join(layers_dir(), f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(tmp, 0o700)
    os.mkdir(os.path.join(tmp, "diff"), 0o755)
    return tmp


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def prepare_layer(tmp: str, parent: str | None) -> tuple[str, str]:
    """Hash the staged layer ``tmp`` and write its metadata files; returns
    (chain ID on top of ``parent``, diff_id)."""
    from . import layers

    diff = os.path.join(tmp, "diff")
    did = layers.diff_id(diff)
    chain = chain_id(parent, did)
    _write(os.path.join(tmp, "diff_id"), did)
    _write(os.path.join(tmp, "size"), str(tree_size(diff)))
    if parent:
        _write(os.path.join(tmp, "parent"), parent)
    return chain, did


def install_layer(tmp: str, chain: str) -> None:
    """Give a prepared layer its place (under the lock). A layer already
    stored (same content on the same base) is shared: the staged copy goes."""
    hexid = chain.partition(":")[2]
    links = os.path.join(state.root(), "l")
    os.makedirs(links, 0o700, exist_ok=True)
    if os.path.isdir(layer_path(chain)):
        state.remove_tree(tmp)
    else:
        os.rename(tmp, layer_path(chain))
    link = os.path.join(links, hexid[:LINK_LEN])
    if not os.path.islink(link):
        os.symlink(os.path.join("..", "layers", "sha256", hexid, "diff"), link)


def add_layer(tmp: str, parent: str | None) -> tuple[str, str]:
    """Store the staged layer ``tmp`` on top of the chain ``parent``; returns
    (chain ID, diff_id). Nothing stays of ``tmp`` on failure."""
    try:
        chain, did = prepare_layer(tmp, parent)
        with state.locked():
            install_layer(tmp, chain)
    except BaseException:
        state.remove_tree(tmp)
        raise
    return chain, did


def _chains(diff_ids: list[str]) -> list[str]:
    out: list[str] = []
    for did in diff_ids:
        out.append(chain_id(out[-1] if out else None, did))
    return out


def layer_size(chain: str) -> int:
    try:
        with open(os.path.join(layer_path(chain), "size")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


def parse_time(text: str) -> float:
    """An RFC 3339 time (``2024-01-02T03:04:05.123Z``, or with an offset) as seconds."""
    import calendar

    try:
        base, frac, off = text[:19], 0.0, 0
        rest = text[19:]
        if rest.startswith("."):
            digits = rest[1:].rstrip("Z").split("+")[0].split("-")[0]
            frac = float("0." + digits) if digits else 0.0
            rest = rest[1 + len(digits) :]
        if rest[:1] in "+-" and rest:
            sign = 1 if rest[0] == "+" else -1
            off = sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60)
        return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + frac - off
    except (ValueError, IndexError):
        return 0.0


def new_config(
    base: dict | None,
    diff_id: str,
    created: float,
    created_by: str,
    changes: dict | None = None,
    comment: str = "",
    author: str = "",
) -> dict:
    """The config of an image made of ``base`` plus one layer ``diff_id``."""
    base = base or {}
    run_cfg = dict(base.get("config") or {"Env": list(DEFAULT_ENV)})
    run_cfg.update(changes or {})
    history = list(base.get("history") or [])
    step = {"created": rfc3339(created), "created_by": created_by}
    if comment:
        step["comment"] = comment
    if author:
        step["author"] = author
    history.append(step)
    cfg = {
        "architecture": base.get("architecture") or host_arch(),
        "config": run_cfg,
        "created": rfc3339(created),
        "history": history,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": list((base.get("rootfs") or {}).get("diff_ids", [])) + [diff_id]},
    }
    if author:
        cfg["author"] = author
    if comment:
        cfg["comment"] = comment
    return cfg


def host_arch() -> str:
    m = os.uname().machine
    return {
        "x86_64": "amd64",
        "aarch64": "arm64",
        "i686": "386",
        "armv7l": "arm",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(m, m)


def _compact(obj: object) -> str:
    """A config as stored (and hashed into the image ID): compact JSON, as Docker writes it."""
    import json

    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def store_config(raw: bytes) -> str:
    """Write a config (its layers already stored) into imagedb; returns the image ID."""
    import hashlib

    image_id = hashlib.sha256(raw).hexdigest()
    cfg = fastjson.loads(raw)
    chains = _chains(cfg["rootfs"]["diff_ids"])
    for chain in chains:
        if not os.path.isdir(layer_path(chain)):
            raise CocinError(f"image {image_id[:12]}: layer {chain} is missing")
    meta = {
        "links": [c.partition(":")[2][:LINK_LEN] for c in reversed(chains)],
        "chains": chains,
        "size": sum(layer_size(c) for c in chains),
        "created": parse_time(cfg.get("created", "")),
    }
    os.makedirs(imagedb(), 0o700, exist_ok=True)
    path = os.path.join(imagedb(), image_id)
    if not os.path.exists(path):
        with state.AtomicFile(path, durable=False) as f:
            f.write(raw)
    state.atomic_write(path + ".meta", fastjson.dumps(meta))
    return image_id


def publish(raw: bytes, tag: str | None, replace: bool = False) -> Image:
    """Store the config ``raw`` and point ``tag`` (a ``tag_key``) at it."""
    repositories()  # an old store is upgraded first (it takes the lock)
    with state.locked():
        image_id = store_config(raw)
        repos = _read_repos()
        old = None
        if tag is not None:
            if tag in repos and repos[tag] != "sha256:" + image_id:
                if not replace:
                    raise CocinError(f"image {tag} already exists")
                old = repos[tag].partition(":")[2]
            repos[tag] = "sha256:" + image_id
            _write_repos(repos)
        if old is not None:
            _drop_image_if_unused(old, repos)
    return load_image(image_id)


def check_new_name(ref: str, replace: bool = False) -> str:
    """The tag key a new image gets (``import``, ``commit``, ``tag``), checked."""
    ref_ = reference.parse(ref)
    if ref_.digest:
        raise CocinError("refusing to create a tag with a digest reference")
    key = ref_.key()
    if not replace and key in repositories():
        raise CocinError(f"image {key} already exists (use --force to replace it)")
    return key


def import_tarball(
    path: str, ref: str, replace: bool = False, source: str = "", changes: list[str] | None = None, comment: str = ""
) -> Image:
    """Make a one-layer image from a ``docker export``-style tarball (.tar, .tar.gz, ...);
    ``changes``: Dockerfile instructions for its config (``import -c``)."""
    name = check_new_name(ref, replace)
    run_cfg = apply_changes({"Env": list(DEFAULT_ENV)}, changes or [])
    if not os.path.isfile(path):
        raise CocinError(f"cannot import {path}: no such file")
    return _extract_and_publish(path, name, source or f"import {os.path.basename(path)}", replace, run_cfg, comment)


def _extract_and_publish(
    path: str, name: str, source: str, replace: bool, run_cfg: dict | None = None, comment: str = ""
) -> Image:
    """A tarball's tree becomes a new one-layer image ``name``; nothing stays on failure."""
    from . import tarball

    tmp = staging()
    try:
        tarball.extract(path, os.path.join(tmp, "diff"))
    except BaseException:
        state.remove_tree(tmp)
        raise
    chain, did = add_layer(tmp, None)
    now = time.time()
    raw = _compact(new_config(None, did, now, source, run_cfg, comment=comment)).encode()
    return _publish_or_drop(raw, name, replace, chain)


def _publish_or_drop(raw: bytes, name: str | None, replace: bool, chain: str) -> Image:
    """Publish the image whose top layer ``chain`` was just added; if it is refused,
    the layer goes again (unless another image stands on it)."""
    try:
        return publish(raw, name, replace)
    except BaseException:
        with state.locked():
            _drop_orphan_layers([chain])
        raise


def _drop_orphan_layers(chains: list[str]) -> None:
    """Layers just added for an image that was then refused (under the lock)."""
    keep = chains_in_use()
    for chain in chains:
        if chain not in keep:
            _remove_layer(chain)


def _is_static(path: str) -> bool:
    """An ELF file without a PT_INTERP program header needs no dynamic loader."""
    import struct

    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            return False
        (phoff,) = struct.unpack_from("<Q", hdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def find_busybox() -> str | None:
    for p in BUSYBOX_PATHS:
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def _busybox_tree(src: str, rootfs: str) -> None:
    """One binary plus a symlink per applet is a complete userland. A dynamic
    busybox gets the libraries ``ldd`` lists copied next to it."""
    import shutil
    import subprocess

    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home",
        "var/log",
        "var/www",
        "run",
    ):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    shutil.copy2(src, os.path.join(rootfs, "bin/busybox"))
    os.chmod(os.path.join(rootfs, "bin/busybox"), 0o755)
    applets = subprocess.run([src, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        dst = os.path.join(rootfs, applet)
        if applet != "bin/busybox" and not os.path.lexists(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.symlink("/bin/busybox", dst)
    if not _is_static(src):
        out = subprocess.run(["ldd", src], capture_output=True, text=True).stdout
        for lib in (w for w in out.split() if w.startswith("/")):
            dst = os.path.join(rootfs, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(lib, dst)
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
        "etc/nsswitch.conf": "hosts: files dns\n",
        # Empty mount points for the container's own files, bound over
        # them at start: made here once rather than copied up into
        # every container's writable layer.
        "etc/hostname": "",
        "etc/hosts": "",
        "etc/resolv.conf": "",
    }
    for rel, text in files.items():
        with open(os.path.join(rootfs, rel), "w") as f:
            f.write(text)
    # Same times everywhere: the same busybox makes the same layer (diff_id).
    mtime = int(os.stat(src).st_mtime)
    from .layers import entries

    for fd, name, _rel, _st in entries(rootfs):
        os.utime(name, (mtime, mtime), dir_fd=fd, follow_symlinks=False)


def build_busybox() -> Image:
    """Build the one-layer ``busybox`` image from the host's busybox binary
    (``CMD ["sh"]`` as Docker Hub's busybox)."""
    src = find_busybox()
    if src is None:
        raise CocinError(
            "no busybox image and no busybox on this host: install one "
            "(apt-get install busybox-static) or import an image "
            "(cocin import rootfs.tar NAME)"
        )
    tmp = staging()
    try:
        _busybox_tree(src, os.path.join(tmp, "diff"))
    except BaseException:
        state.remove_tree(tmp)
        raise
    _chain, did = add_layer(tmp, None)
    created = os.stat(src).st_mtime // 1
    raw = _compact(new_config(None, did, created, f"host {src}", {"Cmd": ["sh"]})).encode()
    try:
        return publish(raw, "busybox:latest")
    except CocinError:  # built concurrently by another cocin: use that one
        return get("busybox")


def _users(image_id: str) -> list[state.Container]:
    return [r for r in state.load_all() if r.config.get("image_id") == image_id]


def tag(source: str, target: str) -> str:
    """``docker tag``: one more name for an image (a tag of that name moves)."""
    image_id, _key = resolve(source)
    key = check_new_name(target, replace=True)
    with state.locked():
        repos = _read_repos()
        old = repos.get(key, "").partition(":")[2]
        repos[key] = "sha256:" + image_id
        _write_repos(repos)
        if old and old != image_id:
            _drop_image_if_unused(old, repos)
    return key


def remove(ref: str, force: bool = False) -> list[str]:
    """``docker rmi``, with its rules; returns its report (``Untagged:``/``Deleted:`` lines).

    By name: the tag goes; the image goes with its last tag unless a container
    uses it (then the last tag stays, unless ``-f``). By ID (or a unique
    prefix): every tag and the image go, refused without ``-f`` when more than
    one name or a stopped container refers to it, and always while a running
    container uses it. An image a container still uses stays on disk, untagged,
    until that container is removed.
    """
    repositories()
    with state.locked():
        repos = _read_repos()
        image_id, key = resolve(ref, repos)
        tags = sorted(t for t, i in repos.items() if i == "sha256:" + image_id)
        users = _users(image_id)
        running = [r for r in users if state.is_running(r)]  # (reconcile takes the lock we hold)
        short = image_id[:12]
        if key is not None:  # by name
            if len(tags) == 1 and users and not force:
                raise CocinError(
                    f'conflict: unable to remove repository reference "{ref}" (must force) - '
                    f"container {users[0].short_id} is using its referenced image {short}"
                )
            drop = [key]
        else:
            if running:
                raise CocinError(
                    f"conflict: unable to delete {short} (cannot be forced) - image is being "
                    f"used by running container {running[0].short_id}"
                )
            if len(tags) > 1 and not force:
                raise CocinError(
                    f"conflict: unable to delete {short} (must be forced) - image is "
                    "referenced in multiple repositories"
                )
            if users and not force:
                raise CocinError(
                    f"conflict: unable to delete {short} (must be forced) - image is being "
                    f"used by stopped container {users[0].short_id}"
                )
            drop = tags
        for t in drop:
            del repos[t]
        _write_repos(repos)
        out = [f"Untagged: {t}" for t in drop]
        if not any(i == "sha256:" + image_id for i in repos.values()) and not users:
            out += [f"Deleted: {d}" for d in _drop_image_if_unused(image_id, repos)]
    return out


def commit(
    rec: state.Container,
    ref: str,
    replace: bool = False,
    comment: str = "",
    author: str = "",
    changes: list[str] | None = None,
) -> Image:
    """A new image: the container's image plus one layer of its changes.

    As ``docker commit``: the new image runs as the container did (its
    Entrypoint, Cmd, Env, WorkingDir, User), with ``-c`` Dockerfile
    instructions applied on top; ``-m`` a comment, ``-a`` an author (in the
    config and its history step).
    """
    from . import layers

    name = check_new_name(ref, replace)
    base = load_image(rec.config["image_id"], [])
    run_cfg = apply_changes(rec.config.get("image_config") or base.config.get("config") or {}, changes or [])
    tmp = staging()
    try:
        layers.copy_changes(os.path.join(rec.dir, "upper"), os.path.join(tmp, "diff"))
    except BaseException:
        state.remove_tree(tmp)
        raise
    chains = base.meta["chains"]
    chain, did = add_layer(tmp, chains[-1] if chains else None)
    raw = _compact(
        new_config(base.config, did, time.time(), " ".join(rec.argv), run_cfg, comment=comment, author=author)
    ).encode()
    return _publish_or_drop(raw, name, replace, chain)


CHANGES = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")


def _json_or_shell(value: str, shell: bool = True) -> list[str]:
    """``["a", "b"]`` (exec form) as it is; other text: ``/bin/sh -c TEXT`` (or words)."""
    import json

    if value.startswith("["):
        try:
            words = json.loads(value)
        except ValueError:
            words = None
        if isinstance(words, list) and all(isinstance(w, str) for w in words):
            return words
    if shell:
        return ["/bin/sh", "-c", value]
    return value.split()


def _pairs(value: str, what: str) -> list[tuple[str, str]]:
    """``K=V K2="v 2"`` or the old form ``K some value``."""
    import shlex

    try:
        words = shlex.split(value)
    except ValueError as e:
        raise CocinError(f"{what}: {e}") from None
    if words and "=" not in words[0]:
        return [(words[0], value.split(None, 1)[1] if len(words) > 1 else "")]
    out = []
    for w in words:
        key, eq, val = w.partition("=")
        if not eq or not key:
            raise CocinError(f"{what} names can not be blank: {w!r}")
        out.append((key, val))
    return out


def apply_changes(base: dict, changes: list[str]) -> dict:
    """A run config (``Cmd``, ``Env``...) with ``commit -c`` / ``import -c``
    Dockerfile instructions applied."""
    cfg = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in base.items()}
    for change in changes:
        inst, _, value = change.strip().partition(" ")
        inst, value = inst.upper(), value.strip()
        if inst not in CHANGES:
            raise CocinError(f"{inst.lower() if inst else repr(change)} is not a valid change command")
        if inst == "CMD":
            cfg["Cmd"] = _json_or_shell(value)
        elif inst == "ENTRYPOINT":
            cfg["Entrypoint"] = _json_or_shell(value)
            cfg.setdefault("Cmd", None)
        elif inst == "ENV":
            env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [])
            env.update(_pairs(value, "ENV"))
            cfg["Env"] = [f"{k}={v}" for k, v in env.items()]
        elif inst == "EXPOSE":
            ports = cfg.get("ExposedPorts") or {}
            for p in value.split():
                ports[p if "/" in p else p + "/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif inst == "LABEL":
            cfg["Labels"] = {**(cfg.get("Labels") or {}), **dict(_pairs(value, "LABEL"))}
        elif inst == "VOLUME":
            cfg["Volumes"] = {**(cfg.get("Volumes") or {}), **{v: {} for v in _json_or_shell(value, False)}}
        elif inst == "ONBUILD":
            cfg["OnBuild"] = (cfg.get("OnBuild") or []) + [value]
        else:
            cfg[{"STOPSIGNAL": "StopSignal", "USER": "User", "WORKDIR": "WorkingDir"}[inst]] = value
    return cfg


def history(img: Image) -> list[dict]:
    """``docker history``: the image's steps, newest first, with their layers' sizes."""
    chains = list(img.meta.get("chains", []))
    out = []
    for step in img.config.get("history") or []:
        size = 0
        if not step.get("empty_layer") and chains:
            size = layer_size(chains.pop(0))
        out.append(
            {
                "created": parse_time(step.get("created", "")),
                "created_by": step.get("created_by", ""),
                "size": size,
                "comment": step.get("comment", ""),
            }
        )
    out.reverse()
    for i, step in enumerate(out):
        step["id"] = img.id if i == 0 else ""
    return out


def _write_tar(tree: str, out: str, pax: dict[str, str] | None = None) -> None:
    """A plain tarball of ``tree`` (members named ``bin/sh``, not ``./bin/sh``).

    ``tarfile`` keeps modes, owners, symlinks, device nodes and (by inode)
    hard links. Extra metadata rides in a pax global header, which ``tar``
    and ``docker import`` simply skip. A file ``out`` appears complete or not
    at all, mode 0600 as Docker makes it (``state.AtomicFile``).
    """
    state.write_output(out, lambda f, stream: _tar_tree(tree, f, pax, stream))


def _tar_tree(tree: str, fileobj, pax: dict[str, str] | None, stream: bool = False) -> None:
    """Write the tarball: every entry of ``tree`` in ``tar``'s order, each
    reached as ``/proc/self/fd/DIR/NAME`` (``layers.entries``): a short path
    at any depth, where ``tarfile.add`` would recurse once per level.
    ``stream``: a pipe or device, which cannot seek (tarfile's ``w|`` mode)."""
    import tarfile

    from .layers import entries

    with tarfile.open(
        mode="w|" if stream else "w", fileobj=fileobj, format=tarfile.PAX_FORMAT, pax_headers=pax or {}
    ) as tf:
        for fd, name, rel, _st in entries(tree):
            path = f"/proc/self/fd/{fd}/{name}"
            info = tf.gettarinfo(path, arcname=rel)
            if info is None:  # a socket: not content
                continue
            if info.isreg():
                with open(path, "rb") as f:
                    tf.addfile(info, f)
            else:
                tf.addfile(info)


def _flat_scratch() -> str:
    make_layers_dir()
    scratch = os.path.join(layers_dir(), f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(scratch, 0o755)
    return scratch


def export(rec: state.Container, out: str) -> None:
    """``docker export``: the container's merged filesystem as a tarball."""
    from . import layers

    scratch = _flat_scratch()
    try:
        layers.flatten(rec.config["lower"], os.path.join(rec.dir, "upper"), scratch)
        _write_tar(scratch, out)
    finally:
        state.remove_tree(scratch)


PAX_KEY = "COCIN.image"


def load(path: str, replace: bool = False) -> Image:
    """Load a single-tree archive of older cocin versions (its name in a pax header)."""
    import tarfile

    try:
        with tarfile.open(path, "r:*") as tf:
            meta = tf.pax_headers.get(PAX_KEY)
    except (tarfile.TarError, OSError):
        raise CocinError(f"cannot read {path}: not a valid tar archive") from None
    if not meta:
        raise CocinError(f"{path} is not an image saved by cocin save: use 'cocin import FILE NAME'")
    name = check_new_name(fastjson.loads(meta)["name"], replace)
    return _extract_and_publish(path, name, f"load {os.path.basename(path)}", replace)
