#!/usr/bin/env bash
# Build (once) and register a local Vagrant box "cocin/bookworm" for the
# libvirt provider, from Debian packages alone (no Vagrant Cloud needed).
#
#   scripts/build_box.sh            # build if not cached, then `vagrant box add`
#   scripts/build_box.sh --force    # rebuild even if cached
#
# Environment:
#   COCIN_BOX_CACHE   cache directory (default ~/.cache/cocin-box)
#   COCIN_BOX_NAME    box name (default cocin/bookworm)
#   COCIN_BOX_SIZE_GB virtual disk size (default 8)
#   COCIN_DEBIAN_MIRROR  Debian mirror (default http://deb.debian.org/debian)
#
# Host requirements (Debian 12), all as root:
#   apt-get install --no-install-recommends vagrant vagrant-libvirt \
#     libvirt-daemon-system libvirt-clients qemu-utils qemu-system-x86 \
#     debootstrap extlinux syslinux-common e2fsprogs fdisk rsync dnsmasq-base
#
# The image: one MBR partition with ext4 (no 64bit feature, so syslinux can
# read it), extlinux as boot loader, Debian bookworm with the stock kernel,
# systemd (cgroup v2 unified), systemd-networkd DHCP on the first ethernet,
# user "vagrant" with passwordless sudo and Vagrant's insecure public key,
# plus what the cocin provisioning needs (python3-venv, busybox-static, gcc,
# libc6-dev, iptables) and a venv /opt/cocin-venv with pytest + testinfra.
set -euo pipefail

CACHE="${COCIN_BOX_CACHE:-$HOME/.cache/cocin-box}"
BOX_NAME="${COCIN_BOX_NAME:-cocin/bookworm}"
SIZE_GB="${COCIN_BOX_SIZE_GB:-8}"
MIRROR="${COCIN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BOX_FILE="$CACHE/cocin-bookworm.box"
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

