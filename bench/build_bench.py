#!/usr/bin/python3
"""cocin build benchmark: a 10-step Dockerfile, cold and cached, next to ``podman build``.

    sudo /usr/bin/python3 bench/build_bench.py [--runs 5] [--out bench/results/build.md]

Standard library only (and cocin's own modules for the mount namespace).
Everything it makes (cocin's state root, podman's storage, the context) lives
under one temporary directory, in a private mount namespace of its own (the
overlay mounts of podman's storage go with it), and is removed on the way out.

* **cold**: ``build --no-cache``: every step runs (3 RUN containers, 3 copies);
* **cached**: the same build again with the cache: no step runs, no layer is made.

podman runs with its own ``--root``/``--runroot``/``--tmpdir``, ``--runtime runc``
(crun refuses a hybrid cgroup host), ``--network none`` and
``--ulimit nofile=20000:20000 --ulimit nproc=32768:32768`` (root lacks
CAP_SYS_RESOURCE here). Both build from the same busybox image (cocin's,
``cocin save``d and ``podman load``ed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
PYTHON = "/usr/bin/python3"
COCIN = [PYTHON, os.path.join(REPO, "cocin.py")]
PODMAN_ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]

DOCKERFILE = """\
FROM {base}
ENV APP=/app GREETING=hello
WORKDIR /app
COPY src/ ./src/
COPY config.txt /etc/app.conf
RUN mkdir -p out && for f in src/*; do cat "$f" >> out/all.txt; done
RUN echo "$GREETING" > out/greeting && wc -l out/all.txt > out/count
ADD data.txt /data/
RUN cat /data/data.txt /etc/app.conf > out/data
CMD ["cat", "out/greeting"]
"""


def log(msg: str) -> None:
    sys.stderr.write(f"build_bench: {msg}\n")
    sys.stderr.flush()


def run(argv: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return p


def timed(argv: list[str], env: dict) -> float:
    t = time.perf_counter()
    run(argv, env)
    return time.perf_counter() - t


def make_context(d: str) -> None:
    os.makedirs(os.path.join(d, "src"))
    for i in range(20):
        with open(os.path.join(d, "src", f"part{i:02}.txt"), "w") as f:
            f.write(f"line {i}\n" * 50)
    for name, text in (("config.txt", "debug=0\n"), ("data.txt", "data\n" * 1000)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", help="also write the table (markdown) here")
    a = ap.parse_args()
    if os.geteuid() != 0:
        log("needs root")
        return 2
    from cocin import libc, rootfs

    libc.unshare(libc.CLONE_NEWNS)
    rootfs.make_mounts_private()
    tmp = tempfile.mkdtemp(prefix="cocin-build-bench-")
    tag = os.path.basename(tmp)[-8:]
    env = dict(os.environ, COCIN_ROOT=os.path.join(tmp, "cocin"), COCIN_CGROUP_PARENT=f"cocin-bb-{tag}")
    podman = shutil.which("podman")
    pod = [
        podman or "podman",
        "--root",
        os.path.join(tmp, "podman", "storage"),
        "--runroot",
        os.path.join(tmp, "podman", "run"),
        "--tmpdir",
        os.path.join(tmp, "podman", "tmp"),
        "--events-backend",
        "file",
    ]
    rows: list[tuple[str, str]] = []
    try:
        ctx = os.path.join(tmp, "ctx")
        make_context(ctx)
        run([*COCIN, "run", "--rm", "--network", "none", "busybox", "true"], env)  # the image, built once
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE.format(base="busybox"))
        cocin = [*COCIN, "build", "--network", "none", "-q", "-t", "bench", ctx]
        results = {}
        cold = [timed([*cocin[:3], "--no-cache", *cocin[3:]], env) for _ in range(a.runs)]
        cached = [timed(cocin, env) for _ in range(a.runs)]
        results["cocin build"] = (cold, cached)
        if podman and shutil.which("runc"):
            bb = os.path.join(tmp, "busybox.tar")
            run([*COCIN, "save", "-o", bb, "busybox"], env)
            run([*pod, "load", "-i", bb], env)
            pctx = os.path.join(tmp, "pctx")
            shutil.copytree(ctx, pctx)
            with open(os.path.join(pctx, "Dockerfile"), "w") as f:
                f.write(DOCKERFILE.format(base="docker.io/library/busybox:latest"))
            pb = [*pod, "build", "--runtime", "runc", "--pull=never", "--network", "none", *PODMAN_ULIMITS]
            pb += ["--layers", "-q", "-t", "bench", pctx]
            cold = [timed([*pb[:-1], "--no-cache", pb[-1]], env) for _ in range(a.runs)]
            cached = [timed(pb, env) for _ in range(a.runs)]
            results["podman build (buildah, runc)"] = (cold, cached)
        else:
            log("podman or runc not installed: cocin only")
        for name, (cold, cached) in results.items():
            rows.append((f"{name}, cold (--no-cache)", f"{statistics.median(cold) * 1000:.0f} ms"))
            rows.append((f"{name}, cached", f"{statistics.median(cached) * 1000:.0f} ms"))
    finally:
        if podman and os.path.isdir(os.path.join(tmp, "podman")):
            run([*pod, "rmi", "-a", "-f"], env, check=False)
        run([*COCIN, "rmi", "-f", "bench"], env, check=False)
        for n in run([*COCIN, "network", "ls", "-q"], env, check=False).stdout.split():
            run([*COCIN, "network", "rm", n], env, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            ["find", "/sys/fs/cgroup", "-maxdepth", "3", "-type", "d", "-name", env["COCIN_CGROUP_PARENT"], "-delete"],
            capture_output=True,
        )
    lines = [
        f"# cocin build vs podman build: a 10-step Dockerfile (median of {a.runs})",
        "",
        f"{os.cpu_count()} CPUs, kernel {os.uname().release}, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "| build | time |",
        "|---|---|",
        *[f"| {r} | {t} |" for r, t in rows],
        "",
    ]
    text = "\n".join(lines)
    sys.stdout.write(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
