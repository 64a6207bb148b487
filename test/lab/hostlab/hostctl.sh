#!/usr/bin/env bash
# Operate on single hosts of the running lab in $LAB_STATE.
#   hostctl.sh list                 name, address, machine-side PID of its PID 1, state
#   hostctl.sh restart NAME...      "reboot": every process of the host dies and /run, /dev
#                                   and the kmod shim's loaded modules are gone; the host
#                                   starts again on the same disk (upper layer); with the
#                                   kmod shim, boot loads /etc/modules-load.d/*.conf
#   hostctl.sh reset NAME...        a fresh host: stop, wipe its disk, start (same name,
#                                   address and SSH host key, so known_hosts stays valid)
#   hostctl.sh stop NAME...         power a host off (connections are refused; disk kept)
#   hostctl.sh start NAME...        power it on again
#   hostctl.sh exec NAME CMD...     run CMD inside the host's namespaces, without SSH
#   hostctl.sh ssh NAME [CMD...]    ssh into the host with the lab key and known_hosts
set -euo pipefail
. "$(dirname "$0")/lib.sh"
[ -f "$LAB_STATE/lab.env" ] || die "no lab is up in $LAB_STATE"
# shellcheck disable=SC1091
. "$LAB_STATE/lab.env"
cmd=${1:-}; shift || true

case "$cmd" in
  list)
    for i in $(seq 1 "$LAB_HOSTS"); do
      d=$LAB_STATE/hosts/$(host_name "$i"); p=$(live_pid "$d/init.pid")
      printf '%s %s %s %s\n' "$(host_name "$i")" "$(host_addr "$i")" "${p:--}" "$([ -n "$p" ] && echo running || echo stopped)"
    done
    ;;
  restart|reset|stop|start)
    [ $# -ge 1 ] || die "usage: hostctl.sh $cmd NAME..."
    # One change at a time per lab: each rewrites the inventories.
    exec 8>"$LAB_STATE/hostctl.lock"; flock 8
    for name in "$@"; do
      i=$(host_index "$name"); [ "$i" -ge 1 ] && [ "$i" -le "$LAB_HOSTS" ] || die "no host $name"
    done
    for name in "$@"; do
      i=$(host_index "$name"); d=$LAB_STATE/hosts/$name
      if [ "$cmd" = start ]; then
        [ -z "$(live_pid "$d/init.pid")" ] || die "$name is already running"
        start_host "$i"; continue
      fi
      stop_host "$i"
      [ "$cmd" = stop ] && continue
      if [ "$cmd" = reset ]; then
        rm -rf --one-file-system "$d/upper" "$d/work"
        prepare_host "$i"
      fi
      start_host "$i"
    done
    if [ "$cmd" != stop ]; then
      for name in "$@"; do wait_ssh "$(host_index "$name")" 30 || die "$name did not come back"; done
    fi
    write_inventories "$LAB_HOSTS"
    log "$cmd done: $*"
    ;;
  exec)
    [ $# -ge 2 ] || die "usage: hostctl.sh exec NAME CMD..."
    p=$(live_pid "$LAB_STATE/hosts/$1/init.pid"); [ -n "$p" ] || die "$1 is not running"
    shift
    exec nsenter --target "$p" --mount --uts --ipc --net --pid --root --wd -- "$@"
    ;;
  ssh)
    [ $# -ge 1 ] || die "usage: hostctl.sh ssh NAME [CMD...]"
    exec ssh -F "$LAB_SSH_CONFIG" "$@"
    ;;
  *) sed -n '2,14p' "$0" >&2; exit 2;;
esac
