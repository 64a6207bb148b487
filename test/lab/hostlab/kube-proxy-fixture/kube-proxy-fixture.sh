#!/bin/bash
# ===========================================================================================
#  kpm-lab kube-proxy -- A TEST FIXTURE, NOT KUBE-PROXY.
#
#  test/lab/kube-proxy-fixture.ts copies this script and kube-proxy-test-fixture.py into a
#  lab host's /run/kpm-lab-kube-proxy/ and runs it inside the host (its mount, PID and network
#  namespaces) whenever the test API server's simulated kubelet (re)starts the kube-proxy pod
#  of the node that host stands for.  It does what kube-proxy >= 1.26 does on start-up that a
#  node can make fail, on this host's real state:
#
#   * iptables and ipvs modes need iptables (`iptables -S POSTROUTING -t nat`, as kube-proxy's
#     Present() check);
#   * ipvs mode needs `ipset --version` (>= 6.0), ip_vs and ip_vs_<scheduler> loaded -- read
#     from `lsmod`, i.e. the kmod shim's registry on --kmod-shim hosts.  This fixture never
#     loads a module itself: a real kube-proxy asks for them (moby/ipvs runs `modprobe -va
#     ip_vs`, the kernel loads schedulers on demand), and a node where that cannot work is
#     exactly what the tool under test must prevent by loading them first;
#   * nftables mode needs nft.
#
#  When a check fails it prints which one (the .ts side turns that into kube-proxy's own log
#  lines) and leaves nothing running.  Otherwise, in ipvs mode, it "programs" the Service
#  default/kubernetes the way kube-proxy would -- the kernel has no IPVS, so into the fixture
#  table /run/kpm-lab-ipvs/table that the kmod-shim layer's ipvsadm wrapper lists -- and binds
#  the ClusterIP to the kube-ipvs0 link (a dummy link; an ifb link where the kernel has no
#  dummy driver: same flags, same `ip -br link` output).  In iptables mode the IPVS table and
#  kube-ipvs0 stay as they are: a real kube-proxy leaves them behind when it moves away from
#  ipvs, as platformCleanup (below) cleans nothing up between the two iptables-based modes.
#
#  Before any of the checks above it does what kube-proxy >= 1.29 does first thing at start-up,
#  best effort, in platformCleanup (cmd/kube-proxy/app/server_linux.go), so that the mode it
#  leaves steers no traffic beside the new one:
#
#   * starting in nftables mode, iptables.CleanupLeftovers then ipvs.CleanupLeftovers (1.31's
#     pkg/proxy/iptables and pkg/proxy/ipvs proxier.go) for iptables and for ip6tables: the
#     jumps from the built-in chains into kube-proxy's chains, then those chains in nat
#     (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ, KUBE-NODE-PORT,
#     KUBE-LOAD-BALANCER, every KUBE-SVC-/SVL-/SEP-/FW-/EXT- chain) and in filter; the whole
#     IPVS table, every virtual server in it, kube-proxy's or not, as ipvs.Flush() empties the
#     kernel's (the fixture table keeps its header, as `ipvsadm -C` leaves it), and with it the
#     KPM-LAB-IPVS-EMULATION chain that stands for IPVS forwarding; kube-ipvs0; the ipsets of
#     ipvs mode's ipsetInfo -- their IPv4 names only, which is all DestroySet is given.
#     Kubelet's chains (KUBE-FIREWALL, KUBE-MARK-DROP, KUBE-KUBELET-CANARY), the raw table's
#     KPM-LAB-DATAPLANE-FAULT and anyone else's chains, ipsets and nft tables stay, as those
#     functions name every chain and set they remove;
#   * starting in iptables or ipvs mode, nftables.CleanupLeftovers: the tables `ip kube-proxy`
#     and `ip6 kube-proxy`, nothing else of nftables.
#
#  In iptables and ipvs modes it also programs the host's netfilter state for the Services
#  the .ts side generated into $DIR/dataplane/ (nat: an iptables-restore section, no COMMIT;
#  ipset: an `ipset restore` file; ipvs: extra IPVS fixture table lines; raw: the fault
#  chain's section).  The nat section replaces the KUBE-* chains it declares in one
#  iptables-restore --noflush; in iptables mode KUBE-SVC-*/KUBE-SEP-* chains it no longer
#  declares are deleted in the same transaction, in ipvs mode they stay, unreferenced, as
#  a real kube-proxy leaves them.  The kernel has no IPVS, so in ipvs mode the chain
#  KPM-LAB-IPVS-EMULATION (TEST FIXTURE, jumped first from nat OUTPUT and PREROUTING) DNATs
#  what IPVS would forward; it goes away in iptables mode, and in nftables mode with the IPVS
#  table it stands in for.  KPM-LAB-DATAPLANE-FAULT in the raw table holds an injected fault
#  (DROP rules), if any.  Lab hosts have no default route, which a real node's packets to a
#  ClusterIP leave by before nat OUTPUT rewrites them: each ClusterIP gets a route out of eth0
#  instead, with protocol $ROUTE_PROTO to find them again.
#
#  In nftables mode it loads $DIR/dataplane/nft with `nft -f`: kube-proxy's `table ip
#  kube-proxy` and `table ip6 kube-proxy`, each made if missing, deleted and made anew in the
#  same transaction, so that a reader never sees a half-written table; the ClusterIPs get
#  their routes as above.
#
#  Then it starts kube-proxy-test-fixture.py, which serves /proxyMode
#  and /healthz on metricsBindAddress and /healthz, /livez on healthzBindAddress, in the
#  background (setsid) with its PID in /run: a host restart kills it and empties /run.
#
#  Usage (inside a host):
#    kube-proxy-fixture.sh run MODE METRICS_BIND HEALTHZ_BIND SCHEDULER SERVICE ENDPOINTS
#      MODE iptables|ipvs|nftables; *_BIND host:port; SCHEDULER "" = rr; SERVICE
#      clusterIP:port of default/kubernetes; ENDPOINTS comma-separated ip:port
#    kube-proxy-fixture.sh stop
#  `run` prints key=value lines: result=ready|iptables-unavailable|ipset-missing|ipset-failed|
#  ipset-old|ipvs-missing|scheduler-missing|nft-missing|fixture-error, and the facts the log
#  lines need.
# ===========================================================================================
set -u
DIR=/run/kpm-lab-kube-proxy
PIDFILE=$DIR/pid
SERVER=$DIR/kube-proxy-test-fixture.py
IPVS_DIR=/run/kpm-lab-ipvs
TABLE=$IPVS_DIR/table
IFACE=kube-ipvs0
DATA=$DIR/dataplane
EMULATION=KPM-LAB-IPVS-EMULATION
FAULT=KPM-LAB-DATAPLANE-FAULT
IPT=(iptables -w 5)
ROUTE_PROTO=77
EMU_JUMP=(-m comment --comment "kpm-lab TEST FIXTURE: IPVS forwarding emulation, not kube-proxy" -j "$EMULATION")

