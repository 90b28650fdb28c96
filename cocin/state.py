"""Container records on disk: atomic writes, one lock, lookups, reconciliation.

Each container is a directory ``<root>/containers/<id>/`` holding
``config.json`` (the record), the overlay's ``upper``/``work`` directories and
the log. Records are written to a temporary file that is then renamed over
the old one: ``rename(2)`` is atomic, so a reader sees the old or the new
record, never half of one. Changes happen under an exclusive ``flock(2)`` on
``<root>/lock`` so two cocin commands never lose each other's update.

*Records describe, the kernel decides*: a record saying "running" is believed
only while its PID is alive with the same start time (PIDs are reused).
"""

from __future__ import annotations

import fcntl
import os
import time

from . import fastjson
from .record import Factory, Record

# Names used only in annotations: importing typing costs milliseconds at start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def valid_name(name: str, alnum: frozenset = _ALNUM, more: str = "_.-") -> bool:
    """Docker's rule for names, ``[a-zA-Z0-9][a-zA-Z0-9_.-]*`` (without ``re``,
    whose import costs ~6 ms on every command)."""
    return bool(name) and name[0] in alnum and all(c in alnum or c in more for c in name)


class CocinError(Exception):
    """An error the user caused or can fix: printed as one line, exit 125."""

    exit_code = 125


class NotFound(CocinError):
    pass


_PRIVATE: set[str] = set()  # roots this process has checked


DEFAULT_ROOT = "/var/lib/cocin"


def root() -> str:
    """The state root: ``$COCIN_ROOT`` (tests use their own) or /var/lib/cocin.

    The first use in a process makes sure it is private (``make_private``).
    """
    path = os.environ.get("COCIN_ROOT") or DEFAULT_ROOT
    if path not in _PRIVATE:
        _PRIVATE.add(path)
        make_private(path)
    return path


def make_private(path: str) -> None:
    """Make the state root ``path`` (mode 0700, owned by root) if missing, and
    tighten one that other users can enter.

    Everything below it must stay out of other users' reach: an image layer
    holds whatever its image or a committed container put there (a set-user-ID
    root shell, a device node), and a host user who can walk to
    ``layers/<id>/bin/sh`` can run it. One closed door at the top shuts them
    all: nothing below can be reached, whatever its own mode, so a layer keeps
    the modes its image needs. It costs one ``stat`` per command; a root made
    by an older cocin (0755) is fixed once, with the records and logs in it.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        try:
            os.makedirs(path, 0o700)  # the mode applies to the root itself
            return
        except FileExistsError:  # made meanwhile by another cocin
            st = os.stat(path)
    if st.st_mode & 0o077:
        _tighten(path)


def _tighten(path: str) -> None:
    """Close an existing state root: the root and its subdirectories 0700, the
    files cocin writes (records, names, image files, logs) unreadable to others."""
    os.chmod(path, 0o700)  # first: from here on no other user gets in
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, 0o700)
        elif entry.is_file(follow_symlinks=False):
            os.chmod(entry.path, 0o600)
    for sub in ("names", "images", "networks", "imagedb"):
        _chmod_files(os.path.join(path, sub), 0o600)
    try:
        ids = os.listdir(os.path.join(path, "containers"))
    except OSError:
        return
    for cid in ids:
        d = os.path.join(path, "containers", cid)
        for name, mode in (("config.json", 0o600), ("container.log", 0o640)):
            _chmod_files(d, mode, only=name)


def _chmod_files(d: str, mode: int, only: str | None = None) -> None:
    try:
        entries = list(os.scandir(d))
    except OSError:
        return
    for entry in entries:
        if (only is None or entry.name == only) and entry.is_file(follow_symlinks=False):
            _try(os.chmod, entry.path, mode)


def containers_dir() -> str:
    return os.path.join(root(), "containers")


def container_dir(cid: str) -> str:
    return os.path.join(root(), "containers", cid)


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
    config: dict[str, Any] = Factory(dict)
    network: dict[str, Any] = Factory(dict)

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


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(top: str, dir_fd: int | None = None) -> None:
    """``rm -rf top``: delete a directory tree, never following symbolic links.

    Each directory is opened relative to its parent's descriptor with
    ``O_NOFOLLOW`` and its names are removed relative to it
    (``unlinkat``/``AT_REMOVEDIR``), so a symlink inside the tree is removed,
    never followed. Depth first with a stack of open directories, not
    recursion: a container can make a tree deeper than Python's recursion
    limit (``os.fwalk`` and ``shutil.rmtree`` are recursive). Errors are
    ignored, as with ``shutil.rmtree(ignore_errors=True)``, whose import (it
    pulls in compression modules) would cost ``run --rm`` ~3 ms.
    """
    try:
        fd = os.open(top, _O_DIR, dir_fd=dir_fd)
        names = iter(os.listdir(fd))
    except NotADirectoryError:  # a file, or a symlink (O_NOFOLLOW)
        _try(os.unlink, top, dir_fd=dir_fd)
        return
    except OSError:
        return
    stack = [(fd, names, top)]
    while stack:
        fd, names, _name = stack[-1]
        for name in names:
            try:
                os.unlink(name, dir_fd=fd)
                continue
            except IsADirectoryError:
                pass
            except OSError:
                continue
            try:
                sub, below = _open_dir_at(name, fd)
            except OSError:
                continue
            stack.append((sub, below, name))
            break
        else:  # all names done: the directory itself goes
            stack.pop()
            os.close(fd)
            if stack:
                _try(os.rmdir, _name, dir_fd=stack[-1][0])
    _try(os.rmdir, top, dir_fd=dir_fd)


def _open_dir_at(name: str, dir_fd: int, retry: bool = True):
    """The directory ``name`` (``openat`` with ``O_DIRECTORY|O_NOFOLLOW``) and
    an iterator over its names. Out of descriptors (one is open per level
    of a deep tree): the limit is raised once and it is tried again."""
    try:
        fd = os.open(name, _O_DIR, dir_fd=dir_fd)
        try:
            return fd, iter(os.listdir(fd))
        except BaseException:
            os.close(fd)
            raise
    except OSError as e:
        import errno  # not at the top: on every command's path, this is not

        if not retry or e.errno != errno.EMFILE or not raise_fd_limit():
            raise
    return _open_dir_at(name, dir_fd, retry=False)


def raise_fd_limit() -> bool:
    """Raise the soft limit on open files to the hard one; False if it already was.

    Walks by directory descriptor keep one open per level of depth, and a
    container can make a tree deeper than the usual soft limit (1024).
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return False
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return True


