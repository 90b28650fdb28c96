"""Unit tests of cocin.confine's pure logic: capability sets (moby's rules),
--security-opt, --ulimit, --sysctl, and the lookup of a user in an image's
/etc/passwd and /etc/group (runc's rules). No root, no containers."""

from __future__ import annotations

import subprocess

import pytest

from cocin import confine
from cocin.confine import DEFAULT_CAPS, Identity, cap_mask, capabilities, resolve_user

REPO = __file__.rsplit("/tests/", 1)[0]


# --- capabilities -------------------------------------------------------------------


def test_default_caps_are_dockers_14():
    assert len(DEFAULT_CAPS) == 14
    assert cap_mask(DEFAULT_CAPS) == 0xA80425FB  # what `docker run busybox grep CapEff` shows
    assert capabilities({}) == DEFAULT_CAPS


def test_cap_numbers_follow_the_kernel_header():
    assert (confine.CAPS["CHOWN"], confine.CAPS["SYS_ADMIN"], confine.CAPS["CHECKPOINT_RESTORE"]) == (0, 21, 40)
    assert sorted(confine.CAPS.values()) == list(range(41))


@pytest.mark.parametrize(
    "names, expected",
    [
        (["net_admin"], ["NET_ADMIN"]),
        (["CAP_NET_ADMIN", "cap_sys_time"], ["NET_ADMIN", "SYS_TIME"]),
        (["all"], ["ALL"]),
        (["CHOWN", "chown"], ["CHOWN"]),
    ],
)
def test_normalize_caps(names, expected):
    assert confine.normalize_caps(names) == expected


@pytest.mark.parametrize("name", ["FOO", "CAP_", "", "CAP_ALL"])
def test_unknown_capability(name):
    with pytest.raises(ValueError, match="unknown capability"):
        confine.normalize_caps([name])


def test_cap_add_and_drop_as_moby():
    caps = capabilities({"cap_add": ["NET_ADMIN"], "cap_drop": ["CHOWN"]})
    assert "NET_ADMIN" in caps and "CHOWN" not in caps and len(caps) == 14
    assert capabilities({"cap_drop": ["ALL"]}) == []
    assert capabilities({"cap_drop": ["ALL"], "cap_add": ["KILL"]}) == ["KILL"]
    every = capabilities({"cap_add": ["ALL"], "cap_drop": ["SYS_ADMIN"]})
    assert "SYS_ADMIN" not in every and "SYS_MODULE" in every
    assert capabilities({"privileged": True, "cap_drop": ["ALL"]}) == confine.known_caps()


# --- --security-opt, --ulimit, --sysctl, --user ------------------------------------------------


@pytest.mark.parametrize(
    "opts, expected",
    [
        ([], {}),
        (["no-new-privileges"], {"no_new_privileges": True}),
        (["no-new-privileges=true"], {"no_new_privileges": True}),
        (["no-new-privileges:true"], {"no_new_privileges": True}),
        (["no-new-privileges", "no-new-privileges=false"], {}),
        (["seccomp=unconfined"], {"seccomp": "unconfined"}),
        (["seccomp=builtin"], {}),
        (["seccomp=/p.json"], {"seccomp": "/p.json"}),
        (["systempaths=unconfined"], {"systempaths_unconfined": True}),
        (["label=disable", "apparmor=unconfined"], {}),
    ],
)
def test_security_opts(opts, expected):
    defaults = {"no_new_privileges": False, "systempaths_unconfined": False, "seccomp": "default"}
    assert confine.parse_security_opts(opts) == {**defaults, **expected}


@pytest.mark.parametrize(
    "opt, message",
    [
        ("bogus", 'invalid --security-opt 1: "bogus"'),
        ("no-new-privileges=yes", "invalid --security-opt 2"),
        ("systempaths=other", "invalid --security-opt 2"),
        ("foo=bar", "invalid --security-opt 2"),
        ("seccomp=", "invalid --security-opt 2"),
        ("label=type:svirt_t", "no SELinux or AppArmor"),
        ("apparmor=docker-default", "no SELinux or AppArmor"),
    ],
)
def test_bad_security_opts(opt, message):
    with pytest.raises(ValueError, match=message):
        confine.parse_security_opts([opt])


