"""Pseudo-terminals: the relay between the user's terminal and a container's pty.

With ``-t`` the container's stdio is the *slave* side of a pty allocated from
its own ``/dev/pts``; the *master* side was handed to us over a Unix socket.
Whatever the container writes comes out of the master, whatever we write into
the master the container reads as typed input. Our own terminal is put in
*raw* mode so that keys such as Ctrl-C travel as bytes to the container's
line discipline instead of signalling us.
"""

from __future__ import annotations

import _signal as signal  # not signal.py: its enums cost ~4 ms per command
import errno
import fcntl
import os
import select
import sys
import termios
import tty

TIOCGWINSZ = termios.TIOCGWINSZ
TIOCSWINSZ = termios.TIOCSWINSZ


def copy_window_size(src_fd: int, dst_fd: int) -> None:
    """Tell the container's terminal our size (rows, columns), so editors fit."""
    try:
        size = fcntl.ioctl(src_fd, TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst_fd, TIOCSWINSZ, size)
    except OSError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def relay(master: int, pid: int, interactive: bool) -> None:
    """Copy bytes both ways until the container side of the pty closes."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    is_tty = os.isatty(stdin)
    saved = None
    if is_tty:
        copy_window_size(stdin, master)
        signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(stdin, master))
        if interactive:
            saved = termios.tcgetattr(stdin)
            tty.setraw(stdin, termios.TCSANOW)  # TCSAFLUSH would drop keys typed ahead
    watch = [master] + ([stdin] if interactive else [])
    try:
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno == errno.EIO:  # every slave fd closed: the container ended
                        break
                    raise
                if not data:
                    break
                try:
                    _write_all(stdout, data)
                except BrokenPipeError:
                    break  # our reader went away: hang up the terminal (SIGHUP inside)
            if stdin in ready:
                data = os.read(stdin, 65536)
                if not data:
                    watch.remove(stdin)
                    _write_all(master, b"\x04")  # end of input, as Ctrl-D
                else:
                    _write_all(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        os.close(master)


def copy_to_log(master: int, log_fd: int) -> None:
    """A detached ``-t`` container: its terminal output goes to the log."""
    while True:
        try:
            data = os.read(master, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
        _write_all(log_fd, data)
    os.close(master)
