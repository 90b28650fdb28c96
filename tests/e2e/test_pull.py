"""End-to-end: ``pull`` (and ``run`` of an image not here) against the real
registries of ../shared/registry (Debian's docker-registry on 127.0.0.1,
with Basic auth, Docker-Hub-style Bearer tokens and 307 blob redirects),
started for this session and stopped afterwards. Nothing reaches the internet.

Each pull goes into a fresh state root, so every layer is really fetched,
checked and extracted (a shared root would find the layers already there).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import socket

import pytest

# The team's registry kit sits next to the checkout (../shared/registry); a clone elsewhere
# (CI's) finds it through COCIN_REGISTRY_KIT, or at the workplace's /work/shared.
REGISTRY = next(
    (
        d
        for d in (
            os.environ.get("COCIN_REGISTRY_KIT", ""),
            os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "registry")),
            "/work/shared/registry",
        )
        if d and os.path.exists(os.path.join(d, "start.sh"))
    ),
    os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "registry")),
)
OUTPUT = "hello from cocin-test-image as 1000:1000 in /app\n"


def _free_ports(first: int = 5655, count: int = 5) -> int:
    """The first of ``count`` consecutive free TCP ports on 127.0.0.1, from ``first`` on."""
    for base in range(first, first + 400, 10):
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    pytest.skip("no 5 consecutive free ports for the test registries")


@pytest.fixture(scope="session")
def registry(cocin_session):
    """The registries of ../shared/registry, on free ports, in a directory of their own."""
    yield from registry_kit(cocin_session)


def registry_kit(c):
    """Start the kit, yield its env (and ``images``: images.json), stop it (also for
    test_image_interop, which imports this)."""
    if c.sh(f"test -x {REGISTRY}/start.sh").rc != 0:
        pytest.skip(f"the test registries are not on the target ({REGISTRY}/start.sh)")
    d = c.sh("mktemp -d /tmp/cocin-registry-XXXXXXXX").stdout.strip()
    env = f"REGISTRY_DIR={d} REGISTRY_PORT={_free_ports()}"
    try:
        r = c.sh(f"{env} timeout 600 bash {REGISTRY}/start.sh")
        assert r.rc == 0, f"the test registries did not start: {r.stdout[-2000:]} {r.stderr[-2000:]}"
        info = dict(
            line.split("=", 1)
            for line in c.sh(f"cat {d}/env").stdout.splitlines()
            if "=" in line and not line.startswith("#")
        )
        info["images"] = json.loads(c.sh(f"cat {d}/images.json").stdout)
        yield info
    finally:
        c.sh(f"{env} timeout 60 bash {REGISTRY}/stop.sh")
        c.sh(f"rm -rf {shlex.quote(d)}")


@pytest.fixture
def fresh(cocin, target_tmp):
    """A fresh state root: ``cocin(*args, env=fresh)``; its containers removed after the test."""
    env = {"COCIN_ROOT": target_tmp / "root"}
    yield env
    for cid in cocin("ps", "-aq", env=env).stdout.split():
        cocin("rm", "-f", cid, env=env)


def _left(cocin, env) -> str:
    """What a failed pull could have left: layers, images, staging and pull directories."""
    root = env["COCIN_ROOT"]
    return cocin.sh(
        f"find {root}/layers/sha256 {root}/imagedb {root}/l -mindepth 1 2>/dev/null; "
        f"cat {root}/repositories.json 2>/dev/null"
    ).stdout


@pytest.mark.parametrize("tag", ["latest", "multi", "multi-v2s2", "oci", "v2s2", "uncompressed", "zstd", "digest"])
def test_pull_runs_with_its_config_and_layers(cocin, registry, fresh, tag):
    if tag == "zstd" and cocin.sh("command -v zstd").rc != 0:
        pytest.skip("zstd layers need the zstd command (apt-get install zstd)")
    repo = f"{registry['REGISTRY_OPEN']}/test/busybox"
    ref = f"{repo}@{registry['images']['images']['test/busybox:oci']['digest']}" if tag == "digest" else f"{repo}:{tag}"
    out = cocin.ok("pull", ref, env=fresh).stdout
    assert out.count("Pull complete") == 2 and "Digest: sha256:" in out
    assert cocin.ok("run", "--rm", "--network", "none", ref, env=fresh).stdout == OUTPUT
    check = (
        "cat /hello.txt; ls /opq; ls /gone.txt /gonedir 2>&1; find / -xdev -name '.wh.*' | wc -l; "
        "[ $(stat -c %i /data/original.txt) = $(stat -c %i /data/hardlink.txt) ] && echo hardlinked; "
        "stat -c %a /tmp; cat /replaced/inside.txt; cat /arch.txt; readlink /data/abs-link"
    )
    r = cocin.ok("run", "--rm", "--network", "none", "-u", "0", ref, check, env=fresh)
    assert r.stdout.splitlines() == [
        "hello from layer 2",
        "new.txt",
        "ls: /gone.txt: No such file or directory",
        "ls: /gonedir: No such file or directory",
        "0",
        "hardlinked",
        "1777",
        "replaced is a directory now",
        "linux/amd64",
        "/hello.txt",
    ]
    info = json.loads(cocin.ok("image", "inspect", ref, env=fresh).stdout)[0]
    cfg = registry["images"]["expected_amd64_config"]
    assert all(info["Config"][k] == cfg[k] for k in ("Entrypoint", "Cmd", "Env", "WorkingDir", "User"))
    assert info["Id"].startswith("sha256:325eba67")  # the config blob's digest: the image ID
    assert len(info["RootFS"]["Layers"]) == 2
    assert info["RepoDigests"] and info["RepoDigests"][0].startswith(repo + "@sha256:")
    if tag != "digest":
        assert info["RepoTags"] == [f"{repo}:{tag}"]
    # Pulled again: nothing fetched twice.
    assert cocin.ok("pull", ref, env=fresh).stdout.count("Already exists") == 2


def test_layers_are_shared_between_pulls(cocin, registry, fresh):
    repo = f"{registry['REGISTRY_OPEN']}/test/busybox"
    cocin.ok("pull", "-q", f"{repo}:oci", env=fresh)
    out = cocin.ok("pull", f"{repo}:v2s2", env=fresh).stdout
    assert out.count("Already exists") == 2
    assert len(cocin.sh(f"ls {fresh['COCIN_ROOT']}/layers/sha256").stdout.split()) == 2


@pytest.mark.parametrize(
    "tag,text",
    [
        ("arm64", "the image's platform (linux/arm64) does not match the host's (linux/amd64)"),
        ("arm64-only", "no matching manifest for linux/amd64 in the manifest list entries (found: linux/arm64/v8)"),
        ("nosuchtag", "manifest for"),
    ],
)
def test_failed_pulls_leave_nothing(cocin, registry, fresh, tag, text):
    if os.uname().machine != "x86_64":
        pytest.skip("the platform cases are written for an amd64 host")
    before = _left(cocin, fresh)
    r = cocin("pull", f"{registry['REGISTRY_OPEN']}/test/busybox:{tag}", env=fresh)
    assert r.rc == 125 and text in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert _left(cocin, fresh) == before == ""


def _docker_config(target_tmp, registries: list[str]) -> dict:
    auth = base64.b64encode(b"tester:test-password-1").decode()
    target_tmp.write("docker/config.json", json.dumps({"auths": {r: {"auth": auth} for r in registries}}))
    return {"DOCKER_CONFIG": target_tmp / "docker"}


def test_basic_auth(cocin, registry, fresh, target_tmp):
    ref = f"{registry['REGISTRY_BASIC']}/test/busybox:oci"
    r = cocin("pull", ref, env=fresh)
    assert r.rc == 125 and "pull access denied" in r.stderr and "unauthorized" in r.stderr
    assert _left(cocin, fresh) == ""
    creds = _docker_config(target_tmp, [registry["REGISTRY_BASIC"]])
    cocin.ok("pull", "-q", ref, env={**fresh, **creds})
    assert cocin.ok("run", "--rm", "--network", "none", ref, env=fresh).stdout == OUTPUT


def test_bearer_tokens_and_redirected_blobs(cocin, registry, fresh, target_tmp):
    """Docker Hub's scheme: an anonymous token from the realm, blobs on a "CDN"
    that refuses requests carrying the registry's Authorization header."""
    log = registry["REGISTRY_HELPER_LOG"]
    seen = len(cocin.sh(f"cat {log}").stdout.splitlines())
    cocin.ok("pull", "-q", f"{registry['REGISTRY_HUB']}/test/busybox:latest", env=fresh)
    new = [json.loads(line) for line in cocin.sh(f"cat {log}").stdout.splitlines()[seen:]]
    tokens = [e for e in new if e["kind"] == "token"]
    blobs = [e for e in new if e["kind"] == "blob"]
    assert tokens and not tokens[0]["basic_auth"]
    assert tokens[0]["query"]["scope"] == ["repository:test/busybox:pull"]
    assert len(blobs) == 3 and not any(b["authorization_header"] for b in blobs)  # config + 2 layers
    # A private repository: refused anonymously, pulled with credentials (sent to the realm only).
    private = f"{registry['REGISTRY_HUB']}/private/busybox"
    r = cocin("pull", private, env=fresh)
    assert r.rc == 125 and "pull access denied" in r.stderr
    creds = _docker_config(target_tmp, [registry["REGISTRY_HUB"]])
    cocin.ok("pull", "-q", private, env={**fresh, **creds})
    assert cocin.ok("run", "--rm", "--network", "none", private, env=fresh).stdout == OUTPUT


