"""Compile a seccomp profile (Docker's JSON format) to a classic BPF program.

A seccomp filter is a small program the kernel runs on *every* system call
the process makes, before the call does anything. Its input is
``struct seccomp_data`` (``<linux/seccomp.h>``)::

    offset 0   u32 nr                   the system call number
    offset 4   u32 arch                 AUDIT_ARCH_* of the calling convention
    offset 8   u64 instruction_pointer
    offset 16  u64 args[6]              the six argument registers

and its output a 32-bit verdict: ``SECCOMP_RET_ALLOW``, ``SECCOMP_RET_ERRNO |
errno`` (the call returns -1 with that errno without running),
``SECCOMP_RET_KILL_PROCESS``, ``SECCOMP_RET_TRAP`` (SIGSYS), ``SECCOMP_RET_LOG``...
The language is *classic* BPF (``<linux/filter.h>``): one 32-bit accumulator
``A``, loads from the input (``ld [off]``), ``and``, forward-only conditional
jumps whose offsets are 8 bits (``jeq k, jt, jf``; at most 255 instructions
ahead), ``ja`` with a 32-bit offset, and ``ret``. No loops, at most 4096
instructions. Each instruction is ``struct sock_filter {u16 code; u8 jt; u8 jf;
u32 k;}``, 8 bytes in native byte order.

The program this module emits, per allowed architecture:

1. ``ld [4]`` and compare with each allowed ``AUDIT_ARCH_*``; any other
   architecture (a 32-bit ARM binary on aarch64, say) is killed: the same
   number means a different call there. On x86_64 the x32 ABI shares
   ``AUDIT_ARCH_X86_64`` and marks its numbers with bit 30 (``0x40000000``):
   those are killed too (Docker lists x32 as a sub-architecture; cocin refuses
   it, as most kernels do at boot).
2. ``ld [0]`` and a *binary search* on the number: the whole 32-bit range is
   cut into intervals with one outcome each (consecutive allowed numbers merge
   into one interval, gaps get the default action), and ``jge`` instructions
   pick the interval in ~log2(n) steps instead of a chain of hundreds of
   ``jeq``. Where the code to skip is longer than 255 instructions, a ``jge``
   falls into a ``ja`` (32-bit offset) instead.
3. At the interval: the rules with argument conditions, in profile order,
   each ``ret``-ing its action when all its conditions hold; then the rule
   without conditions, or the default action. A 64-bit argument is compared
   as two 32-bit halves (high word first), as libseccomp does; on i386 the
   high half is the constant 0.
4. Numbers above the largest one the profile names get ``ENOSYS`` rather than
   the default ``EPERM``, as runc's "-ENOSYS stub" does: a C library probing a
   system call newer than the profile then falls back to the older one. Number
   -1 (``0xffffffff``, a tracer skipping a call) gets the default action on
   x86_64, as with libseccomp.

Docker's profile format: ``defaultAction`` (+ ``defaultErrnoRet``),
``architectures`` or ``archMap``, and ``syscalls``: rules of ``names``,
``action`` (+ ``errnoRet``), ``args`` (``index``, ``value``, ``valueTwo``,
``op``) and ``includes``/``excludes`` on ``caps``, ``arches`` (Go's names:
amd64, arm64, x86...) and ``minKernel``, which Docker (not libseccomp)
evaluates against the container's capabilities, the machine and the kernel.
Names a table does not know are skipped, as libseccomp does. Where one system
call has a rule without conditions, that rule wins over rules with conditions
(libseccomp keeps the shorter rule); otherwise the first matching rule wins.
"""

from __future__ import annotations

import json
import struct
import sys

from . import syscalls
from .seccomp import ProfileError

# <linux/seccomp.h>
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_KILL_THREAD = 0x00000000
SECCOMP_RET_TRAP = 0x00030000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_TRACE = 0x7FF00000
SECCOMP_RET_LOG = 0x7FFC0000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_DATA = 0x0000FFFF

# <linux/audit.h>
AUDIT_ARCH_X86_64 = 62 | 0x80000000 | 0x40000000  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_I386 = 3 | 0x40000000  # EM_386 | __AUDIT_ARCH_LE
AUDIT_ARCH_AARCH64 = 183 | 0x80000000 | 0x40000000  # EM_AARCH64 | ...
X32_SYSCALL_BIT = 0x40000000  # <asm/unistd.h>: __X32_SYSCALL_BIT

