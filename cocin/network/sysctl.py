"""Kernel switches (sysctls) cocin turns on while it needs them.

Sysctls are files under ``/proc/sys``: ``net.ipv4.ip_forward`` is
``/proc/sys/net/ipv4/ip_forward``. Writing ``1`` there makes the host
*route* packets between interfaces — between the containers' bridge and the
outside — which a plain Linux host does not do.

Such switches are host-wide, so cocin is careful with them: ``apply()`` is
given the complete set of values this state root needs right now. A switch
needed for the first time has its previous value saved before it is
changed; a switch nobody needs any more gets its saved value back. When the
last network is removed (``network rm``), the host is as cocin found it.
In between, a container coming or going changes nothing here: nothing is
written when the values are already in place.

The bookkeeping is host-wide too, in ``/run/cocin/network-sysctl.json``
(``{"saved": {key: old value}, "holders": {state dir: {key: value}}}``):
two state roots (say, a test suite next to real containers) share one
kernel, and one must not restore what the other still needs. ``/run`` is
emptied at boot, exactly when the kernel forgets the values as well — which
is also why the file is written without ``fsync``: after a power loss
neither it nor the values matter any more.
"""

from __future__ import annotations

import os

from cocin.network import state_dir, store
from cocin.paths import RUN_DIR


def path(key: str) -> str:
    """``net.ipv4.conf.cocin0.route_localnet`` → its file under /proc/sys.

    Dots separate levels, so a dot inside an interface name cannot be said
    this way; cocin's bridge names have none.
    """
    return os.path.join("/proc/sys", *key.split("."))


def read(key: str) -> str | None:
    """The current value, or None if the switch does not exist (e.g. the
    interface it belongs to is gone)."""
    try:
        with open(path(key)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def write(key: str, value: str) -> None:
    """Set a switch; a switch that disappeared (interface deleted) is ignored."""
    try:
        with open(path(key), "w") as f:
            f.write(value + "\n")
    except FileNotFoundError:
        pass


def _state_path() -> str:
    return os.path.join(RUN_DIR, "network-sysctl.json")


def saved() -> dict[str, str | None]:
    """``{key: value before cocin changed it}`` for every switch cocin holds."""
    return store.read_json(_state_path(), {}).get("saved", {})


def apply(wanted: dict[str, str]) -> None:
    """Make this state root hold exactly ``wanted``; restore what no root holds."""
    me = os.path.abspath(state_dir())
    with store.locked(os.path.join(RUN_DIR, "network-sysctl.lock")):
        state = store.read_json(_state_path(), {"saved": {}, "holders": {}})
        before = {"saved": dict(state["saved"]), "holders": dict(state["holders"])}
        holders: dict[str, dict[str, str]] = state["holders"]
        holders.pop(me, None)
        # A holder whose state directory was deleted can no longer let go.
        for root in [r for r in holders if not os.path.isdir(r)]:
            del holders[root]
        if wanted:
            holders[me] = dict(wanted)
        needed: dict[str, str] = {}
        for values in holders.values():
            needed.update(values)
        for key, value in needed.items():
            current = read(key)
            if key not in state["saved"]:
                state["saved"][key] = current
                if current != value:  # about to change it: the old value is on disk first
                    store.write_json(_state_path(), state, durable=False)
            if current != value:
                write(key, value)
        for key in [k for k in state["saved"] if k not in needed]:
            old = state["saved"].pop(key)
            if old is not None and read(key) != old:
                write(key, old)
        if state != before:
            if state["saved"] or state["holders"]:
                store.write_json(_state_path(), state, durable=False)
            else:
                store.remove(_state_path())
