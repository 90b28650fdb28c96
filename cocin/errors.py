"""Errors and exit codes: how a failed command tells the shell what went wrong.

A process ends with a number from 0 to 255, and Docker gives a few of them a
meaning that scripts rely on:

* ``125``: cocin itself failed (bad flags, no such image, a name in use):
  ``CocinError``, printed as one line ``cocin: error: ...``.
* ``126``: the command was found but cannot be run (permission denied, a
  directory, a bad interpreter).
* ``127``: the command was not found (no such file, nothing in ``$PATH``).
* ``128 + N``: the command was killed by signal ``N`` (137 for ``SIGKILL``),
  what a shell reports; ``exit_code`` turns a wait status into that number.

Every module raises ``CocinError`` from here: importing an error must not
pull in the record store (``state``), nor anything else.
"""

from __future__ import annotations

import os

EXIT_COCIN = 125  # the engine failed
EXIT_CANNOT_INVOKE = 126  # found, not executable
EXIT_NOT_FOUND = 127  # no such command
EXIT_SIGNAL_BASE = 128  # killed by signal N: 128 + N


class CocinError(Exception):
    """An error the user caused or can fix: printed as one line, exit 125."""

    exit_code = EXIT_COCIN


class NotFound(CocinError):
    """No such container, image, network...: Docker's "No such ..." errors."""


def exit_code(wait_status: int) -> int:
    """The exit code a shell reports for a ``waitpid`` status: the process's
    own code, or ``128 + N`` when signal ``N`` killed it."""
    code = os.waitstatus_to_exitcode(wait_status)
    return EXIT_SIGNAL_BASE - code if code < 0 else code
