"""Unit tests of cocin-oci, runc's command line (cocin/oci), run in-process as root.

The container core is not behind ``create`` yet, so the lifecycle tests put a
stand-in core in its place (``fake_core``): a real process that does what the
contract in cocin/oci/core.py asks of the core's first process (open
``exec.fifo`` for writing, write one byte, exec the program) in a cgroup of its
own. That exercises the front-end for real: the fifo rendezvous of ``start``,
state from the kernel, kill, the freezer, delete and its cleanup, hooks, the
pid file. Everything made is removed, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid

import pytest

from cocin.oci import OCIError, cli, config, core, hooks, store, verbs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def oci(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def root(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture
def bundle(tmp_path):
    """A bundle with runc's default spec (no terminal) and an empty rootfs."""
    b = tmp_path / "bundle"
    (b / "rootfs").mkdir(parents=True)
    spec = config.default_spec()
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "30"]
    (b / "config.json").write_text(json.dumps(spec))
    return b


def write_spec(bundle, change) -> None:
    spec = json.loads((bundle / "config.json").read_text())
    change(spec)
    (bundle / "config.json").write_text(json.dumps(spec))


# --- argument parsing --------------------------------------------------------------


def test_flag_forms_as_go_parses_them():
    flags = {"bundle": "str", "force": "bool", "preserve-fds": "int", "env": "list"}
    opts, rest = cli.parse_flags(
        ["--bundle=/b", "-force", "--preserve-fds", "2", "-e", "A=1", "--env=B=2", "ID"], flags, {"e": "env"}, True
    )
    assert opts == {"bundle": "/b", "force": True, "preserve-fds": 2, "env": ["A=1", "B=2"]}
    assert rest == ["ID"]
    opts, rest = cli.parse_flags(["ID", "--force=false"], flags, {}, True)  # flags after the id
    assert opts == {"force": False} and rest == ["ID"]
    opts, rest = cli.parse_flags(["ID", "sh", "-c", "ls"], flags, {}, False)  # exec: the rest is the command
    assert opts == {} and rest == ["ID", "sh", "-c", "ls"]
    opts, rest = cli.parse_flags(["--", "--force"], flags, {}, True)
    assert rest == ["--force"]


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--bogus", "ID"], "flag provided but not defined: --bogus"),
        (["--bundle"], "flag needs an argument: --bundle"),
        (["--preserve-fds", "x", "ID"], 'invalid value "x" for flag --preserve-fds'),
        (["--force=maybe"], 'invalid boolean value "maybe"'),
    ],
)
def test_bad_flags(argv, msg):
    with pytest.raises(OCIError, match=re.escape(msg)):
        cli.parse_flags(argv, {"bundle": "str", "force": "bool", "preserve-fds": "int"}, {}, True)


def test_global_flags_then_verb_and_the_json_error_log(capsys, root, tmp_path):
    log = tmp_path / "log.json"
    rc, out, err = oci(capsys, "--root", root, "--log", str(log), "--log-format=json", "state", "nope")
    assert rc == 1 and out == ""
    assert err == "cocin-oci: error: container does not exist\n"
    lines = log.read_text().splitlines()
    assert len(lines) == 1  # podman parses the whole file as one object
    entry = json.loads(lines[0])
    assert entry["level"] == "error" and entry["msg"] == "container does not exist"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["time"])  # RFC 3339 for containerd
    oci(capsys, "--root", root, "--log", str(log), "--log-format", "json", "kill", "nope", "9")
    assert len(log.read_text().splitlines()) == 2  # appended, as containerd reads it


def test_errors_without_log_go_to_stderr_in_the_chosen_format(capsys, root):
    rc, _, err = oci(capsys, "--root", root, "--log-format", "json", "state", "a/b")
    assert rc == 1 and json.loads(err)["msg"] == "invalid id format: a/b"
    rc, _, err = oci(capsys, "--log-format", "xml", "list")
    assert rc == 1 and "invalid log-format: xml" in err
    rc, _, err = oci(capsys, "nosuchverb")
    assert rc == 1 and err.startswith("cocin-oci: error:")


def test_version_is_runc_like(capsys):
    rc, out, _ = oci(capsys, "--version")
    assert rc == 0
    assert re.match(r"cocin-oci version \S+\n", out)  # go-runc and podman info read the first line
    assert "\nspec: 1.0.2-dev\n" in out