log() { echo "[build_box] $*" >&2; }
die() { echo "[build_box] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, loop devices, mount)"
for t in vagrant debootstrap extlinux qemu-img sfdisk losetup mkfs.ext4; do
    command -v "$t" >/dev/null || die "missing host tool: $t (see header of $0)"
done

box_registered() {
    vagrant box list 2>/dev/null | grep -q "^${BOX_NAME} .*libvirt"
}

if [ "$FORCE" = 0 ] && [ -s "$BOX_FILE" ]; then
    if box_registered; then
        log "box $BOX_NAME already registered (cached file $BOX_FILE)"
        exit 0
    fi
    log "registering cached $BOX_FILE as $BOX_NAME"
    vagrant box add --force --name "$BOX_NAME" "$BOX_FILE"
    exit 0
fi

VAGRANT_PUB=""
for f in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
         /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub \
         /opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub; do
    [ -f "$f" ] && { VAGRANT_PUB="$f"; break; }
done
[ -n "$VAGRANT_PUB" ] || VAGRANT_PUB="$(find / -xdev -name vagrant.pub -path '*keys*' 2>/dev/null | head -n1)"
[ -n "$VAGRANT_PUB" ] || die "cannot find Vagrant's insecure key keys/vagrant.pub"

MBR_BIN=""
for f in /usr/lib/syslinux/mbr/mbr.bin /usr/lib/EXTLINUX/mbr.bin /usr/share/syslinux/mbr.bin; do
    [ -f "$f" ] && { MBR_BIN="$f"; break; }
done
[ -n "$MBR_BIN" ] || die "cannot find syslinux mbr.bin (install syslinux-common/extlinux)"

mkdir -p "$CACHE/debs"
WORK="$(mktemp -d "$CACHE/build.XXXXXX")"
RAW="$WORK/disk.raw"
ROOT="$WORK/root"
LOOP=""
START=$(date +%s)

cleanup() {
    set +e
    for m in dev/pts dev proc sys; do
        mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
    done
    mountpoint -q "$ROOT" 2>/dev/null && umount "$ROOT"
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- disk: MBR, one bootable Linux partition from 1 MiB -------------------
OFFSET_SECTORS=2048
OFFSET=$((OFFSET_SECTORS * 512))
truncate -s "${SIZE_GB}G" "$RAW"
printf 'label: dos\nstart=%s, type=83, bootable\n' "$OFFSET_SECTORS" | sfdisk -q "$RAW"
PART_BYTES=$(( SIZE_GB * 1024 * 1024 * 1024 - OFFSET ))
# This kernel may lack partition-table support (losetup -P gives nothing),
# so map the partition by offset.
LOOP="$(losetup -f --show -o "$OFFSET" --sizelimit "$PART_BYTES" "$RAW")"
mkfs.ext4 -q -L cocin-root -O ^64bit,^orphan_file "$LOOP" 2>/dev/null \
    || mkfs.ext4 -q -L cocin-root -O ^64bit "$LOOP"
UUID="$(blkid -s UUID -o value "$LOOP")"
mkdir -p "$ROOT"
mount "$LOOP" "$ROOT"

# --- root filesystem -------------------------------------------------------
PKGS=linux-image-amd64,initramfs-tools,udev,kmod,systemd,systemd-sysv,systemd-resolved,dbus
PKGS=$PKGS,openssh-server,sudo,rsync,python3,python3-venv,ca-certificates
PKGS=$PKGS,busybox-static,gcc,libc6-dev,iptables,iproute2,procps,less,netbase
log "debootstrap bookworm ($MIRROR)"
nice debootstrap --variant=minbase --cache-dir="$CACHE/debs" --include="$PKGS" \
    bookworm "$ROOT" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap done after $(( $(date +%s) - START ))s"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
in_root() { LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$ROOT" "$@"; }

echo cocin-vm > "$ROOT/etc/hostname"
cat > "$ROOT/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	cocin-vm
::1		localhost ip6-localhost ip6-loopback
EOF
echo "UUID=$UUID / ext4 errors=remount-ro 0 1" > "$ROOT/etc/fstab"
cat > "$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb ${MIRROR%/debian}/debian-security bookworm-security main
EOF

# network: DHCP on the first ethernet (names are eth0.. thanks to net.ifnames=0)
cat > "$ROOT/etc/systemd/network/20-wired.network" <<'EOF'
[Match]
Name=eth0 en*

[Network]
DHCP=yes

[DHCPv4]
UseDomains=yes
EOF
in_root systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
# vagrant user
in_root useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | in_root chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$ROOT/etc/sudoers.d/vagrant"
chmod 0440 "$ROOT/etc/sudoers.d/vagrant"
install -d -m 0700 "$ROOT/home/vagrant/.ssh"
install -m 0600 "$VAGRANT_PUB" "$ROOT/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'UseDNS no' > "$ROOT/etc/ssh/sshd_config.d/vagrant.conf"

# fresh ssh host keys and machine-id on each VM's first boot
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat > "$ROOT/etc/systemd/system/ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
EOF
in_root systemctl enable ssh-hostkeys.service >/dev/null 2>&1
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

# test venv: wheels fetched by the host's pip (the repository's .venv, else
# python3's) when it has one (the host may
# sit behind a TLS-inspecting proxy whose CA the guest lacks), else by the
# guest's pip through the host network.
log "venv /opt/cocin-venv"
in_root python3 -m venv /opt/cocin-venv
mkdir -p "$ROOT/tmp/wheels"
HOST_PIP_PY=""
for py in "$(dirname "$0")/../.venv/bin/python" python3; do
    "$py" -m pip --version >/dev/null 2>&1 && { HOST_PIP_PY="$py"; break; }
done
if [ -n "$HOST_PIP_PY" ] \
   && "$HOST_PIP_PY" -m pip download -q -d "$ROOT/tmp/wheels" pytest pytest-testinfra >/dev/null; then
    in_root /opt/cocin-venv/bin/pip install -q --disable-pip-version-check \
        --no-index --find-links /tmp/wheels pytest pytest-testinfra
else
    rm -f "$ROOT/etc/resolv.conf"; cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    in_root /opt/cocin-venv/bin/pip install -q --disable-pip-version-check pytest pytest-testinfra \
        || log "WARNING: pip install failed; provisioning will retry inside the VM"
    ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
fi
in_root /opt/cocin-venv/bin/python -c 'import pytest, testinfra; print("venv: pytest", pytest.__version__)' \
    || log "WARNING: venv incomplete; provisioning will retry inside the VM"

# boot loader: extlinux in the partition, syslinux MBR in the disk
cat > "$ROOT/boot/extlinux.conf.tmp" <<EOF
DEFAULT linux
TIMEOUT 0
PROMPT 0
LABEL linux
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$UUID ro net.ifnames=0 biosdevname=0 console=tty0 console=ttyS0,115200n8 systemd.unified_cgroup_hierarchy=1
EOF
mkdir -p "$ROOT/boot/extlinux"
mv "$ROOT/boot/extlinux.conf.tmp" "$ROOT/boot/extlinux/extlinux.conf"
[ -e "$ROOT/vmlinuz" ] && [ -e "$ROOT/initrd.img" ] || die "kernel symlinks /vmlinuz /initrd.img missing"
extlinux --install "$ROOT/boot/extlinux" >/dev/null 2>&1
in_root apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/tmp/* "$ROOT"/root/.cache

for m in dev/pts dev proc sys; do umount -l "$ROOT/$m"; done
umount "$ROOT"
# The partition was installed through a loop device at offset 0, so the boot
# sector's "hidden sectors" (partition start, at byte 0x1c) says 0: fix it.
printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' \
    $((OFFSET_SECTORS & 255)) $(((OFFSET_SECTORS >> 8) & 255)) \
    $(((OFFSET_SECTORS >> 16) & 255)) $(((OFFSET_SECTORS >> 24) & 255)))" \
    | dd of="$RAW" bs=1 seek=$((OFFSET + 0x1c)) conv=notrunc status=none
losetup -d "$LOOP"; LOOP=""
dd if="$MBR_BIN" of="$RAW" bs=440 count=1 conv=notrunc status=none

# --- box ---------------------------------------------------------------------
log "qcow2 + box tarball"
mkdir -p "$WORK/box"
nice qemu-img convert -O qcow2 "$RAW" "$WORK/box/box.img"
rm -f "$RAW"
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$SIZE_GB" > "$WORK/box/metadata.json"
cat > "$WORK/box/Vagrantfile" <<'EOF'
# Box built by cocin's scripts/build_box.sh (Debian 12, extlinux, cgroup v2).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
EOF
tar -C "$WORK/box" -cf "$BOX_FILE.tmp" metadata.json Vagrantfile box.img
mv "$BOX_FILE.tmp" "$BOX_FILE"
log "box file $BOX_FILE ($(du -h "$BOX_FILE" | cut -f1)) built in $(( $(date +%s) - START ))s"

vagrant box add --force --name "$BOX_NAME" "$BOX_FILE"
log "done: box $BOX_NAME registered, total $(( $(date +%s) - START ))s"
