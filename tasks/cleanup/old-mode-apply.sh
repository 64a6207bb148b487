# shellcheck shell=bash
# old-mode-apply.sh: remove an old kube-proxy mode's objects from this node as a cleanup plan names them
# (tasks/cleanup/old-mode-plan.ts), in one bash process, as root.
#
# The node is read again right before each change, and only what the plan names and is still there as
# planned goes: an object gone, a rule whose text changed, or a chain that something outside the plan
# leads into now is left alone and reported "skipped". Each iptables table of each family changes in one
# `iptables-restore --noflush` transaction (-D the rules, then -F and -X the chains): all of it or none.
# When that transaction fails (kube-proxy rewrote the table between the read and the write), the table
# is read again and the transaction made anew and retried once; a second failure is reported.
#
# Input (assigned by the prelude tasks/cleanup/old-mode-script.ts puts before this text):
#   KPM_CLEANUP  base64 of the plan, one object a line; every field after the first is base64:
#                vs LABEL FLAG ADDRESS          (FLAG -t, -u or --sctp-service, as ipvsadm -S prints it)
#                rule FAMILY TABLE LABEL LINE   (FAMILY 4 or 6; LINE as iptables-save prints it)
#                chain FAMILY TABLE LABEL NAME
#                ipset LABEL NAME | link LABEL NAME | nft LABEL FAMILY NAME
# Output: `@@kpm:cleanup STATUS BASE64(LABEL) BASE64(DETAIL)`, one line per object of the plan, STATUS
# removed, skipped or failed.

set -u
umask 077
export LC_ALL=C
PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/sbin:/sbin"

kpm_enc() { base64 -w0 2>/dev/null || base64 | tr -d '\n'; }
kpm_dec() { printf '%s' "$1" | base64 -d 2>/dev/null; }
# kpm_report STATUS LABEL64 DETAIL: the label travels as the plan gave it, so it comes back byte for byte
kpm_report() { printf '@@kpm:cleanup %s %s %s\n' "$1" "$2" "$(printf '%s' "$3" | kpm_enc)"; }
# a command's complaint on one line, short enough for a report
kpm_oneline() { tr '\n' ' ' | sed -e 's/  */ /g' -e 's/ $//' | cut -c1-600; }

KPM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kpm-cleanup.XXXXXX") || { echo 'kube-proxy-mode: cannot create a temporary directory' >&2; exit 70; }
trap 'rm -rf -- "$KPM_DIR"' EXIT
KPM_PLAN=$KPM_DIR/plan
printf '%s' "$KPM_CLEANUP" | base64 -d >"$KPM_PLAN" || { echo 'kube-proxy-mode: the cleanup plan is not base64' >&2; exit 70; }

# kpm_fail_all KIND DETAIL: every object of that kind failed for one reason
kpm_fail_all() {
  local kind label
  while read -r kind label _; do
    [ "$kind" = "$1" ] && kpm_report failed "$label" "$2"
  done <"$KPM_PLAN"
}

kpm_virtual_servers() {
  local kind label flag addr saved out
  grep -q '^vs ' "$KPM_PLAN" || return 0
  if ! command -v ipvsadm >/dev/null 2>&1; then kpm_fail_all vs 'ipvsadm is not installed'; return 0; fi
  if ! saved=$(ipvsadm -Sn 2>&1); then kpm_fail_all vs "ipvsadm -Sn failed: $(kpm_oneline <<<"$saved")"; return 0; fi
  while read -r kind label flag addr; do
    [ "$kind" = vs ] || continue
    flag=$(kpm_dec "$flag")
    addr=$(kpm_dec "$addr")
    if ! awk -v f="$flag" -v a="$addr" '$1 == "-A" && $2 == f && $3 == a { x = 1 } END { exit !x }' <<<"$saved"; then
      kpm_report skipped "$label" 'not on the node any more'
    elif out=$(ipvsadm -D "$flag" "$addr" 2>&1); then
      kpm_report removed "$label" ''
    else
      kpm_report failed "$label" "ipvsadm -D $flag $addr: $(kpm_oneline <<<"$out")"
    fi
  done <"$KPM_PLAN"
}

