"""End-to-end: ``cocin build``. Real Dockerfiles built from the host's busybox
image, each built image then run (``cocin run``) and inspected: the config the
instructions wrote, one layer per filesystem step, the build cache (hits,
misses after a change, ``--no-cache``), multi-stage builds, ``.dockerignore``,
ARG/ENV substitution, and the failures (a failing RUN, a syntax error) that
must leave nothing half-made behind."""

from __future__ import annotations

import json
import shlex

import pytest


@pytest.fixture
def built(cocin):
    """Image names the test builds; removed after it, with the build cache."""
    names: list[str] = []
    yield names
    for name in names:
        cocin("rmi", "-f", name)
    cocin("builder", "prune", "-f")


def _layers(cocin) -> set[str]:
    return set(cocin.sh(f"ls {cocin.root}/layers/sha256").stdout.split())


def _inspect(cocin, ref: str) -> dict:
    return json.loads(cocin.ok("image", "inspect", ref).stdout)[0]


def _history(cocin, ref: str) -> list[str]:
    """The image's history steps, newest first (from its stored config)."""
    image_id = _inspect(cocin, ref)["Id"].partition(":")[2]
    cfg = json.loads(cocin.sh(f"cat {cocin.root}/imagedb/{image_id}").stdout)
    return [h["created_by"] for h in reversed(cfg["history"])]


def _build(cocin, d, *args: str, ok: bool = True):
    r = cocin("build", "--network", "none", *args, str(d), timeout=120)
    if ok:
        assert r.rc == 0, f"build failed rc={r.rc}:\n{r.stdout}\n{r.stderr}"
    return r


