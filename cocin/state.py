"""Container records on disk: the record types, one lock, lookups, names, reconciliation.

Each container is a directory ``<root>/containers/<id>/`` (see ``paths``)
holding ``config.json`` (the record: a ``Container`` with its
``ContainerConfig``), the overlay's ``upper``/``work`` directories and the
log. Records are replaced atomically (``files.AtomicFile``: a reader sees the
old or the new record, never half of one), and changes happen under an
exclusive ``flock(2)`` on ``<root>/lock`` so two cocin commands never lose
each other's update; a verb that changes one container's life also holds that
container's own lock.

*Records describe, the kernel decides*: a record saying "running" is believed
only while its PID is alive with the same start time (PIDs are reused; see
``process.proc_start_time``).
"""

from __future__ import annotations

import os
import time
from _collections_abc import Mapping  # loaded at start-up already: collections.abc is not

from . import fastjson, paths
from .errors import CocinError, NotFound
from .files import AtomicFile, FileLock, atomic_write, raise_fd_limit, read_bytes, remove_tree
from .files import try_ as _try
from .paths import DEFAULT_ROOT, NAME_MAX, container_dir, containers_dir, make_private, record_path, root, valid_name
from .process import alive, proc_start_time
from .record import Factory, Record

# Re-exported for the modules that still import them from here (the record
# store used to define them): new code imports them from errors, files,
# paths, process and validate.
__all__ = [
    "DEFAULT_ROOT",
    "NAME_MAX",
    "AtomicFile",
    "CocinError",
    "NotFound",
    "atomic_write",
    "container_dir",
    "containers_dir",
    "make_private",
    "proc_start_time",
    "raise_fd_limit",
    "read_bytes",
    "remove_tree",
    "root",
    "valid_name",
    "_try",
]

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


# Docker's default: a container joins the default bridge network unless told otherwise.
DEFAULT_NETWORK = "bridge"


class ContainerConfig(Record, Mapping):
    """What a container was created with: ``config`` in its record.

    One set of defaults, for every reader: ``create`` writes every field, and
    a record that lacks one (written before the field existed) reads as the
    default here. Read as attributes (``cfg.network_mode``) or, as the JSON
    it is stored as, like a dict: ``cfg["env"]``, ``cfg.get("rm")``,
    ``"tty" in cfg``. Keys it does not know are kept as they are, so a
    record written by a newer cocin survives being saved by this one.
    """

    image_id: str = ""
    lower: str = ""  # the image's layers, overlayfs lowerdir
    image_config: dict[str, Any] = Factory(dict)  # the image's config with the command line's changes
    env: list[str] = Factory(list)  # KEY=VALUE
    workdir: str = "/"
    hostname: str = ""
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    rm: bool = False
    volumes: list[list[Any]] = Factory(list)  # [host, container, read_only]
    limits: dict[str, Any] = Factory(dict)  # cgroups.Limits.to_dict()
    network_mode: str = DEFAULT_NETWORK  # a network's name, or "none" or "host"
    publish: list[str] = Factory(list)
    ip: str | None = None
    restart: dict[str, Any] = Factory(lambda: {"name": "no", "max": 0})
    init: bool = False
    # Confinement: see confine.py, seccomp.py, rootfs_knobs.py.
    privileged: bool = False
    cap_add: list[str] = Factory(list)
    cap_drop: list[str] = Factory(list)
    security_opt: list[str] = Factory(list)
    no_new_privileges: bool = False
    systempaths_unconfined: bool = False
    user: str | None = None
    group_add: list[str] = Factory(list)
    read_only: bool = False
    ulimits: list[list[Any]] = Factory(list)  # [name, soft, hard]
    sysctls: list[list[str]] = Factory(list)  # [key, value]
    tmpfs: list[list[str]] = Factory(list)  # [path, options]
    devices: list[list[str]] = Factory(list)  # [host, container, permissions]
    seccomp: str = "default"  # default | unconfined | custom (seccomp.json)

    _fieldset: frozenset[str]
    _extra: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._extra = {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContainerConfig:
        """From a record's JSON: known keys as fields (missing ones defaulted),
        the others kept aside. (Straight into the instance's ``__dict__``:
        ``ps`` reads every record.)"""
        self = object.__new__(cls)
        attrs, extra, known = self.__dict__, {}, cls._fieldset
        for k, v in d.items():
            if k in known:
                attrs[k] = v
            else:
                extra[k] = v
        if len(attrs) < len(known):
            for name in cls._fields:
                if name not in attrs:
                    attrs[name] = cls.default(name)
        self._extra = extra
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self._extra}

    # The dict view, for readers of the JSON record.
    def __getitem__(self, key: str) -> Any:
        if key in self._fieldset:
            return getattr(self, key)
        return self._extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._fieldset:
            setattr(self, key, value)
        else:
            self._extra[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._fieldset or key in self._extra

    def __iter__(self) -> Iterator[str]:
        yield from self._fields
        yield from self._extra

    def __len__(self) -> int:
        return len(self._fields) + len(self._extra)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


ContainerConfig._fieldset = frozenset(ContainerConfig._fields)


class Container(Record):
    """The record of one container (``config.json``)."""

    id: str
    name: str
    image: str
    argv: list[str]
    created: float
    state: str = "created"  # created | running | restarting | exited
    pid: int = 0
    pid_start: int = 0  # /proc/PID/stat starttime: tells a reused PID apart
    monitor_pid: int = 0
    monitor_start: int = 0
    exit_code: int | None = None
    started: float = 0.0
    finished: float = 0.0
    oom_killed: bool = False
    restart_count: int = 0
    manually_stopped: bool = False  # by stop/kill: no restart until the next start
    config: ContainerConfig = Factory(ContainerConfig)
    network: dict[str, Any] = Factory(dict)  # the endpoint, while attached

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.config, ContainerConfig):  # a dict: from JSON, or create's
            self.config = ContainerConfig.from_dict(self.config)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["config"] = self.config.to_dict()
        return d

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def dir(self) -> str:
        return container_dir(self.id)

    def to_json(self) -> str:
        return fastjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Container:
        return cls(**{k: v for k, v in d.items() if k in cls._fields})


