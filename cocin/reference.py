"""Image references as Docker reads them: ``[registry[:port]/]repo[:tag][@sha256:digest]``.

A reference names an image in a registry. Its parts:

* the **domain**, the registry's host (and port): the first ``/``-separated
  component when it looks like a host name, that is when it holds a ``.`` or
  a ``:`` or is ``localhost`` (``127.0.0.1:5000/x``, ``ghcr.io/x``);
  otherwise Docker Hub, ``docker.io``;
* the **path**, lowercase components such as ``library/busybox`` joined by
  ``/``; on Docker Hub a one-component path gets the ``library/`` namespace
  of the official images, so ``busybox`` is ``docker.io/library/busybox``;
* a **tag** (``latest`` when neither tag nor digest is given), or a
  **digest**, ``sha256:`` and 64 hex digits: the content's own name.

The *familiar* form drops what is implied (``docker.io/``, ``library/``):
``busybox:latest``. That is how cocin prints references and keys its tags.
The grammar is distribution's ``reference`` package, written out by hand:
``re`` costs a few milliseconds of import on ``cocin run``'s path.
"""

from __future__ import annotations

from .state import CocinError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL = "library/"
NAME_MAX = 255
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_HEX = frozenset("0123456789abcdef")
_TAG_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_TAG_REST = _TAG_FIRST | frozenset(".-")
_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


class Reference:
    """A parsed, normalized reference (``domain``, ``path``, ``tag``, ``digest``)."""

    def __init__(self, domain: str, path: str, tag: str | None, digest: str | None):
        self.domain, self.path, self.tag, self.digest = domain, path, tag, digest

    @property
    def name(self) -> str:
        """The full repository name: ``docker.io/library/busybox``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository as people write it: ``busybox``, ``user/app``, ``ghcr.io/x/y``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL) and "/" not in self.path[len(OFFICIAL) :]:
            return self.path[len(OFFICIAL) :]
        return self.path

    def key(self) -> str:
        """The familiar reference, tag or digest included: ``busybox:latest``."""
        if self.digest:
            return f"{self.familiar_name}@{self.digest}"
        return f"{self.familiar_name}:{self.tag}"

    def __str__(self) -> str:
        return self.key()

    def __repr__(self) -> str:
        return f"Reference({self.name!r}, tag={self.tag!r}, digest={self.digest!r})"


def _bad(text: str, why: str = "") -> CocinError:
    return CocinError("invalid reference format" + (f": {why}" if why else ""))


def _component_ok(c: str) -> bool:
    """``[a-z0-9]+`` runs joined by one separator each: ``.``, ``_``, ``__`` or ``-``+."""
    if not c or c[0] not in _LOWER or c[-1] not in _LOWER:
        return False
    i = 0
    while i < len(c):
        if c[i] in _LOWER:
            i += 1
            continue
        j = i
        while j < len(c) and c[j] not in _LOWER:
            j += 1
        sep = c[i:j]
        if not (sep in (".", "_", "__") or set(sep) == {"-"}):
            return False
        i = j
    return True


def _domain_ok(d: str) -> bool:
    host, _, port = d.partition(":")
    if ":" in d and (not port or not port.isdigit()):
        return False
    labels = host.split(".")
    return all(lb and set(lb) <= _HOST and lb[0] != "-" and lb[-1] != "-" for lb in labels)


def is_digest(text: str) -> bool:
    algo, _, hexpart = text.partition(":")
    return algo == "sha256" and len(hexpart) == 64 and set(hexpart) <= _HEX


def looks_like_domain(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost"


def parse(text: str, default_tag: str | None = "latest") -> Reference:
    """Parse and normalize ``text``; ``default_tag`` is added when neither a tag
    nor a digest is given (``None``: leave it out, as for a repository filter)."""
    rest, at, digest = text.partition("@")
    if at and not is_digest(digest):
        raise _bad(text)
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not tag or len(tag) > 128 or tag[0] not in _TAG_FIRST or not set(tag) <= _TAG_REST:
            raise _bad(text)
    if not rest:
        raise _bad(text)
    first, sep, remainder = rest.partition("/")
    if sep and looks_like_domain(first):
        domain, path = first, remainder
        if not _domain_ok(domain):
            raise _bad(text)
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if path != path.lower():
        raise _bad(text, f"repository name ({path}) must be lowercase")
    if not all(_component_ok(c) for c in path.split("/")):
        raise _bad(text)
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL + path
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise CocinError("invalid reference format: repository name must not be more than 255 characters")
    if tag is None and not at:
        tag = default_tag
    return Reference(domain, path, tag, digest if at else None)


def is_id_prefix(text: str) -> bool:
    """``a1b2c3`` or ``sha256:a1b2c3...``: hex digits that can name an image by its ID."""
    hexpart = text[7:] if text.startswith("sha256:") else text
    return 0 < len(hexpart) <= 64 and set(hexpart) <= _HEX
