#!/usr/bin/env bash
# Bring up N kpm lab hosts ("worker nodes") on this machine.
#
#   up.sh N [--kmod-shim] [--inventory FILE]
#
# Each host has its own overlayfs root (a private upper layer over the shared read-only
# Debian rootfs), its own mount/uts/ipc/pid namespaces and hostname, its own network
# namespace with a veth on bridge $LAB_BRIDGE (or, with LAB_NET=loopback, its own
# 127.0.x.y address), and its own sshd with its own host key.  Logins: root, kpm and
# kpmnopw, by the lab key only.  PID 1 of a host is tini.
#
# Prints the YAML inventory on stdout and writes, under $LAB_STATE: inventory.yaml,
# inventory.json, ansible-inventory.yaml, ssh/{config,known_hosts,id_ed25519}.  Progress
# goes to stderr.  hostctl.sh operates on single hosts; down.sh tears everything down.
# Must run as root.  Installs missing machine packages (setup-machine.sh) and builds the
# rootfs (build-rootfs.sh) the first time.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 N [--kmod-shim] [--inventory FILE]" >&2; exit 2; }
N='' inv_out=''
while [ $# -gt 0 ]; do
  case "$1" in
    --kmod-shim) LAB_KMOD_SHIM=1;;
    --inventory) [ $# -ge 2 ] || usage; inv_out=$2; shift;;
    [0-9]*) N=$1;;
    *) usage;;
  esac
  shift