def test_arg_counts_use_runcs_words(capsys, root):
    assert oci(capsys, "--root", root, "start")[2] == 'cocin-oci: error: "start" requires exactly 1 argument(s)\n'
    assert "minimum of 2" in oci(capsys, "--root", root, "exec", "x")[2]


@pytest.mark.parametrize(
    "flag, msg", [("--systemd-cgroup", "cgroupfs only"), ("--rootless=true", "rootless containers are not supported")]
)
def test_unsupported_cgroup_managers_are_refused_clearly(capsys, root, bundle, flag, msg):
    rc, _, err = oci(capsys, flag, "--root", root, "create", "--bundle", str(bundle), "c1")
    assert rc == 1 and msg in err
    assert not os.path.exists(os.path.join(root, "c1"))


def test_systemd_cgroup_does_not_stop_a_forced_delete(capsys, root):
    assert oci(capsys, "--systemd-cgroup", "--root", root, "delete", "--force", "c1")[0] == 0


# --- spec, features ------------------------------------------------------------------


def test_spec_writes_runcs_default_once(capsys, tmp_path):
    rc, out, _ = oci(capsys, "spec", "--bundle", str(tmp_path))
    assert rc == 0 and out == ""
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["ociVersion"] == "1.0.2-dev" and spec["root"] == {"path": "rootfs", "readonly": True}
    assert spec["process"]["args"] == ["sh"] and spec["process"]["terminal"] is True
    assert [n["type"] for n in spec["linux"]["namespaces"]] == ["pid", "network", "ipc", "uts", "mount"]
    config.validate(spec)  # what we write, we accept
    rc, _, err = oci(capsys, "spec", "--bundle", str(tmp_path))
    assert rc == 1 and "config.json exists" in err


def test_spec_rootless_is_refused(capsys, tmp_path):
    rc, _, err = oci(capsys, "spec", "--rootless", "-b", str(tmp_path))
    assert rc == 1 and "rootless" in err and not (tmp_path / "config.json").exists()


def test_features_has_runcs_shape(capsys):
    rc, out, _ = oci(capsys, "features")
    f = json.loads(out)
    assert rc == 0
    assert f["ociVersionMin"] == "1.0.0" and f["ociVersionMax"] == "1.0.2-dev"
    assert f["hooks"] == list(config.HOOKS)
    assert "tmpcopyup" in f["mountOptions"] and "rbind" in f["mountOptions"]
    linux = f["linux"]
    assert {"pid", "network", "mount", "ipc", "uts", "cgroup"} <= set(linux["namespaces"])
    assert "CAP_SYS_ADMIN" in linux["capabilities"] and "CAP_CHOWN" in linux["capabilities"]
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False}
    assert "SCMP_ACT_ERRNO" in linux["seccomp"]["actions"] and "SCMP_CMP_EQ" in linux["seccomp"]["operators"]
    assert "SCMP_ARCH_X86_64" in linux["seccomp"]["archs"]


# --- config.json validation ----------------------------------------------------------------


def _set(path, value):
    def change(spec):
        *keys, last = path
        d = spec
        for k in keys:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value

    return change


