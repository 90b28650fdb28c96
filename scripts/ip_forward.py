"""Read or set the host's net.ipv4.ip_forward around a test run, the way cocin
itself would: under cocin's host-wide sysctl lock (/run/cocin), never behind the
back of a cocin state root that holds it for its containers.

    python3 scripts/ip_forward.py get          prints the host's own value, 0 or 1
                                               (while a state root holds it: the
                                               value cocin will restore)
    python3 scripts/ip_forward.py set VALUE    sets it; if a live state root holds
                                               it, records VALUE as the value to
                                               restore when that root lets go

Used by scripts/test.sh (COCIN_TEST_IP_FORWARD=0|1|flip) and .ci/run.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cocin.network import store, sysctl  # noqa: E402

KEY = "net.ipv4.ip_forward"


def _state() -> tuple[dict, list[str]]:
    """cocin's bookkeeping, and the live state roots holding ip_forward."""
    state = store.read_json(os.path.join(sysctl.RUN_DIR, "network-sysctl.json"), {}) or {}
    holders = [root for root, values in state.get("holders", {}).items() if KEY in values and os.path.isdir(root)]
    return state, holders


def get_value() -> str | None:
    with store.locked(os.path.join(sysctl.RUN_DIR, "network-sysctl.lock")):
        state, holders = _state()
        if holders and KEY in state.get("saved", {}):
            return state["saved"][KEY]
        return sysctl.read(KEY)


def set_value(value: str) -> str:
    """Set it (or what is restored later); return a word on what happened."""
    path = os.path.join(sysctl.RUN_DIR, "network-sysctl.json")
    with store.locked(os.path.join(sysctl.RUN_DIR, "network-sysctl.lock")):
        state, holders = _state()
        if holders and KEY in state.get("saved", {}):
            state["saved"][KEY] = value
            store.write_json(path, state, durable=False)
            return f"held by {', '.join(holders)}: {value} restored when they let go"
        sysctl.write(KEY, value)
        return "set"


def main(argv: list[str]) -> int:
    if argv[:1] == ["get"] and len(argv) == 1:
        print(get_value())
        return 0
    if argv[:1] == ["set"] and len(argv) == 2 and argv[1] in ("0", "1"):
        print(f"ip_forward={argv[1]}: {set_value(argv[1])}", file=sys.stderr)
        return 0
    print("usage: ip_forward.py get | set 0|1", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
