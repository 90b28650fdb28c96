"""Running a command the way Docker users expect: exit codes and signals.

Shared by the container's own start (monitor.py) and by ``exec`` (nsexec.py),
and kept tiny because ``exec`` imports it on its hot path.
"""

from __future__ import annotations

import _signal as signal  # signal.py's enums cost ~4 ms per command; the C core has all we use
import errno
import os

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)


def exec_error(argv0: str, e: OSError) -> tuple[int, str]:
    """Docker's exit codes: 127 command not found, 126 found but not executable."""
    if e.errno == errno.ENOENT:
        if "/" in argv0:
            return 127, f'exec: "{argv0}": no such file or directory'
        return 127, f'exec: "{argv0}": executable file not found in $PATH'
    if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return 126, f'exec: "{argv0}": permission denied'
    return 126, f'exec: "{argv0}": {os.strerror(e.errno or 0)}'


def forward_signals(pid: int) -> None:
    """Pass the usual terminal and job-control signals on to ``pid``."""
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
