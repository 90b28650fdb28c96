#!/usr/bin/env bash
# Run cocin's end-to-end tests inside a disposable Vagrant VM (libvirt), then
# destroy it and everything set up for it, whatever happens. The same as
# `scripts/vm_setup.sh; vagrant up && .venv/bin/pytest ...; scripts/vm_teardown.sh`
# in one command, with its own box default, a lock and timings.
#
#   scripts/vm_test.sh [--keep] [-- PYTEST_ARGS...]
#
#   --keep   leave the VM running afterwards (iterate with `.venv/bin/pytest`,
#            which finds it and syncs the tree; clean with scripts/vm_teardown.sh)
#   PYTEST_ARGS  passed to pytest (default: tests/)
#
# Environment (see also the Vagrantfile):
#   COCIN_BOX             default cocin/bookworm, built by scripts/build_box.sh
#                         if missing; debian/bookworm64 needs Vagrant Cloud
#   COCIN_LIBVIRT_DRIVER  kvm or qemu; default: kvm if a KVM guest can start
#                         here, else qemu (TCG, slow but works anywhere)
#   COCIN_LIBVIRT_POOL    storage pool (default cocin, made at COCIN_VM_POOL_DIR,
#                         default /var/lib/libvirt/cocin-pool, removed afterwards)
#   PYTHON                host python that has pytest + pytest-testinfra
#                         (default: the repository's .venv/bin/python, made
#                         by scripts/test.sh or scripts/vm_setup.sh)
#   COCIN_VM_SETUP=0      do not run scripts/vm_setup.sh (which installs the
#                         missing host packages with apt-get, and .venv)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
# shellcheck source=vm_teardown.sh
. "$REPO/scripts/vm_teardown.sh"

ORIG_ARGS=("$@")
KEEP=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1; shift ;;
        --) shift; PYTEST_ARGS+=("$@"); break ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) PYTEST_ARGS+=("$1"); shift ;;
    esac
done
[ ${#PYTEST_ARGS[@]} -gt 0 ] || PYTEST_ARGS=(tests/)

[ "$(id -u)" = 0 ] || { vmlog "run as root (libvirt qemu:///system, iptables)"; exit 1; }

# KVM on hardware virtualisation (kvm_intel/kvm_amd; kvm_pvm alone runs only guests
# built for PVM), and a vCPU with the host CPU model can start (fails on some nested hosts)
kvm_works() {
    [ -w /dev/kvm ] || return 1
    [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ] || return 1
    local rc   # 124: still running after 5 s, so the vCPU started
    rc=$(bash -c 'timeout 5 qemu-system-x86_64 -accel kvm -cpu host -machine pc -nodefaults \
        -display none -monitor none -S >/dev/null 2>&1; echo $?' 2>/dev/null)
    [ "$rc" = 124 ]
}

# one VM at a time on this machine: re-run under flock, which holds the lock
# itself (-o), so daemons and ssh masters started below never inherit it
if [ -z "${COCIN_VM_LOCKED:-}" ]; then
    LOCK="${COCIN_BOX_CACHE:-$HOME/.cache/cocin-box}/vm_test.lock"
    mkdir -p "$(dirname "$LOCK")"
    flock -n "$LOCK" true || vmlog "another vm_test.sh is running: waiting for it"
    export COCIN_VM_LOCKED=1
    exec flock -o "$LOCK" bash "$REPO/scripts/vm_test.sh" "${ORIG_ARGS[@]}"
fi

T0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - T0 ))s"; }

if [ "$KEEP" = 0 ]; then
    trap 'rc=$?; trap - EXIT INT TERM; vmlog "tearing down"; cocin_vm_teardown; exit $rc' EXIT
    trap 'exit 130' INT TERM
fi

if [ "${COCIN_VM_SETUP:-1}" != 0 ]; then
    bash "$REPO/scripts/vm_setup.sh"
fi
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
for t in vagrant virsh rsync ssh; do
    command -v "$t" >/dev/null || { vmlog "missing $t: scripts/vm_setup.sh installs it"; exit 1; }
done
"$PYTHON" -c 'import pytest, testinfra' 2>/dev/null \
    || { vmlog "host $PYTHON lacks pytest/pytest-testinfra: scripts/vm_setup.sh makes .venv"; exit 1; }
T_SETUP=$(date +%s)

export VAGRANT_DEFAULT_PROVIDER=libvirt
export COCIN_BOX="${COCIN_BOX:-cocin/bookworm}"
if [ -z "${COCIN_LIBVIRT_DRIVER:-}" ]; then
    if kvm_works; then COCIN_LIBVIRT_DRIVER=kvm; else COCIN_LIBVIRT_DRIVER=qemu; fi
fi
export COCIN_LIBVIRT_DRIVER
export COCIN_LIBVIRT_POOL="$COCIN_POOL"
export COCIN_LIBVIRT_NETWORK="$COCIN_NET"

if [ "$COCIN_BOX" = cocin/bookworm ]; then
    nice bash "$REPO/scripts/build_box.sh"
fi
T_BOX=$(date +%s)

mkdir -p .vagrant
record_host_state
start_libvirt_daemons
ensure_pool
state_set POOL "$COCIN_POOL"

vmlog "vagrant up (box $COCIN_BOX, driver $COCIN_LIBVIRT_DRIVER)"
T_UP0=$(date +%s)
nice vagrant up --provider libvirt
T_UP1=$(date +%s)
# ssh config for the tests (testinfra: ssh://default); connection sharing
# matters: a fresh ssh handshake costs seconds in a TCG guest
{ vagrant ssh-config
  printf '  ControlMaster auto\n  ControlPath /tmp/cocin-ssh-%%C\n  ControlPersist 120\n'
} > .vagrant/ssh-config
vmlog "guest: $(ssh -F .vagrant/ssh-config default \
    'echo $(stat -fc %T /sys/fs/cgroup) $(uname -r) [$(cat /sys/fs/cgroup/cgroup.controllers)] $(python3 --version)')"

vmlog "pytest ${PYTEST_ARGS[*]}"
T_PY0=$(date +%s)
rc=0
COCIN_TEST_TARGET=vagrant COCIN_VAGRANT_SSH_CONFIG="$REPO/.vagrant/ssh-config" \
    "$PYTHON" -m pytest "${PYTEST_ARGS[@]}" || rc=$?
T_PY1=$(date +%s)
vmlog "timings: setup $((T_SETUP - T0))s, box $((T_BOX - T_SETUP))s, vagrant up $((T_UP1 - T_UP0))s, pytest $((T_PY1 - T_PY0))s, total $(elapsed) (before teardown)"
[ "$KEEP" = 1 ] && vmlog "VM kept: scripts/vm_teardown.sh removes it"
exit $rc