# What platformCleanup removes, as kube-proxy 1.31 names it.  Jumps: TABLE|CHAIN|TARGET|COMMENT|
# MATCHES BEFORE THE COMMENT.  iptables proxier (iptablesJumpChains; its chains are picked below):
IPTABLES_JUMPS=(
  'filter|INPUT|KUBE-EXTERNAL-SERVICES|kubernetes externally-visible service portals|-m conntrack --ctstate NEW'
  'filter|FORWARD|KUBE-EXTERNAL-SERVICES|kubernetes externally-visible service portals|-m conntrack --ctstate NEW'
  'filter|INPUT|KUBE-NODEPORTS|kubernetes health check service ports|'
  'filter|FORWARD|KUBE-SERVICES|kubernetes service portals|-m conntrack --ctstate NEW'
  'filter|OUTPUT|KUBE-SERVICES|kubernetes service portals|-m conntrack --ctstate NEW'
  'filter|FORWARD|KUBE-FORWARD|kubernetes forwarding rules|'
  'filter|INPUT|KUBE-PROXY-FIREWALL|kubernetes load balancer firewall|-m conntrack --ctstate NEW'
  'filter|OUTPUT|KUBE-PROXY-FIREWALL|kubernetes load balancer firewall|-m conntrack --ctstate NEW'
  'filter|FORWARD|KUBE-PROXY-FIREWALL|kubernetes load balancer firewall|-m conntrack --ctstate NEW'
  'nat|OUTPUT|KUBE-SERVICES|kubernetes service portals|'
  'nat|PREROUTING|KUBE-SERVICES|kubernetes service portals|'
  'nat|POSTROUTING|KUBE-POSTROUTING|kubernetes postrouting rules|'
)
# ipvs proxier (iptablesJumpChain, iptablesCleanupChains, ipsetInfo)
IPVS_JUMPS=(
  'nat|OUTPUT|KUBE-SERVICES|kubernetes service portals|'
  'nat|PREROUTING|KUBE-SERVICES|kubernetes service portals|'
  'nat|POSTROUTING|KUBE-POSTROUTING|kubernetes postrouting rules|'
  'filter|FORWARD|KUBE-FORWARD|kubernetes forwarding rules|'
  'filter|INPUT|KUBE-NODE-PORT|kubernetes health check rules|'
  'filter|INPUT|KUBE-PROXY-FIREWALL|kube-proxy firewall rules|'
  'filter|FORWARD|KUBE-PROXY-FIREWALL|kube-proxy firewall rules|'
  'filter|INPUT|KUBE-IPVS-FILTER|kubernetes ipvs access filter|'
  'filter|OUTPUT|KUBE-IPVS-OUT-FILTER|kubernetes ipvs access filter|'
)
IPVS_CHAINS=(nat:KUBE-SERVICES nat:KUBE-POSTROUTING nat:KUBE-NODE-PORT nat:KUBE-LOAD-BALANCER nat:KUBE-MARK-MASQ
  filter:KUBE-FORWARD filter:KUBE-NODE-PORT filter:KUBE-PROXY-FIREWALL filter:KUBE-SOURCE-RANGES-FIREWALL
  filter:KUBE-IPVS-FILTER filter:KUBE-IPVS-OUT-FILTER)
