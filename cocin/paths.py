"""Where cocin keeps things: the state root, the run directory, a container's files.

Two trees, for two lifetimes:

* **The state root** (``$COCIN_ROOT``, default ``/var/lib/cocin``) survives
  reboots: container records, images, layers, networks. Tests and parallel
  users point ``$COCIN_ROOT`` elsewhere to get a world of their own.
* **The run directory** (``/run/cocin``) holds what describes the running
  kernel and must vanish with it: ``/run`` is a tmpfs emptied at boot, exactly
  when the bridges, iptables chains and sysctls it describes vanish too. It is
  host-wide, shared by every state root.

Each container is a directory ``<root>/containers/<id>/`` (``config.json``,
the overlay's ``upper``/``work``, the log); its lock is ``<root>/locks/<id>``
and its name ``<root>/names/<name>``.

Every path is computed here, once: nothing else reads ``$COCIN_ROOT``.
"""

from __future__ import annotations

import os

DEFAULT_ROOT = "/var/lib/cocin"
RUN_DIR = "/run/cocin"

# A container's name is also a file name in names/: at most 255 bytes, with
# the temporary name of an atomic write (files.AtomicFile) around it.
NAME_MAX = 200

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

_PRIVATE: set[str] = set()  # roots this process has checked


def root() -> str:
    """The state root: ``$COCIN_ROOT`` (tests use their own) or /var/lib/cocin.

    The first use in a process makes sure it is private (``make_private``).
    """
    path = os.environ.get("COCIN_ROOT") or DEFAULT_ROOT
    if path not in _PRIVATE:
        _PRIVATE.add(path)
        make_private(path)
    return path


def is_default_root() -> bool:
    """Is this the normal root (not a test suite's or another user's)?"""
    return os.path.abspath(root()) == DEFAULT_ROOT


def containers_dir() -> str:
    return os.path.join(root(), "containers")


def container_dir(cid: str) -> str:
    return os.path.join(root(), "containers", cid)


def record_path(cid: str) -> str:
    """A container's record, ``<root>/containers/<id>/config.json``."""
    return os.path.join(root(), "containers", cid, "config.json")


def lock_path() -> str:
    """The global state lock, ``<root>/lock``."""
    return os.path.join(root(), "lock")


def locks_dir() -> str:
    """The per-container locks, ``<root>/locks/<id>``."""
    return os.path.join(root(), "locks")


def names_dir() -> str:
    """The name index, ``<root>/names/<name>`` holding the container's ID."""
    return os.path.join(root(), "names")


def networks_dir() -> str:
    """Network records, ``<root>/networks``."""
    return os.path.join(root(), "networks")


def valid_name(name: str, alnum: frozenset = _ALNUM, more: str = "_.-") -> bool:
    """Docker's rule for container and network names, ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``
    (checked without ``re``, whose import costs ~6 ms on every command)."""
    return bool(name) and name[0] in alnum and all(c in alnum or c in more for c in name)


def make_private(path: str) -> None:
    """Make the state root ``path`` (mode 0700, owned by root) if missing, and
    tighten one that other users can enter.

    Everything below it must stay out of other users' reach: an image layer
    holds whatever its image or a committed container put there (a set-user-ID
    root shell, a device node), and a host user who can walk to
    ``layers/<id>/bin/sh`` can run it. One closed door at the top shuts them
    all: nothing below can be reached, whatever its own mode, so a layer keeps
    the modes its image needs. It costs one ``stat`` per command; a root left
    open (0755, by hand or by an older cocin) is closed once, with the records
    and logs in it.
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
            try:
                os.chmod(entry.path, mode)
            except OSError:
                pass