def _try(fn, *args, **kw) -> None:
    try:
        fn(*args, **kw)
    except OSError:
        pass


# --- atomic files and the lock ------------------------------------------------

_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class AtomicFile:
    """A new file that replaces ``path`` in one step, or never appears.

    ``with AtomicFile(path) as f: f.write(...)``: the bytes go to a temporary
    file in the same directory (same filesystem), renamed over ``path`` when
    the block ends without an exception (deleted if it raises). ``rename(2)``
    is atomic, so a reader sees the old file or the new one, never half of one.

    The temporary name is random and made with ``O_CREAT|O_EXCL|O_NOFOLLOW``:
    a name derived from the PID can be guessed, and whoever can write to the
    directory could plant a symlink there to make root write through it into
    any file. ``O_EXCL`` fails on any existing name, a symlink included, and
    the final ``rename`` replaces a symlink at ``path`` instead of following it.

    One fsync policy: ``durable=True`` (output the user asked for, such as
    ``save -o``) flushes the data to disk before the rename, so a power cut
    never leaves a complete-looking empty file. Records pass ``durable=False``:
    an fsync costs milliseconds on the start path, ext4 and xfs flush a file
    replaced by rename before the rename commits, and every reader treats an
    empty or torn record as missing.
    """

    def __init__(self, path: str, mode: int = 0o600, durable: bool = True):
        self.path = path
        self.durable = durable
        directory, base = os.path.split(path)
        self.tmp = os.path.join(directory, f".{base[:64]}.tmp-{os.urandom(6).hex()}")
        self.file = os.fdopen(os.open(self.tmp, _O_NEWFILE, mode), "wb")

    def __enter__(self):
        return self.file

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def commit(self) -> None:
        try:
            self.file.flush()
            if self.durable:
                os.fsync(self.file.fileno())
            self.file.close()
            os.rename(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        _try(os.unlink, self.tmp)


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
    try:
        if special:
            f = os.fdopen(os.open(out, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "wb")
        else:
            f = AtomicFile(out)
    except OSError as e:
        raise CocinError(f"cannot write {out}: {e.strerror}") from None
    with f as fileobj:
        write(fileobj, special)


def atomic_write(path: str, data: str) -> None:
    """Replace the record ``path`` with ``data`` (an ``AtomicFile``, mode 0600, no fsync)."""
    with AtomicFile(path, durable=False) as f:
        f.write(data.encode())


class locked:
    """``with locked():`` holds cocin's exclusive state lock (``flock(2)`` on
    ``<root>/lock``).

    ``flock`` locks belong to the open file; the kernel drops them when the
    holder dies, so a killed cocin never leaves the lock stuck. (A class, not
    a ``contextlib`` generator: that import costs milliseconds per command.)
    """

    def __enter__(self) -> None:
        os.makedirs(containers_dir(), 0o700, exist_ok=True)
        self.fd = os.open(os.path.join(root(), "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


_HELD_LOCKS: set[int] = set()


class ContainerLock:
    """Serialises the verbs that change one container's life (start, stop,
    restart, rm, a restart by its monitor), held for the whole operation.

    It is a ``flock`` on ``<root>/locks/<id>``, separate from the short
    global lock, so a slow ``stop`` of one container blocks nobody else.
    """

    def __init__(self, cid: str):
        d = os.path.join(root(), "locks")
        os.makedirs(d, 0o700, exist_ok=True)
        self.path = os.path.join(d, cid)
        self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        _HELD_LOCKS.add(self.fd)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            _HELD_LOCKS.discard(self.fd)
            os.close(self.fd)
            self.fd = None

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
    atomic_write(os.path.join(rec.dir, "config.json"), rec.to_json())


def read_bytes(path: str, flags: int = 0) -> bytes:
    """A whole small file, through ``os.read``: ``open()`` builds a buffered text
    layer per file, a third of the time ``ps -a`` spends on 1000 records.
    ``flags``: more ``open`` flags (``O_NOFOLLOW`` for a file that must not be a link)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def load(cid: str) -> Container:
    try:
        return Container.from_dict(fastjson.loads(read_bytes(os.path.join(container_dir(cid), "config.json"))))
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

# A name is also a file name in names/: at most 255 bytes, with AtomicFile's temporary name.
NAME_MAX = 200


def _names_dir() -> str:
    return os.path.join(root(), "names")


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
    if len(name) > NAME_MAX or not os.path.isdir(_names_dir()):  # not indexed: ask the records
        return next((r.id for r in load_all() if r.name == name), None)
    cid = _read_text(os.path.join(_names_dir(), name))
    if cid is None:
        return None
    if len(cid) != 64:  # an empty or torn file (a power cut): ask the records
        return next((r.id for r in load_all() if r.name == name), None)
    try:
        if fastjson.loads(read_bytes(os.path.join(container_dir(cid), "config.json")))["name"] == name:
            return cid
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError):
        pass
    return None


def _index_names() -> None:
    """Make the name index of a state root that has none (made by an older
    cocin, or new): every existing record's name gets its file. Under the lock."""
    if os.path.isdir(_names_dir()):
        return
    tmp = f"{_names_dir()}.tmp.{os.getpid()}"
    os.makedirs(tmp, 0o700, exist_ok=True)
    try:
        for rec in load_all():
            if valid_name(rec.name) and len(rec.name) <= NAME_MAX:  # others: found by scanning
                atomic_write(os.path.join(tmp, rec.name), rec.id)
        os.replace(tmp, _names_dir())
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
    atomic_write(os.path.join(_names_dir(), name), cid)
    return True


def release_name(name: str, cid: str) -> None:
    """Forget ``name`` if it is still ``cid``'s (under ``locked()``)."""
    path = os.path.join(_names_dir(), name)
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


# --- is a process still the one we started? -----------------------------------


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot),
    or 0 when the process is gone or is a zombie (dead, not yet reaped)."""
    if pid <= 0:
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    # The command name (field 2) may contain spaces and ")", so split after the last ")".
    fields = data.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X"):
        return 0
    return int(fields[19])


def alive(pid: int, start: int) -> bool:
    return pid > 0 and start != 0 and proc_start_time(pid) == start


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
