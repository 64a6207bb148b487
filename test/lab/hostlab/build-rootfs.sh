#!/usr/bin/env bash
# Build, once per machine, the read-only lower layer shared by every lab host:
#   $LAB_ROOTFS          Debian minbase with openssh-server, sudo, python3 (+python3-apt, for
#                        Ansible), tini (PID 1), kmod, iproute2, procps, iptables, nftables,
#                        curl -- and WITHOUT ipvsadm/ipset/conntrack, so that installing them
#                        is real work for the tool under test;
#   /opt/kpm-lab-repo    (inside it) a flat file: apt repository holding ipvsadm, ipset,
#                        conntrack and the dependencies they add, with the apt lists already
#                        fetched, so `apt-get install -y ipvsadm ipset conntrack` works offline;
#   users kpm (sudo with password "lab-sudo-secret") and kpmnopw (sudo without password).
# Needs the Debian mirror once (about a minute).  Usage: build-rootfs.sh [--force]
# Labs starting at the same time wait on a lock instead of building twice.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

stamp=$LAB_ROOTFS/etc/kpm-lab-rootfs
ready() { [ -f "$stamp" ] && grep -qx "version=$LAB_ROOTFS_VERSION" "$stamp"; }
if [ "${1:-}" != --force ] && ready; then log "rootfs ready: $LAB_ROOTFS"; exit 0; fi

mkdir -p "$LAB_CACHE"
exec 8>"$LAB_CACHE/build.lock"
if ! flock -n 8; then
  log "another lab is building the rootfs; waiting for it"
  flock 8
fi
if [ "${1:-}" != --force ] && ready; then log "rootfs ready: $LAB_ROOTFS"; exit 0; fi

[ -z "$(ls -A "$LAB_STATE/hosts" 2>/dev/null)" ] || die "hosts are up (run down.sh first); they use $LAB_ROOTFS"
command -v debootstrap >/dev/null || die "debootstrap missing (run setup-machine.sh)"
[ -n "$LAB_MIRROR" ] || die "no Debian mirror found in this machine's apt sources: set LAB_MIRROR"
tmp=$LAB_ROOTFS.tmp
rm -rf --one-file-system "$tmp"
t0=$SECONDS
log "debootstrap $LAB_SUITE from $LAB_MIRROR into $tmp (once per machine, about a minute)"
debootstrap --variant=minbase \
  --include=openssh-server,sudo,python3,python3-apt,tini,kmod,iproute2,procps,iputils-ping,ca-certificates,iptables,nftables,curl \
  "$LAB_SUITE" "$tmp" "$LAB_MIRROR" >"$LAB_ROOTFS.debootstrap.log" 2>&1 \
  || { tail -20 "$LAB_ROOTFS.debootstrap.log" >&2; die "debootstrap failed (log: $LAB_ROOTFS.debootstrap.log)"; }

for p in ipvsadm ipset conntrack; do
  if chroot "$tmp" dpkg -s "$p" >/dev/null 2>&1; then die "$p got into the base rootfs; it must only be in the local repo"; fi
done

