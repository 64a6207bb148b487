#!/usr/bin/env bash
# Install the Debian packages the VM tier needs on this machine, only those that are missing.
#   setup-machine.sh           install what is missing (apt-get update once, then install)
#   setup-machine.sh --check   install nothing; exit 1 and name the missing packages
# Quiet and quick when everything is there, so build-image.sh can call it on every start.
set -euo pipefail

log() { printf '[kpm-vm %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# command -> package providing it
declare -A need=(
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [debootstrap]=debootstrap
  [cpio]=cpio
  [ssh]=openssh-client [ssh-keygen]=openssh-client
  [depmod]=kmod [modprobe]=kmod
  [mkfs.ext4]=e2fsprogs
  [flock]=util-linux [setsid]=util-linux
  [gzip]=gzip
)
declare -A missing=()
for c in "${!need[@]}"; do
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || [ -x "/sbin/$c" ] || missing[${need[$c]}]=1
done
# The initramfs runs a static busybox (it has no libc) that must have switch_root.
busybox_ok() {
  [ -x /bin/busybox ] || return 1
  case "$(/bin/busybox --list 2>/dev/null)" in *switch_root*) ;; *) return 1 ;; esac
  case "$(LC_ALL=C ldd /bin/busybox 2>&1 || true)" in *"not a dynamic"*|*"statically linked"*) return 0 ;; esac
  return 1
}
busybox_ok || missing[busybox-static]=1
[ ${#missing[@]} -eq 0 ] && exit 0
pkgs=$(printf '%s\n' "${!missing[@]}" | sort | tr '\n' ' ')
if [ "${1:-}" = --check ]; then echo "missing packages: $pkgs" >&2; exit 1; fi

[ "$(id -u)" = 0 ] || die "must run as root to install: $pkgs"
command -v apt-get >/dev/null || die "no apt-get on this machine; install by hand: $pkgs"
log "installing on this machine: $pkgs"
export DEBIAN_FRONTEND=noninteractive
out=$(mktemp); trap 'rm -f "$out"' EXIT
# apt's locks may be held by another install that is already running: wait for it.
apt_retry() {
  local end=$((SECONDS + 900))
  until apt-get -q -o DPkg::Lock::Timeout=300 "$@" >"$out" 2>&1; do
    if grep -qE 'Could not get lock|Unable to lock|is another process using it' "$out" && [ $SECONDS -lt $end ]; then
      log "apt is busy; waiting"; sleep 5; continue
    fi
    tail -20 "$out" >&2; die "apt-get $* failed"
  done
}
apt_retry update
# shellcheck disable=SC2086
apt_retry install -y --no-install-recommends $pkgs
log "installed: $pkgs"
