"""End-to-end: the layer store. Layers stored once by chain ID and shared
between images, containers mounting an image's layers as overlay lowerdirs,
``commit`` adding one layer of the container's changes (whiteouts and opaque
directories included), ``rmi`` removing only what no other image uses, and
the upgrade of a state root made before layers."""

from __future__ import annotations

import json
import shlex

import pytest


def _layers(cocin) -> set[str]:
    return set(cocin.sh(f"ls {cocin.root}/layers/sha256").stdout.split())


def _inspect(cocin, ref: str) -> dict:
    return json.loads(cocin.ok("inspect", ref).stdout)[0]


@pytest.fixture
def cleanup(cocin):
    """Images named by the test, removed after it (also when it fails)."""
    names: list[str] = []
    yield names
    for name in reversed(names):
        cocin("rmi", "-f", name)


def test_commit_adds_one_shared_layer_and_rmi_removes_only_its_own(cocin, cleanup):
    cleanup += ["layered1", "layered2"]
    base = _inspect(cocin, "busybox")
    before = _layers(cocin)
    cocin.ok(
        "run",
        "--name",
        "l1",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "echo one > /one; mkdir -p /opq/sub; echo old > /opq/sub/f",
    )
    cocin.ok("commit", "l1", "layered1")
    cocin.ok(
        "run",
        "--name",
        "l2",
        "--network",
        "none",
        "layered1",
        "sh",
        "-c",
        "rm /one; rm -rf /opq; mkdir /opq; echo new > /opq/g; echo two > /two",
    )
    cocin.ok("commit", "l2", "layered2")
    one, two = _inspect(cocin, "layered1"), _inspect(cocin, "layered2")
    assert one["RootFS"]["Layers"][:1] == base["RootFS"]["Layers"]
    assert two["RootFS"]["Layers"][:2] == one["RootFS"]["Layers"] and len(two["RootFS"]["Layers"]) == 3
    added = _layers(cocin) - before
    assert len(added) == 2, added  # one layer per commit; busybox's is shared, not copied
    # The second commit's layer holds the changes only, in overlay's own format.
    rec = cocin.record("l2")
    top = rec["config"]["lower"].split(":")[0]  # layered1's top layer: the container's lower
    cocin.ok("rm", "l1", "l2")
    cocin.ok("run", "--name", "l3", "--network", "none", "layered2", "true")
    lower = cocin.record("l3")["config"]["lower"].split(":")
    assert len(lower) == 3 and lower[1] == top
    opaque = "import os; print(os.getxattr('opq', 'trusted.overlay.opaque').decode())"
    newest = cocin.sh(
        f"cd {shlex.quote(lower[0])}/ && find . | sort && stat -c '%F %t:%T' one && "
        f"{cocin.python} -c {shlex.quote(opaque)}"
    )
    assert newest.stdout.split("\n") == [
        ".",
        "./one",
        "./opq",
        "./opq/g",
        "./two",
        "character special file 0:0",
        "y",
        "",
    ], newest.stdout
    # Inside: the whiteout and the opaque directory act through three layers.
    r = cocin.ok(
        "run",
        "--rm",
        "--network",
        "none",
        "layered2",
        "sh",
        "-c",
        "ls /one 2>&1; ls /opq; cat /two; grep -c ' / overlay' /proc/mounts",
    )
    assert r.stdout.splitlines() == ["ls: /one: No such file or directory", "g", "two", "1"]
    cocin.ok("rm", "l3")
    cocin.ok("rmi", "layered2")
    left = _layers(cocin) - before  # layered1's own layer only
    assert [c[:26] for c in left] == [lower[1].rsplit("/", 1)[-1]], left
    assert cocin.ok("run", "--rm", "--network", "none", "layered1", "cat", "/one").stdout == "one\n"
    cocin.ok("rmi", "layered1")
    assert _layers(cocin) == before
    assert cocin.ok("run", "--rm", "--network", "none", "busybox", "true").rc == 0


