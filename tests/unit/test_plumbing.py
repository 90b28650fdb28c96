"""Unit tests of the small helpers every command uses, each against the
standard library it stands in for: cocin.errors (exit codes), cocin.paths
(the state root, names), cocin.files (atomic files, the lock, removal),
cocin.process (is a PID still our process?), cocin.fastjson, and the typed
container config of cocin.state. Any user; pytest's temporary directories.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cocin import errors, fastjson, files, paths, process, state

# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script, expected",
    [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 128 + signal.SIGTERM), ("kill -KILL $$", 137)],
)
def test_exit_code_is_what_a_shell_reports(script, expected):
    """``errors.exit_code`` of a wait status is ``$?`` in sh (128 + N for signal N)."""
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/sh", ["sh", "-c", script])
    _, status = os.waitpid(pid, 0)
    assert errors.exit_code(status) == expected
    shell = subprocess.run(["/bin/sh", "-c", f"/bin/sh -c '{script}'; echo $?"], capture_output=True, text=True)
    assert int(shell.stdout) == expected


def test_not_found_is_a_cocin_error_with_dockers_code():
    assert issubclass(errors.NotFound, errors.CocinError)
    assert errors.CocinError("x").exit_code == errors.EXIT_COCIN == 125
    assert (errors.EXIT_CANNOT_INVOKE, errors.EXIT_NOT_FOUND) == (126, 127)
    assert state.CocinError is errors.CocinError and state.NotFound is errors.NotFound  # still importable


# --- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["web", "a", "A-1", "x.y_z", "0", "", "-a", "_a", ".a", "a/b", "a b", "é", "a\n", "a:b", "..", "a-"]
)
def test_valid_name_is_dockers_regular_expression(name):
    assert paths.valid_name(name) == bool(re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name))


def test_the_state_root_comes_from_the_environment_and_is_made_private(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setenv("COCIN_ROOT", str(root))
    assert paths.root() == str(root) == state.root()
    assert os.stat(root).st_mode & 0o777 == 0o700
    assert paths.container_dir("c1") == os.path.join(str(root), "containers", "c1")
    assert paths.record_path("c1") == os.path.join(str(root), "containers", "c1", "config.json")
    assert paths.networks_dir() == os.path.join(str(root), "networks")
    monkeypatch.delenv("COCIN_ROOT")
    assert paths.DEFAULT_ROOT == "/var/lib/cocin" and paths.RUN_DIR == "/run/cocin"


# --- files ----------------------------------------------------------------------------------


def test_atomic_write_is_what_the_reader_of_a_plain_write_sees(tmp_path):
    plain, atomic = tmp_path / "plain", tmp_path / "atomic"
    plain.write_bytes(b"old")
    atomic.write_bytes(b"old")
    plain.write_text("new \u2713")
    files.atomic_write(str(atomic), "new \u2713")
    assert atomic.read_bytes() == plain.read_bytes()
    assert files.read_bytes(str(atomic)) == plain.read_bytes()
    assert os.stat(atomic).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["atomic", "plain"]  # no temporary file left


def test_atomic_file_makes_the_directory_when_asked(tmp_path):
    path = tmp_path / "a" / "b" / "f.json"
    with pytest.raises(FileNotFoundError):
        files.atomic_write(str(path), "x")
    files.atomic_write(str(path), "x", durable=True, makedirs=True)
    assert path.read_text() == "x" and os.stat(tmp_path / "a" / "b").st_mode & 0o777 == 0o700


def test_file_lock_excludes_as_flock_does(tmp_path):
    lock = str(tmp_path / "locks" / "l")
    with files.FileLock(lock):
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # another open file description: refused
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on exit
    finally:
        os.close(fd)


def _tree(top) -> None:
    (top / "d" / "e").mkdir(parents=True)
    (top / "f").write_text("f")
    (top / "d" / "e" / "g").write_text("g")
    os.symlink("/etc", top / "d" / "link")
    os.mkfifo(top / "d" / "fifo")


def test_remove_tree_removes_what_rmtree_removes(tmp_path):
    for name, remove in (("ours", files.remove_tree), ("stdlib", shutil.rmtree)):
        top = tmp_path / name
        _tree(top)
        remove(str(top))
        assert not os.path.lexists(top)
    assert os.path.isdir("/etc")
    files.remove_tree(str(tmp_path / "missing"))  # nothing there: no error, as ignore_errors=True


# --- process --------------------------------------------------------------------------------


def test_proc_start_time_names_a_process_for_good():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        start = process.proc_start_time(child.pid)
        with open(f"/proc/{child.pid}/stat") as f:
            assert start == int(f.read().rsplit(")", 1)[1].split()[19]) > 0
        assert process.alive(child.pid, start) and not process.alive(child.pid, start + 1)
        process.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process.proc_start_time(child.pid) and time.monotonic() < deadline:  # a zombie: 0 too
            time.sleep(0.01)
        assert process.proc_start_time(child.pid) == 0 and not process.alive(child.pid, start)
    finally:
        child.kill()
        child.wait()
    process.kill(child.pid)  # reaped and gone: no error
    assert process.proc_start_time(0) == 0 and process.proc_start_time(-1) == 0


def test_stdio_to_devnull_as_a_shell_redirect_does():
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))!r})\n"
        "from cocin import process\n"
        "process.stdio_to_devnull((0,))\n"
        "print(repr(sys.stdin.read()), os.path.realpath('/proc/self/fd/0'))\n"
    )
    ours = subprocess.run([sys.executable, "-c", code], input="typed", capture_output=True, text=True)
    shell = subprocess.run(
        ["/bin/sh", "-c", f'{sys.executable} -c "import sys; print(repr(sys.stdin.read()))" </dev/null'],
        input="typed",
        capture_output=True,
        text=True,
    )
    assert ours.stdout.split() == [shell.stdout.strip(), "/dev/null"]


# --- fastjson -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None, True]}, "x\u2713\n", [], {"k": {"n": -1}}, 0])
def test_fastjson_reads_and_writes_what_json_does(value):
    assert fastjson.loads(fastjson.dumps(value)) == value == json.loads(fastjson.dumps(value))
    assert fastjson.loads(json.dumps(value, indent=2)) == value
    with pytest.raises(ValueError):
        fastjson.loads(json.dumps(value) + " x")


# --- the container config -------------------------------------------------------------------


def test_container_config_has_one_set_of_defaults_and_reads_like_its_json():
    rec = state.Container(id="a" * 64, name="n", image="i", argv=[], created=1.0, config={"env": ["A=1"]})
    cfg = rec.config
    assert cfg.network_mode == cfg["network_mode"] == cfg.get("network_mode", "none") == state.DEFAULT_NETWORK
    assert cfg["env"] == ["A=1"] and cfg.get("workdir") == "/" and cfg.get("nope", 5) == 5
    assert "tty" in cfg and "nope" not in cfg
    with pytest.raises(KeyError):
        cfg["nope"]
    cfg["image_id"] = "sha256:x"
    assert cfg.image_id == "sha256:x"
    assert state.ContainerConfig().volumes is not state.ContainerConfig().volumes  # fresh per record


def test_container_config_keeps_keys_it_does_not_know_on_disk():
    written = {"env": [], "network_mode": "none", "from_a_newer_cocin": {"x": 1}}
    rec = state.Container(id="a" * 64, name="n", image="i", argv=[], created=1.0, config=dict(written))
    again = json.loads(rec.to_json())
    assert again["config"]["from_a_newer_cocin"] == {"x": 1} and again["config"]["network_mode"] == "none"
    assert state.Container.from_dict(again) == rec
    assert dict(rec.config) == again["config"]
