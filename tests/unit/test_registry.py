"""Unit tests of the registry client's pure parts (cocin.registry): auth
challenges, platform choice in an index, which hosts get plain HTTP."""

from __future__ import annotations

import base64
import json
import os
import sys

import pytest

from cocin import reference, registry
from cocin.state import CocinError


def test_challenge_values_may_hold_commas():
    scheme, params = registry.parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a/b:pull,push"}
    assert registry.parse_challenge('Basic realm="x y"') == ("basic", {"realm": "x y"})
    assert registry.parse_challenge('Bearer error="insufficient_scope", realm=r')[1] == {
        "error": "insufficient_scope",
        "realm": "r",
    }


INDEX = {
    "manifests": [
        {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}},
        {
            "digest": "sha256:att",
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        },
    ]
}


def test_the_hosts_platform_is_picked_never_the_first():
    assert registry.pick_platform(INDEX, "linux", "amd64")["digest"] == "sha256:amd"
    assert registry.pick_platform(INDEX, "linux", "arm64", "v8")["digest"] == "sha256:arm"
    with pytest.raises(
        CocinError,
        match=r"no matching manifest for linux/s390x .*found: linux/arm64/v8, "
        r"linux/amd64\)",
    ):
        registry.pick_platform(INDEX, "linux", "s390x")


@pytest.mark.parametrize(
    "host,local",
    [
        ("127.0.0.1:5000", True),
        ("localhost", True),
        ("localhost:5000", True),
        ("127.1.2.3", True),
        ("registry-1.docker.io", False),
        ("128.0.0.1:5000", False),
        ("127.evil.com", False),
    ],
)
def test_plain_http_only_for_loopback(host, local):
    assert registry._is_local(host) is local


def test_credentials_from_dockers_config(tmp_path, monkeypatch):
    auth = base64.b64encode(b"u:p:w").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"127.0.0.1:5556": {"auth": auth}, "https://index.docker.io/v1/": {"auth": auth}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert registry.credentials("127.0.0.1:5556") == ("u", "p:w")
    assert registry.credentials("docker.io") == ("u", "p:w")
    assert registry.credentials("other:1") is None


def test_a_client_talks_to_docker_hub_over_https():
    assert registry.Client(reference.parse("busybox")).base == "https://registry-1.docker.io"
    assert registry.Client(reference.parse("127.0.0.1:5/x")).base == "http://127.0.0.1:5"


def test_platforms():
    assert registry.parse_platform("linux/arm64/v8") == ("linux", "arm64", "v8")
    assert registry.parse_platform("Linux/AMD64") == ("linux", "amd64", None)
    assert registry.parse_platform(None)[0] == "linux"
    for bad in ("arm64", "linux/", "a/b/c/d"):
        with pytest.raises(CocinError, match="invalid platform"):
            registry.parse_platform(bad)


# --- insecure registries and mirrors ---------------------------------------------------------


@pytest.mark.parametrize(
    "listed,host,insecure",
    [
        ("reg.example:5000", "reg.example:5000", True),
        ("reg.example", "reg.example:5000", True),
        ("http://reg.example:5000/", "reg.example:5000", True),
        ("reg.example:5000", "reg.example:6000", False),
        ("10.0.0.0/8, other", "10.1.2.3:5000", True),
        ("10.0.0.0/8", "11.1.2.3:5000", False),
        ("", "reg.example", False),
    ],
)
def test_insecure_registries_are_listed_by_name_or_cidr(monkeypatch, listed, host, insecure):
    monkeypatch.setenv("COCIN_INSECURE_REGISTRIES", listed)
    assert registry.insecure(host) is insecure
    assert registry.insecure("127.0.0.1:5000")  # loopback always, as Docker


