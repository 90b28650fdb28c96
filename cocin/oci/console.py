"""The console socket: how a runtime hands a container's terminal to the engine.

With ``process.terminal: true`` the container's stdio is a pseudo-terminal. Its
*slave* side becomes the process's 0, 1, 2 and controlling tty; its *master*
side (what a terminal emulator holds) must end up with the engine, which
relays it to the user's terminal and the log. The runtime exits right after
``create``, so it cannot relay anything itself. Instead the engine listens on
a unix socket and passes its path, ``--console-socket PATH``; the runtime:

1. connects to it *on the host*, before the container's root changes (the
   path means nothing after ``pivot_root``), and keeps the socket fd;
2. inside the container, after its own ``devpts`` is mounted
   (``newinstance``: the container's ptys are invisible to the host's
   ``/dev/pts``), opens ``/dev/ptmx``, unlocks the slave (``TIOCSPTLCK``) and
   opens it (``TIOCGPTPEER``, or ``/dev/pts/<TIOCGPTN>``);
3. sends the master over the socket in **one** ``sendmsg(2)`` with an
   ``SCM_RIGHTS`` control message carrying **exactly one** fd, the payload
   being the master's name (runc sends ``/dev/ptmx``). The kernel installs a
   copy of the fd in the receiver: conmon and containerd's shim reject any
   other fd count;
4. closes its copies of the master and the socket.

The engine accepts the connection whenever it likes (containerd's shim does
so only after ``create`` returned): ``connect`` and ``sendmsg`` complete on
the listen backlog alone.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from . import OCIError


def connect(path: str) -> socket.socket:
    """Connect to the engine's console socket (step 1, on the host)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OCIError(f"dial unix {path}: connect: {(e.strerror or str(e)).lower()}") from None
    return s


def open_pty(ptmx: str = "/dev/ptmx") -> tuple[int, int]:
    """A new pty from the devpts instance behind ``ptmx`` (step 2): (master, slave) fds."""
    from .. import libc

    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, libc.TIOCSPTLCK, struct.pack("i", 0))
        try:
            slave = fcntl.ioctl(master, libc.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
        except OSError:  # kernels before 4.13: open /dev/pts/N by name
            (n,) = struct.unpack("I", fcntl.ioctl(master, libc.TIOCGPTN, b"\0" * 4))
            slave = os.open(os.path.join(os.path.dirname(ptmx), "pts", str(n)), os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        raise
    return master, slave


def send_master(sock: socket.socket, master: int, name: bytes = b"/dev/ptmx") -> None:
    """One sendmsg with the master as the single SCM_RIGHTS fd (step 3)."""
    try:
        socket.send_fds(sock, [name], [master])
    except OSError as e:
        raise OCIError(f"send console fd: {(e.strerror or str(e)).lower()}") from None


def recv_master(sock: socket.socket) -> tuple[bytes, int]:
    """The engine's side, for tests: accept-ed socket -> (name, master fd)."""
    name, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise OCIError(f"console socket: expected one fd, got {len(fds)}")
    return name, fds[0]