IPVS_IPSETS=(KUBE-LOOP-BACK KUBE-CLUSTER-IP KUBE-EXTERNAL-IP KUBE-EXTERNAL-IP-LOCAL KUBE-LOAD-BALANCER
  KUBE-LOAD-BALANCER-FW KUBE-LOAD-BALANCER-LOCAL KUBE-LOAD-BALANCER-SOURCE-IP KUBE-LOAD-BALANCER-SOURCE-CIDR
  KUBE-NODE-PORT-TCP KUBE-NODE-PORT-LOCAL-TCP KUBE-NODE-PORT-UDP KUBE-NODE-PORT-LOCAL-UDP
  KUBE-NODE-PORT-SCTP-HASH KUBE-NODE-PORT-LOCAL-SCTP-HASH KUBE-HEALTH-CHECK-NODE-PORT KUBE-IPVS-IPS)

emit() { printf '%s=%s\n' "$1" "$2"; }
finish() { emit result "$1"; exit 0; }

# The fixture's server process, if it is still the one the PID file names.
fixture_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  read -r pid <"$PIDFILE" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kube-proxy-test-fixture' || return 1
  echo "$pid"
}

stop() {
  local pid
  if pid=$(fixture_pid); then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 1 20); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
}

loaded() { lsmod 2>/dev/null | awk -v m="$1" 'NR > 1 && $1 == m {f = 1} END {exit !f}'; }

