#!/usr/bin/env bash
# Build the Debian worker image that the VM tier boots under QEMU, or reuse the cached one.
#
#   build-image.sh          prints the image directory on stdout (progress on stderr)
#
# The image, in $KPM_VM_CACHE/images/<suite>-<kernel>-<key>/ (key = hash of the inputs below and of
# this script's text, so any edit here rebuilds; a rebuild takes about a minute):
#   vmlinuz, initrd.img   Debian's stock kernel (linux-image-amd64's current dependency) booted
#                         directly; a busybox initramfs that loads virtio/ext4, copies the per-VM
#                         files the harness appends as a second cpio archive (hostname, SSH host
#                         key, apt source), applies the per-VM "kpm.noipvs" flag and switch_roots
#   rootfs.raw            debootstrap minbase bookworm + systemd, sshd, kmod, iproute2, curl,
#                         iptables, busybox, openssl, and the kernel's whole /lib/modules tree
#                         (ip_vs, its 13 schedulers, nf_conntrack ... all loadable).  NOT
#                         ipvsadm, ipset or conntrack: installing them is the tool's job
#   repo/                 a flat apt repository with exactly the .debs the image lacks for
#                         ipvsadm, ipset and conntrack, served to the guests by the harness
#   id_ed25519            the key root logs in with (shared by the images of this cache)
#   manifest              KVER=, MIRROR=, SECURITY_MIRROR=, SUITE= for the harness
#
# The per-VM flag kpm.noipvs makes a kernel without IPVS: the initramfs deletes
# kernel/net/netfilter/ipvs (and xt_ipvs) from the guest's module tree (its disk is a throw-away
# overlay) and puts in the modules.* indexes depmod made at build time for the tree without them.
#
# Env: KPM_VM_CACHE (/tmp/kpm-vm-cache), KPM_VM_MIRROR (default: the first Debian URI of this
# machine's apt sources), KPM_VM_SUITE (bookworm), KPM_VM_KERNEL_PKG (default: what
# linux-image-amd64 depends on), KPM_VM_FORCE=1 rebuilds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${KPM_VM_CACHE:-/tmp/kpm-vm-cache}
SUITE=${KPM_VM_SUITE:-bookworm}
FORCE=${KPM_VM_FORCE:-0}
# systemd machine with networking and sshd; curl, iptables, busybox and openssl are what a
# kubeadm node has for the tool's probes and what the kube-proxy test fixture programs with.
PACKAGES=systemd-sysv,udev,dbus,procps,netbase,iputils-ping,ca-certificates,openssh-server,kmod,iproute2,curl,iptables,busybox,openssl
REPO_PACKAGES="ipvsadm ipset conntrack"

