"""The device rules on cgroup v2: an eBPF program, assembled here, instruction by instruction.

cgroup v2 has no ``devices.allow`` file. Instead, a program of type
``BPF_PROG_TYPE_CGROUP_DEVICE`` is loaded with ``bpf(BPF_PROG_LOAD)`` (the
kernel's *verifier* first proves it safe: it terminates, reads only its
input) and attached to the cgroup directory with ``bpf(BPF_PROG_ATTACH)``.
The kernel runs it on every mknod and open of a device node by a process of
that cgroup (or of a cgroup below), with a ``struct bpf_cgroup_dev_ctx``
(type and access, major, minor) as input, and allows the access when it
returns 1. crun and runc assemble this program themselves; so does
:func:`program`, from the same rules the v1 controller takes (cocin/devices.py).

eBPF in brief: eleven 64-bit registers, ``r1`` points at the input when the
program starts, ``r0`` is the result at ``exit``; every instruction is 8
bytes (opcode, two register numbers, a 16-bit jump offset, a 32-bit
immediate). Only on a v2 host is this module imported.
"""

from __future__ import annotations

import errno
import os

from .devices import ALLOW_ALL, Rule

# <linux/bpf.h>: struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; },
# access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*.
BPF_DEVCG_ACC_MKNOD = 1 << 0
BPF_DEVCG_ACC_READ = 1 << 1
BPF_DEVCG_ACC_WRITE = 1 << 2
BPF_DEVCG_DEV_BLOCK = 1 << 0
BPF_DEVCG_DEV_CHAR = 1 << 1

# <linux/bpf_common.h>, <linux/bpf.h>: the opcode byte is class | operation | source.
BPF_LDX, BPF_ALU, BPF_JMP = 0x01, 0x04, 0x05  # instruction classes
BPF_W, BPF_MEM = 0x00, 0x60  # load size (32 bits), addressing mode
BPF_K, BPF_X = 0x00, 0x08  # operand: immediate or register
BPF_AND, BPF_RSH, BPF_MOV = 0x50, 0x70, 0xB0  # ALU operations (32-bit class)
BPF_JNE, BPF_EXIT = 0x50, 0x90  # jump if not equal; return r0

ACCESS_BITS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
TYPE_BITS = {"b": BPF_DEVCG_DEV_BLOCK, "c": BPF_DEVCG_DEV_CHAR}


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> tuple:
    """One ``struct bpf_insn``: opcode, two 4-bit register numbers, a jump offset, an immediate."""
    return (code, dst, src, off, imm)


# The prologue: unpack the context (pointed to by r1) into r2..r5.
PROLOGUE = (
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=2, src=1, off=0),  # r2 = ctx->access_type
    insn(BPF_ALU | BPF_AND | BPF_K, dst=2, imm=0xFFFF),  # r2 &= 0xffff: device type
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=3, src=1, off=0),  # r3 = ctx->access_type
    insn(BPF_ALU | BPF_RSH | BPF_K, dst=3, imm=16),  # r3 >>= 16: requested access
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=4, src=1, off=4),  # r4 = ctx->major
    insn(BPF_LDX | BPF_MEM | BPF_W, dst=5, src=1, off=8),  # r5 = ctx->minor
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
        code.append(insn(BPF_ALU | BPF_MOV | BPF_X, dst=1, src=3))  # r1 = r3 (ctx no longer needed)
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
    """The instructions as the kernel reads them (``struct bpf_insn``, 8 bytes each).

    Little-endian, as on x86_64 and aarch64: there the 4-bit ``dst_reg`` is
    the low half of the second byte.
    """
    import struct

    return b"".join(struct.pack("<BBhi", op, dst | (src << 4), off, imm) for op, dst, src, off, imm in code)


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
    code = encode(program(rules))
    try:
        prog = libc.bpf_prog_load(libc.BPF_PROG_TYPE_CGROUP_DEVICE, code, "GPL", "cocin_devices")
    except OSError as e:
        if e.errno != errno.EACCES and e.errno != errno.EINVAL:
            raise
        # refused by the verifier: load again with its log, for the message
        prog = libc.bpf_prog_load(libc.BPF_PROG_TYPE_CGROUP_DEVICE, code, "GPL", "cocin_devices", log_size=1 << 16)
    try:
        target = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            libc.bpf_prog_attach(target, prog, libc.BPF_CGROUP_DEVICE, libc.BPF_F_ALLOW_MULTI)
        finally:
            os.close(target)
    finally:
        os.close(prog)
