#!/bin/bash
# Build cocin/nsenter_stub, the static helper used by `cocin exec`.
#
#   scripts/build_stub.sh        (works from any directory)
#
# Needs a C compiler (gcc or cc; $CC wins if set) and a static libc
# (libc.a, Debian package libc6-dev).  Prints the path of the binary.
set -eu

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
src="$root/cocin/nsenter_stub.c"
out="$root/cocin/nsenter_stub"

cc=""
for c in ${CC:-} gcc cc; do
    if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
done
if [ -z "$cc" ]; then
    echo "cocin: error: no C compiler found: install it with 'apt-get install -y gcc libc6-dev'" >&2
    exit 1
fi

# -print-file-name prints the bare name back when the file is not found.
libc_a=$("$cc" -print-file-name=libc.a 2>/dev/null || true)
if [ "$libc_a" = "libc.a" ] || [ ! -f "$libc_a" ]; then
    echo "cocin: error: no static libc (libc.a) for $cc: install it with 'apt-get install -y libc6-dev'" >&2
    exit 1
fi

# Build next to the target, then rename: a concurrent user never sees a
# half-written binary.
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
"$cc" -static -Os -Wall -Wextra -s -o "$tmp" "$src"
if command -v strip >/dev/null 2>&1; then strip "$tmp"; fi
mv -f "$tmp" "$out"
trap - EXIT
echo "$out"
