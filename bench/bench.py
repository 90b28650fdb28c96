#!/usr/bin/python3
"""cocin start-up benchmark: cocin against runc, crun, podman and nsenter, side by side.

    sudo /usr/bin/python3 bench/bench.py [--install] [--runs 30] [--out bench/results/latest.md]

Standard library only. Everything it makes (state roots, OCI bundles, podman
storage, containers, cgroups, mounts) lives under one temporary directory, its
own cgroup parents and its own private mount namespace, and is removed on the
way out, on failure and on Ctrl-C/SIGTERM too. See bench/README.md.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import errno
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
COCIN = [PYTHON, os.path.join(REPO, "cocin.py")]
STUB = os.path.join(REPO, "cocin", "nsenter_stub")
CGROUP_ROOT = "/sys/fs/cgroup"
HUGETLB = os.path.join(CGROUP_ROOT, "hugetlb")
PODMAN_IMAGE = "localhost/cocin-bench-busybox:latest"
PODMAN_ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]
APT_PACKAGES = ["runc", "crun", "podman"]
CMD_TIMEOUT = 120  # seconds for any one command: a hang must not stall the bench
MEM_SAMPLES = 3  # processes of each kind alive at once for the memory rows

# <sched.h>, <sys/mount.h>
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def log(msg: str) -> None:
    sys.stderr.write(f"bench: {msg}\n")
    sys.stderr.flush()


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _check(
        _libc.mount(
            src.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def private_mount_namespace() -> None:
    """Our own mount namespace: nothing we (or podman, or crun's hugetlb
    workaround) mount is ever seen on the host, and it all goes with us."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)


class Terminated(BaseException):
    pass


def _on_signal(signum, _frame):
    raise Terminated(f"signal {signum}")


# --- small helpers ------------------------------------------------------------------


def run(
    argv: list[str], env: dict | None = None, check: bool = True, timeout: float = CMD_TIMEOUT, **kw
) -> subprocess.CompletedProcess:
    p = subprocess.run(
        argv, env=env, stdin=kw.pop("stdin", subprocess.DEVNULL), capture_output=True, text=True, timeout=timeout, **kw
    )
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}: {last_line(p.stderr)}")
    return p


def last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:120] if lines else ""


def tool_version(argv: list[str]) -> str:
    try:
        out = run(argv, check=False, timeout=20).stdout.strip().splitlines()
        return out[0] if out else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def pss_rss_kib(pid: int) -> tuple[int, int]:
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                vals[key] = int(rest.split()[0])
    return vals["Pss"], vals["Rss"]


def wait_for(pred, timeout: float, what: str, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)


def p90(samples: list[float]) -> float:
    s = sorted(samples)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def rmdir_tree(path: str, timeout: float = 5.0) -> bool:
    """rmdir a cgroup directory of ours and its sub-cgroups, deepest first.

    EBUSY is retried; after a second, processes still inside (ours: every
    cgroup this is called on was made by the bench) are killed."""
    if not os.path.isdir(path):
        return True
    deadline = time.monotonic() + timeout
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        killed = False
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    log(f"warning: cannot remove cgroup {dirpath}: {e.strerror}")
                    return False
                if not killed and time.monotonic() > deadline - timeout + 1.0:
                    kill_cgroup(dirpath)
                    killed = True
                time.sleep(0.05)
    return True


