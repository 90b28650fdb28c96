#!/usr/bin/env bash
# Prepare (as root, Debian 12) this host for `vagrant up` (libvirt) and the
# tests in the VM: install the host packages that the Vagrantfile,
# scripts/vm_test.sh and scripts/build_box.sh need, if any are missing, check
# the host's pytest, and have libvirt running: start virtlogd, virtlockd and
# libvirtd when nothing answers on qemu:///system (no systemd needed) and make
# the storage pool "cocin" (/var/lib/libvirt/cocin-pool), which the Vagrantfile
# then uses. What it started is recorded in .vagrant/cocin-vm.state, and
# scripts/vm_teardown.sh removes it again. Safe to run again: with everything
# there it only checks (no apt-get at all).
#
#   scripts/vm_setup.sh
#
# The host-side pytest + pytest-testinfra are the repository's .venv, made by
# scripts/test.sh from requirements-dev.txt; if it is missing it is made here
# the same way (python3 -m venv .venv; pip install -r requirements-dev.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[vm_setup] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root (apt-get)"; exit 1; }

# package: what needs it
#   vagrant vagrant-libvirt            vagrant up/destroy with the libvirt provider
#   libvirt-daemon-system              libvirtd, virtlogd, virtlockd (+ qemu driver)
#   libvirt-clients                    virsh (pool, network, teardown)
#   qemu-system-x86 qemu-utils         the VM itself; qemu-img (box build)
#   dnsmasq-base ebtables iptables     libvirt's NAT management network (DHCP, rules)
#   rsync openssh-client               vagrant's rsync synced folder; testinfra's ssh
#   util-linux mount                   flock (one VM at a time), losetup (box build)
#   debootstrap extlinux syslinux-common e2fsprogs fdisk ca-certificates
#                                      scripts/build_box.sh (rootfs, boot loader, disk)
#   python3-venv                       the host .venv with pytest + testinfra
PKGS="vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients
      qemu-system-x86 qemu-utils dnsmasq-base ebtables iptables
      rsync openssh-client util-linux mount
      debootstrap extlinux syslinux-common e2fsprogs fdisk ca-certificates
      python3-venv"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
    # packaging may have started libvirt through systemd; vm_test.sh copes with
    # either (it starts the daemons itself only when libvirt does not answer)
else
    log "host packages present"
fi

for t in vagrant virsh qemu-system-x86_64 qemu-img rsync ssh flock losetup \
         debootstrap extlinux sfdisk mkfs.ext4 dnsmasq iptables; do
    command -v "$t" >/dev/null || { log "still missing after install: $t"; exit 1; }
done
vagrant plugin list 2>/dev/null | grep -q vagrant-libvirt \
    || { log "vagrant does not list the vagrant-libvirt plugin"; exit 1; }

# host pytest + testinfra: the repository's .venv, as scripts/test.sh makes it
# (unless $PYTHON, as for vm_test.sh, names another python that has them)
if [ -n "${PYTHON:-}" ] && "$PYTHON" -c 'import pytest, testinfra' 2>/dev/null; then
    log "host pytest: $PYTHON"
else
    if [ ! -x .venv/bin/python ] || ! cmp -s requirements-dev.txt .venv/requirements-dev.txt; then
        PY=/usr/bin/python3
        [ -x "$PY" ] || PY=$(command -v python3)
        log "making .venv ($PY, requirements-dev.txt)"
        "$PY" -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
        cp requirements-dev.txt .venv/requirements-dev.txt
    fi
    .venv/bin/python -c 'import pytest, testinfra' \
        || { log ".venv lacks pytest/pytest-testinfra"; exit 1; }
fi

# libvirt running, and a storage pool of our own; the host's state before
# (daemons, LIBVIRT_* chains, ip_forward) recorded for scripts/vm_teardown.sh
# shellcheck source=vm_teardown.sh
. scripts/vm_teardown.sh
record_host_state
start_libvirt_daemons
ensure_pool
state_set POOL "$COCIN_POOL"
log "ready (libvirt answers, storage pool $COCIN_POOL)"
