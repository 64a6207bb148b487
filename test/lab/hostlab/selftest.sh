#!/usr/bin/env bash
# End-to-end check of the lab itself (isolation, apt, sudo, kmod shim, restart/reset, stop,
# teardown), in shell, with no Node needed:
#   selftest.sh     -> ends with "selftest: N passed, N failed"; exits 1 on any failure
# Brings up its own 3-host lab in $LAB_STATE (refuses if one is up there) and always tears
# it down.  test/lab/harness.test.ts checks the same through the TypeScript API.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
pass=0 fail=0
ok()   { pass=$((pass + 1)); echo "ok   - $*"; }
bad()  { fail=$((fail + 1)); echo "FAIL - $*"; }
check() { local d=$1; shift; if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi; }
checknot() { local d=$1; shift; if "$@" >/dev/null 2>&1; then bad "$d"; else ok "$d"; fi; }
on() { local h=$1; shift; ssh -F "$LAB_SSH_CONFIG" -o BatchMode=yes "$h" "$@"; }
as() { local u=$1 h=$2; shift 2; ssh -F "$LAB_SSH_CONFIG" -o BatchMode=yes -l "$u" "$h" "$@"; }

[ -z "$(ls -A "$LAB_STATE/hosts" 2>/dev/null)" ] || die "a lab is already up in $LAB_STATE"
trap '"$LAB_DIR/down.sh" >/dev/null 2>&1' EXIT
"$LAB_DIR/up.sh" 3 --kmod-shim >/dev/null || die "up.sh failed"
mapfile -t pids < <(awk '/pid:/ {print $2}' "$LAB_INVENTORY")

# identity and namespaces
check "node001 has its own hostname"            test "$(on node001 hostname)" = node001
check "node002 has its own hostname"            test "$(on node002 hostname)" = node002
check "node001 sees only its own processes"     test "$(on node001 'ps -e --no-headers | wc -l')" -lt 10
check "node001 root is its own overlay"         on node001 'grep -q "^kpm-lab-node001 / overlay" /proc/mounts'
if [ "$LAB_NET" = netns ]; then
  check "node001 has its own address on eth0"   on node001 "ip -br addr show eth0 | grep -q $(host_addr 1)/"
  check "node001 reaches node002 over the lab bridge" on node001 "timeout 3 bash -c ': </dev/tcp/$(host_addr 2)/22'"
  checknot "node001 has no route off the lab"   on node001 'ip route get 192.0.2.1'
fi
check "inventory.json is valid JSON with 3 hosts" node -e "const j = JSON.parse(require('fs').readFileSync('$LAB_INVENTORY_JSON', 'utf8')); if (j.hosts.length !== 3) process.exit(1)"
check "ansible-inventory.yaml lists node003"   grep -q '^    node003: {ansible_host: ' "$LAB_ANSIBLE_INVENTORY"
checknot "global sysctls are read-only in a host"  on node001 'echo 60 >/proc/sys/vm/swappiness'
if [ "$LAB_NET" = netns ]; then
  check "per-netns sysctls are writable in a host" on node001 'sysctl -qw net.ipv4.ip_forward=1 && test "$(cat /proc/sys/net/ipv4/ip_forward)" = 1'
  check "...and do not leak to the machine"     test "$(cat /proc/sys/net/ipv4/ip_forward)" = "$(sysctl -n net.ipv4.ip_forward)"
fi
check "host key is pinned in known_hosts"       ssh -F "$LAB_SSH_CONFIG" -o BatchMode=yes -o StrictHostKeyChecking=yes node003 true
check "/root stays 0700"                        test "$(on node001 'stat -c %a /root')" = 700

# sudo
check "kpm logs in with the lab key"            test "$(as kpm node001 id -un)" = kpm
check "kpm: sudo -S with the password works"    test "$(as kpm node001 "echo $LAB_SUDO_PASSWORD | sudo -S -p '' id -u")" = 0
checknot "kpm: sudo without a password fails"   as kpm node001 'sudo -n true'
checknot "kpm: sudo with a wrong password fails" as kpm node001 'echo wrong | sudo -S -p "" true'
check "kpmnopw: sudo -n works"                  test "$(as kpmnopw node001 'sudo -n id -u')" = 0
checknot "kpm cannot write /etc"                as kpm node001 'touch /etc/kpm-test'

# filesystem isolation
on node001 'echo "written on $(hostname)" >/etc/isolation-test'
check "node001 wrote /etc/isolation-test"       on node001 'test -f /etc/isolation-test'
checknot "node002 does not see it"              on node002 'test -e /etc/isolation-test'
checknot "the machine does not see it"          test -e /etc/isolation-test