def test_redirect_registry(cocin, registry, fresh):
    ref = f"{registry['REGISTRY_REDIRECT']}/test/busybox"
    cocin.ok("pull", "-q", ref, env=fresh)
    assert cocin.ok("run", "--rm", "--network", "none", ref, env=fresh).stdout == OUTPUT


def test_run_pulls_a_missing_image_only_from_a_named_registry(cocin, registry, fresh):
    ref = f"{registry['REGISTRY_OPEN']}/test/busybox:oci"
    r = cocin("run", "--rm", "--network", "none", ref, env=fresh)
    assert r.rc == 0 and r.stdout == OUTPUT, r.stderr
    assert f"Unable to find image '{ref}' locally" in r.stderr and "Pull complete" in r.stderr
    r = cocin("run", "--rm", "--network", "none", "test/busybox", env=fresh)  # Docker Hub: not contacted
    assert r.rc == 125 and r.stderr.startswith("cocin: error: No such image: test/busybox:latest")


@pytest.mark.parametrize("tag", ["uncompressed", "v2s2", "zstd"])
def test_a_pulled_image_saves_and_loads_with_its_ids(cocin, registry, fresh, target_tmp, tag):
    """A pulled layer's own tarball is kept (a re-made one of the same files
    need not have the same bytes; a gzip blob as it came), so ``save`` gives back its diff_id."""
    if tag == "zstd" and cocin.sh("command -v zstd").rc != 0:
        pytest.skip("zstd layers need the zstd command (apt-get install zstd)")
    ref = f"{registry['REGISTRY_OPEN']}/test/busybox:{tag}"
    cocin.ok("pull", "-q", ref, env=fresh)
    before = json.loads(cocin.ok("image", "inspect", ref, env=fresh).stdout)[0]
    out = target_tmp / "pulled.tar"
    cocin.ok("save", "-o", out, ref, env=fresh)
    cocin.ok("rmi", ref, env=fresh)
    assert cocin.ok("load", "-i", out, env=fresh).stdout == f"Loaded image: {ref}\n"
    after = json.loads(cocin.ok("image", "inspect", ref, env=fresh).stdout)[0]
    assert (after["Id"], after["RootFS"]) == (before["Id"], before["RootFS"])
    assert cocin.ok("run", "--rm", "--network", "none", ref, env=fresh).stdout == OUTPUT


