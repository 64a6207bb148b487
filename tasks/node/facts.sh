# shellcheck shell=bash
# facts.sh: gather what kube-proxy-mode needs to know about a node, in one bash process, read-only.
#
# Never loads a module (modprobe -n only), never installs or writes anything; every probe tolerates a
# missing tool and permission errors, so it also runs unprivileged. Needs bash >= 4.2 (CentOS 7).
#
# Inputs: shell variables assigned by the prelude that tasks/node/facts.ts puts before this text:
#   KPM_PACKAGES  space separated package names to query
#   KPM_MODULES   space separated kernel module names to probe (already normalised: '-' -> '_')
#   KPM_FILES     space separated absolute paths of the managed files
#   KPM_FACTS_ROOT  tests only: a fake root prefixed to /etc, /usr/lib, /lib/modules, /sys/module, /proc,
#                   /run and the sbin directories added to PATH. Unset on real nodes.
#
# Output (stdout, the format parsed by parseFacts in facts.ts): marker lines `@@kpm:<section>[ <arg>]`,
# each followed by its body lines, from `@@kpm:begin 1` to `@@kpm:end`. Bodies are either `key=value`
# lines or kernel-generated lines (lsmod, modules.builtin) that can never start with '@'. File contents and
# command output are encoded on one line as `b64:<base64>` (or `hex:<hex>` where base64 is missing).
# Nothing is written to stderr unless the inputs are invalid (exit 2).

export LC_ALL=C

