# kube-proxy-mode: the library for applying one node plan in a single exec, as root.
# tasks/node/apply.ts appends the plan's steps as calls to these functions; every value in them is
# shell-quoted there. Each step prints one line: @@kpm:step NAME STATUS BASE64(MESSAGE).
# The first failure stops the remaining steps (they report "skipped"), so a node is never left with
# later changes made on top of a failed earlier one.
set -u
umask 022
export LC_ALL=C
KPM_FAILED=0
KPM_LOG=$(mktemp "${TMPDIR:-/tmp}/kpm-apply.XXXXXX") || { echo 'kube-proxy-mode: cannot create a temporary file' >&2; exit 70; }
trap 'rm -f -- "$KPM_LOG"' EXIT

kpm_report() { printf '@@kpm:step %s %s %s\n' "$1" "$2" "$(printf '%s' "$3" | base64 -w0)"; }
kpm_tail() { tail -n 15 -- "$KPM_LOG" 2>/dev/null; }

# kpm_go STEP: true when the step should run; reports it skipped after an earlier failure.
kpm_go() {
  if [ "$KPM_FAILED" = 1 ]; then kpm_report "$1" skipped 'not run: an earlier step failed'; return 1; fi
  : >"$KPM_LOG"
  return 0
}
kpm_fail() { KPM_FAILED=1; kpm_report "$1" failed "$2"; }

# kpm_put PATH MODE OWNER:GROUP CONTENT: write a file atomically. The content goes to a temporary file in
# the same directory, gets its mode and owner, is flushed, then renamed over the target, so a reader
# (or a crash) sees the old file or the new one, never a part of it. CONTENT is text (no NUL byte).
kpm_put() {
  local path=$1 mode=$2 owner=$3 content=$4 dir tmp
  dir=${path%/*}
  [ -d "$dir" ] || mkdir -p -- "$dir" || return 1
  tmp=$(mktemp -- "$dir/.${path##*/}.kpm-XXXXXX") || return 1
  if printf '%s' "$content" >"$tmp" && chmod -- "$mode" "$tmp" && chown -- "$owner" "$tmp" \
     && { sync -- "$tmp" 2>/dev/null || true; } && mv -f -- "$tmp" "$path"; then
    return 0
  fi
  rm -f -- "$tmp"
  return 1
}

# kpm_attrs PATH MODE OWNER:GROUP: fix mode and owner of a file whose content is already right.
kpm_attrs() { chmod -- "$2" "$1" && chown -- "$3" "$1"; }
