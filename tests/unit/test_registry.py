"""Unit tests of the registry client's pure parts (cocin.registry): auth
challenges, platform choice in an index, which hosts get plain HTTP."""

from __future__ import annotations

import base64
import json

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