# <linux/bpf_common.h>: instruction classes, sizes, modes and operations.
BPF_LD, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x04, 0x05, 0x06
BPF_W = 0x00
BPF_IMM, BPF_ABS = 0x00, 0x20
BPF_AND = 0x50
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_K = 0x00
BPF_MAXINSNS = 4096

ENOSYS, EPERM = 38, 1

# The offsets in struct seccomp_data (little-endian: the low half of an argument first).
_NR, _ARCH = 0, 4


def _arg_lo(i: int) -> int:
    return 16 + 8 * i


def _arg_hi(i: int) -> int:
    return 16 + 8 * i + 4


ACTIONS = {
    "SCMP_ACT_KILL": SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": SECCOMP_RET_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": SECCOMP_RET_KILL_PROCESS,
    "SCMP_ACT_TRAP": SECCOMP_RET_TRAP,
    "SCMP_ACT_ERRNO": SECCOMP_RET_ERRNO,
    "SCMP_ACT_TRACE": SECCOMP_RET_TRACE,
    "SCMP_ACT_LOG": SECCOMP_RET_LOG,
    "SCMP_ACT_ALLOW": SECCOMP_RET_ALLOW,
}
OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")
SCMP_ARCHES = {
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
}


class Machine:
    """What the filter is compiled for: ``uname -m``, Go's name for it (Docker's
    ``arches``), the native ABI and the sub-architectures cocin has tables for."""

    def __init__(self, uname_m: str):
        if uname_m == "x86_64":
            self.goarch, self.native = "amd64", "SCMP_ARCH_X86_64"
            # SCMP_ARCH_X32 is refused on purpose (see the module docstring).
            self.abis = {
                "SCMP_ARCH_X86_64": (AUDIT_ARCH_X86_64, syscalls.X86_64, 64),
                "SCMP_ARCH_X86": (AUDIT_ARCH_I386, syscalls.I386, 32),
            }
        elif uname_m in ("aarch64", "arm64"):
            # No 32-bit ARM table: 32-bit ARM binaries are refused.
            self.goarch, self.native = "arm64", "SCMP_ARCH_AARCH64"
            self.abis = {"SCMP_ARCH_AARCH64": (AUDIT_ARCH_AARCH64, syscalls.AARCH64, 64)}
        else:
            raise ProfileError(f"seccomp: unsupported architecture {uname_m}")


# --- reading and checking a profile ----------------------------------------------------


def parse(text: str) -> dict:
    try:
        profile = json.loads(text)
    except ValueError as e:
        raise ProfileError(f"decoding seccomp profile failed: {e}") from None
    if not isinstance(profile, dict):
        raise ProfileError("decoding seccomp profile failed: not a JSON object")
    for key in ("flags", "listenerPath"):
        if profile.get(key):
            raise ProfileError(f"seccomp profile: {key!r} is not supported by cocin")
    if profile.get("architectures") and profile.get("archMap"):
        raise ProfileError(
            "'architectures' and 'archMap' were specified in the seccomp profile, "
            "use either 'architectures' or 'archMap'"
        )
    _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), "defaultAction")
    arches = list(_list(profile, "architectures", "seccomp profile"))
    for entry in _list(profile, "archMap", "seccomp profile", dict):
        arches.append(entry.get("architecture"))
        arches += _list(entry, "subArchitectures", "seccomp profile: archMap")
    for arch in arches:
        if not isinstance(arch, str) or arch not in SCMP_ARCHES:
            raise ProfileError(f"seccomp profile: unknown architecture {arch!r}")
    syscalls_ = profile.get("syscalls") or []
    if not isinstance(syscalls_, list):
        raise ProfileError("seccomp profile: 'syscalls' must be a list")
    for n, rule in enumerate(syscalls_):
        _check_rule(rule, f"seccomp profile: syscalls[{n}]")
    return profile


def _list(obj: dict, key: str, where: str, kind: type = str) -> list:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
        raise ProfileError(f"{where}: {key!r} must be a list of {'strings' if kind is str else 'objects'}")
    return value