def kill_cgroup(path: str) -> None:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return
    for pid in pids:
        log(f"warning: killing leftover process {pid} in {path}")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cgroup_hierarchies() -> list[str]:
    """Every mounted cgroup hierarchy (v1 ones, the v2 one, hybrid or not)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] in ("cgroup", "cgroup2"):
                out.append(left.split()[4])
    return out


def hugetlb_num_cgroups() -> tuple[int, int] | None:
    """(hierarchy id, number of cgroups) of the hugetlb controller, from /proc/cgroups."""
    with open("/proc/cgroups") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] == "hugetlb":
                return int(parts[1]), int(parts[2])
    return None


def unified_controllers() -> list[str]:
    for path in (
        os.path.join(CGROUP_ROOT, "unified", "cgroup.controllers"),
        os.path.join(CGROUP_ROOT, "cgroup.controllers"),
    ):
        try:
            with open(path) as f:
                return f.read().split()
        except FileNotFoundError:
            continue
    return []


# --- the benchmark ----------------------------------------------------------------------


class Row:
    """One line of the table: samples (seconds or KiB) or a reason it has none."""

    def __init__(
        self,
        group: str,
        name: str,
        argv: list[str] | None = None,
        env: dict | None = None,
        unit: str = "ms",
        note: str = "",
    ):
        self.group, self.name, self.argv, self.env = group, name, argv, env
        self.unit, self.note = unit, note
        self.samples: list[float] = []
        self.error: str | None = None
        self.failures = 0

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples and not self.error else None


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pid = os.getpid()
        self.tag = f"cocin-bench-{self.pid}"
        self.tmp = ""
        self.rows: list[Row] = []
        self.tools: dict[str, str | None] = {}
        self.notes: list[str] = []
        self.procs: list[tuple[str, subprocess.Popen]] = []  # foreground runtimes we started
        self.runc_root = self.crun_root = self.podman_dir = ""
        self.roots: list[str] = []  # cocin state roots
        self.hugetlb_mounted = self.hugetlb_dir_made = False
        self.cg_cocin = self.tag  # COCIN_CGROUP_PARENT
        self.cg_oci = {"runc": f"{self.tag}-runc", "crun": f"{self.tag}-crun"}  # cgroupsPath parents
        self.cg_podman = f"{self.tag}-podman"  # podman --cgroup-parent
        self.main_root = self.busy_root = ""
        self.nets: dict[str, tuple[str, str]] = {}  # state root -> (bridge link, subnet)
        # Directories podman makes outside --root/--runroot: removed if it made them.
        self.podman_side_dirs = [d for d in ("/var/lib/containers", "/run/containers") if not os.path.exists(d)]

    # --- environment ---

    def base_env(self) -> dict:
        """What ``sudo`` would leave, plus a bytecode cache of our own.

        sudo drops PYTHONDONTWRITEBYTECODE & co., so an installed cocin runs from
        cached bytecode; PYTHONPYCACHEPREFIX keeps that cache in our temporary
        directory instead of the repository."""
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "PYTHONPYCACHEPREFIX": os.path.join(self.tmp, "pycache"),
        }

    def cocin_env(self, root: str, **extra) -> dict:
        env = self.base_env()
        bridge, subnet = self.nets.get(root) or self.nets.get(self.main_root) or (None, None)
        env.update(
            COCIN_ROOT=root, COCIN_CGROUP_PARENT=self.cg_cocin, COCIN_DEFAULT_BRIDGE=bridge, COCIN_DEFAULT_SUBNET=subnet
        )
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def pick_subnets(self, k: int) -> list[str]:
        """``k`` /24s no host route covers, for the default (bridge) network's rows."""
        routes = []
        with open("/proc/net/route") as f:
            next(f)
            for line in f:
                p = line.split()
                dst, mask = int(p[1], 16), int(p[7], 16)
                if mask:
                    routes.append(
                        (
                            int.from_bytes(dst.to_bytes(4, "little"), "big"),
                            int.from_bytes(mask.to_bytes(4, "little"), "big"),
                        )
                    )
        out = []
        for third in range(self.pid % 200, self.pid % 200 + 250):
            net = (10 << 24) | (251 << 16) | ((third % 250) << 8)
            if not any((net & m) == d or (d & 0xFFFFFF00) == net for d, m in routes):
                out.append(f"10.251.{third % 250}.0/24")
                if len(out) == k:
                    return out
        raise RuntimeError("no free 10.251.x.0/24 for the bridge rows")

    # --- tools ---

    def find_tools(self) -> None:
        for t in ("runc", "crun", "podman", "conmon", "nsenter", "busybox"):
            self.tools[t] = shutil.which(t, path=self.base_env()["PATH"])

    def install(self) -> None:
        missing = [p for p in APT_PACKAGES if not self.tools.get(p)]
        if not self.tools.get("busybox"):
            missing.append("busybox-static")
        if not missing:
            log("--install: runc, crun, podman already installed")
            return
        log(f"--install: apt-get install {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        updated = False
        for attempt in range(30):
            p = subprocess.run(
                ["apt-get", "install", "-y", "--no-install-recommends", *missing],
                env=env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            if p.returncode == 0:
                break
            err = p.stderr + p.stdout
            if "lock" in err.lower():
                log(f"apt is busy (attempt {attempt + 1}), retrying in 10 s")
                time.sleep(10)
                continue
            if not updated and ("Unable to locate" in err or "404" in err or "no installation candidate" in err):
                log("apt-get update")
                subprocess.run(["apt-get", "update"], env=env, capture_output=True, stdin=subprocess.DEVNULL)
                updated = True
                continue
            log(f"warning: apt-get install failed: {last_line(err)}")
            break
        self.find_tools()

    # --- timing ---

    def measure(self, rows: list[Row]) -> None:
        """Warm up, then time every row ``runs`` times, interleaved (row order
        rotates each round, so drift in machine load hits all rows alike)."""
        live = []
        for row in rows:
            self.rows.append(row)
            if row.error:
                continue
            try:
                for _ in range(self.args.warmup):
                    p = run(row.argv, env=row.env, check=False)
                    if p.returncode != 0:
                        row.error = f"failed (exit {p.returncode}): {last_line(p.stderr)}"
                        break
            except subprocess.TimeoutExpired:
                row.error = "timed out"
            if not row.error:
                live.append(row)
        for i in range(self.args.runs):
            k = i % len(live) if live else 0
            for row in live[k:] + live[:k]:
                t0 = time.perf_counter()
                p = subprocess.run(
                    row.argv,
                    env=row.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    timeout=CMD_TIMEOUT,
                )
                dt = time.perf_counter() - t0
                if p.returncode != 0:
                    row.failures += 1
                    row.note = f"{row.failures} failed runs, last: {last_line(p.stderr.decode())}"
                else:
                    row.samples.append(dt * 1000.0)

    def skip(self, group: str, name: str, why: str, unit: str = "ms") -> None:
        r = Row(group, name, unit=unit)
        r.error = why
        self.rows.append(r)

    # --- cocin ---

    def cocin(self, root: str, *args: str, check: bool = True, **extra) -> subprocess.CompletedProcess:
        return run(COCIN + list(args), env=self.cocin_env(root, **extra), check=check)

    def records(self, root: str) -> list[dict]:
        d = os.path.join(root, "containers")
        out = []
        for cid in os.listdir(d) if os.path.isdir(d) else []:
            try:
                with open(os.path.join(d, cid, "config.json")) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                pass
        return out

    def record(self, root: str, name: str) -> dict | None:
        return next((r for r in self.records(root) if r.get("name") == name), None)

    def default_network(self) -> str:
        """What ``run --help`` calls the default network ("none" before bridges)."""
        import re

        text = run(COCIN + ["run", "--help"], env=self.base_env(), check=False).stdout
        m = re.search(r"(\w+)\s+\(the\s+default\s+network\)", text)
        return m.group(1) if m else "none"

    def busybox_layer(self, root: str) -> str:
        """The directory of the busybox image's (single) layer, asked of cocin itself:
        the flat store before layers (images/busybox.json), else the layer store."""
        flat = os.path.join(root, "images", "busybox.json")
        if os.path.exists(flat):
            with open(flat) as f:
                return os.path.join(root, "layers", json.load(f)["id"])
        code = (
            "import os, sys; sys.path.insert(0, sys.argv[1]); from cocin import images; "
            "lower = images.get('busybox').lower.split(':'); "
            "print(os.path.realpath(lower[-1]))"
        )
        out = run([PYTHON, "-c", code, os.path.dirname(COCIN[1])], env=self.cocin_env(root))
        return out.stdout.strip()

    # --- OCI bundles ---

    def bundle(self, tool: str, name: str, args: list[str]) -> str:
        """``runc spec`` edited: no terminal, our command, writable root, the
        shared busybox rootfs, a cgroup under our own parent."""
        d = os.path.join(self.tmp, "bundles", name)
        os.makedirs(d)
        run([self.tools["runc"], "spec", "--bundle", d])
        path = os.path.join(d, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = args
        cfg["root"] = {"path": os.path.join(self.tmp, "rootfs"), "readonly": False}
        ns = cfg["linux"].setdefault("namespaces", [])
        if not any(n["type"] == "network" for n in ns):
            ns.append({"type": "network"})
        cfg["linux"]["cgroupsPath"] = f"/{self.cg_oci[tool]}/{name}"
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        return d

    def oci(self, tool: str, *args: str) -> list[str]:
        root = self.runc_root if tool == "runc" else self.crun_root
        return [self.tools[tool], "--root", root, *args]

    def oci_state(self, tool: str, cid: str) -> dict | None:
        p = run(self.oci(tool, "state", cid), check=False)
        try:
            return json.loads(p.stdout) if p.returncode == 0 else None
        except ValueError:
            return None

    def oci_detached(self, tool: str, cid: str, bundle: str) -> None:
        """``run -d``: the container keeps the stdio it is given, so not our pipes."""
        p = subprocess.run(
            self.oci(tool, "run", "-d", "--bundle", bundle, cid),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.base_env(),
            timeout=30,
        )
        if p.returncode != 0:
            raise RuntimeError(f"{tool} run -d {cid} exited {p.returncode}")

    def oci_foreground(self, tool: str, cid: str, bundle: str) -> int:
        """``runc run`` / ``crun run`` in the foreground (as a shell would), sleeping;
        returns the runtime process's PID once the container runs."""
        p = subprocess.Popen(
            self.oci(tool, "run", "--bundle", bundle, cid),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self.base_env(),
        )
        self.procs.append((tool, p))
        wait_for(
            lambda: (self.oci_state(tool, cid) or {}).get("status") == "running" or p.poll() is not None,
            20,
            f"{tool} container {cid}",
        )
        if p.poll() is not None:
            raise RuntimeError(f"{tool} run {cid} exited {p.returncode}")
        return p.pid

    def podman(self, *args: str) -> list[str]:
        d = self.podman_dir
        return [
            self.tools["podman"],
            "--root",
            os.path.join(d, "storage"),
            "--runroot",
            os.path.join(d, "run"),
            "--tmpdir",
            os.path.join(d, "tmp"),
            "--events-backend",
            "file",
            *args,
        ]

    # --- the groups ---

    def use_git_ref(self, ref: str) -> None:
        """Bench the cocin committed at ``ref`` (``git archive``, read-only on the
        repository) instead of a working tree others may be editing."""
        global COCIN, STUB
        src = os.path.join(self.tmp, "src")
        os.mkdir(src)
        tar = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", ref], capture_output=True, timeout=60)
        if tar.returncode != 0:
            raise RuntimeError(f"git archive {ref}: {last_line(tar.stderr.decode())}")
        with tarfile.open(fileobj=__import__("io").BytesIO(tar.stdout)) as tf:
            tf.extractall(src)
        if os.access(STUB, os.X_OK):  # a build product, not in git
            shutil.copy2(STUB, os.path.join(src, "cocin", "nsenter_stub"))
            self.notes.append("exec stub: the working tree's cocin/nsenter_stub binary")
        COCIN = [PYTHON, os.path.join(src, "cocin.py")]
        STUB = os.path.join(src, "cocin", "nsenter_stub")

    def setup(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="cocin-bench-", dir="/tmp")
        os.chmod(self.tmp, 0o755)
        if self.args.ref:
            self.use_git_ref(self.args.ref)
        self.main_root = os.path.join(self.tmp, "cocin")
        self.busy_root = os.path.join(self.tmp, "cocin-busy")
        self.roots += [self.main_root, self.busy_root]
        subnets = self.pick_subnets(2)
        self.nets[self.main_root] = (f"cbr{self.pid % 100000}", subnets[0])
        self.nets[self.busy_root] = (f"cbk{self.pid % 100000}", subnets[1])
        log(f"work directory {self.tmp}")
        # First use builds the busybox image; its layer is the rootfs for everyone.
        self.cocin(self.main_root, "run", "--rm", "--network", "none", "busybox", "true")
        shutil.copytree(self.busybox_layer(self.main_root), os.path.join(self.tmp, "rootfs"), symlinks=True)
        self.runc_root = os.path.join(self.tmp, "runc-state")
        self.crun_root = os.path.join(self.tmp, "crun-state")

    def group_run(self) -> None:
        g = "run"
        r = self.main_root
        default = self.default_network()
        busy = None
        if default != "none":
            # Another state root whose default network is kept up by a sleeping container.
            try:
                self.cocin(self.busy_root, "run", "-d", "--name", "cb-keeper", "busybox", "sleep", "3600")
                busy = Row(
                    g,
                    "cocin run --rm busybox true (default network, already up)",
                    COCIN + ["run", "--rm", "busybox", "true"],
                    self.cocin_env(self.busy_root),
                    note=f"{default}, with another container on it: bridge and chains stay",
                )
            except RuntimeError as e:
                self.skip(g, "cocin run --rm busybox true (default network, already up)", f"failed: {e}")
        rows = [
            Row(
                g,
                "cocin run --rm --network none busybox true",
                COCIN + ["run", "--rm", "--network", "none", "busybox", "true"],
                self.cocin_env(r),
            ),
            Row(
                g,
                "cocin run --rm busybox true (default network)",
                COCIN + ["run", "--rm", "busybox", "true"],
                self.cocin_env(r),
                note=f"default network: {default}"
                + (
                    " with no other container: its bridge and netfilter chains are made and removed each run"
                    if default != "none"
                    else ""
                ),
            ),
            Row(
                g,
                "cocin run --rm --network none, seccomp=unconfined",
                COCIN + ["run", "--rm", "--network", "none", "--security-opt", "seccomp=unconfined", "busybox", "true"],
                self.cocin_env(r),
                note="the default confinement without the seccomp filter: its cost is the difference",
            ),
            Row(
                g,
                "cocin run --rm --network none --privileged",
                COCIN + ["run", "--rm", "--network", "none", "--privileged", "busybox", "true"],
                self.cocin_env(r),
                note="no confinement at all (every capability, no filter, no masks)",
            ),
            Row(
                g,
                "cocin run --rm --network none, no bytecode cache",
                COCIN + ["run", "--rm", "--network", "none", "busybox", "true"],
                self.cocin_env(r, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=None),
                note="PYTHONDONTWRITEBYTECODE=1, as in the dev environment: cocin compiled each run",
            ),
            Row(g, "/usr/bin/python3 -c pass (interpreter floor)", [PYTHON, "-c", "pass"], self.base_env()),
        ]
        if busy:
            rows.insert(2, busy)
        if self.tools["runc"]:
            b = self.bundle("runc", "runc-run", ["/bin/true"])
            rows.append(
                Row(
                    g,
                    "runc run (/bin/true)",
                    self.oci("runc", "run", "--bundle", b, f"{self.tag}-runc-run"),
                    self.base_env(),
                )
            )
        else:
            self.skip(g, "runc run (/bin/true)", "not installed")
        self.measure(rows)

    def group_exec(self) -> None:
        g = "exec"
        r = self.main_root
        name = "cb-exec"
        self.cocin(r, "run", "-d", "--network", "none", "--name", name, "busybox", "sleep", "3600")
        rec = self.record(r, name)
        rows = []
        if os.access(STUB, os.X_OK):
            rows.append(Row(g, "cocin exec CTR true (static stub)", COCIN + ["exec", name, "true"], self.cocin_env(r)))
        else:
            self.skip(g, "cocin exec CTR true (static stub)", "stub not built (scripts/build_stub.sh)")
        rows.append(
            Row(
                g,
                "cocin exec CTR true (Python setns)",
                COCIN + ["exec", name, "true"],
                self.cocin_env(r, COCIN_EXEC_STUB="0"),
            )
        )
        if self.tools["nsenter"]:
            rows.append(
                Row(
                    g,
                    "nsenter -t PID -a true (same cocin container)",
                    [self.tools["nsenter"], "-t", str(rec["pid"]), "-a", "true"],
                    self.base_env(),
                    note="no cgroup join, no record lookup",
                )
            )
        else:
            self.skip(g, "nsenter -t PID -a true (same cocin container)", "not installed")
        if self.tools["runc"]:
            cid = f"{self.tag}-runc-exec"
            b = self.bundle("runc", "runc-exec", ["/bin/sleep", "3600"])
            self.oci_detached("runc", cid, b)
            rows.append(Row(g, "runc exec CTR /bin/true", self.oci("runc", "exec", cid, "/bin/true"), self.base_env()))
        else:
            self.skip(g, "runc exec CTR /bin/true", "not installed")
        self.measure(rows)

    def group_ps(self) -> None:
        g = "ps"
        sizes = (10, 100, 1000)
        # One real exited container, then copies of its directory with new id/name.
        first = os.path.join(self.tmp, f"cocin-ps-{sizes[0]}")
        self.roots.append(first)
        self.cocin(first, "run", "--network", "none", "--name", "cb-template", "busybox", "true")
        tmpl = self.record(first, "cb-template")
        tmpl_dir = os.path.join(first, "containers", tmpl["id"])
        rows = []
        for n in sizes:
            root = os.path.join(self.tmp, f"cocin-ps-{n}")
            if root not in self.roots:
                self.roots.append(root)
                os.makedirs(os.path.join(root, "containers"))
            have = len(self.records(root))
            for i in range(have, n):
                cid = os.urandom(32).hex()
                d = os.path.join(root, "containers", cid)
                shutil.copytree(tmpl_dir, d, symlinks=True)
                rec = dict(tmpl, id=cid, name=f"cb-ps-{i}", created=tmpl["created"] + i * 1e-3)
                with open(os.path.join(d, "config.json"), "w") as f:
                    json.dump(rec, f, indent=1)
            rows.append(Row(g, f"cocin ps -a ({n} containers)", COCIN + ["ps", "-a"], self.cocin_env(root)))
        self.measure(rows)
        base = rows[0].median
        for row, n in zip(rows[1:], sizes[1:]):
            if row.median is not None and base is not None:
                row.note = f"{(row.median - base) / (n - sizes[0]):.3f} ms per extra record over {sizes[0]}"

    def group_memory_cocin_runc(self) -> None:
        g = "memory"
        r = self.main_root
        pids = []
        for i in range(MEM_SAMPLES):
            name = "cb-exec" if i == 0 else f"cb-mem-{i}"
            if i:
                self.cocin(r, "run", "-d", "--network", "none", "--name", name, "busybox", "sleep", "3600")
            pids.append(self.record(r, name)["monitor_pid"])
        self.mem_row(g, "cocin monitor of a detached container (run -d)", pids)
        pids = []
        for i in range(MEM_SAMPLES):
            name = f"cb-fg-{i}"
            p = subprocess.Popen(
                COCIN + ["run", "--network", "none", "--name", name, "busybox", "sleep", "3600"],
                env=self.cocin_env(r),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.procs.append(("cocin", p))
            wait_for(lambda n=name: (self.record(r, n) or {}).get("state") == "running", 20, f"cocin container {name}")
            pids.append(p.pid)
        self.mem_row(g, "cocin run in the foreground (client = monitor)", pids)
        if self.tools["runc"]:
            pids = []
            for i in range(MEM_SAMPLES):
                b = self.bundle("runc", f"runc-mem-{i}", ["/bin/sleep", "3600"])
                pids.append(self.oci_foreground("runc", f"{self.tag}-runc-mem-{i}", b))
            self.mem_row(g, "runc run in the foreground", pids)
        else:
            self.skip(g, "runc run in the foreground", "not installed", unit="MiB")

    def mem_row(self, group: str, name: str, pids: list[int], note: str = "") -> None:
        time.sleep(0.3)
        row = Row(group, name, unit="MiB")
        rss = []
        for pid in pids:
            p, r = pss_rss_kib(pid)
            row.samples.append(p / 1024)
            rss.append(r / 1024)
        row.note = f"PSS of {len(pids)} at once; RSS median {statistics.median(rss):.1f} MiB" + (
            f"; {note}" if note else ""
        )
        self.rows.append(row)

    # --- crun and podman (may need the hugetlb workaround) ---

    def crun_needs_hugetlb(self) -> bool:
        b = self.bundle("crun", "crun-probe", ["/bin/true"])
        p = run(self.oci("crun", "run", "--bundle", b, f"{self.tag}-crun-probe"), env=self.base_env(), check=False)
        if p.returncode == 0:
            return False
        if "hybrid" in p.stderr:
            return True
        raise RuntimeError(f"crun run failed: {last_line(p.stderr)}")

    def mount_hugetlb(self) -> None:
        """crun 1.8 refuses a hybrid host whose v2 tree still holds a controller
        (here hugetlb): give hugetlb a v1 hierarchy of its own for crun's runs."""
        if "hugetlb" not in unified_controllers():
            raise RuntimeError("crun refuses this hybrid host and hugetlb is not the cause")
        if os.path.ismount(HUGETLB):
            raise RuntimeError(f"{HUGETLB} is already a mount point")
        if not os.path.isdir(HUGETLB):
            os.mkdir(HUGETLB)
            self.hugetlb_dir_made = True
        mount("cgroup", HUGETLB, "cgroup", 0, "hugetlb")
        self.hugetlb_mounted = True
        self.notes.append(
            "crun 1.8 refuses this hybrid cgroup host ('cgroups in hybrid mode not "
            "supported'): crun and podman rows ran with hugetlb mounted as a v1 "
            f"hierarchy at {HUGETLB} (in the bench's private mount namespace), "
            "undone afterwards"
        )

    def unmount_hugetlb(self) -> None:
        """Only once the removed cgroups are really gone: unmounting a hierarchy
        that still has (even dying) children pins it, and hugetlb would stay
        away from the v2 tree for good."""
        if self.hugetlb_mounted:
            rmdir_tree_children(HUGETLB)
            try:
                wait_for(lambda: (hugetlb_num_cgroups() or (0, 1))[1] <= 1, 30, "hugetlb cgroups to be freed", step=0.1)
            except RuntimeError as e:
                log(f"warning: {e}")
            umount(HUGETLB)
            self.hugetlb_mounted = False
            try:
                wait_for(lambda: "hugetlb" in unified_controllers(), 30, "hugetlb to return to the v2 tree", step=0.1)
            except RuntimeError as e:
                log(f"warning: {e}")
        if self.hugetlb_dir_made:
            try:
                os.rmdir(HUGETLB)
                self.hugetlb_dir_made = False
            except OSError as e:
                log(f"warning: cannot remove {HUGETLB}: {e.strerror}")

    def group_crun_podman(self) -> None:
        have_crun = bool(self.tools["crun"])
        have_podman = bool(self.tools["podman"] and self.tools["conmon"])
        if not have_crun:
            for g, n in (("run", "crun run (/bin/true)"), ("exec", "crun exec CTR /bin/true")):
                self.skip(g, n, "not installed")
            self.skip("memory", "crun run in the foreground", "not installed", unit="MiB")
        if not have_podman:
            self.skip("run", "podman run --rm --network none (crun)", "not installed")
            self.skip("memory", "conmon of a detached podman container", "not installed", unit="MiB")
        if not (have_crun or have_podman):
            return
        if have_crun and self.crun_needs_hugetlb():
            self.mount_hugetlb()
        elif have_crun:
            self.notes.append("crun ran without any cgroup workaround")
        rows = []
        if have_crun:
            b = self.bundle("crun", "crun-run", ["/bin/true"])
            rows.append(
                Row(
                    "run",
                    "crun run (/bin/true)",
                    self.oci("crun", "run", "--bundle", b, f"{self.tag}-crun-run"),
                    self.base_env(),
                )
            )
        if have_podman:
            self.podman_dir = os.path.join(self.tmp, "podman")
            tar = os.path.join(self.tmp, "rootfs.tar")
            with tarfile.open(tar, "w") as tf:
                tf.add(os.path.join(self.tmp, "rootfs"), arcname=".")
            run(self.podman("import", tar, PODMAN_IMAGE), env=self.base_env())
            rows.append(
                Row(
                    "run",
                    "podman run --rm --network none (crun)",
                    self.podman(
                        "run",
                        "--rm",
                        "--network",
                        "none",
                        *PODMAN_ULIMITS,
                        "--cgroup-parent",
                        f"/{self.cg_podman}",
                        PODMAN_IMAGE,
                        "/bin/true",
                    ),
                    self.base_env(),
                    note="own --root/--runroot, --events-backend file",
                )
            )
        self.measure(rows)
        if have_crun:
            cid = f"{self.tag}-crun-exec"
            b = self.bundle("crun", "crun-exec", ["/bin/sleep", "3600"])
            self.oci_detached("crun", cid, b)
            self.measure(
                [Row("exec", "crun exec CTR /bin/true", self.oci("crun", "exec", cid, "/bin/true"), self.base_env())]
            )
            pids = []
            for i in range(MEM_SAMPLES):
                b = self.bundle("crun", f"crun-mem-{i}", ["/bin/sleep", "3600"])
                pids.append(self.oci_foreground("crun", f"{self.tag}-crun-mem-{i}", b))
            self.mem_row("memory", "crun run in the foreground", pids)
        if have_podman:
            pids = []
            for _ in range(MEM_SAMPLES):
                cid = run(
                    self.podman(
                        "run",
                        "-d",
                        "--network",
                        "none",
                        *PODMAN_ULIMITS,
                        "--cgroup-parent",
                        f"/{self.cg_podman}",
                        PODMAN_IMAGE,
                        "/bin/sleep",
                        "3600",
                    ),
                    env=self.base_env(),
                ).stdout.strip()
                pids.append(
                    int(
                        run(
                            self.podman("inspect", "--format", "{{.State.ConmonPid}}", cid), env=self.base_env()
                        ).stdout.strip()
                    )
                )
            self.mem_row("memory", "conmon of a detached podman container", pids)
        self.cleanup_crun_podman()

    # --- cleanup ---

    def cleanup_crun_podman(self) -> None:
        if self.crun_root and os.path.isdir(self.crun_root) and self.tools.get("crun"):
            self.oci_delete_all("crun")
        if self.podman_dir and os.path.isdir(self.podman_dir):
            env = self.base_env()
            run(self.podman("rm", "-a", "-f", "-t", "0"), env=env, check=False)
            run(self.podman("rmi", "-a", "-f"), env=env, check=False)
            for d in self.podman_side_dirs:
                shutil.rmtree(d, ignore_errors=True)
        self.reap_procs("crun")
        for h in cgroup_hierarchies():
            for parent in (self.cg_oci["crun"], self.cg_podman):
                rmdir_tree(os.path.join(h, parent))
        self.unmount_hugetlb()

    def oci_delete_all(self, tool: str) -> None:
        p = run(self.oci(tool, "list", "-q"), check=False)
        for cid in p.stdout.split():
            run(self.oci(tool, "delete", "-f", cid), check=False)

    def reap_procs(self, tool: str | None = None) -> None:
        """Wait for the foreground runtimes whose containers were removed
        (kill one that does not go)."""
        for t, p in self.procs:
            if (tool is None or t == tool) and p.poll() is None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs = [(t, p) for t, p in self.procs if p.poll() is None]

    def cleanup(self) -> None:
        log("cleaning up")
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        steps = [
            ("crun and podman", self.cleanup_crun_podman),
            ("cocin containers", self._cleanup_cocin),
            (
                "runc containers",
                lambda: self.tools.get("runc") and os.path.isdir(self.runc_root) and self.oci_delete_all("runc"),
            ),
            ("processes", self.reap_procs),
            ("cgroups", self._cleanup_cgroups),
            ("bridge network", self._cleanup_network),
            ("mounts and files", self._cleanup_files),
        ]
        for what, fn in steps:
            try:
                fn()
            except BaseException as e:  # keep going: the next step may still work
                log(f"warning: cleanup of {what} failed: {e}")
        signal.signal(signal.SIGINT, old)

    def _cleanup_cocin(self) -> None:
        for root in self.roots:
            running = [r["id"] for r in self.records(root) if r.get("state") == "running"]
            if running:
                self.cocin(root, "rm", "-f", *running, check=False)

    def _cleanup_cgroups(self) -> None:
        for h in cgroup_hierarchies():
            for parent in (self.cg_cocin, *self.cg_oci.values(), self.cg_podman):
                rmdir_tree(os.path.join(h, parent))

    def _cleanup_network(self) -> None:
        """The default network (once it is the bridge) leaves a bridge, netfilter
        chains and sysctls per state root: cocin's own remove_network undoes them."""
        for root, (bridge, _subnet) in self.nets.items():
            if os.path.isdir(os.path.join(root, "networks")):
                p = self.cocin(root, "network", "rm", "bridge", check=False)
                if p.returncode != 0 and "not found" not in p.stderr:
                    log(f"warning: cocin network rm bridge: {last_line(p.stderr)}")
            if os.path.exists(f"/sys/class/net/{bridge}"):
                run(["ip", "link", "del", bridge], check=False)

    def _cleanup_files(self) -> None:
        if not self.tmp:
            return
        mounts = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4]
                if mp == self.tmp or mp.startswith(self.tmp + "/"):
                    mounts.append(mp)
        for mp in sorted(mounts, key=len, reverse=True):
            try:
                umount(mp, MNT_DETACH)
            except OSError as e:
                log(f"warning: {e}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if os.path.exists(self.tmp):
            log(f"warning: could not remove all of {self.tmp}")

    # --- report ---

    def header(self, started: str, load0: str) -> list[str]:
        with open("/proc/loadavg") as f:
            load1 = " ".join(f.read().split()[:3])
        if self.args.ref:
            rev = (
                run(["git", "-C", REPO, "rev-parse", "--short", self.args.ref], check=False).stdout.strip()
                + f" (git archive of {self.args.ref})"
            )
        else:
            rev = (
                run(["git", "-C", REPO, "describe", "--always", "--dirty"], check=False).stdout.strip()
                + " (working tree)"
            )
        tv = []
        for t, argv in (
            ("runc", ["runc", "--version"]),
            ("crun", ["crun", "--version"]),
            ("podman", ["podman", "--version"]),
            ("conmon", ["conmon", "--version"]),
        ):
            if self.tools.get(t):
                tv.append(tool_version([self.tools[t], *argv[1:]]))
        pyver = run([PYTHON, "-c", "import sys; print(sys.version.split()[0])"]).stdout.strip()
        osname = ""
        try:
            with open("/etc/os-release") as f:
                osname = next((ln.split("=", 1)[1].strip().strip('"') for ln in f if ln.startswith("PRETTY_NAME=")), "")
        except OSError:
            pass
        lines = [
            "# cocin start-up benchmark",
            "",
            f"- machine: `{platform.node()}`, {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
            f"kernel {platform.release()}, {osname}",
            f"- python: {PYTHON} {pyver}; cocin {rev}",
            f"- date: {started}; {self.args.runs} timed runs per row after {self.args.warmup} "
            "warm-up runs, interleaved within each group",
            f"- load average at start / end: {load0} / {load1} (other work on the machine adds noise)",
            f"- tools: {'; '.join(tv) if tv else 'none'}",
        ]
        lines += [f"- note: {n}" for n in self.notes]
        return lines

    def table(self) -> list[str]:
        def ref(group: str, prefix: str) -> float | None:
            return next(
                (r.median for r in self.rows if r.group == group and r.name.startswith(prefix) and r.median), None
            )

        refs = {"run": ("runc run", "crun run"), "exec": ("runc exec", "crun exec"), "memory": ("runc run", "crun run")}
        out = [
            "| group | what | median | p90 | cocin / runc | cocin / crun | notes |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        order = ["run", "exec", "ps", "memory"]
        for group in order:
            for r in [r for r in self.rows if r.group == group]:
                if r.error:
                    out.append(f"| {group} | {r.name} | {r.error} | | | | {r.note} |")
                    continue
                fmt = (lambda v: f"{v:.1f} ms") if r.unit == "ms" else (lambda v: f"{v:.1f} MiB")
                ratios = ["", ""]
                if r.name.startswith("cocin") and group in refs:
                    for i, prefix in enumerate(refs[group]):
                        base = ref(group, prefix)
                        ratios[i] = f"{r.median / base:.1f}x" if base else "n/a"
                note = r.note
                if r.failures and r.samples:
                    note = note or f"{r.failures} failed runs"
                out.append(
                    f"| {group} | {r.name} | {fmt(r.median)} | {fmt(p90(r.samples))} | "
                    f"{ratios[0]} | {ratios[1]} | {note} |"
                )
        return out


def rmdir_tree_children(path: str) -> None:
    for entry in os.listdir(path):
        child = os.path.join(path, entry)
        if os.path.isdir(child):
            rmdir_tree(child)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--install", action="store_true", help="apt-get install runc, crun, podman when missing")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per row (default 30)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs per row first (default 2)")
    ap.add_argument(
        "--ref",
        metavar="GIT_REF",
        help="bench cocin as committed at GIT_REF (e.g. HEAD) rather than the "
        "working tree, which others may be editing",
    )
    ap.add_argument(
        "--out",
        default=os.path.join(REPO, "bench", "results", "latest.md"),
        help="markdown file to write (default bench/results/latest.md)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (sudo /usr/bin/python3 bench/bench.py)")
    if args.runs < 1:
        sys.exit("bench: --runs must be at least 1")

    b = Bench(args)
    b.find_tools()
    if args.install:
        b.install()
    if not b.tools["busybox"]:
        sys.exit("bench: busybox is needed for cocin's busybox image (apt-get install busybox-static)")
    for t in ("runc", "crun", "podman"):
        if not b.tools[t]:
            log(f"{t} not installed: its rows say so (--install installs it)")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    with open("/proc/loadavg") as f:
        load0 = " ".join(f.read().split()[:3])
    t0 = time.monotonic()
    private_mount_namespace()
    code = 0
    try:
        b.setup()
        for name, fn in (
            ("run", b.group_run),
            ("exec", b.group_exec),
            ("ps", b.group_ps),
            ("memory", b.group_memory_cocin_runc),
            ("crun/podman", b.group_crun_podman),
        ):
            log(f"group {name} ({time.monotonic() - t0:.0f} s)")
            fn()
    except (KeyboardInterrupt, Terminated) as e:
        log(f"interrupted ({e or 'Ctrl-C'})")
        code = 130
    except Exception as e:  # report what we have, clean up, fail
        log(f"error: {type(e).__name__}: {e}")
        b.notes.append(f"the run stopped early: {type(e).__name__}: {e}")
        code = 1
    finally:
        b.cleanup()
    report = b.header(started, load0) + ["", *b.table(), "", f"Total bench time {time.monotonic() - t0:.0f} s.", ""]
    text = "\n".join(report)
    print(text)
    if b.rows:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        log(f"wrote {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