def test_rmi_force_keeps_the_layers_of_a_container_until_it_goes(cocin, cleanup):
    cleanup.append("forced")
    before = _layers(cocin)
    cocin.ok("run", "--name", "f1", "--network", "none", "busybox", "sh", "-c", "echo f > /f")
    cocin.ok("commit", "f1", "forced")
    cocin.ok("rm", "f1")
    cocin.ok("create", "--name", "f2", "--network", "none", "forced", "cat", "/f")
    cocin.ok("rmi", "-f", "forced")
    assert "forced" not in cocin.ok("images").stdout.split()
    assert cocin.ok("start", "-a", "f2").stdout == "f\n"  # its layers are still there
    cocin.ok("rm", "f2")
    assert _layers(cocin) == before  # and went with their last user


def test_a_deep_stack_of_layers_mounts(cocin, cleanup):
    """45 layers: their 64-digit paths would not fit in the one page of mount
    options the kernel takes; the short l/ names, relative to it, do."""
    image = "busybox"
    for i in range(45):
        name = f"deep{i}"
        cleanup.append(name)
        cocin.ok("run", "--name", "deeper", "--network", "none", image, "sh", "-c", f"echo {i} > /level")
        cocin.ok("commit", "deeper", name)
        cocin.ok("rm", "deeper")
        image = name
    assert len(_inspect(cocin, image)["RootFS"]["Layers"]) == 46
    r = cocin.ok("run", "--rm", "--network", "none", image, "sh", "-c", "cat /level; ls /bin/busybox")
    assert r.stdout == "44\n/bin/busybox\n"


def test_an_old_flat_store_is_upgraded_in_place(cocin, target_tmp):
    """A state root from before layers: ``images/NAME.json`` pointing at a flat
    tree ``layers/<id>/``, and a container made from it. The first command
    turns the tree into a one-layer image (moved, not copied) and the
    container's record follows."""
    root = target_tmp / "oldroot"
    env = {"COCIN_ROOT": root}
    flat = "ab" * 32
    cocin.ok("create", "--name", "proto", "--network", "none", "busybox", "cat", "/hello")
    rec = cocin.record("proto")
    busybox_tree = rec["config"]["lower"]
    cocin.ok("rm", "proto")
    script = (
        f"mkdir -p {root}/images {root}/layers/{flat} && chmod 700 {root} && "
        f"cp -a {busybox_tree}/. {root}/layers/{flat}/ && echo hello-old > {root}/layers/{flat}/hello && "
        f'printf \'%s\' \'{{"name": "old", "id": "{flat}", "created": 1000.0, "size": 1, '
        f'"source": "import old.tar"}}\' > {root}/images/old.json'
    )
    assert cocin.sh(script).rc == 0
    inode = cocin.sh(f"stat -c %i {root}/layers/{flat}/bin/busybox").stdout
    try:
        cocin.ok("create", "--name", "keep", "--network", "none", "old", "cat", "/hello", env=env)
        out = cocin.ok("images", env=env).stdout.splitlines()
        assert out[1].split()[:2] == ["old", "latest"], out
        assert cocin.sh(f"test -e {root}/images || test -e {root}/layers/{flat}").rc != 0
        # moved, not copied: the same inode under its chain ID
        assert cocin.sh(f"stat -c %i {root}/layers/sha256/*/diff/bin/busybox").stdout == inode
        assert cocin.ok("start", "-a", "keep", env=env).stdout == "hello-old\n"
        assert cocin.ok("run", "--rm", "--network", "none", "old", "cat", "/hello", env=env).stdout == "hello-old\n"
        info = json.loads(cocin.ok("inspect", "old", env=env).stdout)[0]
        assert len(info["RootFS"]["Layers"]) == 1 and info["Comment"] == "import old.tar"
    finally:
        cocin("rm", "-f", "keep", env=env)


