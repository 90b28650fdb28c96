"""Images: a read-only directory tree per image, plus a little metadata.

An image is a name, ``<root>/images/<name>.json``, pointing at a layer,
``<root>/layers/<id>/``: the tree that becomes the lower, read-only layer of
every container's overlay. As in Docker, ``rmi -f`` removes the name while a
container still uses the layer; the layer goes with its last user. Images come
from ``docker export``-style tarballs (``import``), from a container
(``commit``), or, for ``busybox``, from the host's own busybox binary.
"""

from __future__ import annotations

import os
import stat
import sys
import time

from . import fastjson, state
from .record import Record
from .state import CocinError, NotFound

_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")


class Image(Record):
    name: str
    id: str
    created: float
    size: int
    source: str
    comment: str = ""   # commit -m, shown as Comment by inspect
    author: str = ""    # commit -a

    @property
    def rootfs(self) -> str:
        return layer_dir(self.id)


def images_dir() -> str:
    return os.path.join(state.root(), "images")


def image_file(name: str) -> str:
    return os.path.join(images_dir(), name + ".json")


def layer_dir(image_id: str) -> str:
    return os.path.join(state.root(), "layers", image_id)


def _read(path: str) -> Image:
    with open(path) as f:
        return Image(**fastjson.loads(f.read()))


def normalize(ref: str) -> str:
    """``busybox:latest`` and ``busybox`` are the same image; check the name."""
    name = ref[:-7] if ref.endswith(":latest") else ref
    if not state.valid_name(name, _LOWER_ALNUM) or ".." in name:
        raise CocinError(f"invalid image name {ref!r}: use lowercase letters, digits, '_', '.', '-'")
    return name


def get(ref: str) -> Image:
    """Look an image up; ``busybox`` is built from the host on first use."""
    name = normalize(ref)
    try:
        return _read(image_file(name))
    except FileNotFoundError:
        pass
    if name == "busybox":
        return build_busybox()
    raise NotFound(f"No such image: {ref}")


def list_images() -> list[Image]:
    out = []
    try:
        names = sorted(os.listdir(images_dir()))
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            out.append(_read(os.path.join(images_dir(), name)))
        except (FileNotFoundError, ValueError, TypeError):
            continue
    return out


def tree_size(path: str) -> int:
    """Bytes of the files under ``path`` (as ``du --apparent-size`` counts)."""
    from .layers import entries

    return sum(st.st_size for _fd, _name, _rel, st in entries(path) if not stat.S_ISDIR(st.st_mode))


def staging() -> str:
    """A fresh layer directory, published under its ID when complete.

    Until then it is named ``.tmp-*``, which a crash may leave behind but no
    image ever points at.
    """
    os.makedirs(os.path.join(state.root(), "layers"), 0o700, exist_ok=True)
    os.makedirs(images_dir(), 0o700, exist_ok=True)
    tmp = layer_dir(f".tmp-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(tmp, 0o755)
    return tmp


def publish(tmp: str, name: str, source: str, replace: bool = False, **meta: str) -> Image:
    """Give a staged layer its ID and point the image name at it."""
    img = Image(name=name, id=os.urandom(32).hex(), created=time.time(),
                size=tree_size(tmp), source=source, **meta)
    with state.locked():
        old = None
        if os.path.exists(image_file(name)):
            if not replace:
                state.remove_tree(tmp)
                raise CocinError(f"image {name} already exists")
            old = _read(image_file(name))
        os.rename(tmp, img.rootfs)
        state.atomic_write(image_file(name), fastjson.dumps(img.to_dict()))
        if old is not None:
            _drop_layer_if_unused(old.id)
    return img


def _drop_layer_if_unused(image_id: str) -> None:
    """Delete a layer no image name and no container refers to (under the lock)."""
    if any(i.id == image_id for i in list_images()):
        return
    if any(r.config.get("image_id") == image_id for r in state.load_all()):
        return
    state.remove_tree(layer_dir(image_id))


def gc_layer(image_id: str, name: str = "") -> None:
    """Called when a container is removed: its layer may now be unused.

    The common case is answered by one file: the container's image name still
    points at the layer. (An ``rmi`` racing with us sees the container gone
    and drops the layer itself.)
    """
    try:
        if name and _read(image_file(name)).id == image_id:
            return
    except (OSError, ValueError, TypeError):
        pass
    if image_id:
        with state.locked():
            _drop_layer_if_unused(image_id)


def check_new_name(ref: str, replace: bool = False) -> str:
    name = normalize(ref)
    if not replace and os.path.exists(image_file(name)):
        raise CocinError(f"image {name} already exists (use --force to replace it)")
    return name


def import_tarball(path: str, ref: str, replace: bool = False) -> Image:
    """Make an image from a ``docker export``-style tarball (.tar, .tar.gz, ...)."""

    name = check_new_name(ref, replace)
    if not os.path.isfile(path):
        raise CocinError(f"cannot import {path}: no such file")
    return _extract_and_publish(path, name, f"import {os.path.basename(path)}", replace)


def _extract_and_publish(path: str, name: str, source: str, replace: bool) -> Image:
    """A tarball's tree becomes a new layer under ``name``; nothing stays on failure."""
    from . import tarball

    tmp = staging()
    try:
        tarball.extract(path, tmp)
    except BaseException:
        state.remove_tree(tmp)
        raise
    return publish(tmp, name, source, replace)


def _is_static(path: str) -> bool:
    """An ELF file without a PT_INTERP program header needs no dynamic loader."""
    import struct

    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", hdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def find_busybox() -> str | None:
    for p in BUSYBOX_PATHS:
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def build_busybox() -> Image:
    """Build the ``busybox`` image from the host's busybox binary.

    One binary plus a symlink per applet is a complete userland. A dynamic
    busybox gets the libraries ``ldd`` lists copied next to it.
    """
    import shutil
    import subprocess

    src = find_busybox()
    if src is None:
        raise CocinError("no busybox image and no busybox on this host: install one "
                         "(apt-get install busybox-static) or import an image "
                         "(cocin import rootfs.tar NAME)")
    tmp = staging()
    try:
        rootfs = tmp
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev",
                  "tmp", "root", "home", "var/log", "var/www", "run"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
        shutil.copy2(src, os.path.join(rootfs, "bin/busybox"))
        os.chmod(os.path.join(rootfs, "bin/busybox"), 0o755)
        applets = subprocess.run([src, "--list-full"], capture_output=True, text=True,
                                 check=True).stdout.split()
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
            "etc/hostname": "", "etc/hosts": "", "etc/resolv.conf": "",
        }
        for rel, text in files.items():
            with open(os.path.join(rootfs, rel), "w") as f:
                f.write(text)
    except BaseException:
        state.remove_tree(tmp)
        raise
    try:
        return publish(tmp, "busybox", f"host {src}")
    except CocinError:  # built concurrently by another cocin: use that one
        return _read(image_file("busybox"))