def test_run_pull_always_and_never(cocin, registry, fresh):
    ref = f"{registry['REGISTRY_OPEN']}/test/busybox:v2s2"
    r = cocin("run", "--rm", "--network", "none", "--pull", "never", ref, env=fresh)
    assert r.rc == 125 and "No such image" in r.stderr and _left(cocin, fresh) == ""
    cocin.ok("pull", "-q", ref, env=fresh)
    r = cocin("run", "--rm", "--network", "none", "--pull", "always", ref, env=fresh)
    assert r.rc == 0 and r.stdout == OUTPUT and r.stderr.count("Already exists") == 2, r.stderr


def test_pull_for_another_platform(cocin, registry, fresh):
    ref = f"{registry['REGISTRY_OPEN']}/test/busybox:multi"
    cocin.ok("pull", "-q", "--platform", "linux/arm64/v8", ref, env=fresh)
    info = json.loads(cocin.ok("image", "inspect", ref, env=fresh).stdout)[0]
    assert info["Architecture"] == "arm64" and info["Os"] == "linux"
    r = cocin("pull", "--platform", "linux/s390x", ref, env=fresh)
    assert r.rc == 125 and "no matching manifest for linux/s390x" in r.stderr and "linux/amd64" in r.stderr
    r = cocin("pull", "--platform", "arm64", ref, env=fresh)
    assert r.rc == 125 and r.stderr == (
        "cocin: error: invalid platform 'arm64': use os/arch[/variant], e.g. linux/arm64\n"
    )