def test_an_old_store_with_a_container_is_upgraded(cocin, target_tmp):
    """A container record of the old kind (image_id = the flat tree's id,
    lower = its path) runs as it is until the first command that looks at the
    images upgrades the store; it then has the new image ID and lowerdir."""
    root = target_tmp / "oldroot2"
    env = {"COCIN_ROOT": root}
    cocin.ok("create", "--name", "proto2", "--network", "none", "busybox", "cat", "/hello", env=env)
    cid = cocin.ok("inspect", "-f", "{{.Id}}", "proto2", env=env).stdout.strip()
    flat = "cd" * 32
    try:
        script = "; ".join(
            [
                f"set -e; cd {root}",
                f"mkdir -p images layers/{flat}",
                f"cp -a l/*/. layers/{flat}/",
                f"echo hello-rec > layers/{flat}/hello",
                f'printf \'%s\' \'{{"name": "bb", "id": "{flat}", "created": 1.0, "size": 1, '
                f'"source": "s"}}\' > images/bb.json',
                "rm -rf imagedb l layers/sha256 repositories.json",
                f"{cocin.python} -c \"import json,sys; p='containers/{cid}/config.json'; d=json.load(open(p)); "
                f"d['config']['image_id']='{flat}'; d['config']['lower']='{root}/layers/{flat}'; "
                "json.dump(d, open(p, 'w'))\"",
            ]
        )
        r = cocin.sh(script)
        assert r.rc == 0, r.stderr
        assert cocin.ok("start", "-a", "proto2", env=env).stdout == "hello-rec\n"  # not upgraded yet
        assert "bb " in cocin.ok("images", env=env).stdout  # the first look at the images upgrades
        assert cocin.ok("start", "-a", "proto2", env=env).stdout == "hello-rec\n"
        rec = json.loads(cocin.sh(f"cat {root}/containers/{cid}/config.json").stdout)
        assert rec["config"]["image_id"] != flat and rec["config"]["lower"].startswith(f"{root}/l/")
        cocin.ok("rmi", "-f", "bb", env=env)
        cocin.ok("rm", "proto2", env=env)
        assert cocin.sh(f"ls -A {root}/layers/sha256 {root}/imagedb").stdout.split() == [
            f"{root}/imagedb:",
            f"{root}/layers/sha256:",
        ]
    finally:
        cocin("rm", "-f", "proto2", env=env)


# --- the image config: run honours it, commit carries it ---------------------------------

CONFIG_CHANGES = [
    'ENTRYPOINT ["/bin/sh", "-c"]',
    'CMD ["echo \\"hello from $GREETING as $(id -u):$(id -g) in $(pwd)\\""]',
    "ENV GREETING=cocin-test-image",
    "WORKDIR /app",
    "USER 1000:1000",
    "EXPOSE 8080",
    "LABEL org.example=yes",
    "STOPSIGNAL SIGINT",
]


@pytest.fixture
def config_image(cocin):
    """busybox plus /app (owned by 1000), with the config of ../shared/registry's test image."""
    cocin.ok(
        "run", "--name", "cfgsrc", "--network", "none", "busybox", "sh", "-c", "mkdir -p /app && chown 1000:1000 /app"
    )
    args = [a for c in CONFIG_CHANGES for a in ("-c", c)]
    try:
        cocin.ok("commit", *args, "-m", "with a config", "cfgsrc", "cfgimg")
        yield "cfgimg"
    finally:
        cocin("rm", "-f", "cfgsrc")
        cocin("rmi", "-f", "cfgimg")


