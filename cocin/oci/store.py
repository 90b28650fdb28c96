"""The runtime's own records: ``<root>/<id>/state.json``, and what the kernel says.

An OCI runtime keeps no daemon: between two calls (``create``, then ``start``
seconds or days later, by another process) all it knows is on disk. runc keeps
``/run/runc/<id>/state.json``; cocin-oci keeps ``/run/cocin-oci/<id>/state.json``
(``--root`` chooses another directory: containerd gives one per namespace).
``/run`` is a tmpfs, so a reboot forgets every container, as it should: their
processes are gone too.

* **Claiming an id** is ``mkdir(2)`` of ``<root>/<id>``: atomic, so of two
  concurrent ``create``\\s with the same id exactly one wins. While the
  directory has no ``state.json`` the container is being made: ``state`` says
  it does not exist (runc does the same) and ``delete --force`` may remove it.
* **Writing** goes to a temporary file in the same directory that is then
  renamed over ``state.json`` (``rename(2)`` is atomic: a reader sees the old
  or the new record), under an exclusive ``flock(2)`` on ``<root>/.lock``.
* **Records describe, the kernel decides.** The status is computed on every
  read: *stopped* when the recorded PID is gone, a zombie, or another process
  (its start time differs); *paused* when the cgroup freezer says frozen;
  *created* while ``exec.fifo`` exists (``start`` removes it); else *running*.
"""

from __future__ import annotations

import fcntl
import os
import time

from .. import fastjson  # json without json's import cost (every engine call reads a record)
from . import SPEC_VERSION, OCIError

DEFAULT_ROOT = "/run/cocin-oci"
FIFO = "exec.fifo"
STATE = "state.json"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


def check_id(cid: str) -> str:
    """runc's rule: ``^[\\w+-\\.]+$``, and not ``.`` or ``..`` (it names a directory)."""
    if not cid or cid in (".", "..") or not all(c in _ID_CHARS for c in cid):
        raise OCIError(f"invalid id format: {cid}")
    return cid


def now_rfc3339() -> str:
    """UTC time with nanoseconds, as Go's time.RFC3339Nano prints it."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def proc_start_time(pid: int) -> int:
    from ..state import proc_start_time as start_time  # 0 when gone or a zombie

    return start_time(pid)


def freezer_state(dirs: dict[str, str]) -> str | None:
    """ "FROZEN", "THAWED" (or FREEZING), or None without a freezer."""
    for name, path in dirs.items():
        if "freezer" in name.split(","):
            try:
                with open(os.path.join(path, "freezer.state")) as f:
                    return f.read().strip()
            except OSError:
                return None
    for name in ("", "unified"):
        if name in dirs:
            try:
                with open(os.path.join(dirs[name], "cgroup.freeze")) as f:
                    return "FROZEN" if f.read().strip() == "1" else "THAWED"
            except OSError:
                return None
    return None


class Store:
    """The containers under one ``--root`` directory."""

    def __init__(self, root: str = DEFAULT_ROOT) -> None:
        self.root = os.path.abspath(root)

    def dir(self, cid: str) -> str:
        return os.path.join(self.root, check_id(cid))

    def ensure(self) -> None:
        os.makedirs(self.root, mode=0o700, exist_ok=True)

    def lock(self) -> _Lock:
        self.ensure()
        return _Lock(os.path.join(self.root, ".lock"))

    def claim(self, cid: str) -> str:
        """Make ``<root>/<id>``; an existing one means the id is taken."""
        self.ensure()
        d = self.dir(cid)
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            raise OCIError(f"container with id exists: {cid}") from None
        return d

    def exists(self, cid: str) -> bool:
        return os.path.exists(os.path.join(self.dir(cid), STATE))

    def save(self, rec: dict) -> None:
        d = self.dir(rec["id"])
        with self.lock():
            tmp = os.path.join(d, f".{STATE}.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, fastjson.dumps(rec).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(d, STATE))

    def load(self, cid: str) -> dict:
        """The record with its ``status`` worked out; OCIError if there is none."""
        path = os.path.join(self.dir(cid), STATE)
        try:
            with open(path, "rb") as f:
                rec = fastjson.loads(f.read())
        except FileNotFoundError:
            raise OCIError("container does not exist") from None
        except (OSError, ValueError) as e:
            raise OCIError(f"cannot read {path}: {e}") from None
        rec["status"] = self.status(rec)
        return rec

    def status(self, rec: dict) -> str:
        pid = rec.get("pid") or 0
        if pid <= 0 or proc_start_time(pid) != rec.get("pid_start"):
            return "stopped"
        if freezer_state(rec.get("cgroup_dirs") or {}) == "FROZEN":
            return "paused"
        if os.path.exists(os.path.join(self.dir(rec["id"]), FIFO)):
            return "created"
        return "running"

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isfile(os.path.join(self.root, n, STATE)))

    def remove(self, cid: str) -> None:
        """Forget a container: its whole directory (rmtree does not follow symlinks)."""
        import shutil

        shutil.rmtree(self.dir(cid), ignore_errors=True)


def public_state(rec: dict) -> dict:
    """runc's ``state`` JSON (the OCI state plus rootfs, created, owner)."""
    out = {
        "ociVersion": SPEC_VERSION,
        "id": rec["id"],
        "pid": rec.get("pid", 0) if rec.get("status") != "stopped" else 0,
        "status": rec.get("status", "stopped"),
        "bundle": rec.get("bundle", ""),
        "rootfs": rec.get("rootfs", ""),
        "created": rec.get("created", ""),
    }
    if rec.get("annotations"):
        out["annotations"] = rec["annotations"]
    out["owner"] = rec.get("owner", "")
    return out


def hook_state(rec: dict, status: str) -> dict:
    """The OCI state a hook gets on stdin (runtime-spec "State")."""
    out = {"ociVersion": SPEC_VERSION, "id": rec["id"], "status": status, "pid": rec.get("pid", 0)}
    out["bundle"] = rec.get("bundle", "")
    if rec.get("annotations"):
        out["annotations"] = rec["annotations"]
    return out


class _Lock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing drops the flock


def write_pid_file(path: str, pid: int) -> None:
    """The pid file engines read right after we exit: the decimal pid, no newline,
    complete or absent (written beside it, then renamed; runc does the same)."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)
