# shellcheck shell=bash
# old-mode-read.sh: what the cleanup of an old kube-proxy mode needs to know beyond node-read.sh's dump
# (which has nft's tables too), read-only, in the same exec (tasks/cleanup/old-mode-script.ts runs it
# after node-read.sh).
#
#   addresses  the node's own addresses (every link but kube-ipvs0): ipvs mode opens NodePorts on them
#   ipset-cmd  whether ipset is installed: node-read.sh cannot tell "not installed" from "ip_set not
#              loaded", and only the first hides KUBE-* ipsets that may be there
#   ip-cmd     whether ip (iproute2) is installed: without it kube-ipvs0 cannot be seen at all
# Output: `@@kpm:cleanup-read <key> <exit code> <base64 value>` lines.

export LC_ALL=C
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"

kpm_cr() { printf '@@kpm:cleanup-read %s %s %s\n' "$1" "$2" "$3"; }
kpm_cr_b64() { base64 -w0 2>/dev/null || base64 | tr -d '\n'; }

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
}

kpm_cleanup_read
