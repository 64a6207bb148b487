#!/usr/bin/env bash
# Install the Debian packages the lab needs on this machine, only those that are missing.
#   setup-machine.sh           install what is missing (apt-get update once, then install)
#   setup-machine.sh --check   install nothing; exit 1 and name the missing packages
# Quiet and quick when everything is there, so up.sh can call it on every start.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# command -> package providing it
declare -A need=(
  [debootstrap]=debootstrap
  [ip]=iproute2
  [ssh]=openssh-client [ssh-keygen]=openssh-client
  [nsenter]=util-linux [unshare]=util-linux [setsid]=util-linux [flock]=util-linux
  [mount]=mount [umount]=mount
  [sysctl]=procps
  [getfattr]=attr
  [timeout]=coreutils [sha256sum]=coreutils
)
[ "$LAB_APT" = mirror ] && need[iptables]=iptables
declare -A missing=()
for c in "${!need[@]}"; do command -v "$c" >/dev/null 2>&1 || missing[${need[$c]}]=1; done
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
