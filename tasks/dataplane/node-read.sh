# shellcheck shell=bash
# node-read.sh: read a node's kube-proxy dataplane, read-only, in one bash process.
#
# Never loads a kernel module: `ipvsadm` and `nft` would (ip_vs, nf_tables), so each runs only where
# its module is already loaded; `iptables-save` without -t dumps only the tables that exist.
#
# Input (assigned by the prelude tasks/dataplane/node-read.ts puts before this text):
#   KPM_READ  "summary": counts of each mode's objects (for `status`; a big node's dump is megabytes)
#             "dump":    the full iptables-save / ip6tables-save / ipvsadm -Ln / nft output (for `trace`)
# Output: `@@kpm:dp <key> <exit code> <value>` lines; dump values and the summary's lists are base64.

export LC_ALL=C
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"

kpm_dp() { printf '@@kpm:dp %s %s %s\n' "$1" "$2" "$3"; }
kpm_b64() { base64 -w0 2>/dev/null || base64 | tr -d '\n'; }

kpm_module_loaded() {
  [ -d "/sys/module/$1" ] || awk -v m="$1" '$1 == m { f = 1 } END { exit !f }' /proc/modules 2>/dev/null ||
    lsmod 2>/dev/null | awk -v m="$1" '$1 == m { f = 1 } END { exit !f }'
}

# nf_tables in the running kernel, so that nft loads nothing: loaded, a kernel with no module directory
# (it can load nothing), or built in: listed in modules.builtin, or, where that file is missing, its
# symbols in /proc/kallsyms (a built-in module often has no /sys/module entry).
kpm_nf_tables_in_kernel() {
  local kr
  kpm_module_loaded nf_tables && return 0
  kr=$(uname -r 2>/dev/null) || return 1
  [ -d "/lib/modules/$kr" ] || [ -d "/usr/lib/modules/$kr" ] || return 0
  grep -qs '/nf_tables\.ko' "/lib/modules/$kr/modules.builtin" "/usr/lib/modules/$kr/modules.builtin" && return 0
  grep -qm1 -E ' (nf_tables|nft)_[a-z_]+' /proc/kallsyms 2>/dev/null
}

# kube-proxy's iptables objects in a save dump: chains by kind, and the Service comments of KUBE-SERVICES.
kpm_count_chains() {
  awk '
    /^\*/ { table = substr($0, 2) }
    table == "nat" && /^:KUBE-/ {
      name = substr($1, 2); total++
      if (match(name, /^KUBE-(SVC|SEP|EXT|SVL|FW|XLB)-/)) kind[substr(name, 6, RLENGTH - 6)]++
    }
    table == "nat" && /^-A KUBE-SERVICES / && / -j KUBE-(SVC|EXT|FW|XLB)-/ { services++ }
    END {
      printf "chains=%d svc=%d sep=%d ext=%d svl=%d fw=%d xlb=%d service_rules=%d",
        total, kind["SVC"], kind["SEP"], kind["EXT"], kind["SVL"], kind["FW"], kind["XLB"], services
    }'
}

# The families of the tables named kube-proxy in `nft list tables` output (stdin), of those given as
# arguments. kube-proxy's nftables mode makes only `ip` and `ip6` ones; an `inet kube-proxy` is someone else's.
kpm_nft_kube_proxy_families() {
  awk -v families=" $* " '$1 == "table" && $3 == "kube-proxy" && index(families, " " $2 " ") { print $2 }'
}

kpm_read() {
  local cmd fam out rc tables
  for fam in 4 6; do
    cmd=iptables-save
    [ "$fam" = 6 ] && cmd=ip6tables-save
    if ! command -v "$cmd" >/dev/null 2>&1; then kpm_dp "ipt$fam" 127 ''; continue; fi
    out=$("$cmd" 2>&1); rc=$?
    if [ "$KPM_READ" = dump ]; then
      kpm_dp "ipt$fam" "$rc" "$(printf '%s\n' "$out" | kpm_b64)"
    else
      kpm_dp "ipt$fam" "$rc" "$(printf '%s\n' "$out" | kpm_count_chains)"
    fi
  done

  if kpm_module_loaded ip_vs; then
    if command -v ipvsadm >/dev/null 2>&1; then
      out=$(ipvsadm -Ln 2>&1); rc=$?
      if [ "$KPM_READ" = dump ]; then
        kpm_dp ipvs "$rc" "$(printf '%s\n' "$out" | kpm_b64)"
      else
        # the virtual servers' addresses: status tells Service IPs from foreign ones (keepalived, kube-vip)
        kpm_dp ipvs "$rc" "$(printf '%s\n' "$out" | awk '/^(TCP|UDP|SCTP) / { print $1, $2 } /^FWM / { print $1, $2 }' | kpm_b64)"
      fi
    else
      kpm_dp ipvs 127 ''
    fi
  else
    kpm_dp ipvs 200 'ip_vs not loaded'
  fi

  if ip link show kube-ipvs0 >/dev/null 2>&1; then
    kpm_dp kube-ipvs0 0 "$(ip -o addr show dev kube-ipvs0 2>/dev/null | awk '{ print $4 }' | kpm_b64)"
  else
    kpm_dp kube-ipvs0 1 ''
  fi

  if command -v ipset >/dev/null 2>&1 && kpm_module_loaded ip_set; then
    kpm_dp ipset 0 "$(ipset list -n 2>/dev/null | grep '^KUBE-' | kpm_b64)"
  else
    kpm_dp ipset 200 ''
  fi

  if ! command -v nft >/dev/null 2>&1; then
    kpm_dp nft 127 ''
  elif ! kpm_nf_tables_in_kernel; then
    kpm_dp nft 200 ''
  elif [ "$KPM_READ" = dump ]; then
    # every table (a cleanup plans from it), then the content of kube-proxy's, of whichever families exist
    out=$(nft list tables 2>&1); rc=$?
    kpm_dp nft-tables "$rc" "$(printf '%s\n' "$out" | kpm_b64)"
    tables=$(printf '%s\n' "$out" | kpm_nft_kube_proxy_families ip ip6)
    if [ "$rc" != 0 ]; then
      kpm_dp nft "$rc" "$(printf '%s\n' "$out" | kpm_b64)"
    elif [ -z "$tables" ]; then
      kpm_dp nft 1 "$(printf 'no table ip kube-proxy or ip6 kube-proxy on the node\n' | kpm_b64)"
    else
      out=$(rc=0; for fam in $tables; do nft list table "$fam" kube-proxy 2>&1 || rc=$?; done; exit $rc); rc=$?
      kpm_dp nft "$rc" "$(printf '%s\n' "$out" | kpm_b64)"
    fi
  else
    # kube-proxy's own tables only: an `inet kube-proxy` is someone else's, as status's judgement says
    # (isKubeProxyNftTable), so status does not show it as kube-proxy's either
    out=''
    for fam in $(nft list tables 2>/dev/null | kpm_nft_kube_proxy_families ip ip6); do out+="table $fam kube-proxy"$'\n'; done
    kpm_dp nft 0 "$(printf '%s' "$out" | kpm_b64)"
  fi
}

kpm_read