# --- push ------------------------------------------------------------------------------------


def test_push_then_pull_keeps_ids_and_digests(cocin, registry, fresh, target_tmp):
    """A committed image pushed (gzip layers, a Docker schema2 manifest), then
    pulled into another state root: the same image ID, layers and digest."""
    repo = f"{registry['REGISTRY_OPEN']}/cocin-push/committed"
    cocin.ok("run", "--name", "pushme", "--network", "none", "busybox", "sh", "-c", "echo pushed > /p.txt", env=fresh)
    image_id = cocin.ok("commit", "-c", "CMD cat /p.txt", "pushme", f"{repo}:1", env=fresh).stdout.strip()
    out = cocin.ok("push", f"{repo}:1", env=fresh).stdout.splitlines()
    assert out[0] == f"The push refers to repository [{repo}]"
    assert sum(line.endswith(": Pushed") for line in out) == 2, out
    assert out[-1].startswith("1: digest: sha256:") and " size: " in out[-1], out
    digest = out[-1].split()[2]
    info = json.loads(cocin.ok("image", "inspect", f"{repo}:1", env=fresh).stdout)[0]
    assert f"{repo}@{digest}" in info["RepoDigests"]
    again = cocin.ok("push", f"{repo}:1", env=fresh).stdout
    assert again.count("Layer already exists") == 2 and again.splitlines()[-1] == out[-1]
    # with no record of the blobs, the layers compress to the same bytes again (mtime 0, no name)
    cocin.sh(f"rm -rf {fresh['COCIN_ROOT']}/distribution")
    again = cocin.ok("push", f"{repo}:1", env=fresh).stdout
    assert again.count("Layer already exists") == 2 and again.splitlines()[-1] == out[-1]
    other = {"COCIN_ROOT": target_tmp / "root2"}
    pulled = cocin.ok("pull", f"{repo}:1", env=other).stdout
    assert f"Digest: {digest}" in pulled
    info2 = json.loads(cocin.ok("image", "inspect", f"{repo}:1", env=other).stdout)[0]
    assert info2["Id"] == image_id == info["Id"] and info2["RootFS"] == info["RootFS"]
    assert cocin.ok("run", "--rm", "--network", "none", f"{repo}:1", env=other).stdout == "pushed\n"
    # by digest, as another client would name it
    assert cocin.ok("pull", "-q", f"{repo}@{digest}", env=other).stdout.strip() == f"{repo}@{digest}"


def test_push_mounts_layers_from_another_repository(cocin, registry, fresh):
    reg = registry["REGISTRY_OPEN"]
    cocin.ok("pull", "-q", f"{reg}/test/busybox:oci", env=fresh)
    cocin.ok("tag", f"{reg}/test/busybox:oci", f"{reg}/cocin-push/mounted:v1", env=fresh)
    out = cocin.ok("push", f"{reg}/cocin-push/mounted:v1", env=fresh).stdout
    assert out.count("Mounted from test/busybox") == 2 and "Pushed" not in out, out
    log = cocin.sh(f"cat {registry['REGISTRY_DIR']}/logs/open.log").stdout
    assert "mount=sha256%3A31774a2b" in log or "mount=sha256:31774a2b" in log


