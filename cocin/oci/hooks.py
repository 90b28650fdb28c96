"""OCI hooks: programs the engine asks the runtime to run at points of a container's life.

``config.json``'s ``hooks`` maps a point of the lifecycle to a list of
commands, each ``{"path": ABS, "args": [argv0, ...], "env": ["K=V", ...],
"timeout": SECONDS}``. The runtime runs them one after another, in order, and
writes the container's *state* (``{"ociVersion", "id", "status", "pid",
"bundle", "annotations"}``) to each one's stdin: that is how a hook learns
which process to act on (a network plugin, for instance, moves
``/proc/<pid>/ns/net`` into a network it set up). The points, in order:

===================  ===========================  ==================  ========
hook                 when                         namespaces          on error
===================  ===========================  ==================  ========
``prestart``         after create, before pivot   the runtime's       fails
                     (deprecated: createRuntime)
``createRuntime``    same moment                  the runtime's       fails
``createContainer``  same moment                  the container's     fails
``startContainer``   in ``start``, before execve  the container's     fails
``poststart``        after ``start`` returned     the runtime's       warns
``poststop``         in ``delete``                the runtime's       warns
===================  ===========================  ==================  ========

"fails": the lifecycle stops and the runtime reports an error (for the
creation hooks the half-made container is destroyed); "warns": the error is
logged and the remaining hooks still run. This module runs hooks in the
*calling* process's namespaces; the two that belong inside the container are
run by the container core from there, with the same function.

As runc: ``argv`` is ``args`` (``path`` alone when there are none), the
environment is exactly ``env`` (nothing inherited), the working directory is
the bundle, stdout and stderr are captured for the error message, and a
``timeout`` kills the hook (SIGKILL) and is an error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

from . import OCIError


class HookError(OCIError):
    """A hook failed (exit status, signal, timeout, or it could not be started)."""


def run_hook(hook: dict, state: dict, cwd: str | None = None) -> None:
    """Run one hook with ``state`` on its stdin; HookError if it fails."""
    path = hook["path"]
    argv = list(hook.get("args") or [path])
    env = {}
    for item in hook.get("env") or []:
        k, _, v = item.partition("=")
        env[k] = v
    timeout = hook.get("timeout")
    if cwd is not None and not os.path.isdir(cwd):
        cwd = None
    try:
        proc = subprocess.Popen(
            argv,
            executable=path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            close_fds=True,
            start_new_session=True,
            restore_signals=True,
        )
    except OSError as e:
        raise HookError(f"{path}: {e.strerror.lower()}") from None
    try:
        out, err = proc.communicate(json.dumps(state).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        raise HookError(f"timeout waiting for hook {path} ({timeout} s)") from None
    except BrokenPipeError:  # the hook did not read its stdin: allowed
        out, err = proc.communicate()
    if proc.returncode != 0:
        how = f"exit status {proc.returncode}" if proc.returncode > 0 else f"signal: {-proc.returncode}"
        out_s, err_s = out.decode(errors="replace").strip(), err.decode(errors="replace").strip()
        raise HookError(f"{how}, stdout: {out_s}, stderr: {err_s}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def run_hooks(spec: dict, kind: str, state: dict, cwd: str | None = None, warn=None) -> list[str]:
    """Run every hook of ``kind`` (e.g. "poststart") from ``spec`` in order.

    For prestart, createRuntime, createContainer and startContainer the first
    failure raises HookError ("error running <kind> hook #N: ..."). For
    poststart and poststop a failure is passed to ``warn(message)`` and the
    next hook runs; the messages are returned.
    """
    warnings = []
    for i, hook in enumerate((spec.get("hooks") or {}).get(kind) or []):
        try:
            run_hook(hook, state, cwd)
        except HookError as e:
            msg = f"error running {kind} hook #{i}: {e}"
            if kind not in ("poststart", "poststop"):
                raise HookError(msg) from None
            warnings.append(msg)
            if warn is not None:
                warn(msg)
    return warnings
