"""Test harness: run the real ``cocin.py`` as a user would, through testinfra.

Where: ``COCIN_TEST_TARGET=local`` (this machine, as root), ``vagrant`` (the
VM of this repository's ``Vagrantfile``, reached with ``ssh_config``), or unset:
the VM when a machine of this Vagrantfile is running (``vagrant up &&
pytest``), else this machine. Before testing in the VM the harness writes
``.vagrant/ssh-config`` (``vagrant ssh-config``) and copies the tree to the
guest (``vagrant rsync``) when it changed since the last copy. Each session
gets its own state root (``COCIN_ROOT``) and cgroup subtree
(``COCIN_CGROUP_PARENT``); at the end every container is removed and the host
is checked for anything left behind.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import shlex
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
VM_REPO = "/vagrant"
MACHINE = os.path.join(REPO, ".vagrant", "machines", "default")


def _output(argv: list[str], timeout: float = 30) -> str:
    """stdout of ``argv`` run in the repository, or "" if it fails."""
    try:
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return r.stdout if r.returncode == 0 else ""


def _running_machine() -> str:
    """A key naming the running machine of this Vagrantfile ("" if none).

    Costs one ``stat`` when there is no machine; a machine's ``id`` file is
    there from ``vagrant up`` to ``vagrant destroy``. For libvirt one ``virsh
    dominfo`` says whether it runs; its Id changes on every boot, so the key
    also tells when the ssh-config must be written again.
    """
    try:
        providers = sorted(os.listdir(MACHINE))
    except OSError:
        return ""
    for provider in providers:
        try:
            with open(os.path.join(MACHINE, provider, "id")) as f:
                vid = f.read().strip()
        except OSError:
            continue
        if provider == "libvirt":
            info = dict(
                line.split(":", 1)
                for line in _output(["virsh", "-c", "qemu:///system", "dominfo", vid]).splitlines()
                if ":" in line
            )
            if info.get("State", "").strip() == "running":
                return f"libvirt {vid} {info.get('Id', '').strip()}"
        elif ",state,running" in _output(["vagrant", "status", "--machine-readable"], timeout=120):
            return f"{provider} {vid} {time.time()}"  # other providers: no cheap boot id
    return ""


_ENV_TARGET = os.environ.get("COCIN_TEST_TARGET", "")
_MACHINE_KEY = "" if _ENV_TARGET else _running_machine()
TARGET = _ENV_TARGET or ("vagrant" if _MACHINE_KEY else "local")
# per cocin call; the VM may be emulated (TCG), where cocin is ~20 times slower
DEFAULT_TIMEOUT = 180 if TARGET == "vagrant" else 60


def _vagrant_ssh_config() -> str:
    return os.environ.get("COCIN_VAGRANT_SSH_CONFIG") or os.path.join(REPO, ".vagrant", "ssh-config")


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _tree_key() -> str:
    """A hash of the working tree as rsync would copy it (git's index, and the
    size and mtime of every modified or untracked file); "" outside git."""
    index = _output(["git", "ls-files", "-s"])
    if not index:
        return ""
    h = hashlib.sha256(index.encode())
    for name in sorted(_output(["git", "ls-files", "-m", "-o", "--exclude-standard", "-z"]).split("\0")):
        try:
            st = os.stat(os.path.join(REPO, name))
            h.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name} gone\n".encode())
    return h.hexdigest()


_PREPARED: list[bool] = []


def prepare_vm() -> None:
    """Make the VM reachable and current: ``.vagrant/ssh-config`` written for
    the running machine, and the tree copied to the guest's /vagrant when it
    changed since the last copy (the exec stub rebuilt there if its source is
    newer). Only for the harness's own ssh-config (not ``COCIN_VAGRANT_SSH_CONFIG``,
    as scripts/vm_test.sh gives), once per session."""
    if _PREPARED or TARGET != "vagrant" or os.environ.get("COCIN_VAGRANT_SSH_CONFIG"):
        return
    _PREPARED.append(True)
    machine = _MACHINE_KEY or _running_machine()
    if not machine:
        pytest.exit(
            "COCIN_TEST_TARGET=vagrant but no machine of this Vagrantfile is running: "
            "vagrant up (or scripts/vm_test.sh)",
            returncode=3,
        )
    cfg = _vagrant_ssh_config()
    stamp = f"# cocin: {machine}\n"
    if not _read(cfg).startswith(stamp):
        out = _output(["vagrant", "ssh-config"], timeout=300)
        if "HostName" not in out:
            pytest.exit("vagrant ssh-config failed: is the machine up? (vagrant status)", returncode=3)
        # one shared connection: an ssh handshake costs seconds in an emulated guest
        _write(cfg, stamp + out + "  ControlMaster auto\n  ControlPath /tmp/cocin-ssh-%C\n  ControlPersist 120\n")
    synced = os.path.join(REPO, ".vagrant", "cocin-rsync.stamp")
    tree = _tree_key()
    key = f"{machine} {tree}"
    if not tree or _read(synced) != key:
        r = subprocess.run(["vagrant", "rsync"], cwd=REPO, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            pytest.exit(f"vagrant rsync failed: {r.stderr.strip()[-500:]}", returncode=3)
        stub = subprocess.run(
            [
                "ssh",
                "-F",
                cfg,
                "default",
                "cd /vagrant && { test cocin/nsenter_stub "
                "-nt cocin/nsenter_stub.c || sudo bash scripts/build_stub.sh; }",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if stub.returncode != 0:
            pytest.exit(f"building the exec stub in the guest failed: {stub.stderr.strip()}", returncode=3)
        if tree:
            _write(synced, key)


_GUEST: list[str] = []


def guest_info() -> str:
    """One line about the VM: kernel and cgroup file system (asked once)."""
    if not _GUEST:
        import testinfra

        prepare_vm()
        h = testinfra.get_host("ssh://default", ssh_config=_vagrant_ssh_config(), sudo=True)
        r = h.run(
            'echo "kernel $(uname -r), /sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup)'
            ' (controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null))"'
        )
        _GUEST.append(r.stdout.strip() if r.rc == 0 else f"unreachable: {r.stderr.strip()}")
    return _GUEST[0]


def _how() -> str:
    if _ENV_TARGET:
        return f"COCIN_TEST_TARGET={_ENV_TARGET}"
    if TARGET == "vagrant":
        return "found running: vagrant up; COCIN_TEST_TARGET=local tests this machine"
    return "no VM of this Vagrantfile running"


def pytest_report_header(config):
    if TARGET == "vagrant":
        prepare_vm()
        if not os.path.exists(_vagrant_ssh_config()):
            return "cocin target: vagrant VM (no ssh-config yet)"
        return f"cocin target: vagrant VM; guest: {guest_info()}; {_how()}"
    return (
        f"cocin target: local; cgroup2 at /sys/fs/cgroup: "
        f"{os.path.exists('/sys/fs/cgroup/cgroup.controllers')}; {_how()}"
    )


def pytest_terminal_summary(terminalreporter):
    # the header is hidden by -q: say it again at the end
    if TARGET == "vagrant" and _GUEST:
        terminalreporter.write_line(f"cocin target: vagrant VM; guest: {_GUEST[0]}")
    order = getattr(terminalreporter.config, "_cocin_order", None)
    if order:
        terminalreporter.write_line(f"cocin test order: {order} (--cocin-order={order} repeats it)")


def pytest_addoption(parser):
    parser.addoption(
        "--cocin-order",
        default="",
        metavar="reverse|random[:SEED]",
        help="run the tests in reverse or in a random order (SEED repeats one): "
        "no test may depend on another having run before it",
    )


def pytest_collection_modifyitems(config, items):
    """``--cocin-order``: the collected tests reversed or shuffled (with a seed
    printed at the end, so a failing order can be run again)."""
    order = config.getoption("--cocin-order")
    if not order:
        return
    kind, _, seed = order.partition(":")
    if kind == "reverse" and not seed:
        items.reverse()
    elif kind == "random":
        import random

        seed = seed or str(random.SystemRandom().randrange(1, 1_000_000))
        random.Random(seed).shuffle(items)
        order = f"random:{seed}"
    else:
        raise pytest.UsageError(f"--cocin-order: expected reverse or random[:SEED], not {order!r}")
    config._cocin_order = order


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Call ``predicate()`` until it returns something true or ``timeout``
    seconds have passed; return its last value. The caller asserts on what
    it waited for, so a timeout fails there, with that assertion's message.

    Waiting on the state a test needs instead of sleeping a fixed time:
    as short as the machine allows, and never too short on a slow one.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture(name="wait_for")
def wait_for_fixture():
    """``wait_for(predicate, timeout)`` for the tests (see ``wait_for``)."""
    return wait_for


class Cocin:
    """Runs ``cocin.py`` with the session's state root on the target host."""

    def __init__(self, host, repo: str, python: str, env: dict[str, str]):
        self.host = host
        self.repo = repo
        self.python = python
        self.env = env

    @property
    def root(self) -> str:
        return self.env["COCIN_ROOT"]

    def cmdline(self, *args: str, timeout: int = DEFAULT_TIMEOUT, env: dict | None = None, tty: bool = False) -> str:
        """The shell command line for ``cocin.py ARGS``, bounded by timeout(1).

        ``tty=True`` is for commands that use their terminal (``-it``): timeout(1)
        then stays in the terminal's foreground process group. Otherwise it makes
        a group of its own, and cocin's switch to raw mode would stop it with
        SIGTTOU (unless the shell happens to exec timeout as session leader).
        """
        fg = "--foreground " if tty else ""
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**self.env, **(env or {})}.items())
        argv = " ".join(shlex.quote(a) for a in args)
        # -u PYTHONDONTWRITEBYTECODE: some shells set it; cocin's bytecode cache matters.
        return (
            f"timeout {fg}-k 5 {timeout} env -u PYTHONDONTWRITEBYTECODE {envs} {self.python} "
            f"{shlex.quote(self.repo)}/cocin.py {argv}"
        )

    def __call__(self, *args: str, timeout: int = DEFAULT_TIMEOUT, env: dict | None = None, stdin: str | None = None):
        cmd = self.cmdline(*args, timeout=timeout, env=env)
        if stdin is not None:
            cmd = f"printf %s {shlex.quote(stdin)} | {cmd}"
        return self.host.run(cmd)

    def ok(self, *args: str, **kw):
        r = self(*args, **kw)
        assert r.rc == 0, f"cocin {' '.join(args)} failed rc={r.rc}: {r.stderr}"
        return r

    def sh(self, script: str):
        """A shell command on the target host (outside any container)."""
        return self.host.run(script)

    def in_tty(self, command: str, feed: str):
        """Run ``command`` on a pty made by script(1) and type ``feed`` into it.

        The typing waits until cocin has put that terminal in raw mode: input typed
        earlier would race with that switch, and in a slow
        (emulated) VM cocin takes more than a second to get there.
        """
        return self.sh(
            "m=$(mktemp) && export m && "
            '( i=0; while [ $i -lt 600 ] && ! stty -F "$(cat $m)" -a 2>/dev/null | grep -q -- -icanon; '
            "do sleep 0.1; i=$((i+1)); done; "
            f"printf %s {shlex.quote(feed)}; sleep 2 ) | "
            f"script -qefc {shlex.quote('tty > $m; ' + command)} /dev/null; r=$?; rm -f $m; exit $r"
        )

    def containers(self) -> list[str]:
        return self.ok("ps", "-aq", "--no-trunc").stdout.split()

    def wait_for(self, ref: str, state: str, timeout: float = 20.0) -> dict:
        """The record of ``ref`` once it is in ``state`` (or when time is up)."""
        recs = []

        def reached() -> bool:
            recs.append(self.record(ref))
            return recs[-1]["state"] == state

        wait_for(reached, timeout, 0.1)
        return recs[-1]

    def listening(self, ref: str, port: int, proto: str = "tcp") -> bool:
        """Does a process of container ``ref`` listen on ``port`` (bound, for
        UDP)? ``/proc/PID/net/*`` shows the network namespace of PID."""
        pid = self.record(ref)["pid"]
        table = self.sh(f"cat /proc/{pid}/net/{proto} 2>/dev/null").stdout.splitlines()[1:]
        state = "0A" if proto == "tcp" else "07"  # TCP_LISTEN; an unconnected UDP socket is TCP_CLOSE
        return any(f.split()[1].endswith(f":{port:04X}") and f.split()[3] == state for f in table)

    def pid_gone(self, pid: int) -> bool:
        """Has process ``pid`` ended (gone, or a zombie)?"""
        return self.sh(f"grep -qs '^State:[[:space:]]*[^Z]' /proc/{pid}/status").rc != 0

    def record(self, ref: str) -> dict:
        import json

        return json.loads(
            self.host.check_output(f"cat {shlex.quote(self.root)}/containers/{self.full_id(ref)}/config.json")
        )

    def full_id(self, ref: str) -> str:
        for cid in self.containers():
            if cid.startswith(ref):
                return cid
        out = self.host.check_output(f'grep -l \'"name": "{ref}"\' {shlex.quote(self.root)}/containers/*/config.json')
        return out.split("/")[-2]