# Write what kube-proxy's IPVS proxier would program for default/kubernetes.
program_ipvs() { # SCHEDULER SERVICE ENDPOINTS
  local sched=$1 svc=$2 eps=$3 ep vip
  mkdir -p "$IPVS_DIR"
  {
    echo "# kpm-lab IPVS TEST FIXTURE table -- not the kernel's IPVS state (this kernel has none)."
    echo "# Written by the kpm-lab kube-proxy test fixture; listed by the kpm-lab ipvsadm wrapper."
    echo "-A -t $svc -s $sched"
    for ep in ${eps//,/ }; do echo "-a -t $svc -r $ep -m -w 1"; done
    if [ -f "$DATA/ipvs" ]; then cat "$DATA/ipvs"; fi
  } >"$TABLE.new" && mv "$TABLE.new" "$TABLE" || return 1
  if ! ip link show "$IFACE" >/dev/null 2>&1; then
    if ip link add "$IFACE" type dummy 2>/dev/null; then emit iface_type dummy
    elif ip link add "$IFACE" type ifb 2>/dev/null; then emit iface_type ifb
    else echo "cannot create $IFACE: the kernel has neither the dummy nor the ifb link type" >&2; return 1
    fi
  fi
  # kube-proxy binds every virtual server's address, and unbinds those of deleted Services
  ip addr flush dev "$IFACE" || return 1
  for svc in $(awk '$1 == "-A" && $2 == "-t" {print $3}' "$TABLE" | sort -u); do
    vip=${svc%:*}; vip=${vip#[}; vip=${vip%]}
    if [[ $vip == *:* ]]; then ip -6 addr replace "$vip/128" dev "$IFACE"; else ip addr replace "$vip/32" dev "$IFACE"; fi || return 1
  done
}

# Add a rule to a built-in chain unless it is there: first or last in the chain.
ensure_rule() { # TABLE CHAIN first|last RULE...
  local table=$1 chain=$2 where=$3; shift 3
  "${IPT[@]}" -t "$table" -C "$chain" "$@" 2>/dev/null && return 0
  if [ "$where" = first ]; then "${IPT[@]}" -t "$table" -I "$chain" 1 "$@"; else "${IPT[@]}" -t "$table" -A "$chain" "$@"; fi
}

# Program the Services' netfilter state the .ts side generated into $DATA for MODE.
program_dataplane() { # MODE
  local mode=$1 declared stale c
  local fault_jump=(-m comment --comment "kpm-lab TEST FIXTURE: injected dataplane faults" -j "$FAULT")
  if [ -s "$DATA/ipset" ]; then ipset restore -exist <"$DATA/ipset" || return 1; fi
  declared=$(sed -n 's/^:\([^ ]*\) .*/\1/p' "$DATA/nat")
  stale=
  if [ "$mode" = iptables ]; then
    stale=$("${IPT[@]}" -t nat -S | sed -n 's/^-N \(KUBE-S[EV][PC]-[A-Z2-7]*\)$/\1/p' | grep -vxF -e "$declared")
  fi
  {
    echo '*nat'
    grep '^:' "$DATA/nat"
    for c in $stale; do echo ":$c - [0:0]"; done
    grep -v '^:' "$DATA/nat"
    for c in $stale; do echo "-X $c"; done
    echo COMMIT
  } | iptables-restore -w 5 --noflush || return 1
  ensure_rule nat PREROUTING last -m comment --comment "kubernetes service portals" -j KUBE-SERVICES || return 1
  ensure_rule nat OUTPUT last -m comment --comment "kubernetes service portals" -j KUBE-SERVICES || return 1
  ensure_rule nat POSTROUTING last -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING || return 1
  if [ "$mode" = ipvs ]; then
    ensure_rule nat PREROUTING first "${EMU_JUMP[@]}" || return 1
    ensure_rule nat OUTPUT first "${EMU_JUMP[@]}" || return 1
  else
    remove_emulation || return 1
  fi
  iptables-restore -w 5 --noflush <"$DATA/raw" || return 1
  ensure_rule raw PREROUTING first "${fault_jump[@]}" || return 1
  ensure_rule raw OUTPUT first "${fault_jump[@]}" || return 1
  program_routes
}

# Without IPVS in use nothing may forward as if it were.
remove_emulation() {
  local c
  for c in PREROUTING OUTPUT; do
    while "${IPT[@]}" -t nat -D "$c" "${EMU_JUMP[@]}" 2>/dev/null; do :; done
  done
  if "${IPT[@]}" -t nat -S "$EMULATION" >/dev/null 2>&1; then
    "${IPT[@]}" -t nat -F "$EMULATION" && "${IPT[@]}" -t nat -X "$EMULATION" || return 1
  fi
}

# A route out of eth0 for each ClusterIP in $DATA/vips, none for the ClusterIPs of an earlier start.
program_routes() {
  local c
  ip route flush proto "$ROUTE_PROTO" || return 1
  while read -r c; do
    [ -z "$c" ] || ip route replace "$c/32" dev eth0 proto "$ROUTE_PROTO" || return 1
  done <"$DATA/vips"
}

# kube-proxy's nftables tables, in one transaction ($DATA/nft replaces both).
program_nftables() {
  nft -f "$DATA/nft" || return 1
  program_routes
}

# ---- platformCleanup ----------------------------------------------------------------------
# Best effort, as kube-proxy ignores its error outside --cleanup: a step that fails says so on
# stderr and the next one runs.

chains_of() { "$1" -w 5 -t "$2" -S 2>/dev/null | sed -n 's/^-N //p'; }
has_chain() { "$1" -w 5 -t "$2" -S "$3" >/dev/null 2>&1; }

# utiliptables' DeleteRule: one copy of the rule, if it is there.
delete_jump() { # IPTABLES TABLE|CHAIN|TARGET|COMMENT|MATCHES
  local ipt=$1 table chain target comment matches extra
  IFS='|' read -r table chain target comment matches <<<"$2"
  read -r -a extra <<<"$matches"
  local rule=("${extra[@]}" -m comment --comment "$comment" -j "$target")
  "$ipt" -w 5 -t "$table" -C "$chain" "${rule[@]}" 2>/dev/null || return 0
  "$ipt" -w 5 -t "$table" -D "$chain" "${rule[@]}"
}

# Flush and delete CHAINS of TABLE in one iptables-restore, so that they may jump to each other.
delete_chains() { # IPTABLES TABLE CHAINS
  local ipt=$1 table=$2 chains=$3 c
  [ -n "$chains" ] || return 0
  {
    echo "*$table"
    for c in $chains; do echo ":$c - [0:0]"; done
    for c in $chains; do echo "-X $c"; done
    echo COMMIT
  } | "$ipt-restore" -w 5 --noflush
}

# iptables.CleanupLeftovers.  KUBE-MARK-MASQ is not among its chains: ipvs.CleanupLeftovers, run
# next, removes it.
iptables_cleanup_leftovers() { # IPTABLES
  local ipt=$1 j
  for j in "${IPTABLES_JUMPS[@]}"; do delete_jump "$ipt" "$j"; done
  delete_chains "$ipt" nat "$(chains_of "$ipt" nat | grep -E -e '^KUBE-(SERVICES|NODEPORTS|POSTROUTING)$' -e '^KUBE-(SVC|SVL|SEP|FW|EXT)-')"
  delete_chains "$ipt" filter "$(chains_of "$ipt" filter | grep -E '^KUBE-(SERVICES|EXTERNAL-SERVICES|FORWARD|NODEPORTS)$')"
}

# ipvs.Flush(): the kernel's whole IPVS table, so here the fixture's, header kept as `ipvsadm -C`
# keeps it; the emulation forwarded what the table held.
flush_ipvs() {
  remove_emulation
  [ -f "$TABLE" ] || return 0
  { grep '^#' "$TABLE" || true; } >"$TABLE.new" && mv "$TABLE.new" "$TABLE"
}

# ipvs.CleanupLeftovers.  kube-proxy deletes kube-ipvs0 only as a dummy link; ifb stands in for
# dummy where the kernel has no dummy driver.
ipvs_cleanup_leftovers() { # IPTABLES
  local ipt=$1 j tc s
  flush_ipvs
  if ip -d -o link show dev "$IFACE" 2>/dev/null | grep -qwE 'dummy|ifb'; then ip link del "$IFACE"; fi
  if command -v "$ipt" >/dev/null 2>&1; then
    for j in "${IPVS_JUMPS[@]}"; do delete_jump "$ipt" "$j"; done
    for tc in "${IPVS_CHAINS[@]}"; do
      if has_chain "$ipt" "${tc%%:*}" "${tc#*:}"; then "$ipt" -w 5 -t "${tc%%:*}" -F "${tc#*:}"; fi
    done
    for tc in "${IPVS_CHAINS[@]}"; do
      if has_chain "$ipt" "${tc%%:*}" "${tc#*:}"; then "$ipt" -w 5 -t "${tc%%:*}" -X "${tc#*:}"; fi
    done
  fi
  # after the rules: a set a rule still matches on cannot be destroyed
  command -v ipset >/dev/null 2>&1 || return 0
  for s in $(ipset list -n 2>/dev/null | grep -xF "${IPVS_IPSETS[@]/#/-e}"); do ipset destroy "$s"; done
}

# nftables.CleanupLeftovers
nftables_cleanup_leftovers() {
  local family
  command -v nft >/dev/null 2>&1 || return 0
  for family in ip ip6; do
    if nft list table "$family" kube-proxy >/dev/null 2>&1; then nft delete table "$family" kube-proxy; fi
  done
}

# Only the state of modes that cannot be the one starting: iptables and ipvs modes share chains.
platform_cleanup() { # MODE
  local ipt
  case "$1" in
    nftables)
      for ipt in iptables ip6tables; do
        if command -v "$ipt" >/dev/null 2>&1; then iptables_cleanup_leftovers "$ipt"; fi
        ipvs_cleanup_leftovers "$ipt"
      done
      ;;
    iptables|ipvs) nftables_cleanup_leftovers;;
  esac
}

