# shellcheck shell=bash
# old-mode-read.sh: what the cleanup of an old kube-proxy mode needs to know beyond node-read.sh's dump,
# read-only, in the same exec (tasks/cleanup/old-mode-script.ts runs it after node-read.sh).
#
#   addresses  the node's own addresses (every link but kube-ipvs0): ipvs mode opens NodePorts on them
#   ipset-cmd  whether ipset is installed: node-read.sh cannot tell "not installed" from "ip_set not
#              loaded", and only the first hides KUBE-* ipsets that may be there
#   ip-cmd     whether ip (iproute2) is installed: without it kube-ipvs0 cannot be seen at all
#   nft        `nft list tables`. Read only where nf_tables is in the running kernel, as a loaded module
#              or built in (its symbols are in /proc/kallsyms): listing tables would load the module
#              otherwise. node-read.sh looks for a loaded module only and misses a built-in nf_tables.
# Output: `@@kpm:cleanup-read <key> <exit code> <base64 value>` lines.

export LC_ALL=C
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"

kpm_cr() { printf '@@kpm:cleanup-read %s %s %s\n' "$1" "$2" "$3"; }
kpm_cr_b64() { base64 -w0 2>/dev/null || base64 | tr -d '\n'; }

kpm_nf_tables_in_kernel() {
  [ -d /sys/module/nf_tables ] || grep -qm1 -E ' (nf_tables|nft)_[a-z_]+' /proc/kallsyms 2>/dev/null
}

kpm_cleanup_read() {
  local out rc
  if command -v ip >/dev/null 2>&1; then
    kpm_cr ip-cmd 0 ''
    out=$(ip -o addr show 2>&1); rc=$?
    kpm_cr addresses "$rc" "$(printf '%s\n' "$out" | awk '$2 != "kube-ipvs0" && ($3 == "inet" || $3 == "inet6") { sub(/\/.*/, "", $4); print $4 }' | kpm_cr_b64)"
  else
    kpm_cr ip-cmd 127 ''
    kpm_cr addresses 127 ''
  fi
  if command -v ipset >/dev/null 2>&1; then kpm_cr ipset-cmd 0 ''; else kpm_cr ipset-cmd 127 ''; fi
  if ! command -v nft >/dev/null 2>&1; then
    kpm_cr nft 127 ''
  elif kpm_nf_tables_in_kernel; then
    out=$(nft list tables 2>&1); rc=$?
    kpm_cr nft "$rc" "$(printf '%s\n' "$out" | kpm_cr_b64)"
  else
    kpm_cr nft 200 ''
  fi
}

kpm_cleanup_read
