#!/usr/bin/env python3
"""Pull bench: cocin pull of busybox from the local registry kit, next to skopeo and podman.

    sudo /usr/bin/python3 bench/pull_bench.py [--runs 10] [--warmup 1] [--out bench/results/pull.md]

Starts ../shared/registry (or ``$COCIN_REGISTRY_KIT``; Debian's docker-registry on
127.0.0.1, free ports, a temporary directory) and stops it at the end. Every timed run
is *cold* on the client side: a new empty cocin state root, skopeo destination directory
or podman ``--root``, so every blob is fetched, checked and unpacked. The registry's
own caches are warm (it is the same machine), so this times the clients, not a network.

Rows (median and p90 over ``--runs`` runs, interleaved round robin):

* ``cocin pull`` cold; ``cocin pull`` warm (both layers already stored: manifest and
  config only); ``cocin pull`` then ``cocin run`` of a 3-layer image (busybox's two and one
  committed here, pushed to the kit first), cold; ``cocin push`` of the pulled image to a
  new repository (blobs mounted);
* ``skopeo copy docker://... oci:DIR`` (fetch and store the blobs, no unpacking), of both;
* ``podman pull`` of both (vfs driver: unpacks each layer into a full copy, where
  cocin's store keeps each layer once).
Standard library only; skopeo and podman rows say "not installed" when missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIT = next(
    (
        d
        for d in (
            os.environ.get("COCIN_REGISTRY_KIT", ""),
            os.path.join(os.path.dirname(REPO), "shared", "registry"),
            "/work/shared/registry",
        )
        if d and os.path.exists(os.path.join(d, "start.sh"))
    ),
    "",
)


def free_ports(count: int = 5) -> int:
    for base in range(5855, 6255, 10):
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
    sys.exit("no 5 consecutive free ports for the registry kit")


def timed(argv: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc={r.returncode}: {r.stderr.strip()[-300:]}")
    return elapsed * 1000


class Row:
    def __init__(self, name: str, prepare, argv_of, cleanup=None, env=None):
        self.name, self.prepare, self.argv_of, self.cleanup, self.env = name, prepare, argv_of, cleanup, env
        self.samples: list[float] = []
        self.error = ""

    def once(self, keep: bool) -> None:
        if self.error:
            return
        ctx = self.prepare()
        try:
            ms = timed(self.argv_of(ctx), self.env(ctx) if self.env else None)
            if keep:
                self.samples.append(ms)
        except RuntimeError as e:
            self.error = str(e)
        finally:
            if self.cleanup:
                self.cleanup(ctx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("pull_bench needs root (cocin and podman's storage)")
    if not KIT:
        sys.exit("the registry kit (../shared/registry/start.sh) is not there: set COCIN_REGISTRY_KIT")
    tmp = tempfile.mkdtemp(prefix="cocin-pull-bench-")
    regdir = os.path.join(tmp, "registry")
    os.mkdir(regdir)
    kit_env = dict(os.environ, REGISTRY_DIR=regdir, REGISTRY_PORT=str(free_ports()))
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    try:
        subprocess.run(["bash", f"{KIT}/start.sh"], env=kit_env, check=True, capture_output=True, timeout=600)
        info = dict(
            line.split("=", 1)
            for line in open(os.path.join(regdir, "env")).read().splitlines()
            if "=" in line and not line.startswith("#")
        )
        ref = f"{info['REGISTRY_OPEN']}/test/busybox:oci"
        counter = [0]

        def new_dir() -> str:
            counter[0] += 1
            return os.path.join(tmp, f"run{counter[0]}")

        def cocin_env(root: str) -> dict:
            return {
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "COCIN_ROOT": root,
                "PYTHONPYCACHEPREFIX": os.path.join(tmp, "pycache"),
            }

        cocin = [python, os.path.join(REPO, "cocin.py")]
        warm_root = os.path.join(tmp, "warm")
        subprocess.run([*cocin, "pull", "-q", ref], env=cocin_env(warm_root), check=True, capture_output=True)
        # A 3-layer image: busybox's two layers plus one committed here, pushed to the kit.
        three = f"{info['REGISTRY_OPEN']}/bench/three:1"
        make = cocin_env(os.path.join(tmp, "make"))
        make["COCIN_CGROUP_PARENT"] = "cocin-pull-bench"
        for argv in (
            ["pull", "-q", ref],
            ["run", "--name", "l3", "--network", "none", ref, "sh", "-c", "echo three > /three.txt"],
            ["commit", "-c", "CMD cat /three.txt", "l3", three],
            ["rm", "l3"],
            ["push", "-q", three],
        ):
            subprocess.run([*cocin, *argv], env=make, check=True, capture_output=True)
        rows = [
            Row(
                "cocin pull (cold: new state root)",
                new_dir,
                lambda d: [*cocin, "pull", "-q", ref],
                lambda d: shutil.rmtree(d, ignore_errors=True),
                cocin_env,
            ),
            Row(
                "cocin pull (warm: layers stored)",
                lambda: warm_root,
                lambda d: [*cocin, "pull", "-q", ref],
                None,
                cocin_env,
            ),
        ]

        def pull_and_run(d: str) -> list[str]:
            env = f"COCIN_ROOT={d} COCIN_CGROUP_PARENT=cocin-pull-bench PYTHONPYCACHEPREFIX={tmp}/pycache"
            c = f"{env} {python} {REPO}/cocin.py"
            return ["sh", "-c", f"{c} pull -q {three} && {c} run --rm --network none {three}"]

        rows.append(
            Row(
                "cocin pull + run, 3 layers (cold)",
                new_dir,
                pull_and_run,
                lambda d: shutil.rmtree(d, ignore_errors=True),
            )
        )

        def push_prepare() -> str:
            counter[0] += 1
            target = f"{info['REGISTRY_OPEN']}/bench/push{counter[0]}:1"
            subprocess.run([*cocin, "tag", ref, target], env=cocin_env(warm_root), check=True)
            return target

        rows.append(
            Row(
                "cocin push (new repository, blobs mounted)",
                push_prepare,
                lambda t: [*cocin, "push", "-q", t],
                lambda t: subprocess.run([*cocin, "rmi", t], env=cocin_env(warm_root), capture_output=True),
                lambda t: cocin_env(warm_root),
            )
        )
        if shutil.which("skopeo"):
            for what, image in (("", ref), (", 3 layers", three)):
                rows.append(
                    Row(
                        f"skopeo copy docker://... oci:DIR{what}",
                        new_dir,
                        lambda d, image=image: [
                            "skopeo",
                            "--insecure-policy",
                            "copy",
                            "-q",
                            "--src-tls-verify=false",
                            f"docker://{image}",
                            f"oci:{d}:x",
                        ],
                        lambda d: shutil.rmtree(d, ignore_errors=True),
                    )
                )
        if shutil.which("podman"):

            def podman_argv(d: str, image: str = ref) -> list[str]:
                return [
                    "podman",
                    "--root",
                    f"{d}/root",
                    "--runroot",
                    f"{d}/run",
                    "--tmpdir",
                    f"{d}/tmp",
                    "--storage-driver",
                    "vfs",
                    "--events-backend",
                    "none",
                    "pull",
                    "-q",
                    "--tls-verify=false",
                    image,
                ]

            rows.append(Row("podman pull (vfs, new --root)", new_dir, podman_argv, lambda d: shutil.rmtree(d, True)))
            rows.append(
                Row(
                    "podman pull, 3 layers (vfs, new --root)",
                    new_dir,
                    lambda d: podman_argv(d, three),
                    lambda d: shutil.rmtree(d, True),
                )
            )
        for i in range(args.warmup + args.runs):
            for k in range(len(rows)):
                rows[(i + k) % len(rows)].once(keep=i >= args.warmup)
        out = [
            f"pull bench: {ref} (2 gzip layers, 1.08 MB + 382 B), {args.runs} runs, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.2f}",
            "",
            "| row | median ms | p90 ms |",
            "|---|---:|---:|",
        ]
        for r in rows:
            if r.error:
                out.append(f"| {r.name} | error: {r.error} | |")
            else:
                s = sorted(r.samples)
                p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
                out.append(f"| {r.name} | {statistics.median(s):.1f} | {p90:.1f} |")
        for tool in ("skopeo", "podman"):
            if not shutil.which(tool):
                out.append(f"| {tool} | not installed | |")
        text = "\n".join(out) + "\n"
        sys.stdout.write(text)
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
            with open(args.out, "w") as f:
                f.write(text)
    finally:
        subprocess.run(["bash", f"{KIT}/stop.sh"], env=kit_env, capture_output=True, timeout=60)
        subprocess.run(  # the containers' cgroup parent, in every hierarchy (empty by now)
            "find /sys/fs/cgroup -maxdepth 3 -type d -name cocin-pull-bench -exec rmdir {} + 2>/dev/null",
            shell=True,
        )
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