@pytest.mark.parametrize(
    "change, msg",
    [
        (_set(["ociVersion"], KeyError), "ociVersion: missing"),
        (_set(["ociVersion"], "2.0.0"), "unsupported spec version"),
        (_set(["root"], KeyError), "root: missing"),
        (_set(["root", "path"], ""), "root.path: must be a non-empty string"),
        (_set(["root", "path"], "nothere"), "does not exist"),
        (_set(["process"], KeyError), "process: missing"),
        (_set(["process", "args"], []), "process.args: must not be empty"),
        (_set(["process", "cwd"], "tmp"), "process.cwd: must be an absolute path"),
        (_set(["process", "env"], ["NOEQUALS"]), "is not KEY=VALUE"),
        (_set(["process", "user"], {"uid": -1, "gid": 0}), "process.user.uid"),
        (_set(["process", "capabilities", "bounding"], ["CAP_NOPE"]), "unknown capability 'CAP_NOPE'"),
        (_set(["process", "rlimits"], [{"type": "RLIMIT_X", "soft": 1, "hard": 1}]), "unknown rlimit"),
        (_set(["process", "oomScoreAdj"], 5000), "oomScoreAdj"),
        (_set(["mounts"], [{"destination": "proc", "type": "proc"}]), "mounts[0].destination"),
        (_set(["linux", "namespaces"], [{"type": "pid"}, {"type": "pid"}]), "duplicated namespace 'pid'"),
        (_set(["linux", "namespaces"], [{"type": "time"}]), "unknown namespace 'time'"),
        (_set(["linux", "namespaces"], [{"type": "net", "path": "x"}]), "unknown namespace 'net'"),
        (_set(["linux", "resources"], {"memory": {"limit": "1g"}}), "resources.memory.limit"),
        (_set(["linux", "maskedPaths"], ["proc/kcore"]), "linux.maskedPaths"),
        (_set(["hooks"], {"prestart": [{"path": "hook"}]}), "hooks.prestart[0].path"),
        (_set(["hooks"], {"prestarts": []}), "unknown hook kind"),
        (_set(["annotations"], {"a": 1}), "annotations"),
    ],
)
def test_bad_config_fails_create_with_one_line_and_nothing_made(capsys, root, bundle, change, msg):
    write_spec(bundle, change)
    rc, out, err = oci(capsys, "--root", root, "create", "--bundle", str(bundle), "c1")
    assert rc == 1 and out == ""
    assert msg in err and err.count("\n") == 1 and err.startswith("cocin-oci: error: ")
    assert not os.path.exists(os.path.join(root, "c1"))


def test_missing_and_unreadable_config(capsys, root, tmp_path):
    (tmp_path / "b").mkdir()
    rc, _, err = oci(capsys, "--root", root, "create", "-b", str(tmp_path / "b"), "c1")
    assert rc == 1 and "config.json not found" in err
    (tmp_path / "b" / "config.json").write_text("{nope")
    assert "invalid JSON" in oci(capsys, "--root", root, "create", "-b", str(tmp_path / "b"), "c1")[2]
    assert "no such file" in oci(capsys, "--root", root, "create", "-b", str(tmp_path / "nob"), "c1")[2]


def test_relative_root_path_is_relative_to_the_bundle(bundle):
    spec, rootfs = config.load(str(bundle))
    assert rootfs == str(bundle / "rootfs")
    write_spec(bundle, _set(["root", "path"], str(bundle / "rootfs")))  # podman: absolute
    assert config.load(str(bundle))[1] == str(bundle / "rootfs")


def test_terminal_needs_a_console_socket_when_detached(capsys, root, bundle):
    write_spec(bundle, _set(["process", "terminal"], True))
    rc, _, err = oci(capsys, "--root", root, "create", "--bundle", str(bundle), "c1")
    assert rc == 1 and "cannot allocate tty" in err


def _core_wired() -> bool:
    try:
        core._core("create_from_spec", "create")
    except OCIError:
        return False
    return True


@pytest.mark.skipif(_core_wired(), reason="cocin.launch.create_from_spec exists: create is wired")
def test_create_says_clearly_it_is_not_wired_yet_and_leaves_nothing(capsys, root, bundle, tmp_path):
    rc, out, err = oci(capsys, "--root", root, "create", "-b", str(bundle), "--pid-file", str(tmp_path / "p"), "c1")
    assert (rc, out) == (1, "")
    assert err == "cocin-oci: error: create is not wired to the container core yet\n"
    assert not os.path.exists(os.path.join(root, "c1")) and not (tmp_path / "p").exists()


# --- the lifecycle, with a stand-in core -------------------------------------------------


