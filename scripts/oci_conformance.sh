#!/bin/bash
# Run the OCI runtime-tools conformance suite against an OCI runtime binary and
# compare the result with runc's on the same kind of host (issue 16).
#
#   scripts/oci_conformance.sh RUNTIME [OUT]        e.g. scripts/oci_conformance.sh scripts/cocin-oci
#   scripts/oci_conformance.sh /usr/sbin/runc /tmp/rt-runc        (check the harness itself)
#
# 1. Builds the suite once, offline, into ~/.cache/cocin-oci/runtime-tools-408c51e
#    (COCIN_OCI_CACHE overrides ~/.cache/cocin-oci) from the source tarball
#    (COCIN_OCI_TARBALL, default /work/shared/oci/runtime-tools-408c51e.tar.gz);
#    needs golang-go and make (Debian 12's go 1.19 is enough: the source vendors
#    its dependencies). ~25 s the first time.
# 2. Runs every validation/*/*.t (or the files named in COCIN_OCI_TESTS, space
#    separated, e.g. "validation/state/state.t") with RUNTIME, through
#    bench/oci/conformance.py: OUT/summary.txt (per file, the columns of
#    bench/oci/runc-baseline.txt), OUT/passed.txt, OUT/tap/*.tap.
# 3. Compares with runc: every test runc passes here (bench/oci/runc-passed.txt)
#    that RUNTIME does not is a regression, unless a pattern of
#    bench/oci/allow.txt matches it. Exit 1 on a regression, 0 otherwise.
# 4. Cleans up what the suite leaves: its bundles and their mounts (TMPDIR is
#    OUT/tmp, so the /tmp/ocitest* mounts land there and are unmounted), the
#    containers still known to RUNTIME that appeared during the run, and the
#    cgroups testdir/cgrouptest it makes in each hierarchy.
#
# OUT defaults to a new directory under /tmp. Root is needed.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
runtime=${1:?usage: oci_conformance.sh RUNTIME [OUT]}
case $runtime in /*) ;; */*) runtime=$(cd "$(dirname "$runtime")" && pwd)/$(basename "$runtime") ;;
*) runtime=$(command -v "$runtime") || { echo "cocin: error: runtime $1 not found" >&2; exit 2; } ;; esac
[ -x "$runtime" ] || { echo "cocin: error: $runtime is not an executable" >&2; exit 2; }
out=${2:-$(mktemp -d /tmp/cocin-oci-conformance.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=${COCIN_OCI_CACHE:-$HOME/.cache/cocin-oci}
tarball=${COCIN_OCI_TARBALL:-/work/shared/oci/runtime-tools-408c51e.tar.gz}
suite=$cache/runtime-tools-408c51e

# --- 1. build (cached) -----------------------------------------------------------
if [ ! -x "$suite/validation/default/default.t" ]; then
    [ -f "$tarball" ] || { echo "cocin: error: no suite source: set COCIN_OCI_TARBALL" >&2; exit 2; }
    command -v go >/dev/null && command -v make >/dev/null ||
        { echo "cocin: error: building the suite needs go and make: apt-get install -y golang-go make" >&2; exit 2; }
    echo "building runtime-tools into $suite ..."
    rm -rf "$suite" && mkdir -p "$suite"
    tar -xzf "$tarball" -C "$suite" || exit 2
    (cd "$suite" && GOFLAGS=-mod=vendor GOPROXY=off GOCACHE=$suite/.gocache GOPATH=$suite/.gopath \
        make tool runtimetest validation-executables >"$suite/build.log" 2>&1) ||
        { echo "cocin: error: building the suite failed, see $suite/build.log" >&2; rm -f "$suite/validation/default/default.t"; exit 2; }
fi

# --- 2. run ----------------------------------------------------------------------------
cg_dirs() {  # the cgroups the suite makes: <hierarchy>/cgrouptest, <hierarchy>/testdir[/cgrouptest]
    for h in /sys/fs/cgroup /sys/fs/cgroup/*; do
        [ -d "$h" ] || continue
        for d in "$h/testdir/cgrouptest" "$h/testdir" "$h/cgrouptest"; do [ -d "$d" ] && echo "$d"; done
    done
}
ids_before=$("$runtime" list -q 2>/dev/null | sort)
cg_before=$(cg_dirs)
mkdir -p "$out/tmp"

cleanup() {
    # containers the run left behind (known to the runtime, not there before)
    for id in $("$runtime" list -q 2>/dev/null | sort | comm -13 <(echo "$ids_before") -); do
        "$runtime" kill "$id" 9 >/dev/null 2>&1
        "$runtime" delete --force "$id" >/dev/null 2>&1
    done
    # mounts under the private TMPDIR, deepest first
    awk -v p="$out/tmp/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    rm -rf "$out/tmp"
    for d in $(cg_dirs); do
        grep -qxF "$d" <<<"$cg_before" && continue
        for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        rmdir "$d" 2>/dev/null || { sleep 0.2; rmdir "$d" 2>/dev/null; }
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tests=()
for t in ${COCIN_OCI_TESTS:-}; do tests+=("$t"); done
TMPDIR=$out/tmp python3 "$repo/bench/oci/conformance.py" --suite "$suite" --runtime "$runtime" --out "$out" \
    --baseline "$repo/bench/oci/runc-baseline.txt" --tests "$repo/bench/oci/runc-passed.txt" \
    --allow "${COCIN_OCI_ALLOW:-$repo/bench/oci/allow.txt}" "${tests[@]}"
rc=$?
echo "results: $out/summary.txt"
exit $rc