# Full sources (main + updates + security), only to download the packages below.
cat >"$tmp/etc/apt/sources.list" <<SRC
deb $LAB_MIRROR $LAB_SUITE main
deb $LAB_MIRROR $LAB_SUITE-updates main
deb ${LAB_MIRROR%/debian*}/debian-security $LAB_SUITE-security main
SRC
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
log "downloading ipvsadm ipset conntrack (+ what they add) into the local repo"
chroot "$tmp" apt-get -q update >/dev/null
chroot "$tmp" apt-get clean   # drop debootstrap's own .debs: the repo holds only what is missing
chroot "$tmp" apt-get -q -y --no-install-recommends --download-only install ipvsadm ipset conntrack >/dev/null
repo=$tmp/opt/kpm-lab-repo
mkdir -p "$repo"
mv "$tmp"/var/cache/apt/archives/*.deb "$repo/"

# A flat repository index written by hand, so nothing beyond dpkg-deb is needed.
( cd "$repo"
  for deb in *.deb; do
    dpkg-deb -f "$deb" | sed '/^$/d'
    printf 'Filename: ./%s\nSize: %s\nMD5sum: %s\nSHA256: %s\n\n' "$deb" "$(stat -c %s "$deb")" \
      "$(md5sum <"$deb" | cut -d' ' -f1)" "$(sha256sum <"$deb" | cut -d' ' -f1)"
  done >Packages
  gzip -9kf Packages )

# Hosts use the local repo; up.sh rewrites this per host only for LAB_APT=mirror.
cat >"$tmp/etc/apt/sources.list" <<'SRC'
# kpm test lab: offline file: repository (ipvsadm, ipset, conntrack and their dependencies)
deb [trusted=yes] file:/opt/kpm-lab-repo ./
SRC
cat >"$tmp/etc/apt/apt.conf.d/90kpm-lab" <<'SRC'
Acquire::Languages "none";
APT::Install-Recommends "false";
SRC
rm -rf "$tmp"/var/lib/apt/lists/*
chroot "$tmp" apt-get -q update >/dev/null
chroot "$tmp" apt-get clean
# Without these caches the first read-only apt query on a host (apt-cache policy, apt-get -s)
# would write them into the host's disk and look like a change.
chroot "$tmp" apt-cache gencaches >/dev/null
rm -f "$tmp/etc/resolv.conf"

# Non-root logins for the tool's sudo paths.  kpmnopw gets "*" (no password, not locked) so
# that key login is allowed whatever sshd's UsePAM says.
chroot "$tmp" useradd --create-home --shell /bin/bash "$LAB_SUDO_USER"
chroot "$tmp" useradd --create-home --shell /bin/bash "$LAB_NOPASSWD_USER"
echo "$LAB_SUDO_USER:$LAB_SUDO_PASSWORD" | chroot "$tmp" chpasswd
chroot "$tmp" usermod -p '*' "$LAB_NOPASSWD_USER"
echo "$LAB_SUDO_USER ALL=(ALL:ALL) ALL" >"$tmp/etc/sudoers.d/$LAB_SUDO_USER"
echo "$LAB_NOPASSWD_USER ALL=(ALL:ALL) NOPASSWD: ALL" >"$tmp/etc/sudoers.d/$LAB_NOPASSWD_USER"
chmod 0440 "$tmp/etc/sudoers.d/$LAB_SUDO_USER" "$tmp/etc/sudoers.d/$LAB_NOPASSWD_USER"
chroot "$tmp" visudo -c >/dev/null || die "sudoers check failed"

# sshd: key-only logins; every host gets its own host key from up.sh.
rm -f "$tmp"/etc/ssh/ssh_host_*
cat >"$tmp/etc/ssh/sshd_config.d/kpm-lab.conf" <<'SRC'
# kpm test lab host
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
MaxStartups 200:30:400
MaxSessions 64
SRC
# No syslog runs in a host; keep the login banner quiet.
: >"$tmp/etc/motd"
mkdir -p "$tmp/run/sshd"

cat >"$tmp/etc/kpm-lab-rootfs" <<SRC
version=$LAB_ROOTFS_VERSION
suite=$LAB_SUITE
built=$(date -u +%FT%TZ)
This is a kpm test lab host: an overlay over a shared debootstrap rootfs, with its own
mount/pid/uts/ipc (and network) namespaces.  It is NOT a VM: the kernel is the machine's.
SRC
rm -rf --one-file-system "$LAB_ROOTFS"
mv "$tmp" "$LAB_ROOTFS"
log "rootfs built in $((SECONDS - t0))s: $LAB_ROOTFS ($(du -sh "$LAB_ROOTFS" | cut -f1)); repo: $(find "$LAB_ROOTFS/opt/kpm-lab-repo" -name '*.deb' | wc -l) .debs"
old=$(find "$LAB_CACHE" -mindepth 1 -maxdepth 1 -type d -name 'rootfs-v*' ! -name "rootfs-v$LAB_ROOTFS_VERSION" 2>/dev/null || true)
[ -z "$old" ] || log "older rootfs versions left in place (a lab may still use them; down.sh --purge drops all): $(echo $old)"