def _int(value, what: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ProfileError(f"{what}: {value!r} is not an integer in 0..{(1 << bits) - 1}")
    return value


def _action(name, errno_ret, where: str) -> int:
    """The SECCOMP_RET_* value of an action name (with its errno for ERRNO, TRACE)."""
    if name == "SCMP_ACT_NOTIFY":
        raise ProfileError(f"{where}: SCMP_ACT_NOTIFY is not supported by cocin")
    if not isinstance(name, str) or name not in ACTIONS:
        raise ProfileError(f"{where}: unknown action {name!r}")
    ret = ACTIONS[name]
    if ret in (SECCOMP_RET_ERRNO, SECCOMP_RET_TRACE):
        data = EPERM if errno_ret is None else _int(errno_ret, f"{where}: errnoRet", 16)
        return ret | (data & SECCOMP_RET_DATA)
    if errno_ret is not None:
        raise ProfileError(f"{where}: errnoRet is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE")
    return ret


def _kernel(text, where: str) -> tuple[int, int]:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        raise ProfileError(f"{where}: invalid minKernel {text!r} (want MAJOR.MINOR)") from None


def _check_rule(rule, where: str) -> None:
    if not isinstance(rule, dict):
        raise ProfileError(f"{where}: not an object")
    if rule.get("name") and rule.get("names"):
        raise ProfileError(f"{where}: use either 'name' or 'names'")
    _list(rule, "names", where)
    if not isinstance(rule.get("name") or "", str):
        raise ProfileError(f"{where}: 'name' must be a string")
    _action(rule.get("action"), rule.get("errnoRet"), where)
    for arg in _list(rule, "args", where, dict):
        _int(arg.get("index"), f"{where}: argument index", 3)
        if arg["index"] > 5:
            raise ProfileError(f"{where}: argument index {arg['index']} is out of range 0..5")
        if not isinstance(arg.get("op"), str) or arg["op"] not in OPS:
            raise ProfileError(f"{where}: unknown operator {arg.get('op')!r}")
        _int(arg.get("value", 0), f"{where}: value", 64)
        _int(arg.get("valueTwo", 0), f"{where}: valueTwo", 64)
    for which in ("includes", "excludes"):
        cond = rule.get(which) or {}
        if not isinstance(cond, dict):
            raise ProfileError(f"{where}: {which!r} must be an object")
        _list(cond, "caps", f"{where}.{which}")
        _list(cond, "arches", f"{where}.{which}")
        if cond.get("minKernel"):
            _kernel(cond["minKernel"], f"{where}.{which}")


# --- which rules apply to this container (Docker's part) ------------------------------


def _cap(name: str) -> str:
    name = name.upper()
    return name[4:] if name.startswith("CAP_") else name


def applies(rule: dict, caps: set[str], goarch: str, kernel: tuple[int, int]) -> bool:
    """Docker's includes/excludes: a rule is kept when every included cap is
    held, the machine is an included arch and the kernel new enough, and no
    excluded cap is held, nor the machine excluded, nor the kernel too new."""
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if exc.get("arches") and goarch in exc["arches"]:
        return False
    if any(_cap(c) in caps for c in exc.get("caps") or ()):
        return False
    if exc.get("minKernel") and kernel >= _kernel(exc["minKernel"], "excludes"):
        return False
    if inc.get("arches") and goarch not in inc["arches"]:
        return False
    if not all(_cap(c) in caps for c in inc.get("caps") or ()):
        return False
    return not (inc.get("minKernel") and kernel < _kernel(inc["minKernel"], "includes"))


def abis(profile: dict, machine: Machine) -> list[str]:
    """The ABIs the filter lets through: the native one, plus the sub-architectures
    the profile allows (``architectures``, or ``archMap`` for the native arch)
    that cocin has a table for."""
    wanted = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == machine.native:
            wanted += [entry["architecture"]] + list(entry.get("subArchitectures") or [])
    return [machine.native] + [a for a in machine.abis if a in wanted and a != machine.native]


# --- code generation ----------------------------------------------------------------


def stmt(code: int, k: int) -> tuple:
    return (code, 0, 0, k)


def jump(op: int, k: int, jt: int, jf: int) -> tuple:
    return (BPF_JMP | op | BPF_K, jt, jf, k)


def ret(k: int) -> tuple:
    return stmt(BPF_RET | BPF_K, k)


def ld_abs(offset: int) -> tuple:
    return stmt(BPF_LD | BPF_W | BPF_ABS, offset)


def _load_half(index: int, high: bool, bits: int) -> list:
    if high and bits == 32:
        return [stmt(BPF_LD | BPF_W | BPF_IMM, 0)]  # a 32-bit ABI has no high half
    return [ld_abs(_arg_hi(index) if high else _arg_lo(index))]


def condition(arg: dict, bits: int) -> list:
    """Code that falls through when the condition holds and jumps to the label
    "fail" (symbolic, resolved by the caller) when it does not."""
    i, op = arg["index"], arg["op"]
    value, two = arg.get("value", 0), arg.get("valueTwo", 0)
    hi, lo = value >> 32, value & 0xFFFFFFFF
    code: list = []
    if op == "SCMP_CMP_MASKED_EQ":  # (arg & value) == valueTwo
        for high, mask, want in ((True, hi, two >> 32), (False, lo, two & 0xFFFFFFFF)):
            code += _load_half(i, high, bits)
            code += [stmt(BPF_ALU | BPF_AND | BPF_K, mask), ("jeq", want, 0, "fail")]
        return code
    code += _load_half(i, True, bits)
    if op == "SCMP_CMP_EQ":
        code += [("jeq", hi, 0, "fail")] + _load_half(i, False, bits) + [("jeq", lo, 0, "fail")]
    elif op == "SCMP_CMP_NE":  # high halves differ: holds; else compare the low halves
        code += [("jeq", hi, 0, "pass")] + _load_half(i, False, bits) + [("jeq", lo, "fail", 0)]
    elif op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):
        low = "jgt" if op == "SCMP_CMP_GT" else "jge"
        code += [("jgt", hi, "pass", 0), ("jeq", hi, 0, "fail")] + _load_half(i, False, bits)
        code += [(low, lo, 0, "fail")]
    else:  # SCMP_CMP_LT, SCMP_CMP_LE: the same with the outcomes swapped
        low = "jge" if op == "SCMP_CMP_LT" else "jgt"
        code += [("jgt", hi, "fail", 0), ("jeq", hi, 0, "pass")] + _load_half(i, False, bits)
        code += [(low, lo, "fail", 0)]
    return code


