#!/usr/bin/env bash
# Tear down what scripts/vm_test.sh set up: the VM (vagrant destroy -f), the
# libvirt management network and storage pool it used, the iptables chains
# libvirt added for that network, the ip_forward switch libvirt turned on, and
# the libvirt daemons it started by hand. Safe to run more than once.
#
#   scripts/vm_teardown.sh
#
# Sourced by scripts/vm_test.sh for its helper functions (nothing runs then).
# What was there before a run (daemons, chains, ip_forward) is recorded in
# .vagrant/cocin-vm.state and left alone.

COCIN_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COCIN_STATE="$COCIN_REPO/.vagrant/cocin-vm.state"
COCIN_POOL="${COCIN_LIBVIRT_POOL:-cocin}"
COCIN_POOL_DIR="${COCIN_VM_POOL_DIR:-/var/lib/libvirt/cocin-pool}"
COCIN_NET="${COCIN_LIBVIRT_NETWORK:-cocin-vagrant}"
VIRSH="virsh -q -c qemu:///system"

vmlog() { echo "[cocin-vm] $*" >&2; }

state_set() {  # state_set KEY VALUE: record once (first value wins)
    mkdir -p "$(dirname "$COCIN_STATE")"
    grep -q "^$1=" "$COCIN_STATE" 2>/dev/null || echo "$1=$2" >> "$COCIN_STATE"
}
state_get() { sed -n "s/^$1=//p" "$COCIN_STATE" 2>/dev/null | tail -n1; }

libvirt_up() { $VIRSH version >/dev/null 2>&1; }

# Start virtlogd, virtlockd and libvirtd unless libvirt already answers.
# Daemons started here are recorded and stopped by the teardown.
start_libvirt_daemons() {
    libvirt_up && return 0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        vmlog "starting libvirtd with systemctl"
        systemctl start libvirtd || true
        libvirt_up && return 0
    fi
    local d pid
    # Without udev /dev/kvm may be root-only (0600): libvirt, probing as the
    # qemu user, then finds KVM "gone" and re-probes QEMU (seconds) on every
    # call. Give it udev's usual root:kvm 0660 while our libvirtd runs.
    if [ -c /dev/kvm ] && getent group kvm >/dev/null \
       && [ "$(stat -c '%a %G' /dev/kvm)" = "600 root" ]; then
        state_set KVM_PERM_BEFORE "$(stat -c '%a:%g' /dev/kvm)"
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    fi
    for d in virtlogd virtlockd libvirtd; do
        if pid=$(cat "/run/$d.pid" 2>/dev/null) && [ -n "$pid" ] \
           && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$d" ]; then
            continue   # already running, not ours
        fi
        vmlog "starting $d -d"
        "/usr/sbin/$d" -d || { vmlog "cannot start $d"; return 1; }
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            pid=$(cat "/run/$d.pid" 2>/dev/null) && [ -n "$pid" ] && break
            sleep 0.5
        done
        [ -n "$pid" ] && state_set "STARTED_$d" "$pid"
    done
    for _ in $(seq 1 40); do libvirt_up && return 0; sleep 0.5; done
    vmlog "libvirtd does not answer on qemu:///system"; return 1
}

stop_libvirt_daemons() {
    local d pid
    for d in libvirtd virtlockd virtlogd; do
        pid=$(state_get "STARTED_$d")
        [ -n "$pid" ] || continue
        if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$d" ]; then
            vmlog "stopping $d (pid $pid)"
            kill "$pid"
            for _ in $(seq 1 20); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
        fi
    done
    local perm
    perm=$(state_get KVM_PERM_BEFORE)
    if [ -n "$perm" ] && [ -c /dev/kvm ]; then
        chgrp "${perm#*:}" /dev/kvm && chmod "${perm%%:*}" /dev/kvm
    fi
}

ipt_cmds() { for c in iptables ip6tables; do command -v "$c" >/dev/null && echo "$c"; done; }

libvirt_chains_present() {
    local c t
    for c in $(ipt_cmds); do for t in filter nat mangle; do
        "$c" -w -t "$t" -S 2>/dev/null | grep -q '^-N LIBVIRT_' && return 0
    done; done
    return 1
}

# Record, before the VM starts, what the host looked like.
record_host_state() {
    if libvirt_chains_present; then state_set CHAINS_BEFORE 1; else state_set CHAINS_BEFORE 0; fi
    state_set IP_FORWARD_BEFORE "$(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo 1)"
}

