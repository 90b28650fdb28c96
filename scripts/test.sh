#!/usr/bin/env bash
# Set up and run cocin's whole test suite: `sudo scripts/test.sh [pytest args]`.
# Installs what is missing (Debian/Ubuntu packages, a venv with the pinned dev
# tools), builds the exec stub, lints, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: the end-to-end tests need root: run it with sudo" >&2
    exit 1
fi

PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
pkgs="busybox-static gcc libc6-dev iptables python3-venv util-linux procps"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "== installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/pytest ] || ! cmp -s requirements-dev.txt .venv/requirements-dev.txt; then
    echo "== making .venv"
    "$PY" -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
    cp requirements-dev.txt .venv/requirements-dev.txt
fi

if [ -f scripts/build_stub.sh ]; then
    echo "== building the exec stub"
    bash scripts/build_stub.sh
fi

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy cocin/errors.py cocin/paths.py cocin/files.py cocin/process.py cocin/record.py cocin/state.py cocin/fastjson.py cocin/layers.py cocin/tarball.py cocin/cgroups/__init__.py cocin/cgroups/base.py cocin/cgroups/files.py cocin/cgroups/limits.py cocin/cgroups/mounts.py cocin/cgroups/v1.py cocin/cgroups/v2.py cocin/network

# COCIN_TEST_IP_FORWARD=0|1|flip: run with the host's ip_forward set so (flip:
# the opposite of its value now), and put the machine's value back afterwards.
# The tests must pass whichever value the host starts with.
want=${COCIN_TEST_IP_FORWARD:-}
if [ -n "$want" ]; then
    was=$("$PY" scripts/ip_forward.py get)
    case "$want" in
        flip) [ "$was" = 1 ] && want=0 || want=1 ;;
        0|1) ;;
        *) echo "scripts/test.sh: COCIN_TEST_IP_FORWARD must be 0, 1 or flip" >&2; exit 2 ;;
    esac
    trap '"$PY" scripts/ip_forward.py set "$was"' EXIT
    "$PY" scripts/ip_forward.py set "$want"
    echo "== pytest with net.ipv4.ip_forward=$want (the machine's $was comes back afterwards)"
    .venv/bin/python -m pytest "$@"
    exit
fi
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