_JUMP_OPS = {"jeq": BPF_JEQ, "jgt": BPF_JGT, "jge": BPF_JGE}


def rule_code(conds: list, action: int, bits: int) -> list:
    """All conditions hold -> ``ret action``; any fails -> fall past the ``ret``."""
    parts = [condition(c, bits) for c in conds]
    rest = sum(len(p) for p in parts)
    out: list = []
    for part in parts:
        rest -= len(part)
        out += _resolve_with_tail(part, rest)
    return out + [ret(action)]


def _resolve_with_tail(part: list, tail: int) -> list:
    """Resolve "pass" to the end of this condition and "fail" to after the
    rule's ``ret`` (``tail`` more condition instructions, then the ret)."""
    out = []
    for pos, insn in enumerate(part):
        if isinstance(insn[0], str):
            op, k, jt, jf = insn
            to_end = len(part) - pos - 1
            offs = [to_end if t == "pass" else to_end + tail + 1 if t == "fail" else t for t in (jt, jf)]
            out.append(jump(_JUMP_OPS[op], k, *offs))
        else:
            out.append(insn)
    return out


def body(rules: list, default: int, bits: int) -> list:
    """The code for one system call: its conditional rules, then its action."""
    code: list = []
    for conds, action in rules:
        if not conds:
            return code + [ret(action)]
        code += rule_code(conds, action, bits)
    return code + [ret(default)]


def search(intervals: list) -> list:
    """Binary search over ``[(start, code), ...]`` (sorted, covering 0..2^32-1)."""
    if len(intervals) == 1:
        return list(intervals[0][1])
    mid = len(intervals) // 2
    left, right = search(intervals[:mid]), search(intervals[mid:])
    if len(left) <= 255:
        return [jump(BPF_JGE, intervals[mid][0], len(left), 0)] + left + right
    return [jump(BPF_JGE, intervals[mid][0], 0, 1), stmt(BPF_JMP | BPF_JA, len(left))] + left + right