# Remove libvirt's LIBVIRT_* chains (and the jumps to them): only those that
# appeared during our run and only when no libvirt network is active any more.
remove_libvirt_chains() {
    [ "$(state_get CHAINS_BEFORE)" = 0 ] || return 0
    if libvirt_up && [ -n "$($VIRSH net-list --name 2>/dev/null | tr -d '[:space:]')" ]; then
        vmlog "other libvirt networks active: leaving LIBVIRT_* chains"; return 0
    fi
    local c t rule chain
    for c in $(ipt_cmds); do for t in filter nat mangle; do
        "$c" -w -t "$t" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j LIBVIRT_[A-Z]+' \
            | grep -vE '^-A LIBVIRT_' | while read -r rule; do
            # shellcheck disable=SC2086
            "$c" -w -t "$t" -D ${rule#-A }
        done
        for chain in $("$c" -w -t "$t" -S 2>/dev/null | awk '/^-N LIBVIRT_/{print $2}'); do
            "$c" -w -t "$t" -F "$chain"
        done
        for chain in $("$c" -w -t "$t" -S 2>/dev/null | awk '/^-N LIBVIRT_/{print $2}'); do
            "$c" -w -t "$t" -X "$chain" && vmlog "removed $c -t $t chain $chain"
        done
    done; done
}

ensure_pool() {
    if $VIRSH pool-info "$COCIN_POOL" >/dev/null 2>&1; then
        $VIRSH pool-start "$COCIN_POOL" >/dev/null 2>&1 || true
        return 0
    fi
    vmlog "creating storage pool $COCIN_POOL at $COCIN_POOL_DIR"
    mkdir -p "$COCIN_POOL_DIR"
    $VIRSH pool-define-as "$COCIN_POOL" dir --target "$COCIN_POOL_DIR" >/dev/null
    $VIRSH pool-start "$COCIN_POOL" >/dev/null
}

remove_pool() {
    $VIRSH pool-info "$COCIN_POOL" >/dev/null 2>&1 || return 0
    local v
    $VIRSH pool-start "$COCIN_POOL" >/dev/null 2>&1 || true
    $VIRSH pool-refresh "$COCIN_POOL" >/dev/null 2>&1 || true
    for v in $($VIRSH vol-list "$COCIN_POOL" 2>/dev/null | awk '{print $1}'); do
        $VIRSH vol-delete --pool "$COCIN_POOL" "$v" >/dev/null || true
    done
    $VIRSH pool-destroy "$COCIN_POOL" >/dev/null 2>&1 || true
    $VIRSH pool-delete "$COCIN_POOL" >/dev/null 2>&1 || true
    $VIRSH pool-undefine "$COCIN_POOL" >/dev/null 2>&1 || true
    rmdir "$COCIN_POOL_DIR" 2>/dev/null || true
    vmlog "removed storage pool $COCIN_POOL"
}

destroy_vm() {
    local id
    [ -f "$COCIN_REPO/.vagrant/ssh-config" ] \
        && ssh -F "$COCIN_REPO/.vagrant/ssh-config" -O exit default >/dev/null 2>&1
    ( cd "$COCIN_REPO" && vagrant destroy -f ) || vmlog "vagrant destroy failed; cleaning with virsh"
    # whatever vagrant may have left
    id=$(cat "$COCIN_REPO/.vagrant/machines/default/libvirt/id" 2>/dev/null || true)
    if [ -n "$id" ] && $VIRSH dominfo "$id" >/dev/null 2>&1; then
        $VIRSH destroy "$id" >/dev/null 2>&1 || true
        $VIRSH undefine "$id" --remove-all-storage >/dev/null 2>&1 || true
    fi
    if $VIRSH net-info "$COCIN_NET" >/dev/null 2>&1; then
        $VIRSH net-destroy "$COCIN_NET" >/dev/null 2>&1 || true
        $VIRSH net-undefine "$COCIN_NET" >/dev/null 2>&1 || true
        vmlog "removed network $COCIN_NET"
    fi
}

cocin_vm_teardown() {
    set +e
    cd "$COCIN_REPO" || return 1
    if [ ! -f "$COCIN_STATE" ] && [ ! -d .vagrant/machines/default/libvirt ]; then
        vmlog "nothing to tear down"; return 0
    fi
    start_libvirt_daemons   # needed to destroy anything (recorded if started now)
    if [ -n "$(state_get POOL)" ]; then export COCIN_LIBVIRT_POOL; COCIN_LIBVIRT_POOL="$(state_get POOL)"; fi
    destroy_vm
    [ -n "$(state_get POOL)" ] && remove_pool
    remove_libvirt_chains
    # libvirt's NAT turned ip_forward on; turn it off again unless something
    # else on the host (e.g. containers' MASQUERADE rules) now relies on it
    if [ "$(state_get IP_FORWARD_BEFORE)" = 0 ] && [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ]; then
        if iptables -w -t nat -S 2>/dev/null | grep -q -- '-j MASQUERADE'; then
            vmlog "ip_forward left on: other NAT rules on the host use it"
        else
            echo 0 > /proc/sys/net/ipv4/ip_forward && vmlog "ip_forward back to 0"
        fi
    fi
    stop_libvirt_daemons
    rm -f "$COCIN_STATE" "$COCIN_REPO/.vagrant/ssh-config" "$COCIN_REPO/.vagrant/cocin-rsync.stamp"
    vmlog "teardown done"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cocin_vm_teardown
fi