log() { printf '[kpm-vm build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot)"
bash "$HERE/setup-machine.sh"

# --- mirror: the one this machine's own apt uses ------------------------------------------------
apt_uris() {
  { grep -hs -E '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{for(i=2;i<=NF;i++)print $i}'
    grep -hs -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
  } 2>/dev/null || true
}
MIRROR=${KPM_VM_MIRROR:-$(apt_uris | grep -E '/debian/?$' | head -n1 || true)}
[ -n "$MIRROR" ] || die "no Debian mirror in this machine's apt sources; set KPM_VM_MIRROR"
MIRROR=${MIRROR%/}
SECURITY_MIRROR=$(apt_uris | grep -E '/debian-security/?$' | head -n1 || true)
SECURITY_MIRROR=${SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}
SECURITY_MIRROR=${SECURITY_MIRROR%/}

mkdir -p "$CACHE"/{debs,debootstrap-cache,base,images}
exec 9>"$CACHE/.build.lock"
flock -w 1800 9 || die "another build holds $CACHE/.build.lock"

# --- kernel -------------------------------------------------------------------------------------
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
if [ -n "${KPM_VM_KERNEL_PKG:-}" ]; then
  KPKG=$KPM_VM_KERNEL_PKG
  apt-cache show "$KPKG" >/dev/null 2>&1 || apt-get update -qq
else
  KPKG=$(kernel_pkg || true)
  if [ -z "$KPKG" ]; then log "apt lists missing; apt-get update"; apt-get update -qq; KPKG=$(kernel_pkg || true); fi
fi
[ -n "$KPKG" ] || die "cannot resolve the kernel package of linux-image-amd64"
KVER=${KPKG#linux-image-}
KPKG_VERSION=$(apt-cache show --no-all-versions "$KPKG" 2>/dev/null | awk '/^Version:/{print $2; exit}')
[ -n "$KPKG_VERSION" ] || die "apt knows no version of $KPKG"

# --- cache key ----------------------------------------------------------------------------------
KEY=$( { printf '%s\n' "$SUITE" "$MIRROR" "$SECURITY_MIRROR" "$KPKG" "$KPKG_VERSION" "$PACKAGES" "$REPO_PACKAGES"; cat "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
IMG=$CACHE/images/$SUITE-$KVER-$KEY
if [ "$FORCE" != 1 ] && [ -f "$IMG/.complete" ]; then
  log "cached image: $IMG"
  echo "$IMG"
  exit 0
fi
t0=$SECONDS
log "building $IMG (kernel $KPKG $KPKG_VERSION, mirror $MIRROR)"

WORK=$CACHE/work.$$
cleanup() {
  if [ -d "$WORK/rootfs" ]; then
    for m in dev/pts dev proc sys; do mountpoint -q "$WORK/rootfs/$m" && umount -l "$WORK/rootfs/$m" || true; done
  fi
  rm -rf --one-file-system "$WORK" "$IMG.tmp" "${BASE:-/nonexistent}.tmp"
}
trap cleanup EXIT
rm -rf "$WORK"; mkdir -p "$WORK"

KDEB=$CACHE/debs/${KPKG}_${KPKG_VERSION//:/%3a}_amd64.deb
if [ ! -f "$KDEB" ]; then
  log "downloading $KPKG"
  (cd "$CACHE/debs" && apt-get download -q "$KPKG=$KPKG_VERSION" >/dev/null 2>&1) || true
fi
[ -f "$KDEB" ] || die "could not download $KPKG=$KPKG_VERSION"
mkdir -p "$WORK/kernel"
dpkg-deb -x "$KDEB" "$WORK/kernel"
KMODDIR=
for d in "$WORK/kernel/lib/modules/$KVER" "$WORK/kernel/usr/lib/modules/$KVER"; do [ -d "$d" ] && { KMODDIR=$d; break; }; done
[ -n "$KMODDIR" ] || die "no module tree in $KDEB"
KBASE=${KMODDIR%/lib/modules/$KVER}
depmod -b "$KBASE" "$KVER"

# --- base root filesystem and repository ---------------------------------------------------------
# debootstrap is the slow part (a minute on a quiet machine, several on a busy one): it is cached
# on its own, keyed by its inputs and this function's text, so editing the rest of this script
# rebuilds the image in well under a minute.
build_base() { # DEST: makes DEST/rootfs.tar and DEST/repo/
  local dest=$1 root=$1/rootfs deb name p
  log "debootstrap $SUITE minbase (+ $PACKAGES)"
  debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-cache" --include="$PACKAGES" \
    "$SUITE" "$root" "$MIRROR" >"$dest/debootstrap.log" 2>&1 \
    || { tail -n 30 "$dest/debootstrap.log" >&2; die "debootstrap failed"; }
  for p in $REPO_PACKAGES; do
    if chroot "$root" dpkg -s "$p" >/dev/null 2>&1; then die "$p got into the image; it must only be in the repository"; fi
  done
  # The repository: what `apt-get install ipvsadm ipset conntrack` needs on exactly this image.
  log "downloading $REPO_PACKAGES (+ dependencies the image lacks) into the repository"
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY_MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  chroot "$root" apt-get clean
  chroot "$root" apt-get -q update >"$dest/apt.log" 2>&1 || { tail -n 20 "$dest/apt.log" >&2; die "apt-get update in the image failed"; }
  # shellcheck disable=SC2086
  chroot "$root" apt-get -q -y --no-install-recommends --download-only install $REPO_PACKAGES >>"$dest/apt.log" 2>&1 \
    || { tail -n 20 "$dest/apt.log" >&2; die "downloading $REPO_PACKAGES failed"; }
  mkdir -p "$dest/repo"
  # Named as in the pool (no epoch, no "%3a"), so the URL apt asks for is the file's name as it is.
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    name=${deb##*/}; mv "$deb" "$dest/repo/$(sed -E 's/_[0-9]+%3a/_/' <<<"$name")"
  done
  ( cd "$dest/repo"
    for deb in *.deb; do
      dpkg-deb -f "$deb" | sed '/^$/d'
      printf 'Filename: ./%s\nSize: %s\nMD5sum: %s\nSHA256: %s\n\n' "$deb" "$(stat -c %s "$deb")" \
        "$(md5sum <"$deb" | cut -d' ' -f1)" "$(sha256sum <"$deb" | cut -d' ' -f1)"
    done >Packages
    gzip -9kf Packages )
  for p in $REPO_PACKAGES; do ls "$dest/repo/${p}_"*.deb >/dev/null 2>&1 || die "$p is not in the repository"; done
  # The harness writes each VM's apt source (the repository above, or the mirror).
  rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/*
  tar --xattrs --xattrs-include='*' -C "$root" -cf "$dest/rootfs.tar" .
  rm -rf --one-file-system "$root"
}
BASE_KEY=$( { printf '%s\n' "$SUITE" "$MIRROR" "$SECURITY_MIRROR" "$PACKAGES" "$REPO_PACKAGES"; declare -f build_base; } | sha256sum | cut -c1-16)
BASE=$CACHE/base/$SUITE-$BASE_KEY
if [ ! -f "$BASE/.complete" ]; then
  rm -rf --one-file-system "$BASE.tmp"; mkdir -p "$BASE.tmp"
  build_base "$BASE.tmp"
  touch "$BASE.tmp/.complete"
  rm -rf "$BASE"; mv "$BASE.tmp" "$BASE"
  for old in "$CACHE"/base/*; do [ "$old" = "$BASE" ] || rm -rf --one-file-system "$old"; done
else
  log "cached base root filesystem: $BASE"
fi
ROOT=$WORK/rootfs
mkdir -p "$ROOT"
tar --xattrs --xattrs-include='*' -C "$ROOT" -xf "$BASE/rootfs.tar"
cp -a "$BASE/repo" "$WORK/repo"
cp "$BASE/debootstrap.log" "$WORK/debootstrap.log"
cat >"$ROOT/etc/apt/apt.conf.d/90kpm-vm" <<'EOF'
Acquire::Languages "none";
APT::Install-Recommends "false";
EOF

log "installing the kernel's modules and configuring the image"
mkdir -p "$ROOT/usr/lib/modules" "$ROOT/boot"
cp -a "$KMODDIR" "$ROOT/usr/lib/modules/"
cp -a "$KBASE/boot/config-$KVER" "$KBASE/boot/System.map-$KVER" "$ROOT/boot/"
depmod -b "$ROOT" "$KVER"
# The module indexes of the same tree without IPVS, for kpm.noipvs (hard links: no copy of the tree).
NOIPVS=$WORK/noipvs
mkdir -p "$NOIPVS/lib/modules"
cp -al "$ROOT/usr/lib/modules/$KVER" "$NOIPVS/lib/modules/$KVER"
rm -rf "$NOIPVS/lib/modules/$KVER/kernel/net/netfilter/ipvs" "$NOIPVS/lib/modules/$KVER/kernel/net/netfilter/xt_ipvs.ko"
# depmod's outputs go (its inputs modules.builtin, .builtin.modinfo and .order stay linked)
find "$NOIPVS/lib/modules/$KVER" -maxdepth 1 -name 'modules.*' ! -name modules.builtin ! -name modules.builtin.modinfo ! -name modules.order -delete
depmod -b "$NOIPVS" "$KVER"
mkdir -p "$ROOT/usr/lib/kpm-vm/noipvs"
cp "$NOIPVS/lib/modules/$KVER"/modules.* "$ROOT/usr/lib/kpm-vm/noipvs/"
grep -q 'ipvs/ip_vs.ko' "$ROOT/usr/lib/modules/$KVER/modules.dep" || die "the kernel's modules.dep has no ip_vs"
if grep -q 'ipvs' "$ROOT/usr/lib/kpm-vm/noipvs/modules.dep"; then die "the indexes without IPVS still name it"; fi

[ -f "$CACHE/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C kpm-vm -f "$CACHE/id_ed25519"
install -d -m 700 "$ROOT/root/.ssh"
install -m 600 "$CACHE/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"
# Each VM gets its own host key from the harness (a known_hosts written before boot): none here.
rm -f "$ROOT"/etc/ssh/ssh_host_*
cat >"$ROOT/etc/ssh/sshd_config.d/kpm-vm.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF

echo kpm-vm >"$ROOT/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
echo '/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0' >"$ROOT/etc/fstab"
# systemd makes a machine-id from systemd.machine_id= on the kernel command line
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"

mkdir -p "$ROOT/etc/systemd/network"
cat >"$ROOT/etc/systemd/network/10-wired.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
rm -f "$ROOT/etc/resolv.conf"
echo "nameserver 10.0.2.3" >"$ROOT/etc/resolv.conf"

# Boot time under TCG is CPU time: no unit that only burns it or could take dpkg's lock mid-test.
chroot "$ROOT" systemctl enable systemd-networkd.service >/dev/null 2>&1
for u in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
         apt-daily.service apt-daily-upgrade.service e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer getty@tty1.service getty-static.service systemd-timesyncd.service dpkg-db-backup.timer \
         systemd-pstore.service; do
  ln -sfn /dev/null "$ROOT/etc/systemd/system/$u"
done
# The serial console (console.log) logs root in for debugging; SSH takes the key only.
chroot "$ROOT" passwd -d root >/dev/null
mkdir -p "$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$ROOT/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
EOF
printf 'KPM_VM_KERNEL=%s %s\nKPM_VM_BUILT=%s\n' "$KPKG" "$KPKG_VERSION" "$(date -u +%FT%TZ)" >"$ROOT/etc/kpm-vm-release"
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/*.log "$ROOT"/tmp/*

# --- initramfs ----------------------------------------------------------------------------------
log "building the initramfs"
IR=$WORK/initramfs
mkdir -p "$IR"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$IR/bin/busybox"
for m in virtio_pci virtio_blk ext4 crc32c_generic; do
  modprobe -d "$KBASE" -S "$KVER" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$IR/modules/"
  basename "$ko" >>"$IR/modules/load.list"
done
[ -s "$IR/modules/load.list" ] || die "no virtio/ext4 modules found for the initramfs"
echo "$KVER" >"$IR/kver"
cat >"$IR/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/load.list); do insmod /modules/$m 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
if ! mount -t ext4 -o rw,noatime /dev/vda /newroot; then
  echo "kpm-vm initramfs: cannot mount /dev/vda"; sleep 1; poweroff -f
fi
# this VM's files (hostname, SSH host key, apt source), from the archive the harness appended
if [ -d /kpm-vm/root ]; then cp -a /kpm-vm/root/. /newroot/ || echo "kpm-vm initramfs: copying the VM's files failed"; fi
kver=$(cat /kver)
if grep -qw kpm.noipvs /proc/cmdline; then
  ipvs=/newroot/usr/lib/modules/$kver/kernel/net/netfilter/ipvs
  if [ -d "$ipvs" ]; then
    rm -rf "$ipvs" "${ipvs%/ipvs}/xt_ipvs.ko" && cp /newroot/usr/lib/kpm-vm/noipvs/modules.* /newroot/usr/lib/modules/$kver/ \
      && echo "kpm-vm initramfs: IPVS removed from this kernel's modules (kpm.noipvs)"
  fi
fi
sync
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /sbin/init
EOF
chmod +x "$IR/init"
(cd "$IR" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$WORK/initrd.img"
# zero padding: the harness appends a second (gzip) archive, and the kernel skips zeros between them
truncate -s "%512" "$WORK/initrd.img"

# --- disk image ---------------------------------------------------------------------------------
log "creating the ext4 image"
rm -rf "$IMG.tmp"; mkdir -p "$IMG.tmp"
mkfs.ext4 -q -F -L kpm-vm-root -E root_owner=0:0 -d "$ROOT" "$IMG.tmp/rootfs.raw" 3G >&2
cp "$KBASE/boot/vmlinuz-$KVER" "$IMG.tmp/vmlinuz"
cp "$WORK/initrd.img" "$IMG.tmp/initrd.img"
cp -a "$WORK/repo" "$IMG.tmp/repo"
cp "$CACHE/id_ed25519" "$CACHE/id_ed25519.pub" "$IMG.tmp/"
cp "$WORK/debootstrap.log" "$IMG.tmp/"
cat >"$IMG.tmp/manifest" <<EOF
KVER=$KVER
KERNEL_PACKAGE=$KPKG $KPKG_VERSION
SUITE=$SUITE
MIRROR=$MIRROR
SECURITY_MIRROR=$SECURITY_MIRROR
PACKAGES=$PACKAGES
REPO=$(cd "$WORK/repo" && ls ./*.deb | sed 's|^\./||' | tr '\n' ' ')
BUILD_SECONDS=$((SECONDS - t0))
EOF
touch "$IMG.tmp/.complete"
rm -rf "$IMG"; mv "$IMG.tmp" "$IMG"
# older images go (a VM still running on one keeps its open backing file until it stops)
for old in "$CACHE"/images/*; do [ "$old" = "$IMG" ] || rm -rf "$old"; done
log "image ready in $((SECONDS - t0))s: $IMG ($(du -sh "$IMG" | cut -f1) on disk)"
echo "$IMG"