@pytest.fixture(scope="session")
def host():
    testinfra = pytest.importorskip("testinfra")
    if TARGET == "vagrant":
        prepare_vm()
        cfg = _vagrant_ssh_config()
        if not os.path.exists(cfg):
            pytest.exit(
                "COCIN_TEST_TARGET=vagrant but .vagrant/ssh-config is missing: "
                "run scripts/vm_test.sh (or vagrant up && vagrant ssh-config > "
                ".vagrant/ssh-config)",
                returncode=3,
            )
        return testinfra.get_host("ssh://default", ssh_config=cfg, sudo=True)
    return testinfra.get_host("local://")


@pytest.fixture(scope="session")
def cocin_session(host, request):
    if TARGET == "local" and os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (namespaces, mounts, cgroups): run with sudo")
    tag = uuid.uuid4().hex[:8]
    root = f"/tmp/cocin-test-{tag}"
    env = {
        "COCIN_ROOT": root,
        "COCIN_CGROUP_PARENT": f"cocin-test-{tag}",
        "COCIN_DEFAULT_BRIDGE": f"cocint{tag[:4]}",
        "COCIN_DEFAULT_SUBNET": os.environ.get("COCIN_TEST_SUBNET", "10.213.0.0/24"),
    }
    if TARGET == "vagrant":
        c = Cocin(host, VM_REPO, "/usr/bin/python3", env)
        guest_info()
    else:
        c = Cocin(
            host,
            REPO,
            sys.executable if os.path.basename(sys.executable).startswith("python") else "/usr/bin/python3",
            env,
        )
    # cocin keeps its cgroup parent (as Docker keeps docker/); the session's goes
    # at the end. rmdir fails on a parent that still holds a container's cgroup.
    remove_cgroup_parent = (
        f"find /sys/fs/cgroup -maxdepth 3 -type d -name "
        f"{shlex.quote(env['COCIN_CGROUP_PARENT'])} -exec rmdir {{}} + 2>/dev/null"
    )
    if host.run("command -v busybox || ls /bin/busybox /usr/bin/busybox").rc != 0:
        pytest.skip(
            "the end-to-end tests need busybox on the host (apt-get install busybox-static): "
            "the busybox image is built from it, and tests use its wget"
        )
    try:
        # The busybox image is built once here, so single tests do not pay for it.
        first = c("run", "--rm", "busybox", "true")
        if first.rc != 0 and "overlaps" in first.stderr:
            pytest.fail(
                f"the session's subnet is taken on this host: {first.stderr.strip()} "
                "(choose a free one with COCIN_TEST_SUBNET=CIDR)",
                pytrace=False,
            )
        assert first.rc == 0, f"cocin run --rm busybox true failed rc={first.rc}: {first.stderr}"
        before = _snapshot(host, env["COCIN_CGROUP_PARENT"])
        yield c
        _remove_all(c)
        host.run(remove_cgroup_parent)
        _assert_no_leftovers(host, c, before)
    finally:  # also when the session could not even start (its bridge and chains too)
        _remove_all(c)
        host.run(f"ip link delete {shlex.quote(env['COCIN_DEFAULT_BRIDGE'])} 2>/dev/null")
        host.run(remove_cgroup_parent)
        host.run(f"rm -rf {shlex.quote(root)}")