def test_push_errors(cocin, registry, fresh, target_tmp):
    reg = registry["REGISTRY_OPEN"]
    r = cocin("push", f"{reg}/cocin-push/nothing:1", env=fresh)
    assert r.rc == 125 and r.stderr == (
        f"cocin: error: An image does not exist locally with the tag: {reg}/cocin-push/nothing\n"
    )
    cocin.ok("run", "--rm", "--network", "none", "busybox", "true", env=fresh)
    ro = f"{registry['REGISTRY_BASIC']}/cocin-push/ro:1"
    cocin.ok("tag", "busybox", ro, env=fresh)
    r = cocin("push", ro, env=fresh)  # no credentials
    assert r.rc == 125 and "push access denied" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    creds = _docker_config(target_tmp, [registry["REGISTRY_BASIC"]])
    r = cocin("push", ro, env={**fresh, **creds})  # read-only registry: 405
    assert r.rc == 125 and r.stderr.startswith("cocin: error: ") and r.stderr.count("\n") == 1, r.stderr


# --- login / logout --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["REGISTRY_BASIC", "REGISTRY_HUB"])
def test_login_stores_checked_credentials_as_docker_does(cocin, registry, fresh, target_tmp, which):
    server = registry[which]
    env = {**fresh, "DOCKER_CONFIG": target_tmp / "dc"}
    r = cocin("login", "-u", "tester", "--password-stdin", server, env=env, stdin="wrong\n")
    assert r.rc == 125 and "incorrect username or password" in r.stderr, r.stderr
    assert not target_tmp.exists("dc/config.json")
    r = cocin("login", "-u", "tester", "--password-stdin", server, env=env, stdin="test-password-1\n")
    assert r.rc == 0 and r.stdout == "Login Succeeded\n", r.stderr
    assert cocin.sh(f"stat -c %a {target_tmp / 'dc/config.json'}").stdout.strip() == "600"
    stored = json.loads(target_tmp.read("dc/config.json"))
    assert base64.b64decode(stored["auths"][server]["auth"]) == b"tester:test-password-1"
    private = f"{server}/private/busybox" if which == "REGISTRY_HUB" else f"{server}/test/busybox:oci"
    cocin.ok("pull", "-q", private, env=env)
    assert cocin.ok("logout", server, env=env).stdout == f"Removing login credentials for {server}\n"
    assert json.loads(target_tmp.read("dc/config.json"))["auths"] == {}
    assert cocin.ok("logout", server, env=env).stdout == f"Not logged in to {server}\n"
    r = cocin("pull", private, env=env)
    assert r.rc == 125 and "pull access denied" in r.stderr


def test_login_needs_a_terminal_or_a_password(cocin, registry, fresh, target_tmp):
    env = {**fresh, "DOCKER_CONFIG": target_tmp / "dc"}
    r = cocin("login", registry["REGISTRY_BASIC"], env=env, stdin="")
    assert r.rc == 125 and r.stderr == "cocin: error: Cannot perform an interactive login from a non TTY device\n"
    r = cocin("login", "--password-stdin", registry["REGISTRY_BASIC"], env=env, stdin="x")
    assert r.rc == 125 and "Must provide --username with --password-stdin" in r.stderr


def test_docker_hub_names_pull_through_a_mirror(cocin, registry, fresh):
    """``busybox`` is Docker Hub's ``library/busybox``: with a mirror set it comes
    from there (the kit serves library/busybox). Should cocin go past the mirror,
    the dead HTTPS proxy stops it before the internet."""
    env = {
        **fresh,
        "COCIN_REGISTRY_MIRRORS": f"http://{registry['REGISTRY_OPEN']}",
        "https_proxy": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
    }
    out = cocin.ok("pull", "busybox", env=env).stdout
    assert out.startswith("latest: Pulling from library/busybox\n") and out.count("Pull complete") == 2, out
    assert out.endswith("Status: Downloaded newer image for busybox:latest\ndocker.io/library/busybox:latest\n")
    info = json.loads(cocin.ok("image", "inspect", "busybox", env=fresh).stdout)[0]
    assert info["Id"].startswith("sha256:325eba67") and info["RepoTags"] == ["busybox:latest"]
    r = cocin("pull", "busybox:nosuchtag", env=env)  # not on the mirror: Docker Hub, here a dead proxy
    assert r.rc == 125 and "cannot reach the registry https://registry-1.docker.io" in r.stderr, r.stderr