# --- atomic files and the lock ------------------------------------------------


def write_output(out: str, write) -> None:
    """Output the user asked for (``save``/``export``): ``write(fileobj, stream)``.

    ``-`` is stdout; a device or FIFO (``-o /dev/null``) is written to, never
    renamed over (a rename would replace the device with a regular file); any
    other path is an ``AtomicFile``: complete or not at all, mode 0600 as Docker
    makes it. ``stream`` says the file cannot seek (tarfile's ``w|`` mode).
    """
    import stat
    import sys

    if out == "-":
        write(sys.stdout.buffer, True)
        return
    try:
        mode = os.lstat(out).st_mode
        special = not stat.S_ISREG(mode) and not stat.S_ISLNK(mode)
    except FileNotFoundError:
        special = False
    f: Any
    try:
        if special:
            f = os.fdopen(os.open(out, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "wb")
        else:
            f = AtomicFile(out)
    except OSError as e:
        raise CocinError(f"cannot write {out}: {e.strerror}") from None
    with f as fileobj:
        write(fileobj, special)


class locked(FileLock):
    """``with locked():`` holds cocin's exclusive state lock (``flock(2)`` on
    ``<root>/lock``, see ``files.FileLock``)."""

    def __init__(self) -> None:
        super().__init__(paths.lock_path())

    def __enter__(self) -> locked:
        os.makedirs(containers_dir(), 0o700, exist_ok=True)
        self.acquire()
        return self


_HELD_LOCKS: set[int] = set()


class ContainerLock(FileLock):
    """Serialises the verbs that change one container's life (start, stop,
    restart, rm, a restart by its monitor), held for the whole operation,
    from the moment it is made.

    It is a ``flock`` on ``<root>/locks/<id>``, separate from the short
    global lock, so a slow ``stop`` of one container blocks nobody else.
    """

    def __init__(self, cid: str):
        super().__init__(os.path.join(paths.locks_dir(), cid))
        self.acquire()
        _HELD_LOCKS.add(self.fd)

    def release(self) -> None:
        _HELD_LOCKS.discard(self.fd)
        super().release()

    def __enter__(self) -> ContainerLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def container_lock(cid: str) -> ContainerLock:
    return ContainerLock(cid)


def forget_inherited_locks() -> None:
    """In a freshly forked child: close the lock files inherited from the parent.

    A ``flock`` belongs to the open file, shared by every copy of the
    descriptor: a long-lived child (a monitor) still holding a copy would
    keep the parent's lock held after the parent let go. Closing (never
    unlocking) our copy leaves the parent's lock as it is.
    """
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


def save(rec: Container) -> None:
    atomic_write(record_path(rec.id), rec.to_json())


def load(cid: str) -> Container:
    try:
        return Container.from_dict(fastjson.loads(read_bytes(record_path(cid))))
    except FileNotFoundError:
        raise NotFound(f"No such container: {cid}") from None


def load_all() -> list[Container]:
    """Every record, oldest first. Directories without a record are skipped."""
    try:
        ids = os.listdir(containers_dir())
    except FileNotFoundError:
        return []
    recs = []
    for cid in ids:
        if cid.startswith("."):
            continue  # being removed
        try:
            recs.append(
                Container.from_dict(fastjson.loads(read_bytes(os.path.join(containers_dir(), cid, "config.json"))))
            )
        except (FileNotFoundError, NotADirectoryError, ValueError):
            continue
    recs.sort(key=lambda r: r.created)
    return recs


# --- names -------------------------------------------------------------------------


def _read_text(path: str) -> str | None:
    try:
        return read_bytes(path).decode()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _owner(name: str) -> str | None:
    """The ID of the container called ``name``, from the name index.

    ``<root>/names/<name>`` holds the ID of the container of that name, so
    that neither ``run --name`` nor ``stop NAME`` has to read every record.
    A file whose container has no record of that name (left by a crash, or
    by a rename half done) is stale: nobody owns the name.
    """
    if len(name) > NAME_MAX or not os.path.isdir(paths.names_dir()):  # not indexed: ask the records
        return next((r.id for r in load_all() if r.name == name), None)
    cid = _read_text(os.path.join(paths.names_dir(), name))
    if cid is None:
        return None
    if len(cid) != 64:  # an empty or torn file (a power cut): ask the records
        return next((r.id for r in load_all() if r.name == name), None)
    try:
        if fastjson.loads(read_bytes(record_path(cid)))["name"] == name:
            return cid
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError):
        pass
    return None


