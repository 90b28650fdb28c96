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
* **cgroup v2** has no such files: the rules become a small eBPF program of
  type ``BPF_PROG_TYPE_CGROUP_DEVICE``, loaded with ``bpf(BPF_PROG_LOAD)`` and
  attached to the cgroup directory with ``bpf(BPF_PROG_ATTACH)``. The kernel
  runs it on every device access of a process in that cgroup, with a
  ``struct bpf_cgroup_dev_ctx`` (type and access, major, minor) as input, and
  allows the access when it returns 1. crun and runc assemble that program
  themselves; so does :func:`program` here, instruction by instruction.

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
    ("c", None, None, "m"),   # mknod of any character device ...
    ("b", None, None, "m"),   # ... and any block device: opening them is what is checked
    ("c", 1, 3, "rwm"),       # /dev/null
    ("c", 1, 8, "rwm"),       # /dev/random
    ("c", 1, 7, "rwm"),       # /dev/full
    ("c", 5, 0, "rwm"),       # /dev/tty
    ("c", 1, 5, "rwm"),       # /dev/zero
    ("c", 1, 9, "rwm"),       # /dev/urandom
    ("c", 136, None, "rwm"),  # /dev/pts/*: the container's own pseudo-terminals
    ("c", 5, 2, "rwm"),       # /dev/ptmx
    ("c", 10, 200, "rwm"),    # /dev/net/tun
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
        raise DeviceError(f"error gathering device information while adding custom device "
                          f"{path!r}: {e.strerror.lower()}") from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise DeviceError(f"error gathering device information while adding custom device "
                          f"{path!r}: not a device node")
    return (kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode),
            st.st_uid, st.st_gid)


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


# --- the cgroup v2 program ------------------------------------------------------------

# <linux/bpf.h>: struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; },
# access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*.
BPF_DEVCG_ACC_MKNOD = 1 << 0
BPF_DEVCG_ACC_READ = 1 << 1
BPF_DEVCG_ACC_WRITE = 1 << 2
BPF_DEVCG_DEV_BLOCK = 1 << 0
BPF_DEVCG_DEV_CHAR = 1 << 1

# <linux/bpf_common.h>, <linux/bpf.h>: the opcode byte is class | operation | source.
BPF_LDX, BPF_ALU, BPF_JMP = 0x01, 0x04, 0x05        # instruction classes
BPF_W, BPF_MEM = 0x00, 0x60                          # load size (32 bits), addressing mode
BPF_K, BPF_X = 0x00, 0x08                            # operand: immediate or register
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0         # ALU operations (32-bit class)
BPF_JNE, BPF_EXIT = 0x50, 0x90                       # jump if not equal; return r0

ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
TYPE_BITS = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> tuple:
    """One ``struct bpf_insn``: opcode, two 4-bit register numbers, a jump offset, an immediate."""
    return (code, dst, src, off, imm)


# The prologue: unpack the context (pointed to by r1) into r2..r5.
PROLOGUE = (
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=2, src=1, off=0),   # r2 = ctx->access_type
    insn(BPF_ALU | BPF_AND | BPF_K, dst=2, imm=0xFFFF),     # r2 &= 0xffff: device type
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=3, src=1, off=0),   # r3 = ctx->access_type
    insn(BPF_ALU | BPF_RSH | BPF_K, dst=3, imm=16),         # r3 >>= 16: requested access
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=4, src=1, off=4),   # r4 = ctx->major
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=5, src=1, off=8),   # r5 = ctx->minor
)


def _block(rule: Rule) -> list[tuple]:
    """The checks of one allow rule; each failed check jumps past the block (to the next).

    The jump offsets are filled in as "to the end of this block": a JNE whose
    offset is None is patched by :func:`program`.
    """
    kind, major, minor, access = rule
    code = []
    code.append(insn(BPF_JMP | BPF_JNE | BPF_K, dst=2, off=None, imm=TYPE_BITS[kind]))
    bits = 0
    for letter in access:
        bits |= ACCESS_BITS[letter]
    if bits != BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE:
        # the request must be a subset of the allowed access: (r3 & bits) == r3
        code.append(insn(BPF_ALU | BPF_MOV | BPF_X, dst=1, src=3))   # r1 = r3 (ctx no longer needed)
        code.append(insn(BPF_ALU | BPF_AND | BPF_K, dst=1, imm=bits))
        code.append(insn(BPF_JMP | BPF_JNE | BPF_X, dst=1, src=3, off=None))
    if major is not None:
        code.append(insn(BPF_JMP | BPF_JNE | BPF_K, dst=4, off=None, imm=major))
    if minor is not None:
        code.append(insn(BPF_JMP | BPF_JNE | BPF_K, dst=5, off=None, imm=minor))
    code.append(insn(BPF_ALU | BPF_MOV | BPF_K, dst=0, imm=1))  # every check passed: allow
    code.append(insn(BPF_JMP | BPF_EXIT))
    return code


def program(rules: tuple[Rule, ...]) -> list[tuple]:
    """The eBPF instructions that allow exactly ``rules`` (an allow-list; the rest is denied)."""
    code = list(PROLOGUE)
    for rule in rules:
        if rule[0] == "a":
            raise ValueError("an 'a' rule allows everything: attach no program instead")
        block = _block(rule)
        for i, (op, dst, src, off, imm) in enumerate(block):
            if off is None:  # jump to the instruction after the block
                block[i] = (op, dst, src, len(block) - i - 1, imm)
        code += block
    code.append(insn(BPF_ALU | BPF_MOV | BPF_K, dst=0, imm=0))  # no rule matched: deny
    code.append(insn(BPF_JMP | BPF_EXIT))
    return code


def encode(code: list[tuple]) -> bytes:
    """The instructions as the kernel reads them (``struct bpf_insn``, 8 bytes each)."""
    import struct

    return b"".join(struct.pack("<BBhi", op, dst | (src << 4), off, imm)
                    for op, dst, src, off, imm in code)


def attach(cgroup_dir: str, rules: tuple[Rule, ...]) -> None:
    """Load the program of ``rules`` and attach it to a cgroup v2 directory.

    Once attached, the program lives as long as the cgroup: the file
    descriptors can be closed. ``BPF_F_ALLOW_MULTI`` (as runc) lets programs
    above and below coexist; every one of them must allow an access. A
    container without ``CAP_SYS_ADMIN`` cannot detach it. Allow-all
    (``--privileged``) attaches nothing.
    """
    if rules == ALLOW_ALL:
        return
    from . import libc

    # The license tells the kernel whether GPL-only helpers may be called;
    # this program calls no helper at all. "GPL" as crun.
    prog = libc.bpf_prog_load(libc.BPF_PROG_TYPE_CGROUP_DEVICE, encode(program(rules)),
                              "GPL", "cocin_devices", log_size=1 << 16)
    try:
        target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            libc.bpf_prog_attach(target, prog, libc.BPF_CGROUP_DEVICE, libc.BPF_F_ALLOW_MULTI)
        finally:
            os.close(target)
    finally:
        os.close(prog)