done
[[ $N =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 9999 ] || usage
[ "$(id -u)" = 0 ] || die "must run as root"
[ "$LAB_NET" = netns ] || [ "$LAB_NET" = loopback ] || die "LAB_NET must be netns or loopback"
[ "$LAB_APT" = local ] || [ "$LAB_APT" = mirror ] || die "LAB_APT must be local or mirror"
[ "$LAB_APT" = local ] || [ "$LAB_NET" = netns ] || die "LAB_APT=mirror needs LAB_NET=netns"
[[ $LAB_BRIDGE =~ ^[A-Za-z0-9_]{1,10}$ ]] || die "LAB_BRIDGE must be 1-10 letters, digits or _"
[[ $LAB_NET_PREFIX =~ ^[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "LAB_NET_PREFIX must look like 10.77"
[ "$LAB_NET" = loopback ] || [ "$N" -le 1000 ] || die "netns mode: at most 1000 hosts (a Linux bridge has at most 1024 ports)"
if [ -n "$(ls -A "$LAB_STATE/hosts" 2>/dev/null)" ]; then die "a lab is already up in $LAB_STATE (run down.sh first)"; fi

t_start=$(date +%s.%N)
"$LAB_DIR/setup-machine.sh" --check 2>/dev/null || "$LAB_DIR/setup-machine.sh"
"$LAB_DIR/build-rootfs.sh"
t_rootfs=$(date +%s.%N)

if [ "$LAB_NET" = netns ]; then
  ip link show "$LAB_BRIDGE" >/dev/null 2>&1 && die "bridge $LAB_BRIDGE already exists (another lab, or a stale one: down.sh with its LAB_STATE/LAB_BRIDGE)"
  # Two bridges with one subnet would make the machine's traffic to the hosts go astray,
  # and a subnet the machine already reaches must never be shadowed.
  taken=$(ip -4 -o addr show | awk -v p="$LAB_NET_PREFIX." 'index($4, p) == 1 {print $2 " " $4}')
  [ -z "$taken" ] || die "$LAB_NET_PREFIX.0.0/16 is already in use on this machine ($taken): pick another LAB_NET_PREFIX"
  taken=$(ip -4 route show match "$LAB_NET_PREFIX.0.11" | grep -v '^default' || true)
  [ -z "$taken" ] || die "$LAB_NET_PREFIX.0.0/16 overlaps a route of this machine ($taken): pick another LAB_NET_PREFIX"
fi

mkdir -p "$LAB_STATE/hosts" "$LAB_SSH_DIR"
chmod 700 "$LAB_STATE" "$LAB_SSH_DIR"
[ -f "$LAB_KEY" ] || ssh-keygen -q -t ed25519 -N '' -C "kpm-lab-client" -f "$LAB_KEY"

# Lower layers (leftmost = top).  The kmod shim is its own read-only layer, stacked only on
# request, so a host without it has the real kmod.
LAB_LOWER=$LAB_ROOTFS
if [ "$LAB_KMOD_SHIM" = 1 ]; then
  layer=$LAB_STATE/layers/kmod-shim
  rm -rf "$layer"; mkdir -p "$layer"
  cp -a "$LAB_KMOD_LAYER/." "$layer/"
  # The IPVS fixture's dpkg diversion: the ipvsadm package then installs its binary as
  # ipvsadm.real and the labelled wrapper takes /usr/sbin/ipvsadm (see
  # kmod-shim/layer/usr/lib/kpm-lab-ipvs/).  bookworm's package ships /sbin/ipvsadm, later
  # ones /usr/sbin/ipvsadm: both aliases are diverted, as Debian does for files that move
  # into /usr.  It lives in this layer, on top of the rootfs's own diversions, so that hosts
  # without the shim keep Debian's ipvsadm untouched.
  mkdir -p "$layer/var/lib/dpkg"
  { cat "$LAB_ROOTFS/var/lib/dpkg/diversions" 2>/dev/null || true
    printf '%s\n' /sbin/ipvsadm /sbin/ipvsadm.real : /usr/sbin/ipvsadm /usr/sbin/ipvsadm.real :
  } >"$layer/var/lib/dpkg/diversions"
  chown -R 0:0 "$layer"; chmod -R go-w "$layer"
  LAB_LOWER="$layer:$LAB_ROOTFS"
fi
cat >"$LAB_STATE/lab.env" <<ENV
LAB_HOSTS=$N
LAB_NET=$LAB_NET
LAB_BRIDGE=$LAB_BRIDGE
LAB_NET_PREFIX=$LAB_NET_PREFIX
LAB_NETNS_PREFIX=$LAB_NETNS_PREFIX
LAB_APT=$LAB_APT
LAB_PORT=$LAB_PORT
LAB_KMOD_SHIM=$LAB_KMOD_SHIM
LAB_ROOTFS=$LAB_ROOTFS
LAB_LOWER=$LAB_LOWER
ENV

# ---- network -----------------------------------------------------------------------------
if [ "$LAB_NET" = netns ]; then
  ip link add "$LAB_BRIDGE" type bridge stp_state 0 forward_delay 0
  echo "BRIDGE_CREATED=1" >>"$LAB_STATE/lab.env"
  ip addr add "$LAB_NET_PREFIX.0.1/16" dev "$LAB_BRIDGE"
  ip link set "$LAB_BRIDGE" up
  if [ "$LAB_APT" = mirror ]; then
    command -v iptables >/dev/null || die "LAB_APT=mirror needs iptables on this machine"
    # Let the hosts reach the Debian mirror (and the machine's resolver) through NAT.
    # Only HTTP(S) and DNS are forwarded; everything else from the bridge is dropped.
    echo "OLD_IP_FORWARD=$(sysctl -n net.ipv4.ip_forward)" >>"$LAB_STATE/lab.env"
    echo "NAT_RULES=1" >>"$LAB_STATE/lab.env"
    src=$LAB_NET_PREFIX.0.0/16
    iptables -t nat -A POSTROUTING -s "$src" ! -o "$LAB_BRIDGE" -m comment --comment kpm-lab -j MASQUERADE
    iptables -A FORWARD -o "$LAB_BRIDGE" -m conntrack --ctstate ESTABLISHED,RELATED -m comment --comment kpm-lab -j ACCEPT
    iptables -A FORWARD -i "$LAB_BRIDGE" -p tcp -m multiport --dports 80,443 -m comment --comment kpm-lab -j ACCEPT
    iptables -A FORWARD -i "$LAB_BRIDGE" -p udp --dport 53 -m comment --comment kpm-lab -j ACCEPT
    iptables -A FORWARD -i "$LAB_BRIDGE" -p tcp --dport 53 -m comment --comment kpm-lab -j ACCEPT
    iptables -A FORWARD -i "$LAB_BRIDGE" ! -o "$LAB_BRIDGE" -m comment --comment kpm-lab -j DROP
    sysctl -qw net.ipv4.ip_forward=1
  fi
fi

# ---- hosts -------------------------------------------------------------------------------
log "creating $N hosts in $LAB_STATE (net=$LAB_NET ${LAB_NET_PREFIX}.0.0/16 bridge=$LAB_BRIDGE apt=$LAB_APT kmod-shim=$LAB_KMOD_SHIM)"
for i in $(seq 1 "$N"); do
  prepare_host "$i"
  [ "$LAB_NET" = netns ] && create_host_net "$i"
  start_host "$i"
done
t_spawned=$(date +%s.%N)

# ---- wait until every sshd accepts TCP connections -------------------------------------
deadline=$((SECONDS + 60 + N / 2))
pending=$(seq 1 "$N")
while [ -n "$pending" ]; do
  next=
  for i in $pending; do
    if ! timeout 2 bash -c ": </dev/tcp/$(host_addr "$i")/$LAB_PORT" 2>/dev/null; then
      n=$(host_name "$i")
      if [ -z "$(live_pid "$LAB_STATE/hosts/$n/unshare.pid")" ]; then
        log "$n died during start; console:"; tail -5 "$LAB_STATE/hosts/$n/console.log" >&2
        die "host start failed (run down.sh to clean up)"
      fi
      next+=" $i"
    fi
  done
  pending=$next
  [ -z "$pending" ] && break
  if [ $SECONDS -gt $deadline ]; then
    for i in $pending; do n=$(host_name "$i"); log "$n not ready; console:"; tail -5 "$LAB_STATE/hosts/$n/console.log" >&2; done
    die "hosts did not come up (run down.sh to clean up)"
  fi
  sleep 0.2
done
t_ready=$(date +%s.%N)

write_inventories "$N"
[ -z "$inv_out" ] || cp "$LAB_INVENTORY" "$inv_out"
t_end=$(date +%s.%N)

awk -v a="$t_start" -v r="$t_rootfs" -v s="$t_spawned" -v y="$t_ready" -v e="$t_end" -v n="$N" 'BEGIN {
  printf "up: %d hosts ready in %.1fs (machine setup + rootfs check/build %.1fs, spawn %.1fs, wait for sshd %.1fs, inventory %.1fs)\n",
    n, e-a, r-a, s-r, y-s, e-y }' | tee "$LAB_STATE/up-timing.txt" >&2
cat "$LAB_INVENTORY"
