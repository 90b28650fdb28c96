"""The one door from the runtime's command line to cocin's container core.

Everything in ``cocin.oci`` except this module is front-end: it parses flags,
checks the bundle, keeps records and logs errors. The actual container work
(namespaces, rootfs, mounts, cgroups, capabilities, seccomp, the process
waiting on ``exec.fifo``, joining a container for ``exec``, applying new
limits) is the core's, the same code ``cocin run`` uses (ARCHITECTURE.md:
one way to make a container). The functions below are that contract; each
looks the core up when called, so the command line works (and says clearly
what is missing) before the core exists.

Contract of ``cocin.launch.create_from_spec(spec, **kw)`` (the core's side):

* ``spec``: the checked config.json dict; ``rootfs``: its absolute root;
  ``bundle``: the absolute bundle (cwd of hooks); ``container_id``;
  ``state_dir``: ``<root>/<id>``, where ``exec.fifo`` already exists (made by
  the front-end, mode 0622): the container's first process opens it for
  writing (blocking until ``start`` opens it for reading), writes one byte,
  then ``execve``\\s ``process.args``;
  ``console``: a connected console socket (``socket.socket``) or None, the
  pty master goes there (``cocin.oci.console.open_pty``/``send_master``);
  ``preserve_fds``: fds 3..3+N-1 reach the container, every other fd above 2
  is closed; ``no_pivot``, ``no_new_keyring``: runc's meanings;
  ``run_hooks``: ``cocin.oci.hooks.run_hooks(spec, kind, state, cwd)`` and
  ``hook_state(status, pid)``: the state to feed it (prestart/createRuntime
  from the runtime side with status "creating", createContainer inside the
  container, startContainer inside it with "created" just before execve).
* It returns once the process waits on the fifo, sits in its cgroups, and the
  console fd was sent; with every intermediate process gone, so the waiting
  process is re-parented to the caller's subreaper. Return value: a dict
  ``{"pid": host pid, "cgroup_dirs": {hierarchy: dir}}`` (the dirs the core
  made, removed by ``delete``; omit the key to have none removed).
* It raises ``OSError`` or an exception whose text is the one error line
  (engines classify "no such file or directory" / "permission denied").

How the spec-driven core (branch ``core``: ``launch.py`` forks ``child.run(spec,
chan, ...)`` and talks READY / PTY / GO / ERROR over a socket pair) can meet it:
the cgroup and seccomp program made from the spec as ``launch`` makes them for
``cocin run``; after READY (no network step: the engine passed a netns path),
a PTY message's master goes on with ``console.send_master(console, master)``;
after GO the child needs one new step before ``execve``: open
``<state_dir>/exec.fifo`` for writing and write one byte (that blocks until
``start``); a ChildFailed becomes the one error line. The runtime process
then returns ``{"pid": pid, "cgroup_dirs": cgroup.dirs}`` and exits, and the
child, PID 1 of its namespace, is re-parented to the engine's subreaper.

``exec_from_spec(process, *, pid, container_id, cgroup_dirs, spec, console,
preserve_fds, detach)`` (``pid``: the container's first process, whose
namespaces to join; ``spec``: the container's, for its seccomp and masks)
returns the exec'd host pid (re-parented to the caller when ``detach``), or
its exit status when not detached; ``update_resources(resources, *,
container_id, cgroup_dirs)`` applies new limits.
"""

from __future__ import annotations

from . import OCIError

NOT_WIRED = "{} is not wired to the container core yet"


def _core(fn: str, what: str):
    try:
        from .. import launch  # type: ignore[attr-defined]
    except ImportError:
        raise OCIError(NOT_WIRED.format(what)) from None
    impl = getattr(launch, fn, None)
    if impl is None:
        raise OCIError(NOT_WIRED.format(what))
    return impl


def create(spec: dict, **kw) -> dict:
    """Make the container, its process waiting for ``start``; see the module docstring."""
    return _core("create_from_spec", "create")(spec, **kw)


def exec_process(process: dict, **kw) -> int:
    """Run ``process`` (an OCI process dict) inside a running container."""
    return _core("exec_from_spec", "exec")(process, **kw)


def update_resources(resources: dict, **kw) -> None:
    """Apply an ``update``'s LinuxResources to the container's cgroups."""
    _core("update_resources", "update")(resources, **kw)
