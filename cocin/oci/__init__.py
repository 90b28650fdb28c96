"""cocin as an OCI runtime: runc's command line in front of cocin's container core.

What an OCI runtime is
----------------------
Docker, podman and containerd do not make containers themselves. They unpack
an image into a directory, write a *bundle* (that directory plus a
``config.json``, the OCI runtime spec: the process to run, its root, mounts,
namespaces, cgroup limits, capabilities, seccomp...), and hand the bundle to a
small program with a fixed command line: the *OCI runtime*, ``runc`` by
default (``crun``, ``youki``, ``runsc`` are others). The runtime turns the
spec into kernel state and gets out of the way. Everything else (images,
logs, networks, restart policies) stays in the engine. cocin answers that
command line when it is invoked as ``cocin-oci`` (``scripts/cocin-oci``), so
podman (``--runtime``) and containerd (``BinaryName``) can drive it.

The create/start split
----------------------
A container is born in two steps, ``create`` then ``start``:

* ``create --bundle B --pid-file P ID`` builds everything: namespaces, the
  root file system and its mounts, cgroups, and a first process (the future
  PID 1) that stops just before ``execve`` of the user's program and waits.
  It waits on a FIFO, ``<root>/<ID>/exec.fifo``: opening a FIFO for writing
  blocks until someone opens it for reading. ``create`` writes the pid file
  and **exits**; the waiting process is re-parented to the caller (conmon or
  containerd's shim are *child subreapers*, ``PR_SET_CHILD_SUBREAPER``), which
  will reap it and learn its exit code. No runtime process stays behind.
* Between the two, the engine does what needs the process but not the
  program: it reads the pid, moves it into a network namespace it prepared,
  watches its cgroup for OOM kills, attaches the terminal.
* ``start ID`` opens the FIFO for reading, reads the one byte the waiting
  process writes, and returns at once; the process then ``execve``\\s the
  user's program.

The other verbs work from the state the runtime keeps per container, here
``<root>/<ID>/state.json`` (``--root``, default ``/run/cocin-oci``, as runc's
``/run/runc``): ``state`` (created, running, paused or stopped, believed only
after checking the kernel: the PID alive with the same start time, the
freezer), ``kill``, ``delete``, ``ps``, ``pause``/``resume`` (the cgroup
freezer), ``exec`` (another process joining the container), ``update``.

This package is the front-end: flags, bundle validation, state records, the
error log engines parse, the pid file, the console socket, hooks. The work of
making a container is done by the container core, reached through one
adapter function in ``cocin.oci.core``. It is imported only when cocin is
invoked as ``cocin-oci``; ``cocin run`` never loads it.
"""

VERSION = "0.1.0"
SPEC_VERSION = "1.0.2-dev"


class OCIError(Exception):
    """A failure reported the runc way: one error line (stderr and the --log), exit ``code``."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code