# kpm_decide TABLE PLANNED CURRENT TX VERDICTS: from a table's planned objects ("R|C <TAB> LABEL64 <TAB> text")
# and its iptables-save right now, the restore transaction and one verdict per object.
kpm_decide() { # TABLE PLANNED CURRENT TX VERDICTS
  awk -v table="$1" -v tx="$4" -v verdicts="$5" '
    function target(l,   t) {
      t = l
      # a quoted word (a comment) cannot name the target
      gsub(/"([^"\\]|\\.)*"/, "\"\"", t)
      return match(t, / -[jg] [^ ]+/) ? substr(t, RSTART + 4, RLENGTH - 4) : ""
    }
    function verdict(s, label, detail) { printf "%s\t%s\t%s\n", s, label, detail > verdicts }
    FILENAME == ARGV[1] {
      split($0, f, "\t")
      if (f[1] == "R") { nr++; rlabel[nr] = f[2]; rline[nr] = f[3]; want[f[3]]++ }
      else { nc++; clabel[nc] = f[2]; cname[nc] = f[3] }
      next
    }
    /^:/ { split($0, w, " "); exists[substr(w[1], 2)] = 1; next }
    /^-A / { n++; line[n] = $0; split($0, w, " "); owner[n] = w[2]; to[n] = target($0); have[$0]++ }
    END {
      for (i = 1; i <= nc; i++) if (cname[i] in exists) cand[cname[i]] = 1
      for (l in want) { c = (l in have) ? have[l] : 0; del[l] = want[l] < c ? want[l] : c }
      # a rule outside the chains going away that leads into one of them holds it, unless the plan
      # removes that very rule (as many copies of it as the plan names)
      for (i = 1; i <= n; i++) {
        if ((owner[i] in cand) || !(to[i] in cand)) continue
        if (used[line[i]] < del[line[i]]) used[line[i]]++
        else held[to[i]] = 1
      }
      # and a held chain holds what it leads into
      do {
        changed = 0
        for (i = 1; i <= n; i++) if ((owner[i] in held) && (to[i] in cand) && !(to[i] in held)) { held[to[i]] = 1; changed = 1 }
      } while (changed)

      printf "*%s\n", table > tx
      for (i = 1; i <= nr; i++) {
        l = rline[i]; t = target(l)
        if (del[l] == 0) verdict("skipped", rlabel[i], "not on the node any more as planned")
        else if (t in held) { del[l]--; verdict("skipped", rlabel[i], "leads into " t ", which stays: a rule the plan does not name leads into it now") }
        else { printf "-D%s\n", substr(l, 3) > tx; del[l]--; verdict("removed", rlabel[i], "") }
      }
      for (i = 1; i <= nc; i++) {
        c = cname[i]
        if (!(c in exists)) verdict("skipped", clabel[i], "not on the node any more")
        else if (c in held) verdict("skipped", clabel[i], "a rule the plan does not name leads into it now")
        else { printf "-F %s\n", c > tx; gone[++ng] = c; verdict("removed", clabel[i], "") }
      }
      for (i = 1; i <= ng; i++) printf "-X %s\n", gone[i] > tx
      print "COMMIT" > tx
    }
  ' "$2" "$3"
}