def test_pull_progress_lines(cocin, registry, fresh):
    ref = f"{registry['REGISTRY_OPEN']}/test/busybox:v2s2"
    lines = cocin.ok("pull", ref, env=fresh).stdout.splitlines()
    assert lines[0] == "v2s2: Pulling from test/busybox"
    assert [line.split(": ", 1)[1] for line in lines[1:3]] == ["Pulling fs layer"] * 2
    assert [line.split(":")[0] for line in lines[1:3]] == ["31774a2b45d2", "a74e60992cf2"]  # the gzip blobs
    for layer in ("31774a2b45d2", "a74e60992cf2"):
        assert [f"{layer}: {s}" for s in ("Verifying Checksum", "Download complete", "Pull complete")] == [
            line for line in lines if line.startswith(layer + ":")
        ][1:]
    assert lines[-1] == ref and lines[-2] == f"Status: Downloaded newer image for {ref}"
    again = cocin.ok("pull", ref, env=fresh).stdout.splitlines()
    assert again[-2] == f"Status: Image is up to date for {ref}"
    assert cocin.ok("pull", "-q", ref, env=fresh).stdout == ref + "\n"


def test_a_pulled_layer_is_pushed_as_the_blob_it_came_as(cocin, registry, fresh):
    """With no record of where its blobs are (no mount possible), a pulled image
    is uploaded from the compressed blobs kept at pull: the same layer digests."""
    reg = registry["REGISTRY_OPEN"]
    cocin.ok("pull", "-q", f"{reg}/test/busybox:v2s2", env=fresh)
    cocin.sh(f"rm -rf {fresh['COCIN_ROOT']}/distribution")
    target = f"{reg}/cocin-push/reupload:1"
    cocin.ok("tag", f"{reg}/test/busybox:v2s2", target, env=fresh)
    out = cocin.ok("push", target, env=fresh).stdout
    assert out.count(": Pushed") == 2, out
    other = {"COCIN_ROOT": fresh["COCIN_ROOT"] + "-2"}
    try:
        pulled = cocin.ok("pull", target, env=other).stdout
    finally:
        cocin.sh(f"rm -rf {other['COCIN_ROOT']}")
    assert "31774a2b45d2: Pull complete" in pulled and "a74e60992cf2: Pull complete" in pulled


def test_push_asks_the_token_server_for_push_and_mount_scopes(cocin, registry, fresh, target_tmp):
    """On the token-auth registry (read-only here): anonymous tokens carry no
    push right (refused), with credentials the token asks for ``pull,push`` on
    the repository and ``pull`` on the mount source; the registry then says 405."""
    hub = registry["REGISTRY_HUB"]
    log = registry["REGISTRY_HELPER_LOG"]
    cocin.ok("pull", "-q", f"{hub}/test/busybox:oci", env=fresh)
    target = f"{hub}/cocin-push/tokens:1"
    cocin.ok("tag", f"{hub}/test/busybox:oci", target, env=fresh)
    r = cocin("push", target, env=fresh)
    assert r.rc == 125 and "push access denied for " + target.rsplit(":", 1)[0] in r.stderr, r.stderr
    seen = len(cocin.sh(f"cat {log}").stdout.splitlines())
    creds = _docker_config(target_tmp, [hub])
    r = cocin("push", target, env={**fresh, **creds})
    assert r.rc == 125 and "refuses to push" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    tokens = [json.loads(line) for line in cocin.sh(f"cat {log}").stdout.splitlines()[seen:]]
    scopes = {s for t in tokens if t["kind"] == "token" for s in t["query"].get("scope", [])}
    assert {"repository:cocin-push/tokens:pull,push", "repository:test/busybox:pull"} <= scopes, tokens
    assert all(t["basic_auth"] for t in tokens if t["kind"] == "token")


