"""Small JSON state files that survive crashes and concurrent cocin commands.

Two ideas make a file of state safe to share between processes:

* **An exclusive lock.** ``flock(2)`` on a separate lock file serialises the
  read-modify-write cycle, so two ``cocin run`` never hand out the same
  address. The lock belongs to the open file, and the kernel drops it when
  the process dies, so a crash never leaves it held. It must not be taken on
  the data file itself: the data file is *replaced* on every write (next
  point), and a lock on the old inode would not stop a process that opened
  the new one.

* **An atomic replace.** Write the new content to a temporary file in the
  same directory, ``fsync`` it, then ``rename(2)`` it over the old name
  (``os.replace``). Readers see the old file or the new one, never half a
  file, even if the machine loses power mid-write.
"""

from __future__ import annotations

import fcntl
import os

from cocin import fastjson

# Only for annotations (never evaluated here, thanks to the __future__
# import): importing typing would cost every "cocin run" milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class locked:
    """``with locked(lock_path):`` holds an exclusive ``flock`` on
    ``lock_path`` (created if missing). A class rather than a
    ``contextlib`` generator: ``contextlib`` costs milliseconds to import."""

    def __init__(self, lock_path: str) -> None:
        self.lock_path = lock_path
        self.fd = -1

    def __enter__(self) -> None:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:  # the first time: make the directory
            os.makedirs(os.path.dirname(self.lock_path), mode=0o700, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def __exit__(self, *exc: object) -> None:
        fd, self.fd = self.fd, -1
        os.close(fd)  # closing the last descriptor releases the lock


def read_json(path: str, default: Any = None) -> Any:
    """The decoded content of ``path``, or ``default`` when it does not
    exist. Malformed content raises ``ValueError``."""
    try:
        with open(path, encoding="utf-8") as f:
            return fastjson.loads(f.read())
    except FileNotFoundError:
        return default


_counter = 0


def write_json(path: str, data: Any, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically and durably.

    ``durable=False`` skips the two ``fsync`` calls (each one waits for the
    disk, milliseconds): still atomic for other processes and after a crash
    of cocin, but a power loss may bring back an older version or, on some
    file systems, a torn file. That suits state which means nothing after a
    reboot anyway: caches, and runtime state kept in ``/run``.
    """
    directory = os.path.dirname(path)
    # A temporary name no other process or thread uses (what tempfile would
    # do, without importing it: that alone costs milliseconds).
    global _counter
    _counter += 1
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{_counter}-{os.urandom(4).hex()}.json")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
    except FileNotFoundError:  # the first time: make the directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            # Compact JSON from the C encoder (see cocin.fastjson).
            f.write((fastjson.dumps(data) + "\n").encode())
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    if not durable:
        return
    # The rename itself lives in the directory: sync it too.
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove(path: str) -> None:
    """Delete ``path`` if it exists."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
