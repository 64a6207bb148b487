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
#   KPM_EXPECT    optional array of triples (PATH SHA256 CONTENT): what the caller expects a managed file to
#                 hold. A file holding exactly one of them is reported as `sha256=<its SHA256>` and
#                 `content=same` instead of being hashed and sent back.
#   KPM_PROBE     0: do not ask modprobe/modinfo about modules that are neither loaded nor built in (the
#                 read-back after applying: it only needs what is loaded); otherwise they are probed
#   KPM_FACTS_ROOT  tests only: a fake root prefixed to /etc, /usr/lib, /lib/modules, /sys/module, /proc,
#                   /run and the sbin directories added to PATH. Unset on real nodes.
#
# Output (stdout, the format parsed by parseFacts in facts.ts): marker lines `@@kpm:<section>[ <arg>]`,
# each followed by its body lines, from `@@kpm:begin 1` to `@@kpm:end`. Bodies are either `key=value`
# lines or kernel-generated lines (lsmod, modules.builtin) that can never start with '@'. File contents and
# command output are encoded on one line: `txt:<text>` when they are printable ASCII (with tabs and line
# breaks; '%', LF and CR written as %25, %0A, %0D), else `b64:<base64>` (or `hex:<hex>` where base64 is
# missing). The output stays ASCII: it may be decoded in chunks that would split a multi-byte character.
# Nothing is written to stderr unless the inputs are invalid (exit 2).

export LC_ALL=C