def test_run_honours_the_image_config(cocin, config_image):
    run = ("run", "--rm", "--network", "none")
    assert cocin.ok(*run, config_image).stdout == "hello from cocin-test-image as 1000:1000 in /app\n"
    # A command replaces Cmd, not Entrypoint; -u, -w, -e override the image's.
    assert cocin.ok(*run, config_image, "id -u; pwd").stdout == "1000\n/app\n"
    assert (
        cocin.ok(
            *run, "-u", "0", "-w", "/tmp", "-e", "GREETING=flag", config_image, 'echo "$GREETING $(id -u) $(pwd) $HOME"'
        ).stdout
        == "flag 0 /tmp /root\n"
    )
    # --entrypoint replaces Entrypoint and drops the image's Cmd.
    assert cocin.ok(*run, "--entrypoint", "echo", config_image, "a", "b").stdout == "a b\n"
    r = cocin(*run, "--entrypoint", "", config_image)
    assert r.rc == 125 and r.stderr == "cocin: error: no command specified\n"
    # busybox's own config: CMD ["sh"], so no command runs a shell reading stdin.
    assert cocin.ok(*run, "-i", "busybox", stdin="echo from-stdin-sh\n").stdout == "from-stdin-sh\n"
    cocin.ok("create", "--name", "cfgc", "--network", "none", config_image)
    rec = cocin.record("cfgc")
    assert rec["argv"] == ["/bin/sh", "-c", 'echo "hello from $GREETING as $(id -u):$(id -g) in $(pwd)"']
    assert rec["config"]["user"] == "1000:1000" and rec["config"]["workdir"] == "/app"
    assert cocin.ok("start", "-a", "cfgc").stdout == "hello from cocin-test-image as 1000:1000 in /app\n"