def _freezer_parent() -> str | None:
    for path in ("/sys/fs/cgroup/freezer", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        if os.path.exists(os.path.join(path, "freezer.state" if "freezer" in path else "cgroup.procs")):
            if path.endswith("freezer") or os.path.exists(os.path.join(path, "cgroup.controllers")):
                return path
    return None


class FakeCore:
    """Does what cocin/oci/core.py asks of the core, with a plain process."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.cgroups: list[str] = []
        self.calls: list[tuple] = []

    def create(self, spec, **kw):
        self.calls.append(("create", spec, kw))
        fifo = os.path.join(kw["state_dir"], store.FIFO)
        code = (
            "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b'0'); "
            "os.execvp(sys.argv[2], sys.argv[2:])"
        )
        p = subprocess.Popen([sys.executable, "-c", code, fifo, *spec["process"]["args"]], start_new_session=True)
        self.procs.append(p)
        parent = _freezer_parent()
        dirs = {}
        if parent:
            cg = os.path.join(parent, f"cocin-oci-test-{uuid.uuid4().hex[:8]}")
            os.mkdir(cg)
            self.cgroups.append(cg)
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(p.pid))
            dirs = {"freezer" if parent.endswith("freezer") else "unified": cg}
        return {"pid": p.pid, "cgroup_dirs": dirs}

    def exec_process(self, process, **kw):
        self.calls.append(("exec", process, kw))
        return 4242 if kw["detach"] else 7

    def update_resources(self, resources, **kw):
        self.calls.append(("update", resources, kw))

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        for cg in self.cgroups:
            if os.path.isdir(cg):
                try:
                    with open(os.path.join(cg, "freezer.state"), "w") as f:
                        f.write("THAWED")
                except OSError:
                    pass
                os.rmdir(cg)


@pytest.fixture
def fake_core(monkeypatch):
    fc = FakeCore()
    monkeypatch.setattr(core, "create", fc.create)
    monkeypatch.setattr(core, "exec_process", fc.exec_process)
    monkeypatch.setattr(core, "update_resources", fc.update_resources)
    yield fc
    fc.cleanup()


def state_of(capsys, root, cid) -> dict:
    rc, out, err = oci(capsys, "--root", root, "state", cid)
    assert rc == 0, err
    return json.loads(out)


def reap_until_stopped(capsys, fc, root, cid) -> dict:
    for p in fc.procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    return state_of(capsys, root, cid)


def test_create_start_state_kill_delete(capsys, fake_core, root, bundle, tmp_path):
    pid_file = tmp_path / "pid"
    rc, out, err = oci(capsys, "--root", root, "create", "--bundle", str(bundle), "--pid-file", str(pid_file), "c1")
    assert (rc, out, err) == (0, "", "")  # create prints nothing: it would land in the container's log
    st = state_of(capsys, root, "c1")
    pid = fake_core.procs[0].pid
    assert st["status"] == "created" and st["pid"] == pid
    assert pid_file.read_text() == str(pid)  # no newline, as runc
    assert st["ociVersion"] == "1.0.2-dev" and st["id"] == "c1"
    assert st["bundle"] == str(bundle) and st["rootfs"] == str(bundle / "rootfs")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", st["created"])
    assert "owner" in st and "annotations" not in st
    fifo = os.path.join(root, "c1", store.FIFO)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert open(f"/proc/{pid}/cmdline").read().split("\0")[0] != "sleep"  # still waiting on the fifo

    assert oci(capsys, "--root", root, "start", "c1")[:2] == (0, "")
    assert state_of(capsys, root, "c1")["status"] == "running"
    deadline = time.monotonic() + 5
    while open(f"/proc/{pid}/cmdline").read().split("\0")[0] != "sleep" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open(f"/proc/{pid}/cmdline").read().split("\0")[:2] == ["sleep", "30"]
    assert not os.path.exists(fifo)
    rc, _, err = oci(capsys, "--root", root, "start", "c1")
    assert rc == 1 and "cannot start an already running container" in err

    rc, _, err = oci(capsys, "--root", root, "delete", "c1")
    assert rc == 1 and "cannot delete container c1 that is not stopped: running" in err

    assert oci(capsys, "--root", root, "kill", "c1", "KILL")[0] == 0
    st = reap_until_stopped(capsys, fake_core, root, "c1")
    assert st["status"] == "stopped" and st["pid"] == 0
    assert fake_core.procs[0].returncode == -signal.SIGKILL
    rc, _, err = oci(capsys, "--root", root, "kill", "c1", "15")
    assert rc == 1 and "container not running" in err
    assert oci(capsys, "--root", root, "kill", "--all", "c1", "9")[0] == 0  # runc: 0 for --all

    assert oci(capsys, "--root", root, "delete", "c1")[0] == 0
    assert oci(capsys, "--root", root, "state", "c1")[2] == "cocin-oci: error: container does not exist\n"
    assert not os.path.exists(os.path.join(root, "c1"))
    assert all(not os.path.exists(cg) for cg in fake_core.cgroups)  # delete removed the core's cgroups
    assert oci(capsys, "--root", root, "delete", "c1")[0] == 1
    assert oci(capsys, "--root", root, "delete", "--force", "c1")[0] == 0


def test_the_same_id_twice_and_a_half_made_container(capsys, fake_core, root, bundle):
    assert oci(capsys, "--root", root, "create", "-b", str(bundle), "c1")[0] == 0
    rc, _, err = oci(capsys, "--root", root, "create", "-b", str(bundle), "c1")
    assert rc == 1 and "container with id exists: c1" in err
    os.mkdir(os.path.join(root, "half"))  # a create that died before its record
    assert oci(capsys, "--root", root, "state", "half")[0] == 1  # runc: "does not exist" while creating
    assert oci(capsys, "--root", root, "delete", "--force", "half")[0] == 0
    assert not os.path.exists(os.path.join(root, "half"))
    assert oci(capsys, "--root", root, "delete", "--force", "c1")[0] == 0  # a created container
    assert not os.path.exists(os.path.join(root, "c1"))


def test_a_failure_after_the_core_made_it_undoes_everything(capsys, fake_core, root, bundle, tmp_path):
    bad_pid_file = str(tmp_path / "no-such-dir" / "pid")
    rc, _, err = oci(capsys, "--root", root, "create", "-b", str(bundle), "--pid-file", bad_pid_file, "c1")
    assert rc == 1 and "no such file" in err.lower()
    assert fake_core.procs[0].wait(timeout=10) == -signal.SIGKILL
    assert not os.path.exists(os.path.join(root, "c1"))
    assert all(not os.path.exists(cg) for cg in fake_core.cgroups)


def test_list_ps_pause_resume(capsys, fake_core, root, bundle):
    oci(capsys, "--root", root, "create", "-b", str(bundle), "c1")
    oci(capsys, "--root", root, "start", "c1")
    pid = fake_core.procs[0].pid
    rc, out, _ = oci(capsys, "--root", root, "list")
    assert out.splitlines()[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert out.splitlines()[1].split()[:4] == ["c1", str(pid), "running", str(bundle)]
    assert oci(capsys, "--root", root, "list", "-q")[1] == "c1\n"
    (entry,) = json.loads(oci(capsys, "--root", root, "list", "--format", "json")[1])
    assert entry["id"] == "c1" and entry["owner"] == "root" and entry["status"] == "running"
    assert json.loads(oci(capsys, "--root", root, "ps", "--format", "json", "c1")[1]) == [pid]
    rc, out, _ = oci(capsys, "--root", root, "ps", "c1")
    assert rc == 0 and "PID" in out.splitlines()[0] and str(pid) in out.splitlines()[1]
    if not fake_core.cgroups:
        pytest.skip("no freezer cgroup here")
    assert oci(capsys, "--root", root, "pause", "c1")[0] == 0
    assert state_of(capsys, root, "c1")["status"] == "paused"
    assert "container not paused" not in oci(capsys, "--root", root, "resume", "c1")[2]
    assert state_of(capsys, root, "c1")["status"] == "running"
    assert "container not paused" in oci(capsys, "--root", root, "resume", "c1")[2]
    assert oci(capsys, "--root", root, "pause", "c1")[0] == 0
    assert oci(capsys, "--root", root, "delete", "--force", "c1")[0] == 0  # a paused one, too
    assert fake_core.procs[0].wait(timeout=10) == -signal.SIGKILL


def test_kill_signal_names_and_numbers(capsys, fake_core, root, bundle):
    assert [verbs.parse_signal(s) for s in ("9", "KILL", "SIGKILL", "hup", "28")] == [9, 9, 9, 1, 28]
    with pytest.raises(OCIError, match='unknown signal "NOPE"'):
        verbs.parse_signal("NOPE")
    oci(capsys, "--root", root, "create", "-b", str(bundle), "c1")
    oci(capsys, "--root", root, "start", "c1")
    assert oci(capsys, "--root", root, "kill", "c1")[0] == 0  # SIGTERM by default
    assert fake_core.procs[0].wait(timeout=10) == -signal.SIGTERM
    oci(capsys, "--root", root, "delete", "c1")


def test_hooks_get_the_state_on_stdin(capsys, fake_core, root, bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("FOO", "from-the-runtime")
    hook = tmp_path / "hook.sh"
    hook.write_text('#!/bin/sh\ncat > "$1.$2"\necho "$FOO" > "$1.$2.env"\n')
    hook.chmod(0o755)
    out = str(tmp_path / "seen")
    write_spec(
        bundle,
        _set(
            ["hooks"],
            {
                "poststart": [{"path": str(hook), "args": ["hook", out, "poststart"], "env": ["FOO=bar"]}],
                "poststop": [{"path": str(hook), "args": ["hook", out, "poststop"]}],
            },
        ),
    )
    write_spec(bundle, _set(["annotations"], {"org.example": "x"}))
    oci(capsys, "--root", root, "create", "-b", str(bundle), "c1")
    assert oci(capsys, "--root", root, "start", "c1")[0] == 0
    seen = json.loads(open(out + ".poststart").read())
    pid = fake_core.procs[0].pid
    assert seen == {
        "ociVersion": "1.0.2-dev",
        "id": "c1",
        "status": "running",
        "pid": pid,
        "bundle": str(bundle),
        "annotations": {"org.example": "x"},
    }
    assert open(out + ".poststart.env").read() == "bar\n"  # exactly the hook's env
    assert oci(capsys, "--root", root, "delete", "--force", "c1")[0] == 0
    assert json.loads(open(out + ".poststop").read())["status"] == "stopped"
    assert open(out + ".poststop.env").read() == "\n"  # nothing inherited


def test_hook_failures_and_timeouts(tmp_path):
    state = {"ociVersion": "1.0.2-dev", "id": "x", "status": "creating", "pid": 1, "bundle": "/"}
    fail = {"path": "/bin/sh", "args": ["sh", "-c", "echo out; echo err >&2; exit 3"]}
    slow = {"path": "/bin/sleep", "args": ["sleep", "10"], "timeout": 1}
    ok = {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {tmp_path}/ran"]}
    msg = "error running prestart hook #0: exit status 3, stdout: out, stderr: err"
    with pytest.raises(hooks.HookError, match=msg):
        hooks.run_hooks({"hooks": {"prestart": [fail, ok]}}, "prestart", state)
    assert not (tmp_path / "ran").exists()  # the first failure stops a creation hook
    t0 = time.monotonic()
    with pytest.raises(hooks.HookError, match="timeout"):
        hooks.run_hook(slow, state)
    assert time.monotonic() - t0 < 5
    warned = []
    msgs = hooks.run_hooks({"hooks": {"poststop": [fail, ok]}}, "poststop", state, warn=warned.append)
    assert msgs == warned and len(msgs) == 1 and "poststop hook #0" in msgs[0]
    assert json.loads((tmp_path / "ran").read_text())["id"] == "x"  # the next one still ran
    with pytest.raises(hooks.HookError, match="no such file"):
        hooks.run_hook({"path": "/nonexistent/hook"}, state)


def test_exec_builds_the_process_and_writes_the_pid_file(capsys, fake_core, root, bundle, tmp_path):
    oci(capsys, "--root", root, "create", "-b", str(bundle), "c1")
    oci(capsys, "--root", root, "start", "c1")
    pid_file = tmp_path / "exec.pid"
    argv = ["--root", root, "exec", "--detach", "--pid-file", str(pid_file), "--cwd", "/tmp", "-e", "A=1"]
    argv += ["--user", "1000:1001", "--cap", "CAP_SYS_ADMIN", "c1", "sh", "-c", "echo hi"]
    assert oci(capsys, *argv)[:2] == (0, "")
    assert pid_file.read_text() == "4242"
    _, proc, kw = fake_core.calls[-1]
    assert proc["args"] == ["sh", "-c", "echo hi"] and proc["cwd"] == "/tmp"
    assert proc["env"][-1] == "A=1" and proc["env"][0].startswith("PATH=")  # the container's env, plus -e
    assert proc["user"] == {"uid": 1000, "gid": 1001}
    assert "CAP_SYS_ADMIN" in proc["capabilities"]["bounding"] and kw["pid"] == fake_core.procs[0].pid
    pfile = tmp_path / "process.json"
    pfile.write_text(json.dumps({"args": ["true"], "cwd": "/", "env": ["X=1"], "user": {"uid": 0, "gid": 0}}))
    assert oci(capsys, "--root", root, "exec", "--process", str(pfile), "c1")[0] == 7  # its exit status
    assert fake_core.calls[-1][1]["args"] == ["true"]
    pfile.write_text(json.dumps({"args": [], "cwd": "/"}))
    rc, _, err = oci(capsys, "--root", root, "exec", "--process", str(pfile), "c1")
    assert rc == 255 and "exec failed: config.json: process.args: must not be empty" in err
    rc, _, err = oci(capsys, "--root", root, "exec", "nope", "true")
    assert rc == 255 and "exec failed: container does not exist" in err
    oci(capsys, "--root", root, "delete", "--force", "c1")


def test_update_reads_a_file_or_stdin(capsys, fake_core, root, bundle, tmp_path, monkeypatch):
    oci(capsys, "--root", root, "create", "-b", str(bundle), "c1")
    res = {"memory": {"limit": 134217728, "swap": 268435456}, "cpu": {"quota": 100000, "period": 100000}}
    (tmp_path / "res.json").write_text(json.dumps(res))  # podman's file, verbatim
    assert oci(capsys, "--root", root, "update", "--resources", str(tmp_path / "res.json"), "c1")[0] == 0
    assert fake_core.calls[-1][1] == res
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"pids": {"limit": 10}}')))
    assert oci(capsys, "--root", root, "update", "-r", "-", "--memory", "64m", "c1")[0] == 0  # containerd: stdin
    assert fake_core.calls[-1][1] == {"pids": {"limit": 10}, "memory": {"limit": 64 << 20}}
    (tmp_path / "bad.json").write_text('{"memroy": {}}')
    rc, _, err = oci(capsys, "--root", root, "update", "--resources", str(tmp_path / "bad.json"), "c1")
    assert rc == 1 and "resources.memroy: unknown resource" in err
    oci(capsys, "--root", root, "delete", "--force", "c1")


# --- console socket, pid file --------------------------------------------------------------


def test_console_socket_sends_exactly_one_fd(tmp_path):
    from cocin.oci import console

    path = str(tmp_path / "console.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    master, slave = console.open_pty()
    try:
        sock = console.connect(path)  # completes on the backlog, before any accept (containerd)
        console.send_master(sock, master)
        sock.close()
        conn, _ = listener.accept()
        name, fd = console.recv_master(conn)
        conn.close()
        assert name == b"/dev/ptmx" and os.isatty(fd)
        os.write(slave, b"hello\n")
        assert os.read(fd, 100).startswith(b"hello")  # the same pty
        os.close(fd)
    finally:
        os.close(master)
        os.close(slave)
        listener.close()
    with pytest.raises(OCIError, match="dial unix"):
        console.connect(str(tmp_path / "none.sock"))


def test_pid_file_is_atomic_and_has_no_newline(tmp_path):
    store.write_pid_file(str(tmp_path / "p"), 123)
    assert (tmp_path / "p").read_text() == "123"
    assert os.listdir(tmp_path) == ["p"]


# --- the entry point -----------------------------------------------------------------------


def test_entry_points_and_cocin_run_does_not_import_it():
    for argv in (["scripts/cocin-oci", "--version"], [sys.executable, "cocin.py", "oci", "--version"]):
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.startswith("cocin-oci version "), r.stderr
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "cocin.py", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert "cocin.oci" not in r.stderr


def test_an_engine_call_imports_little():
    """Engines call the runtime several times per container (create, start, kill,
    delete; the conformance suite calls state ~10 times per test): no json (it
    imports re), subprocess or shutil on the path of state/kill/delete."""
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "cocin.py", "oci", "--root", "/nonexistent-cocin-oci", "state", "x"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "container does not exist" in r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "cocin.oci.cli" in imported
    assert not imported & {"json", "subprocess", "shutil", "cocin.oci.hooks", "cocin.cgroups"}


RUN_SCRIPT = r"""
import os, subprocess, sys
sys.path.insert(0, sys.argv[1])
from cocin.oci import cli, core, store

def create(spec, **kw):  # the core's contract, with a plain process (see FakeCore)
    fifo = os.path.join(kw["state_dir"], store.FIFO)
    code = "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b'0'); "
    code += "os.execvp(sys.argv[2], sys.argv[2:])"
    p = subprocess.Popen([sys.executable, "-c", code, fifo, *spec["process"]["args"]])
    return {"pid": p.pid}

core.create = create
sys.exit(cli.main(sys.argv[2:]))
"""


def test_run_in_the_foreground_returns_the_exit_status_and_deletes(root, bundle):
    """``run``: create + start, then (a child subreaper) wait and delete. In a process
    of its own: the subreaper bit and the signal forwarding stay there."""
    write_spec(bundle, _set(["process", "args"], ["sh", "-c", "exit 3"]))
    argv = [sys.executable, "-c", RUN_SCRIPT, REPO, "--root", root, "run", "-b", str(bundle), "r1"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert not os.path.exists(os.path.join(root, "r1"))  # deleted after the exit
    r = subprocess.run(argv[:-1] + ["--keep", "r1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, r.stderr
    assert os.path.exists(os.path.join(root, "r1", store.STATE))  # --keep
    assert cli.main(["--root", root, "delete", "r1"]) == 0


def test_run_detached_is_create_and_start(capsys, fake_core, root, bundle):
    assert oci(capsys, "--root", root, "run", "-d", "-b", str(bundle), "r2")[:2] == (0, "")
    assert state_of(capsys, root, "r2")["status"] == "running"
    assert oci(capsys, "--root", root, "delete", "-f", "r2")[0] == 0


def test_debug_lines_go_to_the_log(capsys, root, tmp_path):
    log = tmp_path / "log"
    oci(capsys, "--debug", "--log", str(log), "--root", root, "list", "-q")
    (line,) = log.read_text().splitlines()
    assert "level=debug" in line and "list" in line


# --- the conformance harness's bookkeeping (bench/oci/conformance.py) -------------------


def test_conformance_compare_lists_what_runc_passes_and_we_do_not(tmp_path):
    """A fake suite of two TAP programs: the runner's summary, passed list, and
    the comparison with runc's passes (allow-list honoured, exit 1 on a gap)."""
    suite = tmp_path / "suite"
    (suite / "validation" / "a").mkdir(parents=True)
    (suite / "validation" / "b").mkdir(parents=True)
    tap_a = (
        "TAP version 13\nok 1 - same name\nok 2 - same name\nnot ok 3 - broken\nok 4 - skipped one # SKIP no\n1..4\n"
    )
    tap_b = "TAP version 13\nnot ok 1 - known gap\n1..1\n"
    for name, tap in (("a", tap_a), ("b", tap_b)):
        t = suite / "validation" / name / f"{name}.t"
        t.write_text(f"#!/bin/sh\ntest -n \"$RUNTIME\" || exit 9\ncat <<'EOF'\n{tap}EOF\n")
        t.chmod(0o755)
    baseline = tmp_path / "runc-passed.txt"
    baseline.write_text("# runc\na.t: same name #1\na.t: same name #2\na.t: broken #1\nb.t: known gap #1\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("# why\nb.t: known*\n")
    out = tmp_path / "out"
    script = os.path.join(REPO, "bench", "oci", "conformance.py")
    argv = [sys.executable, script, "--suite", str(suite), "--runtime", "/bin/true", "--out", str(out)]
    r = subprocess.run(argv + ["--tests", str(baseline), "--allow", str(allow)], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REGRESSION: a.t: broken #1" in r.stdout and "known gap" not in r.stdout.split("allow-list")[1]
    assert (out / "regressions.txt").read_text() == "a.t: broken #1\n"
    assert (out / "passed.txt").read_text() == "a.t: same name #1\na.t: same name #2\n"
    summary = (out / "summary.txt").read_text()
    assert re.search(r"^a\.t\s+ok=2\s+fail=1\s+skip=1\s+plan=4", summary, re.M)
    assert summary.endswith("TOTAL: 2 passed, 2 failed, 1 skipped (2 test files)\n")
    allow.write_text("b.t: *\na.t: broken*\n")
    r = subprocess.run(argv + ["--tests", str(baseline), "--allow", str(allow)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