run() {
  local mode=$1 metrics=$2 healthz=$3 sched=${4:-} svc=$5 eps=$6 out rc ver
  [ -n "$sched" ] || sched=rr
  stop
  emit node_ip "$(ip -4 -o addr show dev eth0 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4; exit}')"
  emit krel "$(uname -r)"
  emit ncpu "$(nproc)"
  # before any check, as kube-proxy's Run calls platformCleanup before it builds the proxier
  platform_cleanup "$mode" >&2
  if [ "$mode" = iptables ] || [ "$mode" = ipvs ]; then
    # kube-proxy gives up only if neither family's iptables works
    if ! { iptables -w 5 -S POSTROUTING -t nat >/dev/null 2>&1 || ip6tables -w 5 -S POSTROUTING -t nat >/dev/null 2>&1; }; then
      finish iptables-unavailable
    fi
  fi
  if [ "$mode" = ipvs ]; then
    if loaded ip_vs; then emit ipvs_loaded 1; else emit ipvs_loaded 0; fi
    command -v ipset >/dev/null 2>&1 || finish ipset-missing
    out=$(ipset --version </dev/null 2>&1); rc=$?
    if [ $rc -ne 0 ]; then emit ipset_exit "$rc"; finish ipset-failed; fi
    ver=$(grep -o 'v[0-9][0-9]*\.[0-9][0-9]*' <<<"$out" | head -n 1)
    emit ipset_version "$ver"
    if [ -z "$ver" ] || [ "${ver#v}" != "$(printf '%s\n6.0\n' "${ver#v}" | sort -V | tail -n 1)" ]; then finish ipset-old; fi
    loaded ip_vs || finish ipvs-missing
    loaded "ip_vs_$sched" || finish scheduler-missing
    if ! out=$(program_ipvs "$sched" "$svc" "$eps" 2>&1); then emit detail "$out"; finish fixture-error; fi
    [ -z "$out" ] || printf '%s\n' "$out"
  fi
  if [ "$mode" = nftables ]; then
    command -v nft >/dev/null 2>&1 || finish nft-missing
    if ! out=$(program_nftables 2>&1); then emit detail "$(tr '\n' ' ' <<<"$out")"; finish fixture-error; fi
  fi
  if [ "$mode" = iptables ] || [ "$mode" = ipvs ]; then
    if ! out=$(program_dataplane "$mode" 2>&1); then emit detail "$(tr '\n' ' ' <<<"$out")"; finish fixture-error; fi
  fi

  mkdir -p "$DIR"
  : >"$DIR/server.log"
  setsid python3 "$SERVER" --mode "$mode" --metrics-bind-address "$metrics" \
    --healthz-bind-address "$healthz" --pid-file "$PIDFILE" </dev/null >>"$DIR/server.log" 2>&1 &
  local child=$!
  # The server writes its PID file once both listeners are bound.
  for _ in $(seq 1 100); do
    fixture_pid >/dev/null && finish ready
    [ -d "/proc/$child" ] || break
    sleep 0.05
  done
  kill -KILL "$child" 2>/dev/null
  emit detail "$(tail -n 1 "$DIR/server.log" 2>/dev/null)"
  finish fixture-error
}

case "${1:-}" in
  run) shift; [ $# -eq 6 ] || { echo "usage: $0 run MODE METRICS_BIND HEALTHZ_BIND SCHEDULER SERVICE ENDPOINTS" >&2; exit 2; }; run "$@";;
  stop) stop;;
  *) echo "usage: $0 run ...|stop" >&2; exit 2;;
esac