# packages
checknot "ipvsadm is not preinstalled"          on node001 'command -v ipvsadm'
check "sudo, iptables, nft, curl are preinstalled" on node001 'command -v sudo && command -v iptables && command -v nft && command -v curl'
check "apt-get install -y ipvsadm ipset conntrack works offline" on node001 'DEBIAN_FRONTEND=noninteractive apt-get install -y ipvsadm ipset conntrack'
check "dpkg knows ipvsadm on node001"           on node001 'dpkg -s ipvsadm | grep -q "Status: install ok installed"'
checknot "node002 still has no ipvsadm"         on node002 'command -v ipvsadm || dpkg -s ipvsadm'
if [ "$LAB_NET" = netns ]; then
  on node001 'ipset create selftest hash:ip' >/dev/null 2>&1
  check "ipset state is per host (node001)"     on node001 'ipset list -n | grep -qx selftest'
  checknot "ipset state is per host (node002)"  on node002 'ipset list -n 2>/dev/null | grep -qx selftest'
fi
checknot "the real ipvsadm cannot reach IPVS (kernel has none)" on node001 '/usr/sbin/ipvsadm.real -Ln'
check "ipvsadm is the labelled fixture wrapper"  on node001 'ipvsadm --version | grep -q "test fixture; not ipvsadm"'
check "ipvsadm -Ln lists the (empty) fixture table" on node001 'ipvsadm -Ln | grep -q "^IP Virtual Server version 1.2.1"'

# kmod shim
check "modprobe is the labelled test fixture"   on node001 'modprobe --version | grep -q "test fixture"'
check "modprobe ip_vs_rr succeeds"              on node001 'modprobe ip_vs_rr'
check "lsmod lists ip_vs_rr and ip_vs"          on node001 'lsmod | grep -q "^ip_vs_rr " && lsmod | grep -q "^ip_vs .*ip_vs_rr"'
checknot "lsmod on node002 does not"            on node002 'lsmod | grep -q ip_vs'
checknot "modprobe nf_conntrack_ipv4 fails (gone since 4.19)" on node001 'modprobe nf_conntrack_ipv4'
check "modprobe nf_conntrack succeeds (built in)" on node001 'modprobe nf_conntrack'
checknot "/proc/modules is not faked"           on node001 'test -e /proc/modules'
check "loads are logged on disk"                on node001 'grep -q "modprobe ip_vs_rr" /var/log/kpm-lab-kmod.log'
checknot "lsmod is not logged on disk"          on node001 'grep -q "lsmod" /var/log/kpm-lab-kmod.log'

# restart ("reboot") and reset
on node001 'mkdir -p /etc/modules-load.d && echo ip_vs_sh >/etc/modules-load.d/ipvs.conf'
"$LAB_DIR/hostctl.sh" restart node001 >/dev/null 2>&1
check "restart keeps the disk"                  on node001 'test -f /etc/isolation-test'
checknot "restart unloads modules not in modules-load.d" on node001 'lsmod | grep -q "^ip_vs_rr "'
check "restart loads modules-load.d entries"    on node001 'lsmod | grep -q "^ip_vs_sh "'
"$LAB_DIR/hostctl.sh" reset node001 >/dev/null 2>&1
checknot "reset wipes the disk"                 on node001 'test -e /etc/isolation-test || command -v ipvsadm'
check "reset host keeps its SSH host key"       ssh -F "$LAB_SSH_CONFIG" -o BatchMode=yes -o StrictHostKeyChecking=yes node001 true

"$LAB_DIR/hostctl.sh" stop node003 >/dev/null 2>&1
checknot "a stopped host refuses SSH"           ssh -F "$LAB_SSH_CONFIG" -o BatchMode=yes -o ConnectTimeout=5 node003 true
"$LAB_DIR/hostctl.sh" start node003 >/dev/null 2>&1
check "a started host answers again"            on node003 true

# teardown
"$LAB_DIR/down.sh" >/dev/null 2>&1; trap - EXIT
checknot "down.sh: no host PID left"            bash -c "for p in ${pids[*]}; do test -d /proc/\$p && exit 0; done; exit 1"
checknot "down.sh: no lab netns left"           bash -c "ip netns list | grep -q '^$LAB_NETNS_PREFIX'"
checknot "down.sh: no bridge left"              ip link show "$LAB_BRIDGE"
checknot "down.sh: no lab mount left"           grep -q "$LAB_STATE" /proc/self/mountinfo
checknot "down.sh: state dir removed"           test -e "$LAB_STATE"

echo "selftest: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