kpm_facts() {
  local R="${KPM_FACTS_ROOT-}"
  local -a pkgs=() mods=() files=()
  read -r -a pkgs <<< "${KPM_PACKAGES-}"
  read -r -a mods <<< "${KPM_MODULES-}"
  read -r -a files <<< "${KPM_FILES-}"

  # Defence in depth (facts.ts validates first): names are words, never options; paths are absolute.
  local x name_re='^[A-Za-z0-9_.+][A-Za-z0-9_.+-]*$' path_re='^/[A-Za-z0-9_.+/-]*$'
  for x in "${pkgs[@]}" "${mods[@]}"; do
    [[ $x =~ $name_re ]] || { printf 'facts.sh: invalid name: %s\n' "$x" >&2; return 2; }
  done
  for x in "${files[@]}"; do
    [[ $x =~ $path_re ]] || { printf 'facts.sh: invalid path: %s\n' "$x" >&2; return 2; }
  done

  # An unprivileged SSH session's PATH often lacks the sbin directories (modprobe, lsmod, modinfo).
  PATH="${PATH:-/usr/bin:/bin}:$R/usr/local/sbin:$R/usr/sbin:$R/sbin"

  # Encoder: reads stdin, writes one line-free token. base64 (coreutils) or od-based hex as a fallback.
  local -a enc
  local encl
  # shellcheck disable=SC2317 # called through "${enc[@]}"
  kpm_hex() { od -An -v -tx1 | tr -d ' \n'; }
  if type -P base64 >/dev/null 2>&1; then enc=(base64 -w0); encl=b64; else enc=(kpm_hex); encl=hex; fi

  printf '@@kpm:begin 1\n'

  # --- system -------------------------------------------------------------------------------------------
  local u kr='' arch='' user=''
  if u=$(uname -r -m 2>/dev/null); then kr=${u%% *}; arch=${u##* }; fi
  if [[ -z $kr && -r $R/proc/sys/kernel/osrelease ]]; then read -r kr < "$R/proc/sys/kernel/osrelease"; fi
  user=$(id -un 2>/dev/null) || user="#${EUID}"
  printf '@@kpm:system\nkernel=%s\narch=%s\nuser=%s\n' "$kr" "$arch" "$user"
  if [[ -d $R/run/systemd/system ]]; then printf 'systemd=1\n'; else printf 'systemd=0\n'; fi

  # --- os-release ---------------------------------------------------------------------------------------
  printf '@@kpm:os-release\n'
  for x in /etc/os-release /usr/lib/os-release; do
    if [[ -f $R$x && -r $R$x ]]; then
      printf 'path=%s\ncontent=%s:' "$x" "$encl"
      "${enc[@]}" < "$R$x"
      printf '\n'
      break
    fi
  done

  # --- package managers and packages -------------------------------------------------------------------
  printf '@@kpm:package-managers\n'
  for x in apt-get dnf yum zypper; do
    type -P "$x" >/dev/null 2>&1 && printf '%s\n' "$x"
  done

  local out name want _eflag status
  if type -P dpkg-query >/dev/null 2>&1; then
    # One line per requested package: dpkg's status word (installed, config-files, not-installed, ...),
    # or `unknown` when dpkg has never heard of it. Several architectures: `installed` wins.
    printf '@@kpm:packages dpkg\n'
    if ((${#pkgs[@]})); then
      local -A dst=()
      out=$(dpkg-query -W --showformat='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null)
      while read -r name want _eflag status; do
        [[ -n $name && -n $status ]] || continue
        [[ ${dst[$name]-} == installed ]] || dst[$name]=$status
      done <<< "$out"
      for x in "${pkgs[@]}"; do printf '%s=%s\n' "$x" "${dst[$x]:-unknown}"; done
    fi
  fi
  if type -P rpm >/dev/null 2>&1; then
    # `installed` or `not-installed` per requested package (rpm -q prints "package X is not installed").
    printf '@@kpm:packages rpm\n'
    if ((${#pkgs[@]})); then
      local -A rst=()
      out=$(rpm -q --queryformat 'kpm-installed %{NAME}\n' "${pkgs[@]}" 2>/dev/null)
      while read -r want name; do
        [[ $want == kpm-installed && -n $name ]] && rst[$name]=1
      done <<< "$out"
      for x in "${pkgs[@]}"; do
        if [[ -n ${rst[$x]-} ]]; then printf '%s=installed\n' "$x"; else printf '%s=not-installed\n' "$x"; fi
      done
    fi
  fi

  # --- loaded modules -----------------------------------------------------------------------------------
  local src=none lsm='' line
  if type -P lsmod >/dev/null 2>&1 && lsm=$(lsmod 2>/dev/null) && [[ -n $lsm ]]; then
    src=lsmod
  elif [[ -r $R/proc/modules ]]; then
    src=/proc/modules
    IFS= read -r -d '' lsm < "$R/proc/modules"
  else
    lsm=''
  fi
  printf '@@kpm:lsmod %s\n' "$src"
  local -A loaded=()
  while IFS= read -r line; do
    [[ -z $line || $line == @* ]] && continue
    printf '%s\n' "$line"
    x=${line%% *}; loaded[${x//-/_}]=1
  done <<< "$lsm"

  # --- built-in modules: the lines of modules.builtin naming a requested module ------------------------
  local -A wanted=() inbuiltin=()
  for x in "${mods[@]}"; do wanted[$x]=1; done
  local mb='' b
  if [[ -n $kr ]]; then
    for x in "/lib/modules/$kr/modules.builtin" "/usr/lib/modules/$kr/modules.builtin"; do
      if [[ -f $R$x && -r $R$x ]]; then mb=$x; break; fi
    done
  fi
  if [[ -n $mb ]]; then
    printf '@@kpm:modules.builtin %s\n' "$mb"
    if ((${#mods[@]})); then
      while IFS= read -r line; do
        b=${line##*/}; b=${b%%.ko*}; b=${b//-/_}
        [[ -n ${wanted[$b]-} && $line != @* ]] && { printf '%s\n' "$line"; inbuiltin[$b]=1; }
      done < "$R$mb"
    fi
  else
    printf '@@kpm:modules.builtin none\n'
  fi

  # --- per module: sysfs, modprobe dry run, modinfo ----------------------------------------------------
  # `<key>.rc=<exit code>` and `<key>=<encoded output>` (stdout and stderr together, trailing newlines
  # normalised to one; the value is empty, without a forked encoder, when the command printed nothing).
  kpm_cmd() {
    printf '%s.rc=%s\n%s=' "$1" "$2" "$1"
    if [[ -n $3 ]]; then printf '%s:' "$encl"; "${enc[@]}" <<< "$3"; fi
    printf '\n'
  }
  local m has_modprobe=0 has_modinfo=0
  type -P modprobe >/dev/null 2>&1 && has_modprobe=1
  type -P modinfo >/dev/null 2>&1 && has_modinfo=1
  for m in "${mods[@]}"; do
    printf '@@kpm:module %s\n' "$m"
    x=''
    if [[ -d $R/sys/module/$m ]]; then
      printf 'sysfs=1\n'
      # Only a loadable module has initstate; a built-in one shows here without it.
      if [[ -r $R/sys/module/$m/initstate ]]; then read -r x < "$R/sys/module/$m/initstate"; fi
      [[ $x =~ ^[a-z]+$ ]] && printf 'initstate=%s\n' "$x"
      [[ -z $x ]] && inbuiltin[$m]=1
    else
      printf 'sysfs=0\n'
    fi
    # A module already loaded or built in is there: no need to ask modprobe (a converged node then costs
    # one dry run, for nf_conntrack_ipv4, instead of one per module).
    if [[ -n ${loaded[$m]-} || -n ${inbuiltin[$m]-} ]]; then
      printf 'modprobe.rc=skipped\nmodinfo.rc=none\n'
      continue
    fi
    if ((has_modprobe)); then
      out=$(modprobe -n -v "$m" 2>&1 </dev/null)
      kpm_cmd modprobe $? "$out"
    else
      printf 'modprobe.rc=none\n'
    fi
    if ((has_modinfo)); then
      out=$(modinfo -F filename "$m" 2>&1 </dev/null)
      kpm_cmd modinfo $? "$out"
    else
      printf 'modinfo.rc=none\n'
    fi
  done

  # --- managed files ------------------------------------------------------------------------------------
  local f p st mode owner group size h cap=1048576 t
  local -a strays
  for f in "${files[@]}"; do
    printf '@@kpm:file %s\n' "$f"
    p=$R$f
    # temporary files of a write that was cut off (kpm_put's names: .NAME.kpm-XXXXXX, next to the file)
    strays=()
    for t in "${p%/*}/.${p##*/}".kpm-??????; do [[ -e $t || -L $t ]] && strays+=("${t##*/}"); done
    ((${#strays[@]})) && printf 'strays=%s\n' "${strays[*]}"
    if [[ ! -e $p ]]; then printf 'exists=0\n'; continue; fi
    printf 'exists=1\n'
    if [[ -f $p ]]; then printf 'type=file\n'; elif [[ -d $p ]]; then printf 'type=directory\n'; else printf 'type=other\n'; fi
    size=''
    if st=$(stat -L -c '%a %U %G %s' -- "$p" 2>/dev/null); then
      read -r mode owner group size <<< "$st"
      printf 'mode=%s\nowner=%s\ngroup=%s\nsize=%s\n' "$mode" "$owner" "$group" "$size"
    fi
    [[ -f $p ]] || continue
    if [[ ! -r $p ]]; then printf 'readable=0\n'; continue; fi
    printf 'readable=1\n'
    if h=$(sha256sum < "$p" 2>/dev/null); then
      h=${h%% *}
      [[ $h =~ ^[0-9a-f]{64}$ ]] && printf 'sha256=%s\n' "$h"
    fi
    if [[ $size =~ ^[0-9]+$ ]] && ((size <= cap)); then
      printf 'content=%s:' "$encl"
      "${enc[@]}" < "$p"
      printf '\n'
    elif [[ -n $size ]]; then
      printf 'content=too-large\n'
    fi
  done

  printf '@@kpm:end\n'
  return 0
}

kpm_facts </dev/null
exit $?