def test_push_all_tags(cocin, registry, fresh):
    reg = registry["REGISTRY_OPEN"]
    cocin.ok("pull", "-q", f"{reg}/test/busybox:oci", env=fresh)
    repo = f"{reg}/cocin-push/alltags"
    for tag in ("a", "b"):
        cocin.ok("tag", f"{reg}/test/busybox:oci", f"{repo}:{tag}", env=fresh)
    out = cocin.ok("image", "push", "--all-tags", repo, env=fresh).stdout.splitlines()
    assert [line.split(":")[0] for line in out if ": digest: " in line] == ["a", "b"], out
    r = cocin("push", "-a", f"{repo}:a", env=fresh)
    assert r.rc == 125 and "tag can't be used with --all-tags/-a" in r.stderr
    other = {"COCIN_ROOT": fresh["COCIN_ROOT"] + "-2"}
    try:
        assert cocin.ok("pull", "-q", f"{repo}:b", env=other).stdout == f"{repo}:b\n"
    finally:
        cocin.sh(f"rm -rf {other['COCIN_ROOT']}")


BAD_IMAGE = r"""
import hashlib, json, sys, urllib.request
reg = sys.argv[1]
def req(method, path, body=b"", headers={}):
    url = path if path.startswith("http") else f"http://{reg}{path}"
    r = urllib.request.Request(url, data=body, method=method, headers=headers)
    return urllib.request.urlopen(r)
accept = "application/vnd.docker.distribution.manifest.v2+json"
m = json.load(req("GET", "/v2/test/busybox/manifests/v2s2", None, {"Accept": accept}))
config = json.load(req("GET", f"/v2/test/busybox/blobs/{m['config']['digest']}", None))
config["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64  # the top layer will not match: the base is stored first
raw = json.dumps(config).encode()
digest = "sha256:" + hashlib.sha256(raw).hexdigest()
loc = req("POST", "/v2/cocin-bad/img/blobs/uploads/").headers["Location"]
req("PUT", loc + "&digest=" + digest, raw, {"Content-Type": "application/octet-stream"})
for layer in m["layers"]:
    req("POST", f"/v2/cocin-bad/img/blobs/uploads/?mount={layer['digest']}&from=test/busybox")
m["config"] = {"mediaType": m["config"]["mediaType"], "size": len(raw), "digest": digest}
req("PUT", "/v2/cocin-bad/img/manifests/1", json.dumps(m).encode(), {"Content-Type": accept})
"""


def test_a_layer_that_fails_its_diff_id_leaves_nothing(cocin, registry, fresh, target_tmp):
    """Layers are fetched a few at once: one failing stops the others, and the
    layers already stored for the image are removed again."""
    script = target_tmp.write("bad.py", BAD_IMAGE)
    r = cocin.sh(f"python3 {script} {registry['REGISTRY_OPEN']}")
    assert r.rc == 0, r.stderr
    r = cocin("pull", f"{registry['REGISTRY_OPEN']}/cocin-bad/img:1", env=fresh)
    assert r.rc == 125 and "the config says sha256:000000" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert _left(cocin, fresh) == ""
    assert cocin.sh(f"ls -A {fresh['COCIN_ROOT']}/layers/sha256").stdout == ""


def test_an_oci_layout_alone_loads_from_a_compressed_pipe(cocin, registry, fresh, target_tmp):
    """cocin's save without Docker's manifest.json and repositories is a plain
    OCI image layout: it loads too, gzipped, from standard input."""
    ref = f"{registry['REGISTRY_OPEN']}/test/busybox:oci"
    cocin.ok("pull", "-q", ref, env=fresh)
    image_id = json.loads(cocin.ok("image", "inspect", ref, env=fresh).stdout)[0]["Id"]
    tar = target_tmp / "oci.tar"
    cocin.ok("save", "-o", tar, ref, env=fresh)
    r = cocin.sh(f"tar --delete -f {tar} manifest.json repositories && gzip {tar}")
    assert r.rc == 0, r.stderr
    other = {"COCIN_ROOT": target_tmp / "root2"}
    r = cocin.sh(f"{cocin.cmdline('load', env=other)} < {tar}.gz")
    assert r.rc == 0 and r.stdout == f"Loaded image: {ref}\n", r.stderr
    assert json.loads(cocin.ok("image", "inspect", ref, env=other).stdout)[0]["Id"] == image_id
    assert cocin.ok("run", "--rm", "--network", "none", ref, env=other).stdout == OUTPUT
