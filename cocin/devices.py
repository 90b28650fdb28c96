"""Which device nodes a container may use: the allow-list and how the kernel enforces it.

A device node (``/dev/null``, ``/dev/sda``) is a file that names a driver by
two numbers, *major* (which driver) and *minor* (which unit of it), and a
type: ``c`` for character devices, ``b`` for block devices. Anyone who may
call ``mknod(2)`` can make a node for *any* numbers, so hiding the host's
/dev is not enough: root in a container could ``mknod /tmp/disk b 8 0`` and
read the host's disk. The kernel therefore checks every open and mknod of a
device against the process's cgroup:

* **cgroup v1** has a ``devices`` controller. Its ``devices.deny`` and
  ``devices.allow`` files take one rule per write, ``TYPE MAJOR:MINOR ACCESS``
  (``c 1:3 rwm``; ``*`` is any number; ``a`` alone means every device);
  ``r``/``w`` is opening for reading/writing, ``m`` is mknod.
* **cgroup v2** has no such files: the rules become a small eBPF program
  attached to the cgroup directory (cocin/devicefilter.py).

Docker's default is "deny everything, then allow" the harmless nodes every
container gets, mknod of anything (a node that cannot be opened is harmless),
the pseudo-terminals and ``/dev/net/tun``: :data:`DEFAULT_RULES`, the list
runc calls ``AllowedDevices``. ``--device`` adds one rule per device;
``--privileged`` lifts the restriction.
"""

from __future__ import annotations

import os
import stat

from .state import CocinError

# A rule: (type "a"|"c"|"b", major or None for "*", minor or None, access "rwm"-subset).
Rule = tuple

ALLOW_ALL: tuple[Rule, ...] = (("a", None, None, "rwm"),)

# runc's specconv.AllowedDevices, which Docker relies on (in runc's order).
DEFAULT_RULES: tuple[Rule, ...] = (
    ("c", None, None, "m"),  # mknod of any character device ...
    ("b", None, None, "m"),  # ... and any block device: opening them is what is checked
    ("c", 1, 3, "rwm"),  # /dev/null
    ("c", 1, 8, "rwm"),  # /dev/random
    ("c", 1, 7, "rwm"),  # /dev/full
    ("c", 5, 0, "rwm"),  # /dev/tty
    ("c", 1, 5, "rwm"),  # /dev/zero
    ("c", 1, 9, "rwm"),  # /dev/urandom
    ("c", 136, None, "rwm"),  # /dev/pts/*: the container's own pseudo-terminals
    ("c", 5, 2, "rwm"),  # /dev/ptmx
    ("c", 10, 200, "rwm"),  # /dev/net/tun
)


class DeviceError(CocinError):
    """A --device that cannot be used; the message is one line for the user."""


def host_device(path: str) -> tuple[str, int, int, int, int, int]:
    """``(type, major, minor, mode, uid, gid)`` of the device node at ``path`` on the host.

    ``path`` comes from the user's ``--device`` (a host path), so following
    its links is what is asked for (``/dev/disk/by-id/...`` are links).
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise DeviceError(
            f"error gathering device information while adding custom device {path!r}: {e.strerror.lower()}"
        ) from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise DeviceError(f"error gathering device information while adding custom device {path!r}: not a device node")
    return (kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def rules_for(cfg: dict) -> tuple[Rule, ...]:
    """The device rules of a container's config: Docker's defaults plus ``--device``.

    ``--privileged`` allows every device, as in Docker.
    """
    if cfg.get("privileged"):
        return ALLOW_ALL
    extra = []
    for host, _ctr, perms in cfg.get("devices") or ():
        kind, major, minor, _mode, _uid, _gid = host_device(host)
        extra.append((kind, major, minor, perms or "rwm"))
    return DEFAULT_RULES + tuple(extra)


def rule_text(rule: Rule) -> str:
    """A rule as the v1 ``devices.allow`` file reads it: ``c 1:3 rwm``, ``c 136:* rwm``, ``a``."""
    kind, major, minor, access = rule
    if kind == "a":
        return "a"
    return f"{kind} {'*' if major is None else major}:{'*' if minor is None else minor} {access}"


def v1_writes(rules: tuple[Rule, ...]) -> list[tuple[str, str]]:
    """``(file, line)`` to write, in order, into a v1 devices cgroup.

    An allow-list starts with ``a`` written to ``devices.deny`` (the cgroup
    inherits "allow all" from its parent), then one allow line per rule.
    """
    if rules == ALLOW_ALL:
        return [("devices.allow", "a")]
    return [("devices.deny", "a")] + [("devices.allow", rule_text(r)) for r in rules]
