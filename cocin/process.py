"""Processes the way Docker users expect: exit codes, signals, stdio, identity.

Shared by the container's own start (monitor.py), ``exec`` (nsexec.py), the
record store (is a recorded PID still the process we started?) and the port
proxy, and kept tiny because every command imports it.

*A PID is not a process*: the kernel reuses PIDs, so a PID recorded yesterday
may name some other process today. A PID together with its start time
(``proc_start_time``) names one process for good.
"""

from __future__ import annotations

import _signal as signal  # signal.py's enums cost ~4 ms per command; the C core has all we use
import errno
import os

from .errors import EXIT_CANNOT_INVOKE, EXIT_NOT_FOUND

# What a terminal or a supervisor sends that a container's command should get.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
# With a terminal, a window size change too.
TTY_FORWARDED_SIGNALS = FORWARDED_SIGNALS + (signal.SIGWINCH,)


def proc_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot),
    or 0 when the process is gone or is a zombie (dead, not yet reaped).

    0, not None: no live process started at tick 0 after boot, and a plain
    int compares and stores (in a record) without a special case."""
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
    """Is ``pid`` still the process that started at ``start``?"""
    return pid > 0 and start != 0 and proc_start_time(pid) == start


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    """``kill(pid, sig)``; a process already gone is no error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stdio_to_devnull(fds: tuple[int, ...] = (0, 1, 2)) -> None:
    """Point the standard descriptors ``fds`` at /dev/null (read-only when
    only stdin): a daemon must not hold its caller's terminal or pipes, and a
    command without input must read end-of-file, not the caller's terminal."""
    null = os.open("/dev/null", os.O_RDONLY if fds == (0,) else os.O_RDWR)
    for fd in fds:
        os.dup2(null, fd)
    if null not in fds:
        os.close(null)


def exec_error(argv0: str, e: OSError) -> tuple[int, str]:
    """Docker's exit codes: 127 command not found, 126 found but not executable."""
    if e.errno == errno.ENOENT:
        if "/" in argv0:
            return EXIT_NOT_FOUND, f'exec: "{argv0}": no such file or directory'
        return EXIT_NOT_FOUND, f'exec: "{argv0}": executable file not found in $PATH'
    if e.errno in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
        return EXIT_CANNOT_INVOKE, f'exec: "{argv0}": permission denied'
    return EXIT_CANNOT_INVOKE, f'exec: "{argv0}": {os.strerror(e.errno or 0)}'


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
        kill(pid, signum)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