def abi_block(rules: list, table: dict, bits: int, default: int, x32_check: bool, enosys: bool) -> list:
    """The code for one ABI, entered with anything in A: load nr, search, act."""
    per_nr: dict[int, list] = {}
    last = -1  # the largest number the profile names (runc counts the no-op rules too)
    for names, conds, action in rules:
        for name in names:
            nr = table.get(name)
            if nr is None:
                continue  # unknown to this architecture: skipped, as libseccomp does
            last = max(last, nr)
            if action == default:
                continue  # a no-op: runc drops these rules
            entry = per_nr.setdefault(nr, [])
            if any(not c for c, _ in entry):
                continue  # an unconditional rule is already there: it wins
            if not conds:
                entry[:] = [([], action)]  # and replaces the conditional ones
            else:
                entry.append((conds, action))
    bodies = {nr: tuple(body(rs, default, bits)) for nr, rs in per_nr.items()}
    default_body = (ret(default),)
    intervals: list = []

    def add(start: int, code: tuple) -> None:
        if intervals and intervals[-1][1] == code:
            return  # the same outcome as the interval before: extend it
        intervals.append((start, code))

    add(0, bodies.get(0, default_body))
    for nr in range(1, last + 1):
        add(nr, bodies.get(nr, default_body))
    if last + 1 < X32_SYSCALL_BIT or not x32_check:
        add(last + 1, (ret(SECCOMP_RET_ERRNO | ENOSYS),) if enosys else default_body)
    if x32_check:
        add(X32_SYSCALL_BIT, (ret(SECCOMP_RET_KILL_PROCESS),))
        add(0xFFFFFFFF, default_body)  # nr -1 (a tracer skipping a call): libseccomp lets it through
    return [ld_abs(_NR)] + search(intervals)


def select(profile: dict, caps: set[str], goarch: str, kernel: tuple[int, int]) -> list:
    """The profile's rules that apply here: [(names, conditions, SECCOMP_RET_*)]."""
    out = []
    for rule in profile.get("syscalls") or []:
        if not applies(rule, caps, goarch, kernel):
            continue
        action = _action(rule["action"], rule.get("errnoRet"), "rule")
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        out.append((names, list(rule.get("args") or []), action))
    return out


def compile_profile(profile: dict, caps, uname_m: str, kernel: tuple[int, int]) -> bytes:
    """The BPF program (raw ``struct sock_filter`` array) for a parsed profile."""
    machine = Machine(uname_m)
    caps = {_cap(c) for c in caps}
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"), "defaultAction")
    rules = select(profile, caps, machine.goarch, kernel)
    # runc's -ENOSYS stub: not for permissive defaults, nor when the default is ENOSYS already.
    enosys = (
        default & 0xFFFF0000 not in (SECCOMP_RET_ALLOW, SECCOMP_RET_LOG, SECCOMP_RET_TRACE)
        and default != SECCOMP_RET_ERRNO | ENOSYS
    )
    names = abis(profile, machine)
    blocks = []
    for name in names:
        audit, table, bits = machine.abis[name]
        blocks.append(abi_block(rules, table, bits, default, audit == AUDIT_ARCH_X86_64, enosys))
    # The dispatcher: ld arch; for each ABI "jeq arch, 0, 1; ja block"; else kill.
    head_len = 1 + 2 * len(blocks) + 1
    code = [ld_abs(_ARCH)]
    offset = 0  # from the end of the head to the start of the block
    for n, name in enumerate(names):
        code.append(jump(BPF_JEQ, machine.abis[name][0], 0, 1))
        after_ja = len(code) + 1
        code.append(stmt(BPF_JMP | BPF_JA, head_len - after_ja + offset))
        offset += len(blocks[n])
    code.append(ret(SECCOMP_RET_KILL_PROCESS))
    for block in blocks:
        code += block
    if len(code) > BPF_MAXINSNS:
        raise ProfileError(
            f"seccomp profile: the filter needs {len(code)} instructions, more than the kernel's {BPF_MAXINSNS}"
        )
    if sys.byteorder != "little":
        raise ProfileError("seccomp: big-endian machines are not supported")
    return b"".join(struct.pack("=HBBI", *insn) for insn in code)


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of ``uname -r`` (``6.1.0-18-amd64`` -> (6, 1))."""
    parts = release.split(".")
    digits = [int("".join(ch for ch in p[:3] if ch.isdigit()) or 0) for p in parts[:2]]
    return (digits + [0, 0])[0], (digits + [0, 0])[1]


def compile_text(text: str, caps, uname_m: str, release: str) -> bytes:
    return compile_profile(parse(text), caps, uname_m, kernel_version(release))