def _remove_all(c: Cocin) -> None:
    """Every container and network of the session's root (idempotent)."""
    if c.sh(f"test -d {shlex.quote(c.root)}").rc != 0:
        return
    for cid in c("ps", "-aq", "--no-trunc").stdout.split():
        c("rm", "-f", cid)
    for net in c("network", "ls", "-q").stdout.split():
        c("network", "rm", net)  # the default network too: its bridge and rules


@pytest.fixture
def cocin(cocin_session):
    """The per-test handle; containers a test leaves are removed after it."""
    before = set(cocin_session.containers())
    parent = cocin_session.env["COCIN_CGROUP_PARENT"]
    listing = f"ls /sys/fs/cgroup/pids/{parent} /sys/fs/cgroup/{parent} 2>/dev/null"
    cgroups_before = set(cocin_session.sh(listing).stdout.split())
    yield cocin_session
    for cid in set(cocin_session.containers()) - before:
        cocin_session("rm", "-f", cid)
    # Every cgroup the test made must belong to a container that still exists.
    dirs = set(cocin_session.sh(listing).stdout.split()) - cgroups_before
    stray = {d for d in dirs if len(d) == 64} - set(cocin_session.containers())
    for d in stray:  # reported once, here, and not blamed on the tests after this one
        cocin_session.sh(
            f"find /sys/fs/cgroup -maxdepth 3 -depth -type d -path '*/{parent}/{d}' -exec rmdir {{}} + 2>/dev/null"
        )
    assert not stray, f"cgroups of removed containers left behind: {stray}"


