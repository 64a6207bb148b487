# kube-proxy-mode: the library for applying one node plan in a single exec, as root.
# tasks/node/apply.ts appends the plan's steps as calls to these functions; every value in them is
# shell-quoted there. Each step prints one line: @@kpm:step NAME STATUS MESSAGE, the message encoded as
# facts.sh encodes values (`txt:` printable ASCII with %25/%0A/%0D, else `b64:`).
# The first failure stops the remaining steps (they report "skipped"), so a node is never left with
# later changes made on top of a failed earlier one.
# Every process started here costs a node several milliseconds (times every node): what bash can do
# itself, it does.
set -u
umask 022
export LC_ALL=C
KPM_FAILED=0
KPM_ALNUM=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789
# What a file created here gets without chmod/chown: 0666 less the umask, and (in a directory without the
# setgid bit) the effective user and group, read from /proc without a fork ('' where it cannot be read).
KPM_CREATE_MODE=$((8#666 & ~8#022))
KPM_CREATE_OWNER=''
if [ "$EUID" = 0 ] && [ -r /proc/self/status ]; then
  while read -r k _ egid _; do
    if [ "$k" = Gid: ]; then [ "$egid" = 0 ] && KPM_CREATE_OWNER=root:root; break; fi
  done </proc/self/status
fi
KPM_LOG=$(mktemp "${TMPDIR:-/tmp}/kpm-apply.XXXXXX") || { echo 'kube-proxy-mode: cannot create a temporary file' >&2; exit 70; }
trap 'rm -f -- "$KPM_LOG"' EXIT

# kpm_report STEP STATUS MESSAGE. Printable ASCII (the usual case) is encoded without a fork.
kpm_report() {
  local v=$3 pct=%
  if [[ $v == *[!$' \t\n\r'!-~]* ]]; then
    v="b64:$(printf '%s' "$v" | base64 -w0)"
  else
    v=${v//"$pct"/%25}; v=${v//$'\n'/%0A}; v="txt:${v//$'\r'/%0D}"
  fi
  printf '@@kpm:step %s %s %s\n' "$1" "$2" "$v"
}
# kpm_tail: the last 15 lines of the step's log in KPM_TAIL
kpm_tail() {
  local -a l=()
  local i
  KPM_TAIL=''
  mapfile -t l <"$KPM_LOG" 2>/dev/null
  for ((i = ${#l[@]} > 15 ? ${#l[@]} - 15 : 0; i < ${#l[@]}; i++)); do KPM_TAIL+=${KPM_TAIL:+$'\n'}${l[i]}; done
}

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
# The temporary file is created by bash with O_EXCL (noclobber), named as facts.sh looks for leftovers
# (.NAME.kpm-XXXXXX); chmod and chown run only where creation did not already give the mode and owner.
kpm_put() {
  local path=$1 mode=$2 owner=$3 content=$4 dir tmp n i
  dir=${path%/*}
  [ -d "$dir" ] || mkdir -p -- "$dir" || return 1
  # noclobber opens an existing non-regular file (a FIFO, a symlink to a device) instead of failing, so a
  # name already taken is passed over first, and what was opened must be a plain file
  for ((n = 0; n < 20; n++)); do
    tmp="$dir/.${path##*/}.kpm-"
    for ((i = 0; i < 6; i++)); do tmp+=${KPM_ALNUM:RANDOM % 62:1}; done
    [ -e "$tmp" ] || [ -L "$tmp" ] && continue
    set -C
    { : >"$tmp"; } 2>/dev/null; i=$?
    set +C
    [ "$i" = 0 ] && [ -f "$tmp" ] && [ ! -L "$tmp" ] && break
    [ -e "$tmp" ] || [ -L "$tmp" ] || return 1 # not created: the directory refuses
  done
  ((n < 20)) || return 1
  if printf '%s' "$content" >"$tmp" \
     && { [ "$((8#$mode))" = "$KPM_CREATE_MODE" ] || chmod -- "$mode" "$tmp"; } \
     && { [ "$owner" = "$KPM_CREATE_OWNER" ] && [ ! -g "$dir" ] || chown -- "$owner" "$tmp"; } \
     && { sync -- "$tmp" 2>/dev/null || true; } && mv -f -- "$tmp" "$path"; then
    return 0
  fi
  rm -f -- "$tmp"
  return 1
}

# kpm_attrs PATH MODE OWNER:GROUP: fix mode and owner of a file whose content is already right.
kpm_attrs() { chmod -- "$2" "$1" && chown -- "$3" "$1"; }
