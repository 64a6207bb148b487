#!/bin/bash
# ===========================================================================================
#  kpm VM tier kube-proxy -- A TEST FIXTURE, NOT KUBE-PROXY.
#
#  test/vm/kube-proxy-fixture.ts copies this script into a guest's /run/kpm-vm-kube-proxy/ over
#  SSH and runs it whenever the test API server's simulated kubelet (re)starts the kube-proxy pod
#  of the node that guest is.  The guest runs Debian's stock kernel, so everything here is real:
#  real IPVS, real netfilter, real modules.  In ipvs mode it does what kube-proxy >= 1.27 does on
#  start-up that a node can make fail, in the same order:
#
#   * iptables works (`iptables -S POSTROUTING -t nat`, kube-proxy's Present() check);
#   * `ipset --version` works and is >= 6.0;
#   * `modprobe -va ip_vs`, as moby/ipvs runs it when kube-proxy opens its IPVS handle; then a
#     dummy virtual server 198.51.100.0:20000 with the configured scheduler is created, read back
#     and deleted (CanUseIPVSProxier): the kernel loads ip_vs_<scheduler> on demand, and a kernel
#     without IPVS fails here.
#
#  It programs with the real ipvsadm what the IPVS proxier programs for the Services the .ts side
#  wrote into $DIR/services: a virtual server per ClusterIP:port (and node IP:NodePort) with the
#  Service's endpoints as masqueraded real servers, the ClusterIPs on the dummy link kube-ipvs0,
#  the KUBE-CLUSTER-IP ipset, net.ipv4.vs.conntrack=1.  In iptables mode it programs kube-proxy's
#  nat chains (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT, KUBE-NODEPORTS) from $DIR/nat; in
#  ipvs mode $DIR/nat holds the IPVS proxier's KUBE-SERVICES (ipset matches, no DNAT), so the
#  Services' traffic goes through IPVS and nothing else.  Like kube-proxy it cleans up nothing
#  when the mode changes: IPVS virtual servers, kube-ipvs0 and KUBE-SVC-* chains stay behind.
#  Left out: masquerading marks (every probe in these tests is node-local), IPv6, UDP.
#
#  The Services' endpoints are TEST BACKENDS in the guest (not kube-proxy, not the tool): an
#  HTTPS server standing for the API server on :6443 (openssl s_server) and an HTTP server for
#  default/web on :8080 (busybox httpd), started here when not running.
#
#  Then /proxyMode (and /healthz) are served on metricsBindAddress by busybox httpd, in the
#  background with its PID in /run: a guest reboot kills it and empties /run.
#
#  Usage (in the guest, as root):
#    kube-proxy-fixture.sh run MODE METRICS_BIND SCHEDULER
#      MODE iptables|ipvs|nftables; METRICS_BIND host:port; SCHEDULER "" = rr
#    kube-proxy-fixture.sh stop
#  `run` prints key=value lines: result=ready|iptables-unavailable|ipset-missing|ipset-failed|
#  ipset-old|ipvs-missing|scheduler-missing|nft-missing|fixture-error, and the facts the log
#  lines need.
# ===========================================================================================
set -u
export LC_ALL=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DIR=/run/kpm-vm-kube-proxy
PIDFILE=$DIR/pid
BACKENDS=/run/kpm-vm-backends
IFACE=kube-ipvs0
DUMMY_VS=198.51.100.0:20000

emit() { printf '%s=%s\n' "$1" "$2"; }
emit64() { printf '%s=%s\n' "$1" "$(printf '%s' "$2" | base64 -w0)"; }
finish() { emit result "$1"; exit 0; }
fail() { emit64 detail "$1"; finish fixture-error; }