class TargetDir:
    """A scratch directory on the target host (this machine or the VM).

    Paths given to cocin must exist where cocin runs, so pytest's ``tmp_path``
    (always on this machine) will not do in VM mode. ``d / "name"`` is a path
    string; ``write``, ``read`` and ``exists`` go through ``host.run``.
    """

    def __init__(self, host, path: str):
        self.host = host
        self.path = path

    def __str__(self) -> str:
        return self.path

    def __truediv__(self, name: str) -> str:
        return posixpath.join(self.path, name)

    def write(self, name: str, data: str | bytes) -> str:
        """Create (or replace) the file ``name`` with exactly ``data``; return its path."""
        path = self / name
        raw = data.encode() if isinstance(data, str) else data
        b64 = base64.b64encode(raw).decode()
        q = shlex.quote(path)
        r = self.host.run(f"mkdir -p {shlex.quote(posixpath.dirname(path))} && printf %s {b64} | base64 -d > {q}")
        assert r.rc == 0, f"cannot write {path} on the target: {r.stderr}"
        return path

    def read(self, name: str) -> str:
        r = self.host.run(f"base64 < {shlex.quote(self / name)}")
        assert r.rc == 0, f"cannot read {self / name} on the target: {r.stderr}"
        return base64.b64decode(r.stdout).decode()

    def exists(self, name: str) -> bool:
        return self.host.run(f"test -e {shlex.quote(self / name)}").rc == 0