kpm_facts() {
  local R="${KPM_FACTS_ROOT-}"
  local -a pkgs=() mods=() files=() exp=()
  read -r -a pkgs <<< "${KPM_PACKAGES-}"
  read -r -a mods <<< "${KPM_MODULES-}"
  read -r -a files <<< "${KPM_FILES-}"
  exp=("${KPM_EXPECT[@]}")

  # Defence in depth (facts.ts validates first): names are words, never options; paths are absolute.
  local x name_re='^[A-Za-z0-9_.+][A-Za-z0-9_.+-]*$' path_re='^/[A-Za-z0-9_.+/-]*$'
  for x in "${pkgs[@]}" "${mods[@]}"; do
    [[ $x =~ $name_re ]] || { printf 'facts.sh: invalid name: %s\n' "$x" >&2; return 2; }
  done
  for x in "${files[@]}"; do
    [[ $x =~ $path_re ]] || { printf 'facts.sh: invalid path: %s\n' "$x" >&2; return 2; }
  done
  local i
  ((${#exp[@]} % 3 == 0)) || { printf 'facts.sh: KPM_EXPECT is not a list of triples\n' >&2; return 2; }
  for ((i = 0; i < ${#exp[@]}; i += 3)); do
    [[ ${exp[i]} =~ $path_re && ${exp[i+1]} =~ ^[0-9a-f]{64}$ ]] ||
      { printf 'facts.sh: invalid expected content for %s\n' "${exp[i]}" >&2; return 2; }
  done

  # An unprivileged SSH session's PATH often lacks the sbin directories (modprobe, lsmod, modinfo).
  PATH="${PATH:-/usr/bin:/bin}:$R/usr/local/sbin:$R/usr/sbin:$R/sbin"

  # Encoder: reads stdin, writes one line-free token. base64 (coreutils) or od-based hex as a fallback.
  local -a enc
  local encl
  # shellcheck disable=SC2317 # called through "${enc[@]}"
  kpm_hex() { od -An -v -tx1 | tr -d ' \n'; }
  if type -P base64 >/dev/null 2>&1; then enc=(base64 -w0); encl=b64; else enc=(kpm_hex); encl=hex; fi

  # kpm_txt VALUE: VALUE as `txt:...` without a fork, when it is printable ASCII (tabs and line breaks
  # allowed); returns 1, printing nothing, for anything else (the caller then forks the encoder).
  local pct=%
  kpm_txt() {
    local v=$1
    [[ $v == *[!$' \t\n\r'!-~]* ]] && return 1
    v=${v//"$pct"/%25}; v=${v//$'\n'/%0A}; v=${v//$'\r'/%0D}
    printf 'txt:%s' "$v"
  }
  # kpm_content FILE: the file's content, encoded. `read -d ''` keeps trailing newlines and stops early
  # only at a NUL byte (status 0): such a file goes to the encoder, as does any non-ASCII text.
  kpm_content() {
    local c=''
    if ! IFS= read -r -d '' c < "$1" && kpm_txt "$c"; then return 0; fi
    printf '%s:' "$encl"
    "${enc[@]}" < "$1"
  }

  printf '@@kpm:begin 1\n'

  # --- system -------------------------------------------------------------------------------------------
  local u kr='' arch='' user='' pers='' name
  # uname(2) answers from the same fields as /proc/sys/kernel/{osrelease,arch} (arch: Linux 6.1 and
  # later) unless a personality (linux32, uname26) rewrites them: then, and on older kernels, ask uname.
  [[ -r $R/proc/self/personality ]] && read -r pers < "$R/proc/self/personality"
  if [[ $pers == 00000000 && -r $R/proc/sys/kernel/osrelease && -r $R/proc/sys/kernel/arch ]]; then
    read -r kr < "$R/proc/sys/kernel/osrelease"
    read -r arch < "$R/proc/sys/kernel/arch"
  fi
  if [[ -z $kr || -z $arch ]]; then
    kr='' arch=''
    if u=$(uname -r -m 2>/dev/null); then kr=${u%% *}; arch=${u##* }; fi
    if [[ -z $kr && -r $R/proc/sys/kernel/osrelease ]]; then read -r kr < "$R/proc/sys/kernel/osrelease"; fi
  fi
  # `id -un` is getpwuid(euid): the first passwd entry with that uid, the files database answering first
  # on every supported distribution. NIS compat entries (+/-) or no entry: ask id.
  if [[ -r $R/etc/passwd ]]; then
    while IFS=: read -r name _ u _; do
      [[ $name == [+-]* ]] && break
      [[ -n $name && $u == "$EUID" ]] && { user=$name; break; }
    done < "$R/etc/passwd"
  fi
  if [[ -z $user ]]; then user=$(id -un 2>/dev/null) || user="#${EUID}"; fi
  printf '@@kpm:system\nkernel=%s\narch=%s\nuser=%s\n' "$kr" "$arch" "$user"
  if [[ -d $R/run/systemd/system ]]; then printf 'systemd=1\n'; else printf 'systemd=0\n'; fi
  # nftables mode's gate needs nft's version; asked only then (a fork on every node otherwise)
  if [[ ${KPM_ASK_NFT-} == 1 ]] && type -P nft >/dev/null 2>&1; then
    x=$(nft --version 2>/dev/null </dev/null) && x=${x%%$'\n'*} && x=${x//[^A-Za-z0-9 .()#_+-]/} && [[ -n $x ]] && printf 'nft=%s\n' "$x"
  fi

  # --- os-release ---------------------------------------------------------------------------------------
  printf '@@kpm:os-release\n'
  for x in /etc/os-release /usr/lib/os-release; do
    if [[ -f $R$x && -r $R$x ]]; then
      printf 'path=%s\ncontent=' "$x"
      kpm_content "$R$x"
      printf '\n'
      break
    fi
  done

  # --- package managers and packages -------------------------------------------------------------------
  printf '@@kpm:package-managers\n'
  for x in apt-get dnf yum zypper; do
    type -P "$x" >/dev/null 2>&1 && printf '%s\n' "$x"
  done

  local out want _eflag status
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
  # normalised to one; the value is empty when the command printed nothing).
  kpm_cmd() {
    printf '%s.rc=%s\n%s=' "$1" "$2" "$1"
    if [[ -n $3 ]] && ! kpm_txt "$3"$'\n'; then printf '%s:' "$encl"; "${enc[@]}" <<< "$3"; fi
    printf '\n'
  }
  local m rc has_modprobe=0 has_modinfo=0
  type -P modprobe >/dev/null 2>&1 && has_modprobe=1
  type -P modinfo >/dev/null 2>&1 && has_modinfo=1
  # One dry run for all the modules to ask about (a fresh node's whole list) instead of one each: with -a
  # modprobe goes on past a module it cannot find, and each module it would load ends with its own
  # `insmod .../NAME.ko` line. A module with that line is found; any other (not found, an alias of
  # another file, anything with an `install` command, whose effect cannot be told apart) is asked alone
  # below, so its rc and message are exactly modprobe's.
  local -a todo=()
  local -A found=()
  if ((has_modprobe)) && [[ ${KPM_PROBE-1} != 0 ]]; then
    for m in "${mods[@]}"; do
      [[ -n ${loaded[$m]-} || -n ${inbuiltin[$m]-} ]] && continue
      [[ -d $R/sys/module/$m && ! -r $R/sys/module/$m/initstate ]] && continue
      todo+=("$m")
    done
  fi
  if ((${#todo[@]} > 1)); then
    out=$(modprobe -n -v -a -- "${todo[@]}" 2>/dev/null </dev/null)
    if [[ $'\n'$out != *$'\n'install\ * ]]; then
      while IFS= read -r line; do
        [[ $line == 'insmod '* ]] || continue
        b=${line#insmod }; b=${b%% *}; b=${b##*/}; b=${b%%.ko*}; b=${b//-/_}
        found[$b]=$line
      done <<< "$out"
    fi
  fi
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
    if [[ ${KPM_PROBE-1} == 0 ]]; then
      printf 'modprobe.rc=unprobed\nmodinfo.rc=none\n'
      continue
    fi
    if [[ -n ${found[$m]-} ]]; then
      kpm_cmd modprobe 0 "${found[$m]}"
      printf 'modinfo.rc=skipped\n'
      continue
    fi
    out='' rc=1
    if ((has_modprobe)); then
      out=$(modprobe -n -v "$m" 2>&1 </dev/null)
      rc=$?
      kpm_cmd modprobe "$rc" "$out"
    else
      printf 'modprobe.rc=none\n'
    fi
    # modinfo only adds "(builtin)". A dry run that succeeded naming a module file to insert (and no
    # install command) has already found the module not built in: modinfo would only name that file.
    if ((rc == 0)) && [[ $'\n'$out == *$'\n'insmod\ * && $'\n'$out != *$'\n'install\ * ]]; then
      printf 'modinfo.rc=skipped\n'
    elif ((rc != 0)) && [[ -n $mb ]]; then
      # modprobe cannot find it and modules.builtin (read above) does not list it: modinfo, which reads the
      # same index, could only say the same
      printf 'modinfo.rc=skipped\n'
    elif ((has_modinfo)); then
      out=$(modinfo -F filename "$m" 2>&1 </dev/null)
      kpm_cmd modinfo $? "$out"
    else
      printf 'modinfo.rc=none\n'
    fi
  done

  # --- managed files ------------------------------------------------------------------------------------
  local f p mode owner group size h cap=1048576 t
  local -a strays present=()
  local -A st_mode=() st_owner=() st_group=() st_size=()
  # One stat for all of them (a fork each costs more than the rest of a file's probe).
  for f in "${files[@]}"; do [[ -e $R$f ]] && present+=("$R$f"); done
  if ((${#present[@]})); then
    out=$(stat -L -c '%a %U %G %s %n' -- "${present[@]}" 2>/dev/null)
    while read -r mode owner group size p; do
      [[ -n $p ]] || continue
      st_mode[$p]=$mode st_owner[$p]=$owner st_group[$p]=$group st_size[$p]=$size
    done <<< "$out"
  fi

  # kpm_same PATH FILE SIZE: FILE holds byte for byte one of the expected contents of PATH: print that
  # content's sha256 and `content=same`, without a fork. Only contents of the file's size are read for.
  kpm_same() {
    local j c='' got=0
    for ((j = 0; j < ${#exp[@]}; j += 3)); do
      [[ ${exp[j]} == "$1" && ${#exp[j+2]} == "$3" ]] || continue
      if ((!got)); then
        IFS= read -r -d '' c < "$2" && return 1 # a NUL byte: no expected content has one
        got=1
      fi
      if [[ $c == "${exp[j+2]}" ]]; then printf 'sha256=%s\ncontent=same\n' "${exp[j+1]}"; return 0; fi
    done
    return 1
  }

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
    if [[ -n ${st_mode[$p]+x} ]]; then
      size=${st_size[$p]}
      printf 'mode=%s\nowner=%s\ngroup=%s\nsize=%s\n' "${st_mode[$p]}" "${st_owner[$p]}" "${st_group[$p]}" "$size"
    fi
    [[ -f $p ]] || continue
    if [[ ! -r $p ]]; then printf 'readable=0\n'; continue; fi
    printf 'readable=1\n'
    [[ -n $size ]] && kpm_same "$f" "$p" "$size" && continue
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
