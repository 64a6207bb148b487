# shellcheck shell=bash
# Settings and per-host building blocks of the kpm test lab, sourced by every script here.
# Paths are relative to this directory or under /tmp; each can be overridden with a LAB_*
# variable, and a lab is fully described by LAB_STATE, LAB_BRIDGE and LAB_NET_PREFIX, so
# several labs with different values run side by side on one machine.

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# State of one lab: keys, per-host overlay upper layers, PIDs, inventories.  down.sh deletes it.
LAB_STATE=${LAB_STATE:-/tmp/kpm-lab}
# Survives down.sh and is shared by all labs: the debootstrap rootfs (every host's read-only
# lower layer, with an offline apt repository inside).  down.sh --purge deletes it.
LAB_CACHE=${LAB_CACHE:-/tmp/kpm-lab-cache}
# Bump when build-rootfs.sh changes.  Each version gets its own directory, so a rebuild
# never pulls the lower layer from under a lab that is still running on an older one.
LAB_ROOTFS_VERSION=6
LAB_ROOTFS=$LAB_CACHE/rootfs-v$LAB_ROOTFS_VERSION
LAB_SUITE=${LAB_SUITE:-bookworm}
# Only the rootfs build (and LAB_APT=mirror) talks to a mirror: the first Debian URI in this
# machine's apt sources, so the lab goes nowhere the machine's own apt does not.
LAB_MIRROR=${LAB_MIRROR:-$( { grep -hs -E '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources | awk '{for(i=2;i<=NF;i++)print $i}'
  grep -hs -E '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
  } 2>/dev/null | grep -E '/debian/?$' | head -n1 || true )}

# Network mode:
#   netns    (default) each host has its own network namespace, one veth on bridge
#            $LAB_BRIDGE and an address in $LAB_NET_PREFIX.0.0/16; no default route, so
#            a host reaches the other hosts and the machine, nothing else.
#   loopback all hosts share the machine's network stack, each sshd on its own 127.0.x.y
#            (so iptables/ipset/conntrack state is shared between hosts).
LAB_NET=${LAB_NET:-netns}
if [ "$LAB_NET" = loopback ]; then LAB_NET_PREFIX=${LAB_NET_PREFIX:-127.0}; else LAB_NET_PREFIX=${LAB_NET_PREFIX:-10.77}; fi
# Also names the netns (kpmlab0-node001) and the machine-side veths (kpmlab0v1): at most 10
# characters, so that "<bridge>v<1000>" still fits in 15.
LAB_BRIDGE=${LAB_BRIDGE:-kpmlab0}
LAB_PORT=${LAB_PORT:-22}
# apt source inside the hosts:
#   local  (default) the file: repository baked into the rootfs: offline and deterministic
#   mirror the Debian mirror through NAT on the machine (netns only; changes the machine's
#          firewall and ip_forward while the lab is up, so tests do not use it)
LAB_APT=${LAB_APT:-local}
# 1 = stack the kmod test-fixture layer (stand-in modprobe/lsmod/rmmod, see kmod-shim/)
LAB_KMOD_SHIM=${LAB_KMOD_SHIM:-0}

LAB_NETNS_PREFIX=$LAB_BRIDGE-
LAB_SSH_DIR=$LAB_STATE/ssh
LAB_KEY=$LAB_SSH_DIR/id_ed25519
LAB_KNOWN_HOSTS=$LAB_SSH_DIR/known_hosts
LAB_SSH_CONFIG=$LAB_SSH_DIR/config
LAB_INVENTORY=$LAB_STATE/inventory.yaml
LAB_INVENTORY_JSON=$LAB_STATE/inventory.json
LAB_ANSIBLE_INVENTORY=$LAB_STATE/ansible-inventory.yaml
# shellcheck disable=SC2034  # used by up.sh
LAB_KMOD_LAYER=$LAB_DIR/kmod-shim/layer
# Non-root accounts in every host, for tests of the tool's sudo handling.  Both accept the
# lab key; kpm needs its password for sudo, kpmnopw does not.
LAB_SUDO_USER=kpm
LAB_SUDO_PASSWORD=lab-sudo-secret
LAB_NOPASSWD_USER=kpmnopw

