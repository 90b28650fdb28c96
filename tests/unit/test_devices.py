"""Unit tests of cocin/devices.py and devicefilter.py: Docker's device rules, their v1 text,
the v2 eBPF program.

The program is run instruction by instruction by a small interpreter of the
few opcodes it uses (pure logic, against a plain reading of the rules); in the
kernel it is tested by tests/host/test_devices_host.py.
"""

from __future__ import annotations

import os

import pytest

from cocin import devicefilter, devices
from cocin.devicefilter import (
    BPF_DEVCG_ACC_MKNOD,
    BPF_DEVCG_ACC_READ,
    BPF_DEVCG_ACC_WRITE,
    BPF_DEVCG_DEV_BLOCK,
    BPF_DEVCG_DEV_CHAR,
)
from cocin.devices import ALLOW_ALL, DEFAULT_RULES


def test_default_rules_are_runcs_allowed_devices():
    texts = [devices.rule_text(r) for r in DEFAULT_RULES]
    assert texts == [
        "c *:* m",
        "b *:* m",
        "c 1:3 rwm",
        "c 1:8 rwm",
        "c 1:7 rwm",
        "c 5:0 rwm",
        "c 1:5 rwm",
        "c 1:9 rwm",
        "c 136:* rwm",
        "c 5:2 rwm",
        "c 10:200 rwm",
    ]


def test_v1_writes_deny_all_first_then_allow():
    writes = devices.v1_writes(DEFAULT_RULES + (("b", 7, 0, "r"),))
    assert writes[0] == ("devices.deny", "a")
    assert writes[1:3] == [("devices.allow", "c *:* m"), ("devices.allow", "b *:* m")]
    assert writes[-1] == ("devices.allow", "b 7:0 r")
    assert devices.v1_writes(ALLOW_ALL) == [("devices.allow", "a")]


def test_rules_for_config():
    assert devices.rules_for({}) == DEFAULT_RULES
    assert devices.rules_for({"privileged": True, "devices": [["/nope", "/nope", "rwm"]]}) == ALLOW_ALL
    st = os.stat("/dev/null")
    extra = devices.rules_for({"devices": [["/dev/null", "/dev/mine", "rw"]]})
    assert extra[:-1] == DEFAULT_RULES
    assert extra[-1] == ("c", os.major(st.st_rdev), os.minor(st.st_rdev), "rw")


def test_host_device_errors_are_one_line(tmp_path):
    with pytest.raises(devices.DeviceError, match="no such file or directory"):
        devices.host_device(str(tmp_path / "missing"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(devices.DeviceError, match="not a device node"):
        devices.host_device(str(tmp_path / "file"))


# --- the eBPF program, interpreted -------------------------------------------------


def run(code: list[tuple], kind: int, access: int, major: int, minor: int) -> int:
    """Execute the program on one bpf_cgroup_dev_ctx; its return value (r0)."""
    ctx = {0: (access << 16) | kind, 4: major, 8: minor}
    reg = [0] * 11
    pc = 0
    for _ in range(10_000):
        op, dst, src, off, imm = code[pc]
        pc += 1
        if op == 0x61:  # LDX MEM W: dst = *(u32 *)(src + off)
            assert src == 1 and off in ctx, "the program reads only the context"
            reg[dst] = ctx[off]
        elif op == 0x54:  # ALU AND K (32-bit)
            reg[dst] = (reg[dst] & imm) & 0xFFFFFFFF
        elif op == 0x74:  # ALU RSH K
            reg[dst] = (reg[dst] & 0xFFFFFFFF) >> imm
        elif op == 0xBC:  # ALU MOV X
            reg[dst] = reg[src] & 0xFFFFFFFF
        elif op == 0xB4:  # ALU MOV K
            reg[dst] = imm & 0xFFFFFFFF
        elif op == 0x55:  # JMP JNE K
            if reg[dst] != imm:
                pc += off
        elif op == 0x5D:  # JMP JNE X
            if reg[dst] != reg[src]:
                pc += off
        elif op == 0x95:  # EXIT
            return reg[0]
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
        assert 0 <= pc < len(code), "jumped out of the program"
    raise AssertionError("the program does not terminate")


def allowed(rules, kind: str, access: str, major: int, minor: int) -> bool:
    """The rules read plainly: some rule of that type and numbers grants every access asked."""
    return any(
        k in (kind, "a") and (ma is None or ma == major) and (mi is None or mi == minor) and set(access) <= set(acc)
        for k, ma, mi, acc in rules
    )


KIND_BITS = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}
ACCESS = {"r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE, "m": BPF_DEVCG_ACC_MKNOD}


@pytest.mark.parametrize(
    "rules", [DEFAULT_RULES, DEFAULT_RULES + (("b", 7, 0, "rw"), ("c", 10, 237, "r")), (("c", 4, None, "w"),), ()]
)
def test_program_allows_exactly_the_rules(rules):
    code = devicefilter.program(rules)
    cases = 0
    for kind in "cb":
        for major, minor in [
            (1, 3),
            (1, 11),
            (1, 7),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 0),
            (136, 7),
            (10, 200),
            (10, 237),
            (7, 0),
            (7, 1),
            (8, 0),
            (4, 1),
            (4, 64),
        ]:
            for access in ("r", "w", "m", "rw", "rm", "wm", "rwm"):
                bits = 0
                for a in access:
                    bits |= ACCESS[a]
                got = run(code, KIND_BITS[kind], bits, major, minor)
                assert got == int(allowed(rules, kind, access, major, minor)), (kind, major, minor, access)
                cases += 1
    assert cases == 2 * 15 * 7


def test_program_shape():
    code = devicefilter.program(DEFAULT_RULES)
    assert code[:6] == list(devicefilter.PROLOGUE)
    assert code[-2:] == [(0xB4, 0, 0, 0, 0), (0x95, 0, 0, 0, 0)]  # nothing matched: deny
    raw = devicefilter.encode(code)
    assert len(raw) == 8 * len(code)
    assert raw[:8] == bytes([0x61, 0x12, 0, 0, 0, 0, 0, 0])  # r2 = *(u32 *)(r1 + 0)
    with pytest.raises(ValueError):
        devicefilter.program(ALLOW_ALL)
