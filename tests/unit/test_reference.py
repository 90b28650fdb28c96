"""Unit tests of image references (cocin.reference): Docker's grammar and normalization."""

from __future__ import annotations

import pytest

from cocin import reference
from cocin.errors import CocinError

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "text,name,tag,digest,key",
    [
        ("busybox", "docker.io/library/busybox", "latest", None, "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox", "1.36", None, "busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox", "latest", None, "busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox", "latest", None, "busybox:latest"),
        ("index.docker.io/busybox", "docker.io/library/busybox", "latest", None, "busybox:latest"),
        ("user/app:v2", "docker.io/user/app", "v2", None, "user/app:v2"),
        ("docker.io/user/app", "docker.io/user/app", "latest", None, "user/app:latest"),
        ("library/a/b", "docker.io/library/a/b", "latest", None, "library/a/b:latest"),
        (
            "127.0.0.1:5555/test/busybox:oci",
            "127.0.0.1:5555/test/busybox",
            "oci",
            None,
            "127.0.0.1:5555/test/busybox:oci",
        ),
        ("localhost/x", "localhost/x", "latest", None, "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000/x", "latest", None, "localhost:5000/x:latest"),
        ("ghcr.io/Org-ok.io/x".lower(), "ghcr.io/org-ok.io/x", "latest", None, "ghcr.io/org-ok.io/x:latest"),
        ("my.reg/a__b/c-d--e.f_g", "my.reg/a__b/c-d--e.f_g", "latest", None, "my.reg/a__b/c-d--e.f_g:latest"),
        (f"busybox@{D}", "docker.io/library/busybox", None, D, f"busybox@{D}"),
        (f"busybox:1@{D}", "docker.io/library/busybox", "1", D, f"busybox@{D}"),
        ("localhost", "docker.io/library/localhost", "latest", None, "localhost:latest"),
    ],
)
def test_references_normalized_as_docker_does(text, name, tag, digest, key):
    ref = reference.parse(text)
    assert (ref.name, ref.tag, ref.digest, ref.key()) == (name, tag, digest, key)


@pytest.mark.parametrize(
    "text,why",
    [
        ("", ""),
        ("Busybox", "must be lowercase"),
        ("a/B", "must be lowercase"),
        ("-a", ""),
        ("a-", ""),
        ("a..b", ""),
        ("a___b", ""),
        ("a//b", ""),
        ("a/", ""),
        (":tag", ""),
        ("a:", ""),
        ("a:-x", ""),
        ("a:" + "x" * 129, ""),
        ("a@sha256:abc", ""),
        ("a@md5:" + "a" * 32, ""),
        ("reg:port/a", ""),
        ("a b", ""),
        ("../x", ""),
        ("a/" + "b" * 260, "255"),
    ],
)
def test_bad_references(text, why):
    with pytest.raises(CocinError, match="invalid reference format") as e:
        reference.parse(text)
    assert why in str(e.value)


def test_a_reference_filter_has_no_default_tag():
    assert reference.parse("busybox", None).tag is None
    assert reference.parse("busybox", None).familiar_name == "busybox"


@pytest.mark.parametrize(
    "text,ok",
    [("abc", True), ("sha256:" + "0" * 64, True), ("ABC", False), ("", False), ("xyz", False), ("a" * 65, False)],
)
def test_id_prefixes(text, ok):
    assert reference.is_id_prefix(text) is ok
