"""Helpers the layer tests share (tests/unit and tests/host): tarballs to
extract, and a layer's canonical tarball."""

from __future__ import annotations

import io
import tarfile

from cocin import layers


def make_tar(path, *members: tuple) -> str:
    """A tarball of (name, type, extra TarInfo attributes, data) members."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, attrs, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, 0o644
            for k, v in attrs.items():
                setattr(info, k, v)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data else None)
    return str(path)


def layer_tar(top) -> bytes:
    buf = io.BytesIO()
    n = layers.write_layer_tar(str(top), buf.write)
    assert n == len(buf.getvalue())
    return buf.getvalue()
