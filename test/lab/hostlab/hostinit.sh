#!/usr/bin/env bash
# PID 1 (stage 1) of a kpm lab host.  up.sh and hostctl.sh start it in fresh
# mount/uts/ipc/pid namespaces (inside the host's network namespace in netns mode):
#   hostinit.sh NAME LOWERDIRS UPPER WORK NEWROOT [sshd args...]
# Mounts the host's overlay root and its own /proc, /sys, /dev, /run, sets the hostname,
# pivots into the new root and execs tini -> sshd -D (after the kmod fixture's boot step
# when that layer is stacked).  Every mount lives only in this mount namespace, so the
# kernel removes them all when the host's PID 1 exits.
set -euo pipefail
name=$1 lower=$2 upper=$3 work=$4 root=$5
shift 5

# The PID as the machine sees it (the machine's /proc is still mounted here), so that
# down.sh and hostctl.sh can signal this PID 1 directly; field 22 (start time) guards
# against PID reuse.
if [ -n "${LAB_PIDFILE:-}" ]; then
  read -r outer_pid _ </proc/self/stat
  read -r -a st </proc/self/stat
  echo "$outer_pid ${st[21]}" >"$LAB_PIDFILE"
fi
mount --make-rprivate /
mount -t overlay "kpm-lab-$name" -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
# The kernel is the machine's: keep its global knobs read-only, as container runtimes do.
# net.* stays writable with a network namespace of its own (those settings are per netns).
mount --bind "$root/proc/sys" "$root/proc/sys"
[ "${LAB_NET:-netns}" = netns ] && mount --bind "$root/proc/sys/net" "$root/proc/sys/net"
mount -o remount,bind,ro "$root/proc/sys"
if [ -e "$root/proc/sysrq-trigger" ]; then
  mount --bind "$root/proc/sysrq-trigger" "$root/proc/sysrq-trigger"
  mount -o remount,bind,ro "$root/proc/sysrq-trigger"
fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=755,size=16m,nosuid tmpfs "$root/dev"
# null, zero, full, random, urandom, tty, pts/, shm/ and the usual links, from a template
# made once per lab (start_host): one copy instead of a dozen mknod/ln processes per boot.
cp -a "$LAB_DEVTMPL/." "$root/dev/"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777,size=64m,nosuid,nodev tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=755,size=64m,nosuid,nodev tmpfs "$root/run"
mkdir -m 755 "$root/run/sshd" "$root/run/lock"
hostname "$name"

cd "$root"
pivot_root . mnt
# With the kmod fixture stacked, "boot" loads what modules-load.d lists, as a real boot does.
exec chroot . /bin/sh -c 'umount -l /mnt || exit 1
  if [ -x /usr/lib/kpm-lab-kmod/boot ]; then /usr/lib/kpm-lab-kmod/boot || true; fi
  exec /usr/bin/tini -- /usr/sbin/sshd -D -e "$@"' hostinit "$@"