log() { printf '[kpm-lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

host_name() { printf 'node%03d' "$1"; }
# Set HN (name), HA (address) and HD (state dir) of host $1 without forking: up.sh calls it
# thousands of times for a big lab.
host_vars() { printf -v HN 'node%03d' "$1"; printf -v HA '%s.%d.%d' "$LAB_NET_PREFIX" $(($1 / 100)) $(($1 % 100 + 10)); HD=$LAB_STATE/hosts/$HN; }

# Address of host number $1 (1-based): x.y.(i/100).(i%100+10), so node001 = x.y.0.11
host_addr() { local HN HA HD; host_vars "$1"; printf '%s' "$HA"; }
host_index() { local n=${1#node}; [[ $n =~ ^[0-9]+$ ]] || die "not a host name: $1"; echo $((10#$n)); }

# Start time (field 22 of /proc/PID/stat) of a live, non-zombie process; stored next to each
# PID so that a PID the kernel has since reused is never signalled.
proc_id() { local s; { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1; s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s; [ "$1" != Z ] || return 1; echo "${20}"; }

# "pid" if the process recorded in a "pid starttime" file is still that process.
live_pid() { local pid st; [ -f "$1" ] || return 0; read -r pid st <"$1" || return 0
  [ -n "$pid" ] && [ "$(proc_id "$pid" 2>/dev/null)" = "$st" ] && echo "$pid"; return 0; }

# ---- per-host building blocks (up.sh, hostctl.sh) -----------------------------------------

# Create directory REL (and its parents) in upper layer $1 with the mode and owner the rootfs
# gives it.  In a merged overlay directory the upper copy's attributes win, so a plain
# `mkdir -p` would turn /root or /home/kpm into a root-owned 0755 directory.
mkdir_like_rootfs() {
  local upper=$1 rel=$2 p='' c
  local IFS=/
  for c in $rel; do
    [ -n "$c" ] || continue
    p=${p:+$p/}$c
    [ -d "$upper/$p" ] && continue
    mkdir "$upper/$p"
    if [ -d "$LAB_ROOTFS/$p" ]; then
      chown --reference="$LAB_ROOTFS/$p" "$upper/$p"; chmod --reference="$LAB_ROOTFS/$p" "$upper/$p"
    fi
  done
}

# uid:gid of a user of the rootfs (the machine need not know that user).
rootfs_owner() { awk -F: -v u="$1" '$1 == u { print $3 ":" $4; f = 1 } END { exit !f }' "$LAB_ROOTFS/etc/passwd"; }

# Put the lab's client key into a user's authorized_keys in upper layer $1.
authorize_key() {
  local upper=$1 user=$2 home=$3 owner
  owner=$(rootfs_owner "$user") || die "user $user missing from the rootfs"
  mkdir_like_rootfs "$upper" "${home#/}"
  mkdir -p "$upper$home/.ssh"
  cp "$LAB_KEY.pub" "$upper$home/.ssh/authorized_keys"
  chown -R "$owner" "$upper$home/.ssh"
  chmod 700 "$upper$home/.ssh"; chmod 600 "$upper$home/.ssh/authorized_keys"
}

# The files every host's disk starts with (authorized_keys of root, kpm and kpmnopw, and the
# apt sources in mirror mode), built once per lab: copying it costs one fork per host, where
# building it costs dozens, and forks are what a big lab's start-up time is made of.
ensure_skel() {
  local s=$LAB_STATE/skel
  [ -f "$LAB_STATE/skel.done" ] && return 0
  rm -rf "$s"; mkdir -p "$s"
  chown --reference="$LAB_ROOTFS" "$s"; chmod --reference="$LAB_ROOTFS" "$s"
  mkdir_like_rootfs "$s" etc/ssh
  authorize_key "$s" root /root
  authorize_key "$s" "$LAB_SUDO_USER" "/home/$LAB_SUDO_USER"
  authorize_key "$s" "$LAB_NOPASSWD_USER" "/home/$LAB_NOPASSWD_USER"
  if [ "$LAB_APT" = mirror ]; then
    mkdir_like_rootfs "$s" etc/apt
    printf 'deb %s %s main\ndeb %s %s-updates main\n' "$LAB_MIRROR" "$LAB_SUITE" "$LAB_MIRROR" "$LAB_SUITE" >"$s/etc/apt/sources.list"
    cp /etc/resolv.conf "$s/etc/resolv.conf"
  fi
  : >"$LAB_STATE/skel.done"
}

# Write the host's own files into its (new or wiped) upper layer.  Its SSH host key lives in
# $HD/hostkey, outside the upper layer, so that a reset host keeps its identity.
prepare_host() {
  local i=$1 name addr d u mid HN HA HD
  host_vars "$i"; name=$HN addr=$HA d=$HD; u=$d/upper
  ensure_skel
  mkdir -p "$d/work" "$d/root" "$d/hostkey"
  cp -a "$LAB_STATE/skel/." "$u/"
  echo "$name" >"$u/etc/hostname"
  printf '127.0.0.1\tlocalhost\n%s\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$addr" "$name" >"$u/etc/hosts"
  printf -v mid '%08x%08x%08x%08x' "$SRANDOM" "$SRANDOM" "$SRANDOM" "$SRANDOM"
  echo "$mid" >"$u/etc/machine-id"
  [ -f "$d/hostkey/ssh_host_ed25519_key" ] ||
    ssh-keygen -q -t ed25519 -N '' -C "root@$name" -f "$d/hostkey/ssh_host_ed25519_key"
  cp -p "$d/hostkey/ssh_host_ed25519_key" "$d/hostkey/ssh_host_ed25519_key.pub" "$u/etc/ssh/"
  local ns=; [ "$LAB_NET" != netns ] || ns=$LAB_NETNS_PREFIX$name
  printf 'name=%s\naddr=%s\nport=%s\nnetns=%s\n' "$name" "$addr" "$LAB_PORT" "$ns" >"$d/host.env"
}

# netns mode: the host's network namespace with one veth on the lab bridge.
create_host_net() {
  local i=$1 ns veth HN HA HD
  host_vars "$i"; ns=$LAB_NETNS_PREFIX$HN; veth=${LAB_BRIDGE}v$i
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$LAB_BRIDGE" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$HA/16" dev eth0
  ip -n "$ns" link set eth0 up
  if [ "$LAB_APT" = mirror ]; then ip -n "$ns" route add default via "$LAB_NET_PREFIX.0.1"; fi
}

# The contents of every host's /dev, copied by hostinit.sh into the host's own tmpfs.
ensure_devtmpl() {
  local t=$LAB_STATE/dev d n ma mi
  [ -f "$LAB_STATE/dev.done" ] && return 0
  rm -rf "$t"; mkdir -p "$t"; chmod 755 "$t"
  for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r n ma mi <<<"$d"; mknod -m 666 "$t/$n" c "$ma" "$mi"
  done
  mkdir -m 755 "$t/pts"; mkdir -m 1777 "$t/shm"
  ln -s pts/ptmx "$t/ptmx"; ln -s /proc/self/fd "$t/fd"
  ln -s /proc/self/fd/0 "$t/stdin"; ln -s /proc/self/fd/1 "$t/stdout"; ln -s /proc/self/fd/2 "$t/stderr"
  : >"$LAB_STATE/dev.done"
}

# Start the host's PID 1 (hostinit.sh -> tini -> sshd) in fresh namespaces; returns at once.
# The host gets a clean environment and none of the caller's lock descriptors (8, 9): a
# host outlives hostctl.sh and would otherwise hold its lock for as long as it runs.
start_host() {
  local i=$1 name d HN HA HD
  host_vars "$i"; name=$HN d=$HD
  local -a netwrap=() sshd_args=()
  if [ "$LAB_NET" = netns ]; then
    netwrap=(nsenter "--net=/run/netns/$LAB_NETNS_PREFIX$name")
    [ "$LAB_PORT" = 22 ] || sshd_args=(-o "Port=$LAB_PORT")
  else
    sshd_args=(-o "ListenAddress=$HA:$LAB_PORT")
  fi
  ensure_devtmpl
  rm -f "$d/init.pid"
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LAB_PIDFILE="$d/init.pid" LAB_NET="$LAB_NET" \
    LAB_DEVTMPL="$LAB_STATE/dev" setsid "${netwrap[@]}" \
    unshare --mount --uts --ipc --pid --fork --kill-child=SIGKILL \
    "$LAB_DIR/hostinit.sh" "$name" "$LAB_LOWER" "$d/upper" "$d/work" "$d/root" "${sshd_args[@]}" \
    </dev/null >>"$d/console.log" 2>&1 8>&- 9>&- &
  echo "$! $(proc_id $!)" >"$d/unshare.pid"
}

# Stop one host: SIGTERM its PID 1 (the kernel then kills the rest of its PID namespace, and
# its mounts go with its mount namespace), SIGKILL after 10 s.  Its network namespace outlives
# it (eth0 keeps the host's address), so links created inside the host, which a real power-off
# loses (kube-proxy's kube-ipvs0, for one), are removed here.
stop_host() {
  local d p gone=false
  d=$LAB_STATE/hosts/$(host_name "$1")
  p=$(live_pid "$d/init.pid"); [ -z "$p" ] || kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 1 100); do [ -z "$(live_pid "$d/init.pid")$(live_pid "$d/unshare.pid")" ] && { gone=true; break; }; sleep 0.1; done
  if ! $gone; then
    p=$(live_pid "$d/init.pid"); [ -z "$p" ] || kill -KILL "$p" 2>/dev/null || true
    p=$(live_pid "$d/unshare.pid"); [ -z "$p" ] || kill -KILL "$p" 2>/dev/null || true
  fi
  drop_host_links "$1"
  return 0
}

# Remove every link but lo and eth0 from host i's network namespace (netns mode only).
drop_host_links() {
  [ "$LAB_NET" = netns ] || return 0
  local ns l HN HA HD
  host_vars "$1"; ns=$LAB_NETNS_PREFIX$HN
  [ -e "/run/netns/$ns" ] || return 0
  for l in $(ip -n "$ns" -o link show 2>/dev/null | awk -F': ' '{ sub(/@.*/, "", $2); print $2 }'); do
    case "$l" in lo|eth0) ;; *) ip -n "$ns" link del "$l" 2>/dev/null || true;; esac
  done
}

# Wait until host i's sshd accepts TCP connections (timeout in seconds).
wait_ssh() {
  local addr end=$((SECONDS + ${2:-30})); addr=$(host_addr "$1")
  until timeout 2 bash -c ": </dev/tcp/$addr/$LAB_PORT" 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1; sleep 0.1
  done
}

# (Re)write inventory.yaml, inventory.json, ansible-inventory.yaml, ssh config, known_hosts.
write_inventories() {
  local n=$1 i kt kb pid sep='' HN HA HD shim=false
  [ "$LAB_KMOD_SHIM" = 1 ] && shim=true
  local -a pids=()
  for i in $(seq 1 "$n"); do host_vars "$i"; pid=$(live_pid "$HD/init.pid"); pids[i]=${pid:-null}; done
  : >"$LAB_KNOWN_HOSTS.tmp"
  {
    echo "# kpm test lab: ssh -F $LAB_SSH_CONFIG node001   (-l $LAB_SUDO_USER or -l $LAB_NOPASSWD_USER for a non-root login)"
    for i in $(seq 1 "$n"); do host_vars "$i"; printf 'Host %s\n  HostName %s\n  Port %s\n' "$HN" "$HA" "$LAB_PORT"; done
    printf 'Host *\n  User root\n  IdentityFile %s\n  IdentitiesOnly yes\n  UserKnownHostsFile %s\n  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n' "$LAB_KEY" "$LAB_KNOWN_HOSTS"
  } >"$LAB_SSH_CONFIG.tmp"
  {
    echo "# kpm test lab inventory, generated $(date -u +%FT%TZ)"
    echo "state_dir: $LAB_STATE"
    echo "network: $LAB_NET"
    echo "ssh_key: $LAB_KEY"
    echo "known_hosts: $LAB_KNOWN_HOSTS"
    echo "ssh_config: $LAB_SSH_CONFIG"
    echo "ansible_inventory: $LAB_ANSIBLE_INVENTORY"
    echo "kmod_shim: $shim"
    echo "sudo_user: $LAB_SUDO_USER"
    echo "sudo_password: $LAB_SUDO_PASSWORD"
    echo "nopasswd_user: $LAB_NOPASSWD_USER"
    echo "hosts:"
    for i in $(seq 1 "$n"); do
      host_vars "$i"
      read -r kt kb _ <"$HD/hostkey/ssh_host_ed25519_key.pub"
      if [ "$LAB_PORT" = 22 ]; then echo "$HA $kt $kb"; else echo "[$HA]:$LAB_PORT $kt $kb"; fi >>"$LAB_KNOWN_HOSTS.tmp"
      printf '  - name: %s\n    address: %s\n    port: %s\n    user: root\n    key: %s\n    pid: %s\n' \
        "$HN" "$HA" "$LAB_PORT" "$LAB_KEY" "${pids[i]}"
    done
  } >"$LAB_INVENTORY.tmp"
  {
    echo "# kpm test lab, Ansible inventory format, generated $(date -u +%FT%TZ)"
    echo "all:"
    echo "  vars:"
    echo "    ansible_user: root"
    echo "    ansible_ssh_private_key_file: $LAB_KEY"
    echo "    ansible_ssh_common_args: '-o UserKnownHostsFile=$LAB_KNOWN_HOSTS -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'"
    echo "    ansible_python_interpreter: /usr/bin/python3"
    echo "    kpm_known_hosts_file: $LAB_KNOWN_HOSTS"
    echo "  hosts:"
    for i in $(seq 1 "$n"); do host_vars "$i"; printf '    %s: {ansible_host: %s, ansible_port: %s}\n' "$HN" "$HA" "$LAB_PORT"; done
  } >"$LAB_ANSIBLE_INVENTORY.tmp"
  # The same as inventory.yaml, for code that should not need a YAML parser.
  {
    printf '{"state_dir": "%s", "network": "%s", "ssh_key": "%s", "known_hosts": "%s", "ssh_config": "%s", "ansible_inventory": "%s", "kmod_shim": %s,\n' \
      "$LAB_STATE" "$LAB_NET" "$LAB_KEY" "$LAB_KNOWN_HOSTS" "$LAB_SSH_CONFIG" "$LAB_ANSIBLE_INVENTORY" "$shim"
    printf ' "sudo_user": "%s", "sudo_password": "%s", "nopasswd_user": "%s", "hosts": [' \
      "$LAB_SUDO_USER" "$LAB_SUDO_PASSWORD" "$LAB_NOPASSWD_USER"
    for i in $(seq 1 "$n"); do
      host_vars "$i"
      printf '%s\n  {"name": "%s", "address": "%s", "port": %s, "user": "root", "key": "%s", "pid": %s}' \
        "$sep" "$HN" "$HA" "$LAB_PORT" "$LAB_KEY" "${pids[i]}"; sep=,
    done
    printf '\n]}\n'
  } >"$LAB_INVENTORY_JSON.tmp"
  # Each file is replaced whole, so a reader never sees a half-written one.
  mv "$LAB_SSH_CONFIG.tmp" "$LAB_SSH_CONFIG"
  mv "$LAB_KNOWN_HOSTS.tmp" "$LAB_KNOWN_HOSTS"
  mv "$LAB_ANSIBLE_INVENTORY.tmp" "$LAB_ANSIBLE_INVENTORY"
  mv "$LAB_INVENTORY.tmp" "$LAB_INVENTORY"
  mv "$LAB_INVENTORY_JSON.tmp" "$LAB_INVENTORY_JSON"
}