def _serve(handler_body: bytes):
    """A plain-HTTP "registry" on 127.0.0.1 answering ``/v2/`` with ``{}``; (server, port)."""
    import http.server
    import threading

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(handler_body)))
            self.end_headers()
            self.wfile.write(handler_body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def test_a_listed_insecure_registry_falls_back_to_plain_http(monkeypatch):
    """Not on loopback (pretended here), a listed registry is tried over TLS
    first; when it does not speak TLS, plain HTTP; an unlisted one never is."""
    srv, port = _serve(b"{}")
    try:
        monkeypatch.setattr(registry, "_is_local", lambda host: False)
        host = f"127.0.0.1:{port}"
        client = registry.Client(reference.parse(f"{host}/x"))
        assert client.base == f"https://{host}"
        with pytest.raises(CocinError, match="cannot reach the registry https://"):
            client.send("GET", "/v2/")
        monkeypatch.setenv("COCIN_INSECURE_REGISTRIES", host)
        client = registry.Client(reference.parse(f"{host}/x"))
        assert client.base == f"https://{host}"
        assert client.send("GET", "/v2/").read() == b"{}"
        assert client.base == f"http://{host}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_mirrors_are_urls(monkeypatch):
    monkeypatch.setenv("COCIN_REGISTRY_MIRRORS", " https://m.example ,http://127.0.0.1:5000/")
    assert registry.mirrors() == ["https://m.example", "http://127.0.0.1:5000/"]
    client = registry.Client(reference.parse("busybox"), mirror="http://127.0.0.1:5000/")
    assert client.url("manifests/latest") == "http://127.0.0.1:5000/v2/library/busybox/manifests/latest"
    monkeypatch.setenv("COCIN_REGISTRY_MIRRORS", "m.example")
    with pytest.raises(CocinError, match="give a URL"):
        registry.mirrors()


def test_upload_locations_may_be_relative_or_absolute():
    client = registry.Client(reference.parse("127.0.0.1:5/a/b"))
    assert client.url("blobs/uploads/") == "http://127.0.0.1:5/v2/a/b/blobs/uploads/"
    assert client.url("/v2/a/b/blobs/uploads/u1?_state=x") == "http://127.0.0.1:5/v2/a/b/blobs/uploads/u1?_state=x"
    assert client.url("http://other:9/up/1") == "http://other:9/up/1"


def test_sizes_as_docker_prints_them():
    assert registry._human(382) == "382B"
    assert registry._human(1085000) == "1.085MB"
    assert registry._human(2_500_000_000) == "2.5GB"


# --- login's config file ---------------------------------------------------------------------


def test_server_keys_as_docker_writes_them():
    from cocin import auth

    assert auth.server_key(None) == ("docker.io", "https://index.docker.io/v1/")
    assert auth.server_key("docker.io") == ("docker.io", "https://index.docker.io/v1/")
    assert auth.server_key("https://index.docker.io/v1/") == ("docker.io", "https://index.docker.io/v1/")
    assert auth.server_key("https://127.0.0.1:5000/v2/") == ("127.0.0.1:5000", "127.0.0.1:5000")
    with pytest.raises(CocinError, match="invalid registry address"):
        auth.server_key("bad host")


def test_logout_keeps_the_rest_of_the_file(tmp_path, monkeypatch, capsys):
    from cocin import auth

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"a:1": {"auth": "eDp5"}, "b:2": {"auth": "eDp5"}}, "credsStore": "pass"})
    )
    auth.logout("a:1")
    assert capsys.readouterr().out == "Removing login credentials for a:1\n"
    data = json.loads((tmp_path / "config.json").read_text())
    assert data == {"auths": {"b:2": {"auth": "eDp5"}}, "credsStore": "pass"}
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o600


# --- OCI layouts -----------------------------------------------------------------------------


def test_names_in_an_oci_layout():
    from cocin import archive

    assert archive._oci_name({"io.containerd.image.name": "docker.io/library/busybox:1"}) == "busybox:1"
    assert archive._oci_name({"org.opencontainers.image.ref.name": "localhost/a/b:2"}) == "localhost/a/b:2"
    assert archive._oci_name({"org.opencontainers.image.ref.name": "latest"}) is None  # a tag names no repository
    assert archive._oci_name({}) is None