# A process of ours, if the PID file still names it (a PID is never trusted alone).
pid_of() { # PIDFILE PATTERN
  local pid
  [ -f "$1" ] && read -r pid <"$1" && [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
  echo "$pid"
}

stop() {
  local pid
  if pid=$(pid_of "$PIDFILE" "$DIR/www"); then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$PIDFILE"
}

listening() { ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }

# TEST BACKENDS: the Services' endpoints, each started once per boot.
ensure_backends() {
  local i
  mkdir -p "$BACKENDS/web"
  if ! pid_of "$BACKENDS/web.pid" "$BACKENDS/web" >/dev/null; then
    printf 'hello from web on %s\n' "$(hostname)" >"$BACKENDS/web/index.html"
    setsid busybox httpd -f -p 0.0.0.0:8080 -h "$BACKENDS/web" </dev/null >>"$BACKENDS/web.log" 2>&1 &
    echo $! >"$BACKENDS/web.pid"
  fi
  if ! pid_of "$BACKENDS/apiserver.pid" "$BACKENDS/apiserver" >/dev/null; then
    if [ ! -s "$BACKENDS/apiserver.crt" ]; then
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj /CN=kube-apiserver \
        -keyout "$BACKENDS/apiserver.key" -out "$BACKENDS/apiserver.crt" >/dev/null 2>&1 || return 1
    fi
    setsid openssl s_server -quiet -www -accept 6443 -cert "$BACKENDS/apiserver.crt" -key "$BACKENDS/apiserver.key" \
      </dev/null >>"$BACKENDS/apiserver.log" 2>&1 &
    echo $! >"$BACKENDS/apiserver.pid"
  fi
  for i in $(seq 1 100); do
    listening 8080 && listening 6443 && return 0
    sleep 0.1
  done
  echo "test backends did not start: $(tail -n 2 "$BACKENDS"/*.log 2>/dev/null | tr '\n' ' ')" >&2
  return 1
}

# $DIR/services: "VIP PORT NODEPORT|- ENDPOINT[,ENDPOINT...]" per Service port
program_ipvs() { # SCHEDULER NODE_IP
  local sched=$1 node_ip=$2 vip port np eps vs vss ep op
  ip link show "$IFACE" >/dev/null 2>&1 || ip link add "$IFACE" type dummy || return 1
  sysctl -qw net.ipv4.vs.conntrack=1 || return 1
  ipset create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 -exist || return 1
  ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 -exist || return 1
  ipset flush KUBE-CLUSTER-IP && ipset flush KUBE-NODE-PORT-TCP || return 1
  while read -r vip port np eps; do
    [ -n "$vip" ] || continue
    vss="$vip:$port"
    [ "$np" = - ] || vss="$vss $node_ip:$np"
    for vs in $vss; do
      if ipvsadm -Ln -t "$vs" >/dev/null 2>&1; then op=-E; else op=-A; fi
      ipvsadm "$op" -t "$vs" -s "$sched" || return 1
      for ep in ${eps//,/ }; do
        if ipvsadm -Ln -t "$vs" | grep -q -- "-> $ep "; then op=-e; else op=-a; fi
        ipvsadm "$op" -t "$vs" -r "$ep" -m -w 1 || return 1
      done
    done
    ip addr replace "$vip/32" dev "$IFACE" || return 1
    ipset add KUBE-CLUSTER-IP "$vip,tcp:$port" -exist || return 1
    [ "$np" = - ] || ipset add KUBE-NODE-PORT-TCP "$np" -exist || return 1
  done <"$DIR/services"
}

program_nat() {
  iptables-restore -w 5 --noflush <"$DIR/nat" || return 1
  local c
  for c in PREROUTING OUTPUT; do
    iptables -w 5 -t nat -C "$c" -m comment --comment "kubernetes service portals" -j KUBE-SERVICES 2>/dev/null \
      || iptables -w 5 -t nat -A "$c" -m comment --comment "kubernetes service portals" -j KUBE-SERVICES || return 1
  done
}

run() {
  local mode=$1 metrics=$2 sched=${3:-} out rc ver node_ip host port
  [ -n "$sched" ] || sched=rr
  stop
  node_ip=$(ip -4 -o addr show scope global 2>/dev/null | awk '$2 != "kube-ipvs0" {sub(/\/.*/, "", $4); print $4; exit}')
  emit node_ip "$node_ip"
  emit krel "$(uname -r)"
  emit ncpu "$(nproc)"
  if [ "$mode" = iptables ] || [ "$mode" = ipvs ]; then
    iptables -w 5 -t nat -S POSTROUTING >/dev/null 2>&1 || finish iptables-unavailable
  fi
  out=$(ensure_backends 2>&1) || fail "$out"
  if [ "$mode" = ipvs ]; then
    command -v ipset >/dev/null 2>&1 || finish ipset-missing
    out=$(ipset --version </dev/null 2>&1); rc=$?
    if [ $rc -ne 0 ]; then emit ipset_exit "$rc"; finish ipset-failed; fi
    ver=$(grep -o 'v[0-9][0-9]*\.[0-9][0-9]*' <<<"$out" | head -n 1)
    emit ipset_version "$ver"
    if [ -z "$ver" ] || [ "${ver#v}" != "$(printf '%s\n6.0\n' "${ver#v}" | sort -V | tail -n 1)" ]; then finish ipset-old; fi
    out=$(modprobe -va ip_vs 2>&1); rc=$?
    emit modprobe_exit "$rc"
    emit64 modprobe_output "$out"
    command -v ipvsadm >/dev/null 2>&1 || fail "this fixture programs IPVS with ipvsadm, which the guest lacks"
    if [ ! -e /proc/net/ip_vs ]; then finish ipvs-missing; fi
    if ! out=$(ipvsadm -A -t "$DUMMY_VS" -s "$sched" 2>&1); then
      # an earlier start may have died before deleting it
      if ! ipvsadm -Ln -t "$DUMMY_VS" >/dev/null 2>&1; then emit64 dummy_error "$out"; finish scheduler-missing; fi
    fi
    ipvsadm -Ln -t "$DUMMY_VS" >/dev/null 2>&1 || finish ipvs-missing
    ipvsadm -D -t "$DUMMY_VS" || fail "cannot delete the dummy virtual server"
    emit scheduler_module "$(lsmod | awk -v m="ip_vs_$sched" '$1 == m {print "loaded"}')"
    out=$(program_ipvs "$sched" "$node_ip" 2>&1) || fail "programming IPVS failed: $out"
  fi
  if [ "$mode" = nftables ]; then command -v nft >/dev/null 2>&1 || finish nft-missing; fi
  if [ "$mode" = iptables ] || [ "$mode" = ipvs ]; then
    out=$(program_nat 2>&1) || fail "programming nat failed: $out"
  fi

  mkdir -p "$DIR/www"
  printf '%s' "$mode" >"$DIR/www/proxyMode"
  printf 'ok' >"$DIR/www/healthz"
  host=${metrics%:*} port=${metrics##*:}
  [ "$host" = "$metrics" ] && port=10249
  case "$host" in ''|0.0.0.0|'[::]'|::) host=0.0.0.0 ;; esac
  setsid busybox httpd -f -p "$host:$port" -h "$DIR/www" </dev/null >>"$DIR/server.log" 2>&1 &
  echo $! >"$PIDFILE"
  [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  for _ in $(seq 1 100); do
    [ "$(curl -s --max-time 2 "http://$host:$port/proxyMode")" = "$mode" ] && finish ready
    pid_of "$PIDFILE" "$DIR/www" >/dev/null || break
    sleep 0.1
  done
  fail "/proxyMode server did not answer: $(tail -n 2 "$DIR/server.log" 2>/dev/null)"
}

case "${1:-}" in
  run) shift; [ $# -eq 3 ] || { echo "usage: $0 run MODE METRICS_BIND SCHEDULER" >&2; exit 2; }; run "$@";;
  stop) stop;;
  *) echo "usage: $0 run MODE METRICS_BIND SCHEDULER | stop" >&2; exit 2;;
esac
