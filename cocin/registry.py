"""``pull``: fetching an image from a registry, with the standard library only.

A registry speaks the OCI distribution API over HTTP(S):

1. ``GET /v2/NAME/manifests/REF`` answers a **manifest** (the config blob's
   and the layers' digests) or an **index** / manifest list (one manifest per
   platform: the host's is picked, ``linux/amd64`` here). The client says
   which formats it reads in ``Accept`` and learns which one came from
   ``Content-Type``. A manifest's digest is the sha256 of its bytes as
   received: pulling by digest is checked against it.
2. ``GET /v2/NAME/blobs/DIGEST`` answers the config, then each layer: a tar,
   usually gzip-compressed. Every blob is checked against its digest and
   size; each layer's uncompressed tar against the config's ``diff_id``.
   Layers already stored (same chain ID) are not fetched again.
3. **Auth**: a ``401`` names a scheme in ``WWW-Authenticate``. ``Basic``: the
   credentials go with every request. ``Bearer`` (Docker Hub's): a token is
   asked for at the named realm (anonymously, or with the credentials), for
   the *scopes* needed (``repository:NAME:pull``, ``pull,push`` to push),
   then sent as ``Authorization: Bearer``. Credentials come from Docker's own
   file, ``~/.docker/config.json`` (``$DOCKER_CONFIG``), where ``login``
   (``auth``) puts them. The header is never sent along a redirect: blob
   stores behind a ``307`` (S3, CDNs) refuse requests that carry one.

Layers are fetched three at once (threads: the work is waiting on sockets
and zlib, which both let go of the GIL) and stored bottom first. Progress
is printed as Docker prints it. What ``push`` needs later is remembered here:
which compressed blob holds which layer, and where it was seen.

Plain HTTP only for ``localhost`` and 127.0.0.0/8, as Docker allows without
configuration, and for registries listed in ``COCIN_INSECURE_REGISTRIES``
(after trying TLS without checks, as Docker's ``insecure-registries``);
HTTPS with the system's CA store otherwise. Docker Hub names may come from
mirrors (``COCIN_REGISTRY_MIRRORS``). Nothing half-made stays after a
failure: blobs are downloaded into the store's staging area and removed,
layers stored for an image that then fails to complete are removed too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

from . import images, reference, state
from .state import CocinError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
GZIP = ("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip")
PLAIN = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")
ZSTD = ("application/vnd.oci.image.layer.v1.tar+zstd",)
HUB = "registry-1.docker.io"
TIMEOUT = 60
CHUNK = 1 << 20


def _is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name == "localhost" or (name.startswith("127.") and name.replace(".", "").isdigit())


def _listed_insecure(host: str) -> bool:
    """Is ``host`` (``name[:port]``) in ``COCIN_INSECURE_REGISTRIES`` (a comma
    list of ``host[:port]`` or CIDRs, as Docker's ``insecure-registries``)?"""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for item in os.environ.get("COCIN_INSECURE_REGISTRIES", "").split(","):
        item = item.strip().split("://")[-1].rstrip("/")
        if not item:
            continue
        if item in (host, name):
            return True
        if "/" in item:
            import ipaddress

            try:
                if ipaddress.ip_address(name) in ipaddress.ip_network(item, strict=False):
                    return True
            except ValueError:
                continue
    return False


def insecure(host: str) -> bool:
    """May ``host`` be spoken to without a verified TLS connection?"""
    return _is_local(host) or _listed_insecure(host)


def base_url(host: str) -> str:
    """Plain HTTP for loopback (Docker allows it unconfigured); HTTPS otherwise
    (a listed insecure registry: tried without certificate checks first, then
    over plain HTTP, see ``Client.send``)."""
    return ("http://" if _is_local(host) else "https://") + host


def _https_handlers(host: str) -> list:
    if _is_local(host) or not _listed_insecure(host):
        return []
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return [urllib.request.HTTPSHandler(context=ctx)]


def docker_config_path() -> str:
    """Docker's client configuration: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    return os.path.join(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json")


def credentials(domain: str) -> tuple[str, str] | None:
    """user, password for ``domain`` from Docker's config.json: its credential
    helper (``credHelpers``/``credsStore``, see ``auth``), else ``auths``
    (``auth``: base64 of user:pass)."""
    path = docker_config_path()
    try:
        with open(path) as f:
            data = json.load(f)
        auths = data.get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    key = "https://index.docker.io/v1/" if domain == reference.DEFAULT_DOMAIN else domain
    helper = (data.get("credHelpers") or {}).get(domain) or data.get("credsStore")
    if helper:
        from . import auth

        found = auth.helper_get(helper, key)
        if found:
            return found
    keys = [domain, "https://" + domain, "http://" + domain]
    if domain == reference.DEFAULT_DOMAIN:
        keys += ["https://index.docker.io/v1/", "index.docker.io", HUB]
    for key in keys:
        entry = auths.get(key) or auths.get(key.rstrip("/"))
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                why = "auth is not base64 of user:password"
                raise CocinError(f"invalid credentials for {key} in {path}: {why}") from None
            return user, password
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="repository:x:pull,push"`` -> scheme, params.
    Quoted values may hold commas: read them as quoted strings, never split on commas."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " ,":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lower()
        i = eq + 1
        if i < len(rest) and rest[i] == '"':
            j = i + 1
            value = []
            while j < len(rest) and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < len(rest):
                    j += 1
                value.append(rest[j])
                j += 1
            params[key] = "".join(value)
            i = j + 1
        else:
            j = rest.find(",", i)
            j = len(rest) if j < 0 else j
            params[key] = rest[i:j].strip()
            i = j
    return scheme.lower(), params


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None  # the 3xx is raised as an HTTPError, for the caller to read


class Client:
    """One repository of one registry, with its auth state.

    ``actions`` is what the token asks for on the repository (``pull``, or
    ``pull,push``); ``more_scopes`` adds scopes on other repositories (a
    cross-repository mount needs ``pull`` on the source)."""

    def __init__(
        self, ref: reference.Reference, actions: str = "pull", more_scopes: tuple[str, ...] = (), mirror: str = ""
    ):
        self.ref = ref
        self.verb = "push" if "push" in actions else "pull"
        host = HUB if ref.domain == reference.DEFAULT_DOMAIN else ref.domain
        self.base = base_url(host)
        self.creds = credentials(ref.domain)
        if mirror:  # a Docker Hub mirror: its URL as given, its own credentials
            self.base = mirror.rstrip("/")
            host = urllib.parse.urlsplit(self.base).netloc
            self.creds = credentials(host)
        self.auth: str | None = None  # the Authorization header that worked
        self.scopes = [f"repository:{ref.path}:{actions}", *more_scopes]
        self.opener = urllib.request.build_opener(*_https_handlers(host))
        # A HEAD is not followed: urllib would turn it into a GET of the whole blob. A
        # registry that redirects a blob (to its store) has it.
        self.head_opener = urllib.request.build_opener(_NoRedirect, *_https_handlers(host))

    def _open(self, method: str, url: str, headers: dict[str, str], body=None):
        # bytes; a path, or a function making a file: opened again on each try (a retry after a 401)
        data = open(body, "rb") if isinstance(body, str) else body() if callable(body) else body
        try:
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            if self.auth and urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(self.base).netloc:
                req.add_unredirected_header("Authorization", self.auth)
            return (self.head_opener if method == "HEAD" else self.opener).open(req, timeout=TIMEOUT)
        finally:
            if isinstance(body, str) or callable(body):
                data.close()

    def url(self, path: str) -> str:
        """``/v2/NAME/path``, or ``path`` itself when it is a URL (an upload's ``Location``)."""
        return (
            urllib.parse.urljoin(self.base + "/", path)
            if path.startswith(("/", "http:", "https:"))
            else (f"{self.base}/v2/{self.ref.path}/{path}")
        )

    def send(self, method: str, path: str, headers: dict[str, str] | None = None, body=None, allow=()):
        """One request, authenticating once on a 401; a status in ``allow``
        (404 for "not there") is given back as the error response instead of raised."""
        url = self.url(path)
        for attempt in range(2):
            try:
                return self._open(method, url, headers or {}, body)
            except urllib.error.HTTPError as e:
                if e.code == 401 and attempt == 0 and self._authenticate(e.headers.get("WWW-Authenticate", "")):
                    continue
                if e.code in allow:
                    return e
                raise CocinError(self._error(e)) from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                if self._fall_back_to_http(url):
                    return self.send(method, path, headers, body, allow)
                raise CocinError(f"cannot reach the registry {self.base}: {reason}") from None
        raise AssertionError("unreachable")

    def _fall_back_to_http(self, url: str) -> bool:
        """A listed insecure registry that does not speak TLS: plain HTTP from now on."""
        host = urllib.parse.urlsplit(self.base).netloc
        if not self.base.startswith("https://") or not _listed_insecure(host) or not url.startswith(self.base):
            return False
        self.base = "http://" + host
        return True

    def get(self, path: str, accept: str | None = None):
        """GET ``/v2/NAME/path``, authenticating once on a 401."""
        return self.send("GET", path, {"Accept": accept} if accept else {})

    def _basic(self) -> str:
        return "Basic " + base64.b64encode(":".join(self.creds).encode()).decode()

    def _authenticate(self, challenge: str, scopes: list[str] | None = None) -> bool:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.creds:
                return False
            self.auth = self._basic()
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        if scopes is None:
            scopes = list(dict.fromkeys(([params["scope"]] if params.get("scope") else []) + self.scopes))
        query = [("service", params.get("service", ""))] + [("scope", s) for s in scopes]
        if self.creds:
            query.append(("account", self.creds[0]))
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query)
        req = urllib.request.Request(url)
        if self.creds:
            req.add_unredirected_header("Authorization", self._basic())
        try:
            with self.opener.open(req, timeout=TIMEOUT) as resp:
                answer = json.load(resp)
        except urllib.error.HTTPError as e:
            if e.code == 401 and self.creds:
                raise CocinError(f"unauthorized: incorrect username or password for {self.ref.domain}") from None
            raise CocinError(f"authentication at {params['realm']} failed: {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise CocinError(f"cannot get a token from {params['realm']}: {getattr(e, 'reason', e)}") from None
        token = answer.get("token") or answer.get("access_token")
        if not token:
            return False
        self.auth = "Bearer " + token
        return True

    def _error(self, e: urllib.error.HTTPError) -> str:
        try:
            errors = json.loads(e.read() or b"{}").get("errors") or []
        except (ValueError, OSError):
            errors = []
        what = (
            "; ".join(f"{x.get('code', '').lower().replace('_', ' ')}: {x.get('message', '')}" for x in errors)
            or f"{e.code} {e.reason}"
        )
        if e.code in (401, 403):
            return (
                f"{self.verb} access denied for {self.ref.familiar_name}: {what} (log in first: "
                f"cocin login {self.ref.domain if self.ref.domain != reference.DEFAULT_DOMAIN else ''})"
            ).replace(" )", ")")
        if e.code == 404 and self.verb == "pull":
            return f"manifest for {self.ref} not found: {what}"
        if e.code == 405:
            return f"the registry {self.base} refuses to {self.verb} {self.ref.familiar_name}: {what} (read-only?)"
        return f"error from the registry {self.base}: {what}"


def _sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_digest(digest: str) -> None:
    if not reference.is_digest(digest):
        raise CocinError(f"unsupported digest {digest!r}: only sha256 is")


def fetch_manifest(client: Client, ref: str) -> tuple[bytes, str, str]:
    """The manifest (or index) ``ref`` names: raw bytes, media type, digest (checked)."""
    with client.get(f"manifests/{ref}", ACCEPT) as resp:
        raw = resp.read()
        mediatype = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
        header = resp.headers.get("Docker-Content-Digest")
    digest = _sha256_of(raw)
    expected = ref if ref.startswith("sha256:") else header
    if expected and expected != digest:
        raise CocinError(f"manifest digest mismatch: expected {expected}, got {digest}")
    if not mediatype or mediatype in ("application/json", "text/plain"):
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        mediatype = body.get("mediaType") or (OCI_INDEX if "manifests" in body else OCI_MANIFEST)
    return raw, mediatype, digest


def _platform_str(p: dict) -> str:
    return "/".join(x for x in (p.get("os", "?"), p.get("architecture", "?"), p.get("variant")) if x)


def pick_platform(index: dict, os_name: str, arch: str, variant: str | None = None) -> dict:
    """The entry of an index for ``os_name/arch`` (never the first by default);
    attestations (``unknown/unknown``) are skipped."""
    found = []
    for entry in index.get("manifests") or []:
        p = entry.get("platform") or {}
        if p.get("os") == "unknown" or (entry.get("annotations") or {}).get("vnd.docker.reference.type"):
            continue
        found.append(_platform_str(p))
        if (
            p.get("os") == os_name
            and p.get("architecture") == arch
            and (variant is None or p.get("variant") in (None, variant))
        ):
            return entry
    listed = ", ".join(found) or "none"
    raise CocinError(f"no matching manifest for {os_name}/{arch} in the manifest list entries (found: {listed})")


def _download(client: Client, desc: dict, dest: str, progress=None) -> None:
    """A blob into the file ``dest``, checked against its digest and size while
    it streams; ``progress(bytes so far, size)`` after each chunk."""
    digest, size = desc["digest"], desc.get("size")
    _check_digest(digest)
    h, n = hashlib.sha256(), 0
    with client.get(f"blobs/{digest}") as resp, open(dest, "wb") as out:
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
            if size is not None and n > size:
                raise CocinError(f"blob {digest}: more than the {size} bytes announced")
            out.write(chunk)
            if progress:
                progress(n, size)
    if size is not None and n != size:
        raise CocinError(f"blob {digest}: {n} bytes, {size} announced")
    if "sha256:" + h.hexdigest() != digest:
        raise CocinError(f"blob {digest}: digest mismatch (got sha256:{h.hexdigest()})")


def _decompress(blob: str, mediatype: str, tar: str) -> str:
    """Write the layer's uncompressed tar to ``tar``; its diff_id. The
    compression is read from the blob's first bytes, as Docker and containerd
    do, not from the media type: clients label plain tars ``tar.gzip`` (skopeo
    1.9 does when it reuses an uncompressed blob the registry already has)."""
    h = hashlib.sha256()
    if mediatype not in GZIP + PLAIN + ZSTD:
        raise CocinError(f"unsupported layer type {mediatype}")
    with open(blob, "rb") as f:
        magic = f.read(4)
    mediatype = GZIP[0] if magic[:2] == b"\x1f\x8b" else ZSTD[0] if magic == b"\x28\xb5\x2f\xfd" else PLAIN[0]
    if mediatype in GZIP or mediatype in PLAIN:
        import gzip

        opener = gzip.open if mediatype in GZIP else open
        try:
            with opener(blob, "rb") as src, open(tar, "wb") as out:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
        except (OSError, EOFError) as e:
            raise CocinError(f"cannot decompress a layer: {e}") from None
    elif mediatype in ZSTD:
        if shutil.which("zstd") is None:
            raise CocinError("the image has zstd-compressed layers: install the zstd command (apt-get install zstd)")
        with open(blob, "rb") as src, open(tar, "wb") as out:
            proc = subprocess.Popen(["zstd", "-dc"], stdin=src, stdout=subprocess.PIPE)
            for chunk in iter(lambda: proc.stdout.read(CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
            if proc.wait() != 0:
                raise CocinError("cannot decompress a zstd layer")
    else:
        raise CocinError(f"unsupported layer type {mediatype}")
    return "sha256:" + h.hexdigest()


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def parse_platform(text: str | None) -> tuple[str, str, str | None]:
    """``linux/arm64/v8`` -> (os, architecture, variant); ``None``: the host's."""
    if not text:
        return "linux", images.host_arch(), None
    parts = text.lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise CocinError(f"invalid platform {text!r}: use os/arch[/variant], e.g. linux/arm64")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def mirrors() -> list[str]:
    """Docker Hub's mirrors (Docker's ``registry-mirrors``): ``COCIN_REGISTRY_MIRRORS``,
    a comma list of URLs (``https://mirror.example``, ``http://127.0.0.1:5000``)."""
    found = []
    for item in os.environ.get("COCIN_REGISTRY_MIRRORS", "").split(","):
        item = item.strip()
        if item:
            if not item.startswith(("http://", "https://")):
                raise CocinError(
                    f"invalid registry mirror {item!r} in COCIN_REGISTRY_MIRRORS: give a URL (https://...)"
                )
            found.append(item)
    return found


def _first_answer(ref: reference.Reference, target: str) -> tuple[Client, tuple[bytes, str, str]]:
    """The client (a mirror's first, for Docker Hub) that answers the manifest;
    a mirror that fails or lacks the image is passed over, as Docker does."""
    if ref.domain == reference.DEFAULT_DOMAIN:
        for url in mirrors():
            client = Client(ref, mirror=url)
            try:
                return client, fetch_manifest(client, target)
            except CocinError:
                continue
    client = Client(ref)
    return client, fetch_manifest(client, target)


def pull(text: str, quiet: bool = False, platform: str | None = None, name_line: bool = True) -> images.Image:
    """``docker pull``: the image ``text`` names (for ``platform``, default the
    host's), stored with its tag (or digest)."""
    os_name, arch, variant = parse_platform(platform)
    ref = reference.parse(text)
    target = ref.digest or ref.tag
    _say(quiet, f"{target}: Pulling from {ref.path}")  # Docker's words: "Pulling from library/busybox"
    client, (raw, mediatype, digest) = _first_answer(ref, target)
    if mediatype in (OCI_INDEX, DOCKER_LIST):
        entry = pick_platform(json.loads(raw), os_name, arch, variant)
        raw, mediatype, _child = fetch_manifest(client, entry["digest"])
    if mediatype not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise CocinError(f"unsupported manifest type {mediatype or 'unknown'}")
    manifest = json.loads(raw)
    images.make_layers_dir()
    tmp = os.path.join(images.layers_dir(), f".pull-{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(tmp, 0o700)
    added: list[str] = []
    try:
        config_raw = _fetch_config(client, manifest["config"], tmp)
        config = json.loads(config_raw)
        got = f"{config.get('os', '?')}/{config.get('architecture', '?')}"
        if got != f"{os_name}/{arch}":
            whose = "the requested" if platform else "the host's"
            raise CocinError(f"the image's platform ({got}) does not match {whose} ({os_name}/{arch})")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        layers = manifest.get("layers") or []
        if len(diff_ids) != len(layers):
            raise CocinError(f"the manifest has {len(layers)} layers, the config {len(diff_ids)} diff_ids")
        chains, parent = [], None
        for did in diff_ids:
            parent = images.chain_id(parent, did)
            chains.append(parent)
        show = Progress(quiet)
        for desc, chain in zip(layers, chains):
            there = os.path.isdir(images.layer_path(chain))
            show.say(desc["digest"][7:19], "Already exists" if there else "Pulling fs layer")
        _pull_layers(client, list(zip(layers, diff_ids, chains)), tmp, show, added)
        keys = [ref.key()] if not ref.digest else []
        keys.append(f"{ref.familiar_name}@{digest}")
        before = images.repositories().get(keys[0])
        img = _publish(config_raw, keys)
        record_blobs(ref, [(did, desc) for desc, did in zip(layers, diff_ids)])
    except BaseException:
        with state.locked():
            images._drop_orphan_layers(added)
        raise
    finally:
        state.remove_tree(tmp)
    _say(quiet, f"Digest: {digest}")
    fresh = added or before != "sha256:" + img.id
    _say(quiet, f"Status: {'Downloaded newer image' if fresh else 'Image is up to date'} for {ref.key()}")
    if name_line:  # the full name, as Docker ends a pull
        print(f"{ref.name}@{digest}" if ref.digest else f"{ref.name}:{ref.tag}", flush=True)
    return img


class Progress:
    """Pull progress as Docker shows it: on a terminal one line per layer,
    rewritten in place (``Downloading [====>   ] 1.2MB/3.4MB``); otherwise
    one plain line per change of status, byte counts left out."""

    def __init__(self, quiet: bool):
        import threading

        self.quiet = quiet
        self.tty = not quiet and sys.stdout.isatty()
        self.ids: list[str] = []
        self.last: dict[str, float] = {}
        self.lock = threading.Lock()  # layers are fetched by several threads

    def say(self, ident: str, text: str) -> None:
        if self.quiet:
            return
        with self.lock:
            self._say(ident, text)

    def _say(self, ident: str, text: str) -> None:
        if not self.tty:
            print(f"{ident}: {text}", flush=True)
            return
        if ident not in self.ids:
            self.ids.append(ident)
            sys.stdout.write(f"{ident}: {text}\n")
        else:
            up = len(self.ids) - self.ids.index(ident)
            down = f"\x1b[{up - 1}B" if up > 1 else ""
            sys.stdout.write(f"\x1b[{up}A\r\x1b[2K{ident}: {text}\n{down}")
        sys.stdout.flush()

    def bar(self, ident: str, what: str, n: int, size: int | None) -> None:
        """A progress bar (terminals only), at most ten times a second."""
        if not self.tty:
            return
        import time

        now = time.monotonic()
        if n and size and n < size and now - self.last.get(ident, 0.0) < 0.1:
            return
        self.last[ident] = now
        if not size:
            self.say(ident, what)
            return
        done = min(50, n * 50 // size)
        arrow = "=" * max(done - 1, 0) + (">" if done else "")
        self.say(ident, f"{what} [{arrow:<50}]  {_human(n)}/{_human(size)}")


def _human(n: float) -> str:
    """Sizes as Docker prints them (decimal units, 4 significant digits): ``1.234MB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n}B"


# --- which compressed blob is which layer (Docker's v2metadata) -------------------------


def _dist_path(diff_id: str) -> str:
    return os.path.join(state.root(), "distribution", diff_id.partition(":")[2] + ".json")


def blobs_of(diff_id: str) -> list[dict]:
    """The compressed blobs known to hold the layer ``diff_id``, and where they
    were seen (``Registry``, ``Repository``): ``push`` reuses them."""
    try:
        with open(_dist_path(diff_id), "rb") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return []
    return [e for e in found if isinstance(e, dict) and reference.is_digest(str(e.get("Digest")))]


def record_blobs(ref: reference.Reference, layers: list[tuple[str, dict]]) -> None:
    """Remember that each ``(diff_id, descriptor)`` is in ``ref``'s repository
    (the newest first, a few per layer), atomically under the lock."""
    os.makedirs(os.path.dirname(_dist_path("sha256:x")), 0o700, exist_ok=True)
    with state.locked():
        for did, desc in layers:
            entry = {
                "Digest": desc["digest"],
                "MediaType": desc.get("mediaType", ""),
                "Size": desc.get("size"),
                "Registry": ref.domain,
                "Repository": ref.path,
            }
            old = [e for e in blobs_of(did) if e != entry]
            state.atomic_write(_dist_path(did), json.dumps([entry, *old][:16]))


def _fetch_config(client: Client, desc: dict, tmp: str) -> bytes:
    path = os.path.join(tmp, "config")
    _download(client, desc, path)
    with open(path, "rb") as f:
        return f.read()


DOWNLOADS = 3  # layers fetched at once, as Docker's max-concurrent-downloads


def _pull_layers(client: Client, todo: list[tuple[dict, str, str]], tmp: str, show: Progress, added: list) -> None:
    """Fetch the missing layers, a few at once (download, checksum, decompress,
    diff_id in worker threads); extract and store them bottom first as they
    arrive. On an error the others are stopped and waited for before ``tmp`` goes."""
    import concurrent.futures
    import threading

    stop = threading.Event()
    there = [os.path.isdir(images.layer_path(chain)) for _desc, _did, chain in todo]
    missing = [(i, desc, did) for i, (desc, did, _chain) in enumerate(todo) if not there[i]]
    for _i, desc, _did in missing[DOWNLOADS:]:
        show.say(desc["digest"][7:19], "Waiting")  # queued behind the first few, as Docker says
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=DOWNLOADS)
    try:
        futures = {
            i: pool.submit(_fetch_layer, client, desc, did, os.path.join(tmp, str(i)), show, stop)
            for i, desc, did in missing
        }
        parent = None
        for i, (desc, did, chain) in enumerate(todo):
            if i in futures:
                tar, gz_blob = futures[i].result()
                show.bar(desc["digest"][7:19], "Extracting", 0, None)
                _install_layer(tar, gz_blob, did, chain, parent)
                added.append(chain)
                show.say(desc["digest"][7:19], "Pull complete")
            parent = chain
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def _fetch_layer(client: Client, desc: dict, diff_id: str, work: str, show: Progress, stop) -> tuple[str, str | None]:
    """A layer's blob downloaded and checked, its tar decompressed and checked
    against ``diff_id``: (tar, the gzip blob to keep or None)."""
    os.mkdir(work, 0o700)
    blob, tar = os.path.join(work, "blob"), os.path.join(work, "layer.tar")
    short = desc["digest"][7:19]

    def progress(n: int, size: int | None) -> None:
        if stop.is_set():
            raise CocinError("pull stopped")
        show.bar(short, "Downloading", n, size)

    _download(client, desc, blob, progress)
    show.say(short, "Verifying Checksum")
    show.say(short, "Download complete")
    got = _decompress(blob, desc.get("mediaType", ""), tar)
    with open(blob, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    if not gzipped:
        os.unlink(blob)
    if got != diff_id:
        raise CocinError(f"layer {desc['digest']}: its content is {got}, the config says {diff_id}")
    return tar, blob if gzipped else None


def _install_layer(tar: str, gz_blob: str | None, diff_id: str, chain: str, parent: str | None) -> None:
    from . import tarball
    from .archive import keep_orig

    stage = images.staging()
    try:
        tarball.extract(tar, os.path.join(stage, "diff"))
        keep_orig(stage, tar, diff_id, gz_blob)  # the gzip blob as it came, if needed
        with open(os.path.join(stage, "diff_id"), "w") as f:
            f.write(diff_id)
        with open(os.path.join(stage, "size"), "w") as f:
            f.write(str(images.tree_size(os.path.join(stage, "diff"))))
        if parent:
            with open(os.path.join(stage, "parent"), "w") as f:
                f.write(parent)
        with state.locked():
            images.install_layer(stage, chain)
    except BaseException:
        state.remove_tree(stage)
        raise


def _publish(config_raw: bytes, keys: list[str]) -> images.Image:
    images.repositories()
    with state.locked():
        image_id = images.store_config(config_raw)
        repos = images._read_repos()
        olds = set()
        for key in keys:
            old = repos.get(key, "").partition(":")[2]
            if old and old != image_id:
                olds.add(old)
            repos[key] = "sha256:" + image_id
        images._write_repos(repos)
        for old in olds:
            images._drop_image_if_unused(old, repos)
    return images.load_image(image_id)


def pull_for_run(text: str) -> images.Image:
    """``run``/``create`` of an image not here: pulled when the reference names a
    registry host (as Docker does; cocin never guesses Docker Hub for a bare name)."""
    first = text.split("/", 1)[0]
    if "/" not in text or not reference.looks_like_domain(first):
        raise state.NotFound(f"No such image: {reference.parse(text).key()} (pull it first: cocin pull IMAGE)")
    sys.stderr.write(f"Unable to find image '{reference.parse(text).key()}' locally\n")
    sys.stderr.flush()
    return pull_to_stderr(text)


def pull_to_stderr(text: str) -> images.Image:
    """``pull`` with its progress on stderr: the container's output owns stdout."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        return pull(text, name_line=False)
    finally:
        sys.stdout = saved