def _index_names() -> None:
    """Make the name index of a state root that has none (made by an older
    cocin, or new): every existing record's name gets its file. Under the lock."""
    if os.path.isdir(paths.names_dir()):
        return
    tmp = f"{paths.names_dir()}.tmp.{os.getpid()}"
    os.makedirs(tmp, 0o700, exist_ok=True)
    try:
        for rec in load_all():
            if valid_name(rec.name) and len(rec.name) <= NAME_MAX:  # others: found by scanning
                atomic_write(os.path.join(tmp, rec.name), rec.id)
        os.replace(tmp, paths.names_dir())
    except BaseException:
        remove_tree(tmp)
        raise


def name_taken(name: str) -> bool:
    """Is ``name`` some container's? (Outside the lock a hint: claim_name decides.)"""
    return _owner(name) is not None


def claim_name(name: str, cid: str) -> bool:
    """Give ``name`` to container ``cid``; False if another container has it.

    Call under ``locked()``, *before* the record with that name is written:
    then every record's name has its file, and a crash in between leaves
    only a stale file, which the next claim takes over.
    """
    _index_names()
    owner = _owner(name)
    if owner is not None and owner != cid:
        return False
    atomic_write(os.path.join(paths.names_dir(), name), cid)
    return True


def release_name(name: str, cid: str) -> None:
    """Forget ``name`` if it is still ``cid``'s (under ``locked()``)."""
    path = os.path.join(paths.names_dir(), name)
    if _read_text(path) == cid:
        os.unlink(path)


def find(ref: str) -> Container:
    """A container by name, full ID or unique ID prefix (as Docker does)."""
    if not ref or "/" in ref or ref in (".", ".."):
        raise NotFound(f"No such container: {ref}")
    if len(ref) == 64 and os.path.isdir(container_dir(ref)):
        return load(ref)
    cid = _owner(ref) if valid_name(ref) else None
    if cid is not None:
        try:
            return load(cid)
        except NotFound:
            pass  # removed meanwhile: look again the slow way
    recs = load_all()
    for r in recs:
        if r.name == ref:
            return r
    matches = [r for r in recs if r.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise CocinError(f"multiple containers match ID prefix {ref}: be more specific")
    raise NotFound(f"No such container: {ref}")


def update(cid: str, **changes: Any) -> Container:
    """Change fields of a record under the lock and write it back atomically."""
    with locked():
        rec = load(cid)
        for k, v in changes.items():
            setattr(rec, k, v)
        save(rec)
        return rec


def reconcile(rec: Container) -> Container:
    """Make a "running" record true again after a crash.

    If both the container's process and its monitor are gone, nobody will
    record the exit (or restart it) any more: mark it exited now. The exit
    code is unknown, so 255 is recorded (what Docker reports after losing a
    container).
    """
    if rec.state not in ("running", "restarting") or alive(rec.pid, rec.pid_start):
        return rec
    if alive(rec.monitor_pid, rec.monitor_start):
        return rec  # the monitor is about to record the exit, or restarting it
    with locked():
        try:
            fresh = load(rec.id)
        except NotFound:
            return rec
        if (
            fresh.state in ("running", "restarting")
            and not alive(fresh.pid, fresh.pid_start)
            and not alive(fresh.monitor_pid, fresh.monitor_start)
        ):
            fresh.state = "exited"
            fresh.exit_code = 255 if fresh.exit_code is None else fresh.exit_code
            fresh.finished = fresh.finished or time.time()
            save(fresh)
        return fresh


def is_running(rec: Container) -> bool:
    return rec.state == "running" and alive(rec.pid, rec.pid_start)
