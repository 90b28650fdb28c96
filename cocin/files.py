"""Files several cocin commands share: atomic replacement, locks, removal.

Three ideas make a file of state safe when many processes use it at once:

* **Atomic replacement.** The new content goes to a temporary file in the
  same directory (same filesystem), then ``rename(2)`` puts it over the old
  name in one step: a reader sees the old file or the new one, never half of
  one, whatever happens to the writer.
* **One fsync policy.** ``rename`` is atomic for other processes and across a
  crash of cocin, but not across a power cut: until the data reaches the disk
  the new name may point at an empty or torn file, and until the directory
  reaches it the rename itself may be lost. ``fsync`` closes that gap and
  costs a wait for the disk (milliseconds). So: ``durable=True`` (the
  default) flushes the data and the directory, for what the user made and has
  no other copy of (``save -o``, ``export -o``, a network's definition);
  ``durable=False`` skips both, for state rewritten on every container start
  (records, endpoints, caches) whose readers treat a missing, empty or torn
  file as absent and which mostly describes a running system a power cut
  ends anyway.
* **An exclusive lock.** ``flock(2)`` on a separate lock file serialises a
  read-modify-write cycle. The lock belongs to the open file and the kernel
  drops it when the holder dies, so a killed cocin never leaves it held. It
  is never taken on the data file: that file is *replaced*, and a lock on the
  old inode would not stop a process that opened the new one.

Small and cheap to import: every command uses it. (Classes, not
``contextlib`` generators, and no ``tempfile`` or ``shutil``: each costs
milliseconds to import.)
"""

from __future__ import annotations

import fcntl
import os

_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class AtomicFile:
    """A new file that replaces ``path`` in one step, or never appears.

    ``with AtomicFile(path) as f: f.write(...)``: the bytes go to a temporary
    file next to ``path``, renamed over it when the block ends without an
    exception (deleted if it raises). ``durable``: see the fsync policy above.
    ``makedirs``: make a missing directory (mode 0700) first.

    The temporary name is random and made with ``O_CREAT|O_EXCL|O_NOFOLLOW``:
    a name derived from the PID can be guessed, and whoever can write to the
    directory could plant a symlink there to make root write through it into
    any file. ``O_EXCL`` fails on any existing name, a symlink included, and
    the final ``rename`` replaces a symlink at ``path`` instead of following it.
    The name starts with a dot, which tells readers listing the directory to
    skip it.
    """

    def __init__(self, path: str, mode: int = 0o600, durable: bool = True, makedirs: bool = False):
        self.path = path
        self.durable = durable
        directory, base = os.path.split(path)
        self.directory = directory or "."
        self.tmp = os.path.join(directory, f".{base[:64]}.tmp-{os.urandom(6).hex()}")
        try:
            fd = os.open(self.tmp, _O_NEWFILE, mode)
        except FileNotFoundError:
            if not makedirs:
                raise
            os.makedirs(self.directory, 0o700, exist_ok=True)
            fd = os.open(self.tmp, _O_NEWFILE, mode)
        self.file = os.fdopen(fd, "wb")

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
        if self.durable:  # the rename lives in the directory: flush it too
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def abort(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        try_(os.unlink, self.tmp)


def atomic_write(path: str, data: str | bytes, durable: bool = False, makedirs: bool = False) -> None:
    """Replace ``path`` with ``data`` (an ``AtomicFile``, mode 0600; by default
    not durable: this is how records are written)."""
    with AtomicFile(path, durable=durable, makedirs=makedirs) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def read_bytes(path: str, flags: int = 0) -> bytes:
    """A whole small file, through ``os.read``: ``open()`` builds a buffered text
    layer per file, a third of the time ``ps -a`` spends on 1000 records.
    ``flags``: more ``open`` flags (``O_NOFOLLOW`` for a file that must not be a link)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    """Delete the file ``path`` if it exists."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class FileLock:
    """``with FileLock(path):`` holds an exclusive ``flock`` on ``path``
    (created, with its directory, if missing). Closing the descriptor, which
    ``__exit__`` does, releases it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:  # the first time: make the directory
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # closing the last descriptor releases the lock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        try_(os.unlink, top, dir_fd=dir_fd)
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
                try_(os.rmdir, _name, dir_fd=stack[-1][0])
    try_(os.rmdir, top, dir_fd=dir_fd)


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


def try_(fn, *args, **kw) -> None:
    """``fn(*args, **kw)``, an ``OSError`` ignored (best-effort clean-up)."""
    try:
        fn(*args, **kw)
    except OSError:
        pass
