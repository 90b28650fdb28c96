"""cgroup files: tiny, read or written in one go, and liable to vanish.

A cgroup's files are not stored anywhere: each read asks the kernel, each
write is parsed by it as a whole. A cgroup can be removed (by its last
process leaving and another cocin tidying up) between two calls, so a
missing file or directory means "gone", never a crash: reads return None,
moves into a vanished cgroup are skipped when allowed.
"""

from __future__ import annotations

import errno
import os
import time

from cocin.errors import CocinError

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

# errno values meaning "this cgroup was removed (or is being removed)".
VANISHED = (errno.ENOENT, errno.ENODEV)
# How often make_dirs() re-makes a parent that a concurrent destroy() removed.
MKDIR_RETRIES = 10


class CgroupError(CocinError):
    """A cgroup problem, worded as one line a user can act on."""


def read_text(path: str) -> str | None:
    """The content of a cgroup file, or None when it (or its cgroup) is gone."""
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
        return None
    except OSError as e:
        if e.errno == errno.ENODEV:  # the cgroup was removed while open
            return None
        raise


def read_int(path: str) -> int | None:
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def read_keyed(path: str) -> dict[str, int]:
    """Parse "key value" lines, as in memory.stat, cpu.stat or memory.events."""
    out = {}
    for line in (read_text(path) or "").splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out


def write_text(path: str, value: str) -> None:
    """Write one value with a single write(2), as the kernel expects.

    A cgroup file parses each write as a whole, so a buffered writer that
    split the value would be rejected. Raises OSError.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_limit(path: str, value: str, flag: str) -> None:
    """Write a limit file, turning the kernel's refusal into a CgroupError naming ``flag``."""
    try:
        write_text(path, value)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ERANGE):
            raise CgroupError(f"invalid {flag}: the kernel refused {value!r} for {os.path.basename(path)}") from None
        if e.errno == errno.ENOENT:
            raise CgroupError(f"{flag} is not supported on this host: {path} does not exist") from None
        raise CgroupError(f"cannot set {flag}: writing {path}: {e.strerror}") from None


def make_dirs(root: str, parent: str, cid: str, prepare: Callable[[str], None] | None = None) -> str:
    """mkdir ``root/parent/cid`` and return it; ``prepare`` runs on each directory.

    ``prepare(path)`` is called for every directory below ``root`` (parents
    first, the new child last), whether it was just made or already existed,
    so it must be idempotent. Another cocin may remove an empty ``parent`` at
    any moment (its destroy() tidies up); ENOENT or ENODEV then means "the
    parent vanished": make it again and retry. Other failures raise OSError.
    """
    chain = [*parent.split("/"), cid]
    for _ in range(MKDIR_RETRIES):
        path = root
        try:
            for part in chain:
                path = os.path.join(path, part)
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    pass
                if prepare is not None:
                    prepare(path)
            return path
        except OSError as e:
            # ENOENT: the parent is gone; ENODEV: it is being removed (its
            # files still open, but a dying cgroup refuses reads and writes).
            if e.errno not in VANISHED:
                raise
    raise CgroupError(f"cannot create cgroup {path}: its parent keeps disappearing")


def rmdir_tree(path: str, deadline: float) -> bool:
    """rmdir ``path`` and any sub-cgroups the container made, deepest first.

    A cgroup directory holds only kernel files, so rmdir(2) removes it
    whole, but only once no process is left in it: until then the kernel
    answers EBUSY (a process still exiting can keep it busy for a moment).
    """
    for dirpath, _dirs, _files in os.walk(path, topdown=False):
        delay = 0.005
        while True:
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
    return not os.path.exists(path)


def move_process(procs_file: str, pid: int, missing_ok: bool = True) -> None:
    """Write ``pid`` to a ``cgroup.procs`` or ``tasks`` file, with clear errors.

    ``missing_ok``: a hierarchy without this cgroup is skipped (``exec`` tries
    every hierarchy; the container joined only some)."""
    try:
        write_text(procs_file, str(pid))
    except OSError as e:
        if e.errno in VANISHED and missing_ok:
            return
        if e.errno == errno.ESRCH:
            raise CgroupError(f"cannot add process {pid} to cgroup: no such process") from None
        raise CgroupError(f"cannot add process {pid} to {os.path.dirname(procs_file)}: {e.strerror}") from None