def test_ulimits():
    assert confine.parse_ulimit("nofile=1024:2048") == ["nofile", 1024, 2048]
    assert confine.parse_ulimit("core=0") == ["core", 0, 0]
    assert confine.parse_ulimit("memlock=-1:-1") == ["memlock", -1, -1]
    assert confine.parse_ulimits(["nofile=1:2", "core=0", "nofile=3:4"]) == [["nofile", 3, 4], ["core", 0, 0]]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nofile", "invalid ulimit argument"),
        ("nofile=", "invalid ulimit argument"),
        ("nofile=a", "invalid ulimit argument"),
        ("nofile=-2", "invalid ulimit argument"),
        ("as=1", "invalid ulimit type: as"),
        ("nofile=2:1", "soft limit must be less than or equal"),
        ("nofile=-1:5", "soft limit must be less than or equal"),
    ],
)
def test_bad_ulimits(spec, message):
    with pytest.raises(ValueError, match=message):
        confine.parse_ulimit(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "kernel.msgmax=1",
        "kernel.sem=1 2 3 4",
        "kernel.shm_rmid_forced=1",
        "fs.mqueue.msg_max=20",
        "net.ipv4.ip_forward=1",
        "net.core.somaxconn=9",
    ],
)
def test_namespaced_sysctls(spec):
    key, value = spec.split("=", 1)
    assert confine.parse_sysctl(spec) == [key, value]


@pytest.mark.parametrize(
    "spec",
    [
        "vm.swappiness=1",
        "kernel.core_pattern=|x",
        "kernel.hostname=x",
        "kernel.domainname=x",
        "fs.file-max=1",
        "net.ipv4",
        "kernel.msgmaxx=1",
        "net.../../vm/x=1",
    ],
)
def test_host_sysctls_are_refused(spec):
    with pytest.raises(ValueError, match="not allowed"):
        confine.parse_sysctl(spec)


def test_net_sysctls_with_the_host_network():
    with pytest.raises(ValueError, match="not allowed in host network namespace"):
        confine.parse_sysctl("net.ipv4.ip_forward=1", host_network=True)
    assert confine.parse_sysctl("kernel.shmmni=10", host_network=True) == ["kernel.shmmni", "10"]


@pytest.fixture
def image_root(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1234:app:/home/app:/bin/sh\nnohome:x:1500:1500::\n# comment\n"
    )
    (etc / "group").write_text("root:x:0:\nwheel:x:10:root\napp:x:1234:\nextra:x:2345:app,other\nmore:x:3456:\n")
    return str(tmp_path)


@pytest.mark.parametrize(
    "spec, expected",
    [
        (None, Identity(0, 0, [10], "/root")),
        ("root", Identity(0, 0, [10], "/root")),
        ("app", Identity(1234, 1234, [2345], "/home/app")),
        ("1234", Identity(1234, 1234, [2345], "/home/app")),
        ("app:more", Identity(1234, 3456, [], "/home/app")),
        ("app:0", Identity(1234, 0, [], "/home/app")),
        ("1000", Identity(1000, 0, [], "/")),  # a uid need not exist
        ("1000:777", Identity(1000, 777, [], "/")),  # nor a gid
        ("nohome", Identity(1500, 1500, [], "/")),
    ],
)
def test_resolve_user(image_root, spec, expected):
    assert resolve_user(spec, [], root=image_root) == expected


def test_group_add(image_root):
    assert resolve_user("app", ["more", "99", "extra"], root=image_root).groups == [2345, 3456, 99]


@pytest.mark.parametrize(
    "spec, group_add, message",
    [
        ("nosuch", [], "unable to find user nosuch: no matching entries in passwd file"),
        ("app:nosuch", [], "unable to find group nosuch: no matching entries in group file"),
        ("app", ["nosuch"], "unable to find group nosuch"),
    ],
)
def test_unknown_names(image_root, spec, group_add, message):
    with pytest.raises(LookupError, match=message):
        resolve_user(spec, group_add, root=image_root)


def test_no_passwd_file(tmp_path):
    assert resolve_user(None, [], root=str(tmp_path)) == Identity(0, 0, [], "/")
    with pytest.raises(LookupError):
        resolve_user("nobody", [], root=str(tmp_path))


@pytest.mark.parametrize("spec", ["", ":x", "a:", "a:b:c", "4294967295"])
def test_bad_user_specs(spec):
    with pytest.raises(ValueError, match="invalid user"):
        confine.parse_user(spec)


def test_stub_args():
    ident = Identity(1000, 1000, [10, 20], "/home/x")
    assert confine.stub_args(DEFAULT_CAPS, ident, True, "/c/seccomp.bpf") == [
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--groups",
        "10,20",
        "--caps",
        "a80425fb",
        "--nnp",
        "--seccomp",
        "/c/seccomp.bpf",
    ]
    assert confine.stub_args([], Identity(), False, None) == ["--uid", "0", "--gid", "0", "--groups", "", "--caps", "0"]


def test_imports_nothing_heavy():
    """confine is on every container's start path: ``os`` and cocin.libc only."""
    out = subprocess.run(
        ["/usr/bin/python3", "-X", "importtime", "-c", "import cocin.confine"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    imported = {line.split("|")[-1].strip() for line in out.splitlines() if line.startswith("import time:")}
    assert "cocin.confine" in imported
    assert not imported & {"re", "enum", "json", "resource", "typing", "dataclasses", "argparse"}