def test_busybox_web_server(cocin, built, target_tmp):
    built.append("bweb")
    target_tmp.write("site/index.html", "<h1>built by cocin</h1>\n")
    target_tmp.write(
        "Dockerfile",
        "# a web server\n"
        "FROM busybox\n"
        'ENV PORT=8080 \\\n    GREETING="hello there"\n'
        "WORKDIR /srv/www\n"
        "COPY --chown=nobody:nogroup site/ ./\n"
        'RUN echo "$GREETING" > /greeting\n'
        "EXPOSE $PORT\n"
        "USER nobody\n"
        'CMD ["sh", "-c", "exec httpd -f -p $PORT -h /srv/www"]\n',
    )
    r = cocin("build", "-t", "bweb", str(target_tmp), timeout=120)  # RUN on the default bridge network
    assert r.rc == 0, r.stderr
    steps = [ln for ln in r.stdout.splitlines() if ln.startswith("Step ")]
    assert steps[0] == "Step 1/8 : FROM busybox" and steps[-1].startswith("Step 8/8 : CMD")
    assert 'Step 2/8 : ENV PORT=8080     GREETING="hello there"' in steps  # the joined line, as written
    assert r.stdout.splitlines()[-2:][0].startswith("Successfully built ")
    assert r.stdout.splitlines()[-1] == "Successfully tagged bweb:latest"
    cfg = _inspect(cocin, "bweb")
    base = _inspect(cocin, "busybox")
    assert cfg["Config"]["Env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PORT=8080",
        "GREETING=hello there",
    ]
    assert cfg["Config"]["WorkingDir"] == "/srv/www"
    assert cfg["Config"]["User"] == "nobody"
    assert cfg["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert cfg["Config"]["Cmd"] == ["sh", "-c", "exec httpd -f -p $PORT -h /srv/www"]
    # WORKDIR, COPY and RUN made a layer each; ENV, EXPOSE, USER, CMD none
    assert cfg["RootFS"]["Layers"][:1] == base["RootFS"]["Layers"] and len(cfg["RootFS"]["Layers"]) == 4
    hist = _history(cocin, "bweb")
    assert hist[0] == '/bin/sh -c #(nop)  CMD ["sh" "-c" "exec httpd -f -p $PORT -h /srv/www"]'
    assert hist[1] == "/bin/sh -c #(nop)  USER nobody"
    assert hist[2] == "/bin/sh -c #(nop)  EXPOSE 8080"
    assert hist[3] == '/bin/sh -c echo "$GREETING" > /greeting'
    assert hist[4].startswith(
        "/bin/sh -c #(nop) COPY --chown=nobody:nogroupdir:"
    )  # sic: Docker's and hist[4].endswith(" in ./ ")  # as written
    assert hist[5] == "/bin/sh -c #(nop) WORKDIR /srv/www"
    assert hist[6] == "/bin/sh -c #(nop)  ENV PORT=8080 GREETING=hello there"
    # It runs as configured: as nobody, in /srv/www, serving the copied page.
    show = "id -u; pwd; cat /greeting index.html; stat -c %U:%G:%a index.html"
    r = cocin.ok("run", "--rm", "--network", "none", "bweb", "sh", "-c", show)
    assert r.stdout.splitlines() == [
        "65534",
        "/srv/www",
        "hello there",
        "<h1>built by cocin</h1>",
        "nobody:nogroup:644",
    ]
    cocin.ok("run", "-d", "--name", "bweb1", "--network", "none", "bweb")
    fetch = "for i in $(seq 50); do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1"
    r = cocin.ok("exec", "bweb1", "sh", "-c", fetch)
    assert r.stdout == "<h1>built by cocin</h1>\n"
    cocin.ok("rm", "-f", "bweb1")


def _static_busybox(cocin) -> str:
    code = (
        f"import sys; sys.path.insert(0, {cocin.repo!r}); from cocin.image_build import _is_static, find_busybox; "
        "p = find_busybox(); print(p if p and _is_static(p) else '')"
    )
    return cocin.sh(f"{cocin.python} -c {shlex.quote(code)}").stdout.strip()


def test_from_scratch_with_a_static_binary(cocin, built, target_tmp):
    bb = _static_busybox(cocin)
    if not bb:
        pytest.skip("the host's busybox is not static (apt-get install busybox-static)")
    built.append("bscratch")
    cocin.sh(f"cp {shlex.quote(bb)} {shlex.quote(target_tmp / 'busybox')}")
    target_tmp.write(
        "Dockerfile",
        'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\nCMD ["echo", "static", "ok"]\n',
    )
    r = _build(cocin, target_tmp, "-t", "bscratch")
    assert "Step 1/4 : FROM scratch" in r.stdout
    cfg = _inspect(cocin, "bscratch")
    assert len(cfg["RootFS"]["Layers"]) == 1
    assert cfg["Config"]["Entrypoint"] == ["/bin/busybox"] and cfg["Config"]["Cmd"] == ["echo", "static", "ok"]
    assert cfg["Config"]["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert cocin.ok("run", "--rm", "--network", "none", "bscratch").stdout == "static ok\n"
    r = cocin.ok("run", "--rm", "--network", "none", "bscratch", "ls", "/")
    assert sorted(r.stdout.split()) == ["bin", "dev", "etc", "proc", "sys"]  # only what cocin mounts, and bin


def test_two_stage_build_runs_only_the_needed_stages(cocin, built, target_tmp):
    built.append("btwo")
    target_tmp.write("src/main.txt", "compiled from source\n")
    target_tmp.write(
        "Dockerfile",
        "FROM busybox AS build\n"
        "COPY src /src\n"
        "RUN mkdir /out && (echo '#!/bin/sh'; echo 'cat <<EOT'; cat /src/main.txt; echo EOT) > /out/app "
        "&& chmod 755 /out/app\n"
        "\n"
        "FROM busybox AS unused\n"
        "RUN echo SHOULD-NOT-RUN\n"
        "\n"
        "FROM busybox\n"
        "COPY --from=build /out/app /usr/local/bin/app\n"
        'CMD ["app"]\n',
    )
    r = _build(cocin, target_tmp, "-t", "btwo")
    assert "SHOULD-NOT-RUN" not in r.stdout
    assert "Step 6/6 : CMD" in r.stdout  # the unused stage's steps are not counted either
    assert cocin.ok("run", "--rm", "--network", "none", "btwo").stdout == "compiled from source\n"
    cfg = _inspect(cocin, "btwo")
    assert len(cfg["RootFS"]["Layers"]) == 2  # busybox + the copied binary: nothing of the build stage
    # The build stage runs again for a new file, but makes the same binary: the COPY --from
    # is keyed by the files it copies, so the final stage is all cache.
    target_tmp.write("src/unrelated.txt", "x\n")
    r = _build(cocin, target_tmp, "-t", "btwo")
    assert r.stdout.count("Running in") == 1
    assert "COPY --from=build /out/app /usr/local/bin/app\n ---> Using cache" in r.stdout
    r = _build(cocin, target_tmp, "--target", "unused", "-q")
    assert r.stdout.startswith("sha256:") and "SHOULD-NOT-RUN" not in r.stdout  # -q: the ID only
    r = _build(cocin, target_tmp, "--target", "nosuch", ok=False)
    assert r.rc != 0 and "nosuch" in r.stderr


def test_arg_and_env_substitution(cocin, built, target_tmp):
    built.append("bargs")
    target_tmp.write(
        "Dockerfile",
        "ARG TAG=latest\n"
        "ARG UNSEEN=meta\n"
        "FROM busybox:${TAG}\n"
        "ARG TAG\n"
        "ARG WHO=world\n"
        "ARG EMPTY\n"
        "ENV A=1 B=${A:-unset} HOME_DIR=/home/$WHO\n"
        "ENV C=$A D=${EMPTY:-dflt} E=${WHO:+set} F='$A' G=\\$A\n"
        'LABEL who="$WHO" tag=$TAG unseen="${UNSEEN}"\n'
        "WORKDIR $HOME_DIR\n"
        'RUN echo "who=$WHO tag=$TAG unseen=$UNSEEN" > /args\n',
    )
    r = _build(cocin, target_tmp, "-t", "bargs", "--build-arg", "WHO=cocin", "--build-arg", "NOTDECLARED=1")
    assert "[Warning] One or more build-args [NOTDECLARED] were not consumed" in r.stdout
    cfg = _inspect(cocin, "bargs")["Config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    # one ENV's substitutions all see the variables as they were before it
    assert env["A"] == "1" and env["B"] == "unset" and env["HOME_DIR"] == "/home/cocin"
    assert (env["C"], env["D"], env["E"], env["F"], env["G"]) == ("1", "dflt", "set", "$A", "$A")
    assert "WHO" not in env and "TAG" not in env  # ARGs are not kept in the image
    assert cfg["Labels"] == {"who": "cocin", "tag": "latest", "unseen": ""}  # a meta ARG needs declaring again
    assert cfg["WorkingDir"] == "/home/cocin"
    r = cocin.ok("run", "--rm", "--network", "none", "bargs", "cat", "/args")
    assert r.stdout == "who=cocin tag=latest unseen=\n"
    hist = _history(cocin, "bargs")
    assert hist[0] == '|2 TAG=latest WHO=cocin /bin/sh -c echo "who=$WHO tag=$TAG unseen=$UNSEEN" > /args'
    # another value of a build arg is another cache key: the RUN runs again
    r = _build(cocin, target_tmp, "-t", "bargs", "--build-arg", "WHO=else")
    assert "Running in" in r.stdout
    assert cocin.ok("run", "--rm", "--network", "none", "bargs", "cat", "/args").stdout.startswith("who=else ")


def test_dockerignore(cocin, built, target_tmp):
    built.append("bignore")
    for name in ("keep.txt", "secret.key", "logs/a.log", "logs/keep.log", "sub/dir/x.tmp", "sub/y.txt"):
        target_tmp.write(name, name + "\n")
    target_tmp.write(".dockerignore", "# secrets\n*.key\nlogs\n!logs/keep.log\n**/*.tmp\nDockerfile\n")
    target_tmp.write("Dockerfile", "FROM busybox\nCOPY . /ctx/\n")
    _build(cocin, target_tmp, "-t", "bignore")
    r = cocin.ok("run", "--rm", "--network", "none", "bignore", "find", "/ctx", "-type", "f")
    assert sorted(r.stdout.split()) == [
        "/ctx/.dockerignore",
        "/ctx/keep.txt",
        "/ctx/logs/keep.log",
        "/ctx/sub/y.txt",
    ]  # the Dockerfile is read, but excluded it is not copied
    target_tmp.write("Dockerfile", "FROM busybox\nCOPY secret.key /\n")
    r = _build(cocin, target_tmp, ok=False)
    assert r.rc == 1
    assert "Dockerfile:2: COPY failed: file not found in build context or excluded by .dockerignore" in r.stderr


def test_cache_hit_and_miss(cocin, built, target_tmp):
    built.append("bcache")
    target_tmp.write("a.txt", "one\n")
    target_tmp.write(
        "Dockerfile",
        'FROM busybox\nRUN echo first > /first\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy\nCMD ["cat", "/copy"]\n',
    )
    before = _layers(cocin)
    r = _build(cocin, target_tmp, "-t", "bcache")
    assert r.stdout.count("Running in") == 2
    first_id = _inspect(cocin, "bcache")["Id"]
    layers = _layers(cocin)
    r = _build(cocin, target_tmp, "-t", "bcache")  # nothing changed: no RUN, no layer
    assert "Running in" not in r.stdout and r.stdout.count("Using cache") == 4
    assert _inspect(cocin, "bcache")["Id"] == first_id and _layers(cocin) == layers
    cocin.sh(f"touch -d '2001-01-01' {shlex.quote(target_tmp / 'a.txt')}")  # times are not content
    assert "Running in" not in _build(cocin, target_tmp, "-t", "bcache").stdout
    target_tmp.write("a.txt", "two\n")  # changed: COPY misses, and every step after it
    r = _build(cocin, target_tmp, "-t", "bcache")
    out = r.stdout.split("Step ")
    assert "Using cache" in out[2] and "Using cache" not in out[3] and "Running in" in out[4]
    assert cocin.ok("run", "--rm", "--network", "none", "bcache").stdout == "two\n"
    r = _build(cocin, target_tmp, "-t", "bcache", "--no-cache")
    assert "Using cache" not in r.stdout and r.stdout.count("Running in") == 2
    # rmi keeps what the cache holds; builder prune frees it all
    cocin.ok("rmi", "bcache")
    assert _layers(cocin) != before
    r = cocin.ok("builder", "prune", "-f")
    assert "Deleted: sha256:" in r.stdout
    assert _layers(cocin) == before
    assert "Using cache" not in _build(cocin, target_tmp).stdout


def test_failing_run_leaves_nothing_and_keeps_the_cache(cocin, built, target_tmp):
    target_tmp.write("Dockerfile", "FROM busybox\nRUN echo good > /good\nRUN echo failing; exit 3\nRUN echo never\n")
    containers = set(cocin.containers())
    r = _build(cocin, target_tmp, "-t", "bfail", ok=False)
    assert r.rc == 1
    assert r.stderr.strip() == "cocin: error: The command '/bin/sh -c echo failing; exit 3' returned a non-zero code: 3"
    assert "failing" in r.stdout and "never" not in r.stdout
    assert set(cocin.containers()) == containers  # the intermediate container is gone
    assert cocin.sh(f"ls -A {cocin.root}/tmp").stdout.strip() == ""  # and the build's scratch files
    assert cocin.sh(f"grep -c {cocin.root} /proc/self/mountinfo").stdout.strip() == "0"
    assert "bfail" not in cocin.ok("images").stdout
    layers = _layers(cocin)
    r = _build(cocin, target_tmp, ok=False)
    assert "Step 2/4 : RUN echo good > /good\n ---> Using cache" in r.stdout  # the good step stayed
    assert _layers(cocin) == layers


def test_syntax_error_names_the_line(cocin, target_tmp):
    layers = _layers(cocin)
    target_tmp.write("Dockerfile", "FROM busybox\n\n# a comment\nRUN true\n\n\nRUNN false\n")
    r = _build(cocin, target_tmp, ok=False)
    assert r.rc == 1 and r.stderr == "cocin: error: Dockerfile:7: unknown instruction: RUNN\n"
    target_tmp.write("Dockerfile", "FROM busybox\nENV X=${Y\n")
    r = _build(cocin, target_tmp, ok=False)
    assert r.rc == 1 and r.stderr == "cocin: error: Dockerfile:2: syntax error: missing '}'\n"
    assert _layers(cocin) == layers


def test_stdin_context_and_dockerfile(cocin, built, target_tmp):
    built.append("bstdin")
    target_tmp.write("ctx/f.txt", "from the tar\n")
    target_tmp.write("ctx/Dockerfile", 'FROM busybox\nCOPY f.txt /\nCMD ["cat", "/f.txt"]\n')
    cmd = cocin.cmdline("build", "--network", "none", "-t", "bstdin", "-")
    r = cocin.sh(f"tar -C {shlex.quote(target_tmp / 'ctx')} -cf - . | {cmd}")
    assert r.rc == 0, r.stderr
    assert cocin.ok("run", "--rm", "--network", "none", "bstdin").stdout == "from the tar\n"
    iid = target_tmp / "iid"
    r = cocin("build", "--network", "none", "-q", "--iidfile", iid, "-", stdin="FROM busybox\nRUN echo hi\n")
    assert r.rc == 0 and r.stdout.startswith("sha256:") and len(r.stdout.strip()) == 71
    assert target_tmp.read("iid") == r.stdout.strip()
    df = 'FROM busybox\nCOPY f.txt /g.txt\nCMD ["cat", "/g.txt"]\n'
    r = cocin("build", "--network", "none", "-t", "bstdin", "-f", "-", str(target_tmp / "ctx"), stdin=df)
    assert r.rc == 0, r.stderr
    assert cocin.ok("run", "--rm", "--network", "none", "bstdin").stdout == "from the tar\n"


def test_copy_never_leaves_the_context_or_the_image(cocin, built, target_tmp):
    """A symlink in the context pointing out of it is not followed (a source
    symlink resolves inside the context); a destination through a symlink of
    the image lands inside the image, never on the host."""
    built.append("bsafe")
    marker = f"cocin-build-test-{target_tmp.path.rsplit('-', 1)[-1]}"
    cocin.sh(f"mkdir {shlex.quote(target_tmp / 'links')} && ln -s /etc {shlex.quote(target_tmp / 'links/etc')}")
    target_tmp.write("f.txt", "payload\n")
    target_tmp.write("Dockerfile", "FROM busybox\nCOPY links/etc/hostname /stolen\n")
    r = _build(cocin, target_tmp, ok=False)
    assert r.rc == 1 and "not found in build context" in r.stderr
    target_tmp.write(
        "Dockerfile",
        f"FROM busybox\nRUN mkdir /real && ln -s /real /data && ln -s /etc /{marker}\n"
        f"COPY f.txt /data/\nCOPY f.txt /{marker}/{marker}\nCOPY links /linkcopy\n",
    )
    _build(cocin, target_tmp, "-t", "bsafe")
    assert cocin.sh(f"test -e /etc/{marker}").rc != 0 and cocin.sh("test -e /real").rc != 0
    show = f"cat /real/f.txt /etc/{marker}; readlink /linkcopy/etc"
    r = cocin.ok("run", "--rm", "--network", "none", "bsafe", "sh", "-c", show)
    assert r.stdout == "payload\npayload\n/etc\n"  # the symlink copied as a symlink


def test_add_extracts_a_local_tar_and_refuses_urls(cocin, built, target_tmp):
    built.append("badd")
    target_tmp.write("t/dir/inside.txt", "in the tar\n")
    cocin.sh(f"tar -C {shlex.quote(target_tmp / 't')} -czf {shlex.quote(target_tmp / 'x.tar.gz')} dir")
    target_tmp.write("Dockerfile", "FROM busybox\nADD x.tar.gz /opt/\nCOPY x.tar.gz /copied/\n")
    _build(cocin, target_tmp, "-t", "badd")
    r = cocin.ok("run", "--rm", "--network", "none", "badd", "sh", "-c", "cat /opt/dir/inside.txt; ls /copied")
    assert r.stdout == "in the tar\nx.tar.gz\n"
    target_tmp.write("Dockerfile", "FROM busybox\nADD http://127.0.0.1:9/x /x\n")
    r = _build(cocin, target_tmp, ok=False)
    assert r.rc == 1 and "Dockerfile:2: ADD of a URL" in r.stderr


def test_metadata_instructions(cocin, built, target_tmp):
    built.append("bmeta")
    target_tmp.write(
        "Dockerfile",
        "FROM busybox\n"
        "MAINTAINER Ada <ada@example.org>\n"
        "WORKDIR /tmp\n"
        "RUN true\n"
        'SHELL ["/bin/sh", "-ec"]\n'
        "RUN echo shell-form\n"
        "ENTRYPOINT echo entry\n"
        "VOLUME /data /logs\n"
        "STOPSIGNAL SIGINT\n"
        'LABEL a=1 b="two words"\n'
        "HEALTHCHECK --interval=5s --retries=3 CMD wget -q http://127.0.0.1/ || exit 1\n"
        "ONBUILD RUN echo triggered\n",
    )
    _build(cocin, target_tmp, "-t", "bmeta", "--label", "extra=yes")
    img = _inspect(cocin, "bmeta")
    assert img["RootFS"]["Layers"] == _inspect(cocin, "busybox")["RootFS"]["Layers"]  # no step changed a file
    assert img["Author"] == "Ada <ada@example.org>"
    cfg = img["Config"]
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-ec", "echo entry"]
    assert cfg["Volumes"] == {"/data": {}, "/logs": {}}
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Labels"] == {"a": "1", "b": "two words", "extra": "yes"}
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q http://127.0.0.1/ || exit 1"],
        "Interval": 5_000_000_000,
        "Retries": 3,
    }
    assert cfg["OnBuild"] == ["RUN echo triggered"]
    hist = _history(cocin, "bmeta")
    assert hist[0] == "/bin/sh -ec #(nop)  LABEL extra=yes"
    assert hist[1] == "/bin/sh -ec #(nop)  ONBUILD RUN echo triggered"
    health = '&{["CMD-SHELL" "wget -q http://127.0.0.1/ || exit 1"] "5s" "0s" "0s" \'\\x03\'}'
    assert hist[2] == "/bin/sh -ec #(nop)  HEALTHCHECK " + health
    assert hist[5] == "/bin/sh -ec #(nop)  VOLUME [/data /logs]"
    assert hist[7] == "/bin/sh -ec echo shell-form"
    assert hist[8] == "/bin/sh -ec #(nop)  SHELL [/bin/sh -ec]"  # with the new shell, as Docker writes it
    assert hist[10] == "/bin/sh -c #(nop) WORKDIR /tmp"
    assert cocin.ok("run", "--rm", "--network", "none", "bmeta").stdout == "entry\n"
    # the trigger runs in a build FROM this image
    target_tmp.write("Dockerfile", "FROM bmeta\n")
    r = _build(cocin, target_tmp)
    assert "# Executing 1 build trigger" in r.stdout and "triggered" in r.stdout


# What Docker 20.10's classic builder (DOCKER_BUILDKIT=0 docker build --build-arg V=2) made of
# this Dockerfile: the image config's "config" (its empty fields and "Image" left out) and the
# history lines after the base image's. Only the content hashes of COPY differ (Docker's tarsum).
DOCKER_DOCKERFILE = """\
FROM busybox
ARG V=1
ENV PORT=8080 G="a b"
LABEL a=1 "b c"=d
WORKDIR /srv/www
WORKDIR sub
COPY site/ ./
COPY one.txt /opt/
COPY --chown=1:2 one.txt /opt/two.txt
RUN echo $V > /v
EXPOSE $PORT 53/udp
USER nobody
VOLUME /data
STOPSIGNAL SIGINT
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost || exit 1
ONBUILD RUN echo hi
ENTRYPOINT echo entry
CMD ["x"]
"""
DOCKER_CONFIG = {
    "User": "nobody",
    "ExposedPorts": {"53/udp": {}, "8080/tcp": {}},
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "PORT=8080", "G=a b"],
    "Cmd": ["x"],
    "Healthcheck": {"Test": ["CMD-SHELL", "wget -q localhost || exit 1"], "Interval": 5000000000, "Retries": 3},
    "Volumes": {"/data": {}},
    "WorkingDir": "/srv/www/sub",
    "Entrypoint": ["/bin/sh", "-ec", "echo entry"],
    "OnBuild": ["RUN echo hi"],
    "Labels": {"a": "1", "b c": "d"},
    "StopSignal": "SIGINT",
    "Shell": ["/bin/sh", "-ec"],
}
DOCKER_HISTORY = [
    ("/bin/sh -c #(nop)  ARG V=1", True),
    ("/bin/sh -c #(nop)  ENV PORT=8080 G=a b", True),
    ("/bin/sh -c #(nop)  LABEL a=1 b c=d", True),
    ("/bin/sh -c #(nop) WORKDIR /srv/www", False),
    ("/bin/sh -c #(nop) WORKDIR /srv/www/sub", False),
    ("/bin/sh -c #(nop) COPY dir:<hash> in ./ ", False),
    ("/bin/sh -c #(nop) COPY file:<hash> in /opt/ ", False),
    ("/bin/sh -c #(nop) COPY --chown=1:2file:<hash> in /opt/two.txt ", False),
    ("|1 V=2 /bin/sh -c echo $V > /v", False),
    ("/bin/sh -c #(nop)  EXPOSE 8080 53/udp", True),
    ("/bin/sh -c #(nop)  USER nobody", True),
    ("/bin/sh -c #(nop)  VOLUME [/data]", True),
    ("/bin/sh -c #(nop)  STOPSIGNAL SIGINT", True),
    ("/bin/sh -ec #(nop)  SHELL [/bin/sh -ec]", True),
    (
        '/bin/sh -ec #(nop)  HEALTHCHECK &{["CMD-SHELL" "wget -q localhost || exit 1"] "5s" "0s" "0s" \'\\x03\'}',
        True,
    ),
    ("/bin/sh -ec #(nop)  ONBUILD RUN echo hi", True),
    ('/bin/sh -ec #(nop)  ENTRYPOINT ["/bin/sh" "-ec" "echo entry"]', True),
    ('/bin/sh -ec #(nop)  CMD ["x"]', True),
]


def test_config_and_history_as_docker_makes_them(cocin, built, target_tmp):
    import re

    built.append("bdocker")
    target_tmp.write("site/index.html", "hi\n")
    target_tmp.write("one.txt", "x\n")
    target_tmp.write("Dockerfile", DOCKER_DOCKERFILE)
    _build(cocin, target_tmp, "-t", "bdocker", "--build-arg", "V=2")
    img = _inspect(cocin, "bdocker")
    assert img["Config"] == DOCKER_CONFIG
    image_id = img["Id"].partition(":")[2]
    cfg = json.loads(cocin.sh(f"cat {cocin.root}/imagedb/{image_id}").stdout)
    steps = [
        (re.sub(r"(file|dir):[0-9a-f]{64}", r"\1:<hash>", h["created_by"]), bool(h.get("empty_layer")))
        for h in cfg["history"][1:]
    ]
    assert steps == DOCKER_HISTORY
    assert len(cfg["rootfs"]["diff_ids"]) == 1 + 6  # Docker's count too: WORKDIR x2, COPY x3, RUN
    assert list(json.loads(cocin.sh(f"cat {cocin.root}/imagedb/{image_id}").stdout)["config"]) == list(DOCKER_CONFIG)


def test_from_platform_and_missing_base(cocin, built, target_tmp):
    machine = cocin.sh("uname -m").stdout.strip()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    other = "s390x" if arch != "s390x" else "amd64"
    target_tmp.write("Dockerfile", f"ARG ARCH={arch}\nFROM --platform=linux/$ARCH busybox\nRUN true\n")
    _build(cocin, target_tmp)
    r = _build(cocin, target_tmp, "--build-arg", f"ARCH={other}", ok=False)
    assert r.rc == 1 and f"Dockerfile:2: image busybox is for linux/{arch}, not linux/{other}" in r.stderr
    target_tmp.write("Dockerfile", "FROM nosuchimage\n")
    r = _build(cocin, target_tmp, ok=False)
    assert r.rc == 1 and r.stderr.startswith("cocin: error: Dockerfile:1: No such image: nosuchimage")
