"""Small JSON state files that survive crashes and concurrent cocin commands.

Networks keep their records as JSON files, read and rewritten under a lock:
``locked`` is ``files.FileLock`` (an exclusive ``flock`` on a separate lock
file) and ``write_json`` an atomic replacement (``files.AtomicFile``); the
ideas, and when a write is ``durable`` (fsync'd), are explained in
``cocin/files.py``.
"""

from __future__ import annotations

from cocin import fastjson
from cocin.files import AtomicFile, FileLock, read_bytes, remove

# Names for annotations only (see tests/unit/test_import_budget.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

locked = FileLock  # ``with locked(lock_path):``
__all__ = ["locked", "read_json", "remove", "write_json"]


def read_json(path: str, default: Any = None) -> Any:
    """The decoded content of ``path``, or ``default`` when it does not
    exist. Malformed content raises ``ValueError``."""
    try:
        return fastjson.loads(read_bytes(path))
    except FileNotFoundError:
        return default


def write_json(path: str, data: Any, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (its directory made
    if missing). ``durable``: see the fsync policy in ``cocin/files.py``."""
    with AtomicFile(path, durable=durable, makedirs=True) as f:
        # Compact JSON from the C encoder (see cocin.fastjson).
        f.write((fastjson.dumps(data) + "\n").encode())