def remove(ref: str, force: bool = False) -> str:
    """Remove an image name; its layer goes too unless a container uses it."""
    name = normalize(ref)
    with state.locked():
        try:
            img = _read(image_file(name))
        except FileNotFoundError:
            raise NotFound(f"No such image: {ref}") from None
        used = [r for r in state.load_all() if r.config.get("image_id") == img.id]
        if used and not force:
            raise CocinError(f"unable to remove image {name}: container {used[0].short_id} "
                             "uses it (remove the container first, or use -f)")
        os.unlink(image_file(name))
        _drop_layer_if_unused(img.id)
    return name


# --- commit, export, save, load ------------------------------------------------

def commit(rec: state.Container, ref: str, replace: bool = False, comment: str = "",
           author: str = "") -> Image:
    """A new image from a container's filesystem (running or stopped)."""
    from . import layers

    name = check_new_name(ref, replace)
    tmp = staging()
    try:
        layers.flatten(rec.config["lower"], os.path.join(rec.dir, "upper"), tmp)
    except BaseException:
        state.remove_tree(tmp)
        raise
    return publish(tmp, name, f"commit {rec.short_id}", replace, comment=comment, author=author)


def _write_tar(tree: str, out: str, pax: dict[str, str] | None = None) -> None:
    """A plain tarball of ``tree`` (members named ``bin/sh``, not ``./bin/sh``).

    ``tarfile`` keeps modes, owners, symlinks, device nodes and (by inode)
    hard links. Extra metadata rides in a pax global header, which ``tar``
    and ``docker import`` simply skip. A file ``out`` appears complete or not
    at all, mode 0600 as Docker makes it (``state.AtomicFile``).
    """
    if out == "-":
        _tar_tree(tree, sys.stdout.buffer, pax, stream=True)
        return
    try:
        special = not stat.S_ISREG(os.lstat(out).st_mode) and not stat.S_ISLNK(os.lstat(out).st_mode)
    except FileNotFoundError:
        special = False
    if special:  # /dev/null, a FIFO: written to, never renamed over (that would replace a device)
        try:
            fd = os.open(out, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise CocinError(f"cannot write {out}: {e.strerror}") from None
        with os.fdopen(fd, "wb") as f:
            _tar_tree(tree, f, pax, stream=True)
        return
    try:
        atomic = state.AtomicFile(out)
    except OSError as e:
        raise CocinError(f"cannot write {out}: {e.strerror}") from None
    with atomic as f:
        _tar_tree(tree, f, pax)


def _tar_tree(tree: str, fileobj, pax: dict[str, str] | None, stream: bool = False) -> None:
    """Write the tarball: every entry of ``tree`` in ``tar``'s order, each
    reached as ``/proc/self/fd/DIR/NAME`` (``layers.entries``): a short path
    at any depth, where ``tarfile.add`` would recurse once per level.
    ``stream``: a pipe or device, which cannot seek (tarfile's ``w|`` mode)."""
    import tarfile

    from .layers import entries

    with tarfile.open(mode="w|" if stream else "w", fileobj=fileobj, format=tarfile.PAX_FORMAT,
                      pax_headers=pax or {}) as tf:
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


def export(rec: state.Container, out: str) -> None:
    """``docker export``: the container's merged filesystem as a tarball."""
    from . import layers

    scratch = staging()
    try:
        layers.flatten(rec.config["lower"], os.path.join(rec.dir, "upper"), scratch)
        _write_tar(scratch, out)
    finally:
        state.remove_tree(scratch)


PAX_KEY = "COCIN.image"


def save(ref: str, out: str) -> None:
    """An image as a tarball: its tree, plus its name in a pax header."""
    img = get(ref)
    _write_tar(img.rootfs, out, {PAX_KEY: fastjson.dumps({"name": img.name, "source": img.source})})


def load(path: str, replace: bool = False) -> Image:
    """The reverse of ``save``: the image keeps the name it was saved with."""
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
