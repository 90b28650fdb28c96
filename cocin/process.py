"""Running a command the way Docker users expect: exit codes and signals.

Shared by the container's own start (monitor.py) and by ``exec`` (nsexec.py),
and kept tiny because ``exec`` imports it on its hot path.
"""

from __future__ import annotations

import _signal as signal  # signal.py's enums cost ~4 ms per command; the C core has all we use
import errno
import os

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def exec_error(argv0: str, e: OSError) -> tuple[int, str]:
    """Docker's exit codes: 127 command not found, 126 found but not executable."""
    if e.errno == errno.ENOENT:
        if "/" in argv0:
            return 127, f'exec: "{argv0}": no such file or directory'
        return 127, f'exec: "{argv0}": executable file not found in $PATH'
    if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return 126, f'exec: "{argv0}": permission denied'
    return 126, f'exec: "{argv0}": {os.strerror(e.errno or 0)}'


def execvpe(argv: list[str], env: dict[str, str]) -> None:
    """``execvpe(3)``: try each directory of the container's ``$PATH`` in turn.

    Written out because ``os.execvpe`` imports ``warnings`` on the way, and
    inside the container (after ``pivot_root``, or ``setns`` into its mount
    namespace) the host's Python library is out of sight. As a
    shell does, a directory where the name exists but cannot be run is
    remembered: that error wins over "not found" in the others.
    """
    name = argv[0]
    if "/" in name:
        os.execve(name, argv, env)
    first_real_error = None
    for directory in env.get("PATH", "").split(":"):
        try:
            os.execve(os.path.join(directory or ".", name), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            first_real_error = first_real_error or e
    raise first_real_error or FileNotFoundError(2, "No such file or directory", name)


def close_fds_except(*keep: int | None) -> None:
    """Close every inherited descriptor above stderr but ``keep``: an open pipe
    end held by a long-lived process (a container, its init, a port proxy)
    would keep its reader waiting, and an inherited lock file would stay locked."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def forward_signals(pid: int) -> None:
    """Pass the usual terminal and job-control signals on to ``pid``."""

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