def _fake_helper(tmp_path, monkeypatch) -> str:
    """``docker-credential-fake`` on PATH, keeping its secrets in a JSON file."""
    store = tmp_path / "store.json"
    store.write_text("{}")
    script = tmp_path / "bin" / "docker-credential-fake"
    script.parent.mkdir()
    script.write_text(
        f"""#!{sys.executable}
import json, sys
path = {str(store)!r}
data = json.load(open(path))
arg = sys.stdin.read()
if sys.argv[1] == "store":
    item = json.loads(arg)
    data[item["ServerURL"]] = [item["Username"], item["Secret"]]
elif sys.argv[1] == "get":
    if arg not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": arg, "Username": data[arg][0], "Secret": data[arg][1]}}))
elif sys.argv[1] == "erase":
    data.pop(arg, None)
json.dump(data, open(path, "w"))
"""
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    return str(store)


def test_credential_helpers_store_get_and_erase(tmp_path, monkeypatch, capsys):
    from cocin import auth

    store = _fake_helper(tmp_path, monkeypatch)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "fake"}))
    monkeypatch.setattr(auth, "check", lambda *a: None)  # no registry here
    auth.login("127.0.0.1:5000", "u", "s3cret")
    assert json.loads((tmp_path / "config.json").read_text())["auths"] == {"127.0.0.1:5000": {}}
    assert json.loads(open(store).read()) == {"127.0.0.1:5000": ["u", "s3cret"]}
    assert registry.credentials("127.0.0.1:5000") == ("u", "s3cret")
    assert registry.credentials("127.0.0.1:6000") is None
    auth.logout("127.0.0.1:5000")
    assert json.loads(open(store).read()) == {}
    assert capsys.readouterr().out == "Login Succeeded\nRemoving login credentials for 127.0.0.1:5000\n"
    with pytest.raises(CocinError, match="invalid credential helper name"):
        auth._helper_argv("../../bin/sh", "get")


# --- push's layer blobs ----------------------------------------------------------------------


def test_a_layer_compresses_to_the_same_blob_every_time(tmp_path, monkeypatch):
    """gzip with mtime 0 and no file name: pushing a layer twice (or from two
    state roots) gives one blob, whose digest and size the descriptor gives."""
    import gzip
    import hashlib

    from cocin import images, layers, push

    monkeypatch.setenv("COCIN_ROOT", str(tmp_path / "root"))
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("hello\n" * 1000)
    did = layers.diff_id(str(tree))
    images.make_layers_dir()
    os.makedirs(images.layer_path(did))
    os.rename(tree, os.path.join(images.layer_path(did), "diff"))
    descs = []
    for name in ("a.gz", "b.gz"):
        descs.append(push.compress_layer(did, did, str(tmp_path / name)))
        data = (tmp_path / name).read_bytes()
        assert descs[-1]["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert descs[-1]["size"] == len(data)
        assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == did
    assert descs[0] == descs[1] and descs[0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"


def test_an_upload_is_sent_again_whole_after_a_401(tmp_path):
    """Basic auth asked for on the PUT itself: the body (a file, read through a
    progress reporter) is opened again for the retry, not sent half-read."""
    import http.server
    import threading

    from cocin import push

    got = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if not self.headers.get("Authorization"):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="t"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            got.append((self.path, body))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = registry.Client(reference.parse(f"127.0.0.1:{srv.server_address[1]}/a/b"))
        client.creds = ("u", "p")
        blob = tmp_path / "blob"
        blob.write_bytes(b"x" * 100_000)
        seen = []
        location = "/v2/a/b/blobs/uploads/u1"
        push._upload(client, "sha256:" + "1" * 64, str(blob), 100_000, location, lambda n, size: seen.append(n))
    finally:
        srv.shutdown()
        srv.server_close()
    assert got == [("/v2/a/b/blobs/uploads/u1?digest=sha256:" + "1" * 64, b"x" * 100_000)]
    assert seen[-1] == 100_000