@pytest.fixture
def target_tmp(host):
    """A fresh directory on the target host, removed after the test."""
    r = host.run("mktemp -d /tmp/cocin-tmp-XXXXXXXX")
    assert r.rc == 0, r.stderr
    d = TargetDir(host, r.stdout.strip())
    yield d
    host.run(f"rm -rf {shlex.quote(d.path)}")


def _snapshot(host, cgroup_parent: str) -> set[str]:
    """PIDs (with start times) of live processes in this session's cgroups.

    Every container of the session runs in ``$COCIN_CGROUP_PARENT/<id>``, so a
    process still there is one of ours; containers of other cocin users (a
    second test session, a user's own) are elsewhere and do not count.
    Zombies are left out: a container whose monitor was killed (a test does
    that on purpose) is reparented to the host's PID 1, whose job reaping is.
    """
    out = host.run(
        f"for p in /proc/[0-9]*; do grep -qF :/{shlex.quote(cgroup_parent)}/ $p/cgroup 2>/dev/null "
        "|| continue; set -- $(sed 's/.*) //' $p/stat 2>/dev/null); [ \"$1\" = Z ] && continue; "
        '[ -n "$1" ] && echo ${p#/proc/}:${20}; done'
    ).stdout
    return set(out.split())


def _assert_no_leftovers(host, c: Cocin, before: set[str]) -> None:
    problems = []
    mounts = host.run(f"grep -F {shlex.quote(c.root)} /proc/self/mountinfo").stdout.strip()
    if mounts:
        problems.append(f"mounts: {mounts}")
    cg = host.run(
        f"find /sys/fs/cgroup -maxdepth 3 -type d -name {shlex.quote(c.env['COCIN_CGROUP_PARENT'])}*"
    ).stdout.strip()
    if cg:
        problems.append(f"cgroups: {cg}")
    procs = host.run(
        f"grep -lF COCIN_ROOT={shlex.quote(c.root)} /proc/[0-9]*/environ 2>/dev/null | grep -v self"
    ).stdout.strip()
    procs = [p for p in procs.split() if not p.startswith(("/proc/self", "/proc/thread-self"))]
    procs = [p for p in procs if host.run(f"test -e {p}").rc == 0]
    if procs:
        problems.append(f"cocin processes: {procs}")
    ns_procs = _snapshot(host, c.env["COCIN_CGROUP_PARENT"]) - before
    if ns_procs:
        problems.append(f"processes in the session's cgroups: {sorted(ns_procs)}")
    # A dead container's veth pair is deleted by the kernel a little later.
    deadline = time.monotonic() + 5
    while True:
        links = host.run(f"ip -o link show 2>/dev/null | grep -F {c.env['COCIN_DEFAULT_BRIDGE']}").stdout
        if not links.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if links.strip():
        problems.append(f"links: {links.strip()}")
    left = host.run(f"ls -A {shlex.quote(c.root)}/containers 2>/dev/null").stdout.split()
    left = [x for x in left if x != "lock"]
    if left:
        problems.append(f"container directories: {left}")
    assert not problems, "the suite left things behind:\n" + "\n".join(problems)


# --- directory trees for the layer tests (tests/unit and tests/host) ----------------------------


@pytest.fixture
def layer(tmp_path):
    d = tmp_path / "layer"
    d.mkdir()
    return d


@pytest.fixture
def overlay(tmp_path):
    """lower, upper and an empty destination."""
    dirs = [tmp_path / n for n in ("lower", "upper", "dst")]
    for d in dirs:
        d.mkdir()
    return dirs