def test_inspect_and_history_show_the_config(cocin, config_image):
    info = _inspect(cocin, config_image)
    cfg = info["Config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["WorkingDir"] == "/app" and cfg["User"] == "1000:1000"
    assert "GREETING=cocin-test-image" in cfg["Env"] and cfg["ExposedPorts"] == {"8080/tcp": {}}
    assert cfg["Labels"] == {"org.example": "yes"} and cfg["StopSignal"] == "SIGINT"
    assert info["Comment"] == "with a config" and info["RepoTags"] == ["cfgimg:latest"]
    lines = cocin.ok("history", config_image).stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    assert lines[1].startswith(info["Id"][7:19]) and "sh -c mkdir -p /app" in lines[1]
    assert lines[1].endswith("with a config")
    assert lines[2].startswith("<missing>") and "host /" in lines[2] and len(lines) == 3
    assert cocin.ok("history", "-q", "--no-trunc", config_image).stdout == f"{info['Id']}\n<missing>\n"


def test_commit_carries_the_containers_config(cocin, config_image, cleanup):
    cleanup.append("carried")
    cocin.ok(
        "run",
        "--name",
        "carry",
        "--network",
        "none",
        "-e",
        "EXTRA=1",
        "-w",
        "/tmp",
        config_image,
        "echo $EXTRA > /tmp/x; cat /tmp/x",
    )
    cocin.ok("commit", "-c", 'CMD ["cat /tmp/x; echo $EXTRA"]', "carry", "carried")
    cfg = _inspect(cocin, "carried")["Config"]
    assert cfg["Cmd"] == ["cat /tmp/x; echo $EXTRA"]  # the image's Entrypoint is sh -c
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and cfg["WorkingDir"] == "/tmp" and cfg["User"] == "1000:1000"
    assert "EXTRA=1" in cfg["Env"] and "GREETING=cocin-test-image" in cfg["Env"]
    assert not any(e.startswith(("HOSTNAME=", "HOME=")) for e in cfg["Env"])  # set at run time, not image config
    r = cocin.ok("run", "--rm", "--network", "none", "carried")
    assert r.stdout == "1\n1\n"
    before = _layers(cocin)
    r = cocin("commit", "-c", "RUN make", "carry", "refused")
    assert r.rc == 125 and r.stderr == "cocin: error: run is not a valid change command\n"
    assert _layers(cocin) == before and "refused" not in cocin.ok("images").stdout


# --- references, tag, rmi, images, image inspect ---------------------------------------------


def test_references_and_ids_name_images(cocin, cleanup):
    cleanup += ["127.0.0.1:5999/team/box:v1", "user/app:1.0", "bb17"]
    bid = _inspect(cocin, "busybox")["Id"]
    for ref in (
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
        bid,
        bid[7:],
        bid[7:19],
        bid[7:13],
    ):
        assert _inspect(cocin, ref)["Id"] == bid, ref
        assert cocin.ok("run", "--rm", "--network", "none", ref, "true").rc == 0
    cocin.ok("tag", "busybox", "127.0.0.1:5999/team/box:v1")
    cocin.ok("image", "tag", bid[7:19], "docker.io/user/app:1.0")
    cocin.ok("tag", "busybox", "bb17")
    info = json.loads(cocin.ok("image", "inspect", "user/app:1.0").stdout)[0]
    assert info["Id"] == bid and info["RootFS"]["Type"] == "layers"
    assert info["RepoTags"] == ["127.0.0.1:5999/team/box:v1", "bb17:latest", "busybox:latest", "user/app:1.0"]
    assert info["Config"]["Cmd"] == ["sh"] and info["RepoDigests"] == []
    rows = [ln.split() for ln in cocin.ok("images").stdout.splitlines()]
    assert rows[0] == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert ["127.0.0.1:5999/team/box", "v1", bid[7:19]] in [r[:3] for r in rows]
    assert ["user/app", "1.0", bid[7:19]] in [r[:3] for r in rows]
    assert [r[:2] for r in rows[1:] if r[0].startswith("b")] == [["bb17", "latest"], ["busybox", "latest"]]
    filtered = cocin.ok("images", "127.0.0.1:5999/team/*").stdout.splitlines()
    assert len(filtered) == 2 and filtered[1].split()[:2] == ["127.0.0.1:5999/team/box", "v1"]
    assert cocin.ok("images", "user/app:1.*", "-q").stdout == bid[7:19] + "\n"
    assert cocin.ok("image", "ls", "--no-trunc", "-q", "bb17").stdout == bid + "\n"
    r = cocin("run", "--rm", "Busybox", "true")
    assert (
        r.rc == 125
        and r.stderr == "cocin: error: invalid reference format: repository name (Busybox) must be lowercase\n"
    )
    r = cocin("tag", "busybox", f"x@sha256:{'a' * 64}")
    assert r.rc == 125 and "digest" in r.stderr
    # By name: a tag at a time; by ID: refused while several names point at it.
    assert cocin.ok("rmi", "bb17").stdout == "Untagged: bb17:latest\n"
    r = cocin("rmi", bid[7:19])
    assert r.rc == 125 and r.stderr == (
        f"cocin: error: conflict: unable to delete {bid[7:19]} (must be forced) - "
        "image is referenced in multiple repositories\n"
    )
    assert (
        cocin.ok("image", "rm", "127.0.0.1:5999/team/box:v1", "docker.io/user/app:1.0").stdout
        == "Untagged: 127.0.0.1:5999/team/box:v1\nUntagged: user/app:1.0\n"
    )
    assert _inspect(cocin, "busybox")["RepoTags"] == ["busybox:latest"]
    r = cocin("rmi", "nosuch:tag")
    assert r.rc == 125 and r.stderr == "cocin: error: No such image: nosuch:tag\n"


def test_rmi_rules_with_containers(cocin, cleanup):
    cleanup += ["rules1", "rules2"]
    cocin.ok("run", "--name", "rsrc", "--network", "none", "busybox", "sh", "-c", "echo r > /r")
    cocin.ok("commit", "rsrc", "rules1")
    cocin.ok("tag", "rules1", "rules2")
    img = _inspect(cocin, "rules1")["Id"][7:]
    cocin.ok("run", "-d", "--name", "rrun", "--network", "none", "rules1", "sleep", "300")
    # One of two names goes even while a container runs it.
    assert cocin.ok("rmi", "rules2").stdout == "Untagged: rules2:latest\n"
    r = cocin("rmi", "rules1")
    assert r.rc == 125 and "(must force) - container" in r.stderr and f"referenced image {img[:12]}" in r.stderr
    r = cocin("rmi", "-f", img[:12])
    assert r.rc == 125 and "(cannot be forced) - image is being used by running container" in r.stderr
    cocin.ok("stop", "-t", "0", "rrun")
    r = cocin("rmi", img[:12])
    assert r.rc == 125 and "(must be forced) - image is being used by stopped container" in r.stderr
    # -f by name: untagged; the image stays (untagged, images -a) for its container.
    assert cocin.ok("rmi", "-f", "rules1").stdout == "Untagged: rules1:latest\n"
    assert img[:12] not in cocin.ok("images").stdout
    assert [ln.split()[:3] for ln in cocin.ok("images", "-a").stdout.splitlines() if img[:12] in ln] == [
        ["<none>", "<none>", img[:12]]
    ]
    cocin.ok("start", "rrun")  # its layers are all there
    cocin.ok("rm", "-f", "rrun")
    assert img[:12] not in cocin.ok("images", "-a").stdout
    assert cocin.sh(f"test -e {cocin.root}/imagedb/{img}").rc != 0


# --- save / load (docker-archive), export / import through pipes -----------------------------


def test_save_load_round_trip_keeps_ids(cocin, target_tmp, cleanup):
    cleanup += ["saved1", "saved2"]
    cocin.ok("run", "--name", "sv", "--network", "none", "busybox", "sh", "-c", "echo s > /s; rm /bin/vi")
    cocin.ok("commit", "-c", 'CMD ["cat", "/s"]', "sv", "saved1")
    cocin.ok("tag", "saved1", "saved2")
    ids = {n: _inspect(cocin, n)["Id"] for n in ("saved1", "saved2", "busybox")}
    layers = _inspect(cocin, "saved1")["RootFS"]["Layers"]
    out = target_tmp / "out.tar"
    cocin.ok("save", "-o", out, "saved1", "busybox")
    listing = cocin.sh(f"tar tf {out}").stdout.split()
    assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= set(listing)
    manifest = json.loads(cocin.sh(f"tar xOf {out} manifest.json").stdout)
    assert [m["RepoTags"] for m in manifest] == [["saved1:latest"], ["busybox:latest"]]
    assert manifest[0]["Config"] == "blobs/sha256/" + ids["saved1"][7:]
    assert manifest[0]["Layers"] == ["blobs/sha256/" + d[7:] for d in layers]
    for name in {n for n in listing if n.startswith("blobs/")}:  # content-addressed: name = sha256
        assert cocin.sh(f"tar xOf {out} {name} | sha256sum").stdout.split()[0] == name.rsplit("/", 1)[1]
    cocin.ok("rm", "sv")
    cocin.ok("rmi", "saved1", "saved2")
    r = cocin.sh(f"gzip -c {out} | {cocin.cmdline('load')}")  # compressed, on stdin
    assert r.rc == 0 and r.stdout == "Loaded image: saved1:latest\nLoaded image: busybox:latest\n", r.stderr
    assert _inspect(cocin, "saved1")["Id"] == ids["saved1"] and _inspect(cocin, "busybox")["Id"] == ids["busybox"]
    assert _inspect(cocin, "saved1")["RootFS"]["Layers"] == layers
    assert cocin.ok("run", "--rm", "--network", "none", "saved1").stdout == "s\n"
    # to stdout, through a pipe
    piped = cocin.sh(f"{cocin.cmdline('save', 'saved1')} | tar tf - | grep -c '^blobs/'")
    assert piped.rc == 0 and int(piped.stdout) == len(layers) + 2  # layers, config, manifest


def test_load_refuses_a_tampered_archive(cocin, target_tmp, cleanup):
    cleanup.append("tampered")
    cocin.ok("run", "--name", "tp", "--network", "none", "busybox", "sh", "-c", "echo t > /t")
    cocin.ok("commit", "tp", "tampered")
    cocin.ok("rm", "tp")
    d = target_tmp / "x"
    cocin.ok("save", "-o", target_tmp / "t.tar", "tampered")
    top = _inspect(cocin, "tampered")["RootFS"]["Layers"][-1][7:]
    cocin.ok("rmi", "tampered")
    before = _layers(cocin)
    fix = (
        f"mkdir {d} && tar -C {d} -xf {target_tmp / 't.tar'} && cd {d} && "
        f"mkdir w && tar -C w -xf blobs/sha256/{top} && echo evil > w/t && tar -C w -cf blobs/sha256/{top} . "
        f"&& rm -rf w && tar -cf {target_tmp / 'bad.tar'} *"
    )
    assert cocin.sh(fix).rc == 0
    r = cocin("load", "-i", target_tmp / "bad.tar")
    assert r.rc == 125 and "the config says" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert _layers(cocin) == before and "tampered" not in cocin.ok("images").stdout


def test_export_and_import_through_pipes(cocin, cleanup):
    cleanup.append("piped")
    cocin.ok("run", "--name", "pp", "--network", "none", "busybox", "sh", "-c", "echo p > /p")
    r = cocin.sh(f"{cocin.cmdline('export', 'pp')} | tar tf - | grep -x p")
    assert r.rc == 0 and r.stdout == "p\n"
    r = cocin.sh(f"{cocin.cmdline('export', 'pp')} | gzip | {cocin.cmdline('import', '-', 'piped')}")
    assert r.rc == 0 and r.stdout.startswith("sha256:"), r.stderr
    assert cocin.ok("run", "--rm", "--network", "none", "piped", "cat", "/p").stdout == "p\n"
    assert _inspect(cocin, "piped")["Comment"] == "import -"


def test_import_with_changes(cocin, target_tmp, cleanup):
    cleanup.append("changed")
    cocin.ok("run", "--name", "ic", "--network", "none", "busybox", "sh", "-c", "echo c > /c")
    tar = target_tmp / "c.tar"
    cocin.ok("export", "ic", "-o", tar)
    r = cocin("import", "-c", "FROM x", tar, "changed")
    assert r.rc == 125 and r.stderr == "cocin: error: from is not a valid change command\n"
    cocin.ok(
        "import",
        "-c",
        'ENTRYPOINT ["cat"]',
        "-c",
        'CMD ["/c"]',
        "-c",
        "ENV K=v",
        "-m",
        "imported with changes",
        tar,
        "changed",
    )
    assert cocin.ok("run", "--rm", "--network", "none", "changed").stdout == "c\n"
    info = _inspect(cocin, "changed")
    assert info["Comment"] == "imported with changes" and "K=v" in info["Config"]["Env"]
    assert info["Config"]["Entrypoint"] == ["cat"] and info["Config"]["Cmd"] == ["/c"]


def test_pull_option(cocin):
    r = cocin("run", "--rm", "--pull", "sometimes", "busybox", "true")
    assert r.rc == 125 and r.stderr == (
        'cocin: error: invalid pull option: \'sometimes\': must be one of "always", "missing" or "never"\n'
    )
    r = cocin("run", "--rm", "--pull", "never", "127.0.0.1:1/nothing/here", "true")
    assert r.rc == 125 and r.stderr == "cocin: error: No such image: 127.0.0.1:1/nothing/here:latest\n"
    assert cocin.ok("run", "--rm", "--network", "none", "--pull", "never", "busybox", "true").rc == 0


def test_stop_sends_the_images_stop_signal(cocin, cleanup):
    cleanup += ["usr1img", "badsig"]
    cocin.ok("run", "--name", "ss", "--network", "none", "busybox", "true")
    cocin.ok("commit", "-c", "STOPSIGNAL SIGUSR1", "ss", "usr1img")
    cocin.ok(
        "run",
        "-d",
        "--name",
        "ssrun",
        "--network",
        "none",
        "usr1img",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 3' USR1; trap 'echo got-term; exit 4' TERM; "
        "echo ready; while true; do sleep 0.1; done",
    )
    for _ in range(50):
        if "ready" in cocin.ok("logs", "ssrun").stdout:
            break
    cocin.ok("stop", "-t", "5", "ssrun")
    assert cocin.record("ssrun")["exit_code"] == 3
    assert "got-usr1" in cocin.ok("logs", "ssrun").stdout
    cocin.ok("commit", "-c", "STOPSIGNAL SIGNOPE", "ss", "badsig")
    r = cocin("create", "--network", "none", "badsig")
    assert r.rc == 125 and r.stderr == "cocin: error: invalid signal: SIGNOPE\n"
