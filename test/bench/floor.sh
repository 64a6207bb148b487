# shellcheck shell=bash
# The benchmark's floor: the node phase's work as one plain shell script, run by `ssh HOST bash -s`, one
# session per host. It does what the tool does to a Debian node (the three packages, the two module files
# with the same content, mode and owner, the modules loaded) and is idempotent, but reads nothing it does
# not need and reports nothing but a count: no tool can do the same job over SSH for less.
#
# node-bench.ts puts these assignments in front of this text:
#   FLOOR_PACKAGES  space separated package names
#   FLOOR_MODULES   space separated module names, in load order
#   FLOOR_SCRIPT    the content of /etc/sysconfig/modules/ipvs.modules (0755)
#   FLOOR_CONF      the content of /etc/modules-load.d/ipvs.conf (0644)
# Output: one line `changed=K failed=F` (F is 0 or 1); exit 1 when something could not be put in place.

set -u
export LC_ALL=C DEBIAN_FRONTEND=noninteractive
PATH="$PATH:/usr/sbin:/sbin"
changed=0

# -- packages: one dpkg query for all of them
need=()
declare -A st=()
while read -r name _ _ status; do [[ -n $name ]] && st[$name]=$status; done \
  < <(dpkg-query -W -f='${Package} ${Status}\n' $FLOOR_PACKAGES 2>/dev/null)
for p in $FLOOR_PACKAGES; do [[ ${st[$p]-} == installed ]] || need+=("$p"); done
if ((${#need[@]})); then
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || { echo "changed=$changed failed=1"; exit 1; }
  changed=$((changed + 1))
fi

# -- files: compared, then written atomically (temporary file, mode and owner, rename) only when they differ
put() { # path mode content
  local path=$1 mode=$2 content=$3 cur='' attrs=''
  [[ -f $path ]] && { cur=$(cat -- "$path"; printf x); cur=${cur%x}; attrs=$(stat -c '%a %U %G' -- "$path"); }
  [[ $cur == "$content" && $attrs == "$mode root root" ]] && return 0
  mkdir -p -- "${path%/*}" &&
    printf '%s' "$content" >"$path.floor.$$" && chmod "$mode" "$path.floor.$$" && chown root:root "$path.floor.$$" &&
    mv -f -- "$path.floor.$$" "$path" || { echo "changed=$changed failed=1"; exit 1; }
  changed=$((changed + 1))
}
put /etc/sysconfig/modules/ipvs.modules 755 "$FLOOR_SCRIPT"
put /etc/modules-load.d/ipvs.conf 644 "$FLOOR_CONF"

# -- modules: loaded (lsmod) or built in (/sys/module), else modprobe; then the same check once more
declare -A loaded=()
present() { [[ -n ${loaded[$1]-} || -d /sys/module/$1 ]]; }
read_lsmod() { loaded=(); local m; while read -r m _; do loaded[$m]=1; done < <(lsmod 2>/dev/null); }
read_lsmod
missing=()
for m in $FLOOR_MODULES; do present "$m" || missing+=("$m"); done
if ((${#missing[@]})); then
  for m in "${missing[@]}"; do modprobe -- "$m" || { echo "changed=$changed failed=1"; exit 1; }; done
  changed=$((changed + 1))
  read_lsmod
  for m in $FLOOR_MODULES; do present "$m" || { echo "changed=$changed failed=1"; exit 1; }; done
fi
echo "changed=$changed failed=0"
