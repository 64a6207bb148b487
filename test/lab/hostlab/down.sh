#!/usr/bin/env bash
# Tear down the lab in $LAB_STATE:
#   down.sh [--purge]
# Signals each host's PID 1 by its recorded PID (checked against the recorded start time, so
# a reused PID is never hit), waits, SIGKILLs what is left, removes the network namespaces,
# the bridge and any NAT rules, makes sure no lab mount is left, and deletes $LAB_STATE.
# --purge also deletes the rootfs cache ($LAB_CACHE), which other labs may share.
# Safe to run twice, and on a lab whose start was interrupted.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "must run as root"
purge=false; [ "${1:-}" = --purge ] && purge=true
t0=$(date +%s.%N)

if [ -f "$LAB_STATE/lab.env" ]; then
  # shellcheck disable=SC1091
  . "$LAB_STATE/lab.env"
fi

shopt -s nullglob
hostdirs=("$LAB_STATE"/hosts/*/)
declare -a inits=()
for d in "${hostdirs[@]}"; do
  p=$(live_pid "$d/init.pid"); [ -n "$p" ] && inits+=("$p")
done
[ ${#hostdirs[@]} -eq 0 ] || log "stopping ${#hostdirs[@]} hosts in $LAB_STATE (${#inits[@]} running)"
# SIGTERM to a host's PID 1 (tini) stops sshd; once PID 1 exits the kernel kills the rest of
# its PID namespace, and its mount namespace (overlay, /proc, /dev, ...) goes with it.
[ ${#inits[@]} -eq 0 ] || kill -TERM "${inits[@]}" 2>/dev/null || true
wait_gone() { # pidfile-name tries
  local d alive
  for _ in $(seq 1 "$2"); do
    alive=0
    for d in "${hostdirs[@]}"; do [ -n "$(live_pid "$d/$1")" ] && alive=$((alive + 1)); done
    [ $alive -eq 0 ] && return 0
    sleep 0.1
  done
  return 1
}
wait_gone init.pid 100 || true
for d in "${hostdirs[@]}"; do
  p=$(live_pid "$d/init.pid"); [ -n "$p" ] && { log "SIGKILL $p ($(basename "$d"))"; kill -KILL "$p" 2>/dev/null || true; }
done
# The unshare parents exit with their child; kill any that did not (e.g. a failed start).
wait_gone unshare.pid 30 || true
for d in "${hostdirs[@]}"; do
  p=$(live_pid "$d/unshare.pid"); [ -n "$p" ] && { kill -KILL "$p" 2>/dev/null || true; }
done

# Network namespaces (each takes its veth along), bridge, NAT.
for d in "${hostdirs[@]}"; do
  ns=$(sed -n 's/^netns=//p' "$d/host.env" 2>/dev/null || true)
  if [ -n "$ns" ] && [ -e "/run/netns/$ns" ]; then ip netns del "$ns"; fi
done
for ns in $(ip netns list 2>/dev/null | awk -v p="$LAB_NETNS_PREFIX" 'index($1, p) == 1 {print $1}'); do
  log "removing leftover netns $ns"; ip netns del "$ns"
done
if [ "${BRIDGE_CREATED:-0}" = 1 ] && ip link show "$LAB_BRIDGE" >/dev/null 2>&1; then ip link del "$LAB_BRIDGE"; fi
if [ "${NAT_RULES:-0}" = 1 ]; then
  src=$LAB_NET_PREFIX.0.0/16
  iptables -t nat -D POSTROUTING -s "$src" ! -o "$LAB_BRIDGE" -m comment --comment kpm-lab -j MASQUERADE 2>/dev/null || true
  iptables -D FORWARD -o "$LAB_BRIDGE" -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment kpm-lab -j ACCEPT 2>/dev/null || true
  iptables -D FORWARD -i "$LAB_BRIDGE" -p tcp -m multiport --dports 80,443 -m comment --comment kpm-lab -j ACCEPT 2>/dev/null || true
  iptables -D FORWARD -i "$LAB_BRIDGE" -p udp --dport 53 -m comment --comment kpm-lab -j ACCEPT 2>/dev/null || true
  iptables -D FORWARD -i "$LAB_BRIDGE" -p tcp --dport 53 -m comment --comment kpm-lab -j ACCEPT 2>/dev/null || true
  iptables -D FORWARD -i "$LAB_BRIDGE" ! -o "$LAB_BRIDGE" -m comment --comment kpm-lab -j DROP 2>/dev/null || true
  [ -z "${OLD_IP_FORWARD:-}" ] || sysctl -qw "net.ipv4.ip_forward=$OLD_IP_FORWARD"
fi

wait_gone unshare.pid 10 || log "WARNING: some unshare processes survived: $(for d in "${hostdirs[@]}"; do live_pid "$d/unshare.pid"; done | tr '\n' ' ')"
wait_gone init.pid 1 || log "WARNING: some host init processes survived"

# No host mount is visible in the machine's mount namespace; make sure of it before deleting
# the state directory, so that rm never recurses into a live overlay.
leftover=$(awk -v s="$LAB_STATE/" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | sort -r)
for m in $leftover; do log "unmounting leftover $m"; umount -l "$m" || true; done

if [ -d "$LAB_STATE" ]; then rm -rf --one-file-system "$LAB_STATE"; fi
if $purge; then rm -rf --one-file-system "$LAB_CACHE"; fi

[ ${#hostdirs[@]} -eq 0 ] ||
  awk -v t="$t0" -v e="$(date +%s.%N)" -v n="${#hostdirs[@]}" 'BEGIN { printf "down: %d hosts removed in %.1fs\n", n, e-t }' >&2
exit 0
