#!/usr/bin/env python3
"""Generate cocin/syscalls.py, the syscall-number tables, from the kernel's UAPI headers.

A seccomp filter sees a system call as a number (``seccomp_data.nr``), and the
numbers differ per architecture: ``read`` is 0 on x86_64, 3 on i386 and 63 on
aarch64. A profile names system calls, so the compiler needs one name->number
table per architecture. This script reads them from the headers that
``linux-libc-dev`` installs:

* x86_64: ``asm/unistd_64.h``, plain ``#define __NR_name N`` lines;
* i386:   ``asm/unistd_32.h``, the same format (the 32-bit compat entry of an
  x86_64 kernel, which Docker's profile allows as a sub-architecture);
* aarch64: ``asm-generic/unistd.h``, the table shared by the newer
  architectures. It is not a flat list: entries sit under ``#if``s on
  ``__ARCH_WANT_*`` switches the architecture defines before including it
  (arm64's ``uapi/asm/unistd.h`` defines the six in ``AARCH64_WANTS``) and on
  ``__BITS_PER_LONG``; and some numbers are written ``__NR3264_name``, which the
  end of the file maps to the 64-bit name (``__NR_fcntl``) or to the 32-bit one
  (``__NR_fcntl64``). A tiny preprocessor below evaluates exactly those.

Usage: ``python3 scripts/gen_syscalls.py [--include DIR] [-o FILE]`` (defaults:
/usr/include and cocin/syscalls.py). ``--check`` compares instead of writing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "cocin", "syscalls.py")

# arm64's arch/arm64/include/uapi/asm/unistd.h, before it includes asm-generic/unistd.h.
AARCH64_WANTS = (
    "__ARCH_WANT_RENAMEAT",
    "__ARCH_WANT_NEW_STAT",
    "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS",
    "__ARCH_WANT_SYS_CLONE3",
    "__ARCH_WANT_MEMFD_SECRET",
)

_DEFINE = re.compile(r"#define\s+(__NR3264_\w+|__NR_\w+)\s+(\w+)\s*$")


def parse_flat(text: str) -> dict[str, int]:
    """``#define __NR_name N`` lines (unistd_64.h, unistd_32.h)."""
    table = {}
    for line in text.splitlines():
        m = _DEFINE.match(line.strip())
        if m and m.group(1).startswith("__NR_") and m.group(2).isdigit():
            table[m.group(1)[len("__NR_") :]] = int(m.group(2))
    return table


_TOKEN = re.compile(r"\s*(defined\s*\(\s*\w+\s*\)|defined\s+\w+|__BITS_PER_LONG|\d+|==|!=|&&|\|\||!|\(|\))")


def _condition(expr: str, defined: set[str], bits: int) -> bool:
    """Evaluate an ``#if`` expression of the forms asm-generic/unistd.h uses:
    ``defined(X)``, ``__BITS_PER_LONG == 32``, ``!``, ``&&``, ``||``, parentheses."""
    expr = expr.split("/*")[0].strip()
    words, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"unsupported #if expression: {expr!r}")
        tok, pos = m.group(1), m.end()
        if tok.startswith("defined"):
            name = tok[len("defined") :].strip(" ()")
            words.append(str(name in defined))
        else:
            words.append({"__BITS_PER_LONG": str(bits), "&&": "and", "||": "or", "!": "not"}.get(tok, tok))
    return bool(eval(" ".join(words), {"__builtins__": {}}))  # only literals and operators


def parse_generic(text: str, wants: tuple[str, ...], bits: int = 64) -> dict[str, int]:
    """asm-generic/unistd.h, preprocessed for an architecture's ``__ARCH_WANT_*`` set."""
    defined = set(wants)
    values: dict[str, str] = {}
    stack: list[tuple[bool, bool]] = []  # (this branch active, some branch of this #if taken)
    active = True
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            word, _, rest = line[1:].strip().partition(" ")
            rest = rest.strip()
            if word in ("if", "ifdef", "ifndef"):
                if word == "if":
                    cond = _condition(rest, defined, bits)
                else:
                    cond = (rest.split()[0] in defined) == (word == "ifdef")
                stack.append((active, cond))
                active = active and cond
                continue
            if word == "else":
                outer, taken = stack[-1]
                active = outer and not taken
                continue
            if word == "endif":
                active = stack.pop()[0]
                continue
            if not active:
                continue
            if word == "define":
                name, _, value = rest.partition(" ")
                defined.add(name)
                values[name] = value.strip()
            elif word == "undef":
                defined.discard(rest)
                values.pop(rest, None)
    table = {}
    for name, value in values.items():
        if not name.startswith("__NR_") or name in ("__NR_syscalls", "__NR_arch_specific_syscall"):
            continue  # a count and the start of a range of numbers, not system calls
        while value in values:  # __NR_fcntl -> __NR3264_fcntl -> 25
            value = values[value]
        if value.isdigit():
            table[name[len("__NR_") :]] = int(value)
    return table


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def tables(include: str) -> dict[str, dict[str, int]]:
    asm = os.path.join(include, "x86_64-linux-gnu", "asm")
    if not os.path.isdir(asm):
        asm = os.path.join(include, "asm")
    return {
        "X86_64": parse_flat(read(os.path.join(asm, "unistd_64.h"))),
        "I386": parse_flat(read(os.path.join(asm, "unistd_32.h"))),
        "AARCH64": parse_generic(read(os.path.join(include, "asm-generic", "unistd.h")), AARCH64_WANTS),
    }


def render(all_tables: dict[str, dict[str, int]]) -> str:
    out = [
        '"""System call numbers per architecture (generated by scripts/gen_syscalls.py; do not edit).',
        "",
        "From the kernel UAPI headers: asm/unistd_64.h (X86_64), asm/unistd_32.h (I386),",
        "asm-generic/unistd.h with arm64's __ARCH_WANT_* switches (AARCH64). Names are the",
        "headers' without ``__NR_`` (libseccomp's names). Imported only when a seccomp",
        'profile is compiled (a cache miss), never on the start-up path."""',
        "",
    ]
    for arch, table in all_tables.items():
        out.append(f"{arch} = {{")
        for name, nr in sorted(table.items(), key=lambda kv: (kv[1], kv[0])):
            out.append(f'    "{name}": {nr},')
        out.append("}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--include", default="/usr/include")
    ap.add_argument("-o", "--output", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="exit 1 if the output file differs")
    args = ap.parse_args(argv)
    text = render(tables(args.include))
    if args.check:
        same = os.path.exists(args.output) and read(args.output) == text
        print("up to date" if same else f"{args.output} differs from the headers", file=sys.stderr)
        return 0 if same else 1
    with open(args.output + ".tmp", "w") as f:
        f.write(text)
    os.replace(args.output + ".tmp", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