# kpm_table FAMILY64 TABLE64: one table of one family, in one transaction
kpm_table() {
  local fam table save restore err k label value
  local planned=$KPM_DIR/planned current=$KPM_DIR/current tx=$KPM_DIR/tx verdicts=$KPM_DIR/verdicts
  fam=$(kpm_dec "$1")
  table=$(kpm_dec "$2")
  save=iptables-save restore=iptables-restore
  if [ "$fam" = 6 ]; then save=ip6tables-save restore=ip6tables-restore; fi
  : >"$planned"
  while read -r k _ _ label value; do
    printf '%s\t%s\t%s\n' "$([ "$k" = rule ] && echo R || echo C)" "$label" "$(kpm_dec "$value")" >>"$planned"
  done < <(awk -v f="$1" -v t="$2" '($1 == "rule" || $1 == "chain") && $2 == f && $3 == t' "$KPM_PLAN")

  err=''
  if ! command -v "$save" >/dev/null 2>&1 || ! command -v "$restore" >/dev/null 2>&1; then
    err="$save or $restore is not installed"
  else
    for _ in 1 2; do
      if ! "$save" -t "$table" >"$current" 2>"$KPM_DIR/err"; then
        err="$save -t $table failed: $(kpm_oneline <"$KPM_DIR/err")"
        break
      fi
      : >"$verdicts"
      kpm_decide "$table" "$planned" "$current" "$tx" "$verdicts"
      if ! grep -q '^-[DFX] ' "$tx" || "$restore" -w 5 --noflush <"$tx" 2>"$KPM_DIR/err"; then
        err=''
        break
      fi
      err="$restore --noflush failed on the first try and again after reading the table anew: $(kpm_oneline <"$KPM_DIR/err")"
    done
  fi
  if [ -n "$err" ]; then
    while IFS=$'\t' read -r _ label _; do kpm_report failed "$label" "$err"; done <"$planned"
  else
    while IFS=$'\t' read -r k label value; do kpm_report "$k" "$label" "$value"; done <"$verdicts"
  fi
}

kpm_iptables() {
  local fam table
  while read -r fam table; do
    kpm_table "$fam" "$table"
  done < <(awk '($1 == "rule" || $1 == "chain") && !seen[$2 " " $3]++ { print $2, $3 }' "$KPM_PLAN")
}

kpm_ipsets() {
  local kind label name sets out
  grep -q '^ipset ' "$KPM_PLAN" || return 0
  if ! command -v ipset >/dev/null 2>&1; then kpm_fail_all ipset 'ipset is not installed'; return 0; fi
  if ! sets=$(ipset list -n 2>&1); then kpm_fail_all ipset "ipset list -n failed: $(kpm_oneline <<<"$sets")"; return 0; fi
  while read -r kind label name; do
    [ "$kind" = ipset ] || continue
    name=$(kpm_dec "$name")
    if ! grep -qxF -- "$name" <<<"$sets"; then
      kpm_report skipped "$label" 'not on the node any more'
    elif out=$(ipset destroy "$name" 2>&1); then
      kpm_report removed "$label" ''
    else
      kpm_report failed "$label" "ipset destroy $name: $(kpm_oneline <<<"$out")"
    fi
  done <"$KPM_PLAN"
}

kpm_links() {
  local kind label name out
  grep -q '^link ' "$KPM_PLAN" || return 0
  if ! command -v ip >/dev/null 2>&1; then kpm_fail_all link 'ip (iproute2) is not installed'; return 0; fi
  while read -r kind label name; do
    [ "$kind" = link ] || continue
    name=$(kpm_dec "$name")
    if ! ip link show dev "$name" >/dev/null 2>&1; then
      kpm_report skipped "$label" 'not on the node any more'
    elif out=$(ip link del dev "$name" 2>&1); then
      kpm_report removed "$label" ''
    else
      kpm_report failed "$label" "ip link del $name: $(kpm_oneline <<<"$out")"
    fi
  done <"$KPM_PLAN"
}

kpm_nft_tables() {
  local kind label family name out
  grep -q '^nft ' "$KPM_PLAN" || return 0
  if ! command -v nft >/dev/null 2>&1; then kpm_fail_all nft 'nft is not installed'; return 0; fi
  while read -r kind label family name; do
    [ "$kind" = nft ] || continue
    family=$(kpm_dec "$family")
    name=$(kpm_dec "$name")
    if ! nft list table "$family" "$name" >/dev/null 2>&1; then
      kpm_report skipped "$label" 'not on the node any more'
    elif out=$(nft delete table "$family" "$name" 2>&1); then
      kpm_report removed "$label" ''
    else
      kpm_report failed "$label" "nft delete table $family $name: $(kpm_oneline <<<"$out")"
    fi
  done <"$KPM_PLAN"
}

# Virtual servers before the rules, the rules before the ipsets they match (a set in use cannot go).
kpm_virtual_servers
kpm_iptables
kpm_ipsets
kpm_links
kpm_nft_tables
