import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { leftoversOf } from '../../tasks/cluster/node-status.ts';
import { cleanupOldMode, type CleanupOutcome } from '../../tasks/cleanup/old-mode.ts';
import { itemLabel, type CleanupCluster, type CleanupItem } from '../../tasks/cleanup/old-mode-plan.ts';
import { nodeReadScript, parseDataplaneSummary } from '../../tasks/dataplane/node-read.ts';
import { loadInventory } from '../../tasks/inventory/load.ts';
import type { Host, ProxyMode } from '../../tasks/inventory/types.ts';
import { SessionPool } from '../../tasks/remote/sessions.ts';
import { kubeProxyIptablesSave, kubeProxyIpvsModeIptablesSave, type GenService } from '../dataplane-dumps.ts';
import { mustExec, writeLabInventory } from './helpers.ts';
import { labSupported, startLab, type Lab } from './lab.ts';

// `--cleanup-old-mode` through the real SSH path on lab hosts whose netfilter is real (iptables-restore,
// nft, ipset in each host's network namespace). Each host holds one old mode's objects as kube-proxy
// leaves them, next to things that are not kube-proxy's: a user's DNAT rule and chain, kubelet's chains,
// a user's nft table and ipset, a kube-vip VIP and an FWM service in IPVS, a load-balancer IP under
// ipvs.excludeCIDRs. The kernel has no IPVS: virtual servers live in the lab's IPVS fixture table, which
// the kmod-shim layer's labelled ipvsadm wrapper serves, and kube-ipvs0 is an ifb link (no dummy driver).
// The whole dataplane is compared before and after: exactly the old mode's objects go.

const support = labSupported();
let lab: Lab;
let sessions: SessionPool;
let hosts: Map<string, Host>;
let n1: string;
let n2: string;
let n3: string;
let vip: string;
let n2Address: string;

const CART: GenService = {
  namespace: 'shop',
  name: 'cart',
  clusterIP: '10.96.50.20',
  externalIPs: ['192.0.2.10'],
  loadBalancerIPs: ['203.0.113.7'],
  loadBalancerSourceRanges: ['198.51.100.0/24'],
  externalTrafficPolicy: 'Local',
  ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30480, endpoints: [{ ip: '10.244.1.11', port: 8080, local: true }, { ip: '10.244.2.12', port: 8080 }] }],
};
const IDLE: GenService = { namespace: 'shop', name: 'idle', clusterIP: '10.96.50.21', ports: [{ name: '', port: 9000, protocol: 'TCP', endpoints: [] }] };
const CART6: GenService = {
  namespace: 'shop',
  name: 'cart',
  clusterIP: 'fd00:10:96::14',
  loadBalancerIPs: ['2001:db8::7'],
  externalTrafficPolicy: 'Local',
  ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30480, endpoints: [{ ip: 'fd00:10:244::b', port: 8080, local: true }] }],
};

const cluster: CleanupCluster = {
  serviceIPs: new Set(['10.96.0.1', '10.96.0.9', '10.96.0.10', '10.96.50.20', '10.96.50.21', '192.0.2.10', '203.0.113.7', 'fd00:10:96::a', 'fd00:10:96::14', '2001:db8::7']),
  nodePorts: new Set([30480]),
  excludeCIDRs: ['203.0.113.0/24'],
};

// Not kube-proxy's: every host has these, and they must come through every cleanup byte for byte.
const FOREIGN = `set -e
iptables -t nat -A PREROUTING -p tcp --dport 2222 -j DNAT --to-destination 10.0.0.9:22
iptables -N MYCHAIN
iptables -A MYCHAIN -s 192.168.50.0/24 -j ACCEPT
iptables -A FORWARD -j MYCHAIN
ipset create user-blocklist hash:ip
ipset add user-blocklist 198.51.100.66
iptables -A INPUT -m set --match-set user-blocklist src -j DROP
ip6tables -A INPUT -s fd00:99::/64 -p tcp --dport 2222 -j ACCEPT
for t in mangle nat filter; do iptables -t $t -N KUBE-KUBELET-CANARY; ip6tables -t $t -N KUBE-KUBELET-CANARY; done
iptables -N KUBE-FIREWALL
iptables -A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
iptables -A INPUT -j KUBE-FIREWALL
iptables -A OUTPUT -j KUBE-FIREWALL
nft -f - <<'EOF'
table inet user_fw {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 2222 accept
	}
}
table inet kube-proxy {
	comment "a user's table that only shares the name: kube-proxy's are ip and ip6"
}
EOF
`;

function ipvsModeSets(v6: boolean): string {
  const s = (name: string) => (v6 ? name.replace(/^KUBE-/, 'KUBE-6-') : name);
  const fam = v6 ? 'inet6' : 'inet';
  return [
    `create ${s('KUBE-CLUSTER-IP')} hash:ip,port family ${fam}`,
    `create ${s('KUBE-EXTERNAL-IP')} hash:ip,port family ${fam}`,
    `create ${s('KUBE-LOAD-BALANCER')} hash:ip,port family ${fam}`,
    `create ${s('KUBE-LOAD-BALANCER-FW')} hash:ip,port family ${fam}`,
    `create ${s('KUBE-LOOP-BACK')} hash:ip,port,ip family ${fam}`,
    `create ${s('KUBE-IPVS-IPS')} hash:ip family ${fam}`,
    `create ${s('KUBE-NODE-PORT-TCP')} bitmap:port range 0-65535`,
    `create ${s('KUBE-HEALTH-CHECK-NODE-PORT')} bitmap:port range 0-65535`,
    ...(v6 ? ['add KUBE-6-CLUSTER-IP fd00:10:96::a,udp:53'] : ['add KUBE-CLUSTER-IP 10.96.0.1,tcp:443', 'add KUBE-CLUSTER-IP 10.96.50.20,tcp:80', 'add KUBE-NODE-PORT-TCP 30480']),
  ].join('\n');
}

/** The IPVS fixture table of the ipvs host: the Services' virtual servers and two that are not kube-proxy's. */
function ipvsTable(nodeAddress: string, n1Address: string): string {
  return `# kpm-lab IPVS TEST FIXTURE table -- not the kernel's IPVS state (this kernel has none).
-A -t 10.96.0.1:443 -s rr
-a -t 10.96.0.1:443 -r ${n1Address}:6443 -m -w 1
-A -t 10.96.50.20:80 -s rr
-a -t 10.96.50.20:80 -r 10.244.1.11:8080 -m -w 1
-a -t 10.96.50.20:80 -r 10.244.2.12:8080 -m -w 1
-A -t 192.0.2.10:80 -s rr
-a -t 192.0.2.10:80 -r 10.244.1.11:8080 -m -w 1
-A -t ${nodeAddress}:30480 -s rr
-a -t ${nodeAddress}:30480 -r 10.244.1.11:8080 -m -w 1
-A -t 203.0.113.7:80 -s rr
-a -t 203.0.113.7:80 -r 10.244.1.11:8080 -m -w 1
-A -u 10.96.0.10:53 -s rr
-A --sctp-service 10.96.0.9:9999 -s rr
-A -u [fd00:10:96::a]:53 -s rr
-A -t ${vip}:443 -s rr
-a -t ${vip}:443 -r ${n1Address}:6443 -m -w 1
-A -f 100 -s rr
-a -f 100 -r 10.0.0.5:0 -g -w 1
`;
}

const NFTABLES_MODE = `
table ip kube-proxy {
	comment "rules for kube-proxy"
	set cluster-ips {
		type ipv4_addr
		comment "Active ClusterIPs"
		elements = { 10.96.0.1 }
	}
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		comment "ClusterIP, ExternalIP and LoadBalancer IP traffic"
		elements = { 10.96.0.1 . tcp . 443 : goto service-2QRHZV4L-default/kubernetes/tcp/https }
	}
	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}
	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}
	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}
	chain service-2QRHZV4L-default/kubernetes/tcp/https {
		ip daddr 10.96.0.1 tcp dport 443 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
		numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-default/kubernetes/tcp/https__10.77.0.1/6443 }
	}
	chain endpoint-5OJB2KTY-default/kubernetes/tcp/https__10.77.0.1/6443 {
		ip saddr 10.77.0.1 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.77.0.1:6443
	}
}
table ip6 kube-proxy {
	comment "rules for kube-proxy"
	chain services {
	}
	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}
}
`;

/** `cmd` with `text` on its stdin; `then` runs after it, when it succeeded. */
const heredoc = (cmd: string, text: string, then = '') => `${cmd} <<'KPM_EOF'${then ? ` && ${then}` : ''}\n${text}\nKPM_EOF`;

/** Everything netfilter, IPVS and the links hold, emptied, then one old mode's objects and the foreign ones. */
async function setUp(host: string, mode: ProxyMode): Promise<void> {
  const n1Address = lab.hosts[0]!.address;
  const reset =
    'nft flush ruleset; for s in $(ipset list -n); do ipset destroy "$s"; done; ip link del kube-ipvs0 2>/dev/null; ' +
    `ip addr del ${vip}/32 dev eth0 2>/dev/null; mkdir -p /run/kpm-lab-ipvs; echo '# kpm-lab IPVS TEST FIXTURE table' >/run/kpm-lab-ipvs/table; true`;
  await mustExec(lab, host, reset);
  if (mode === 'iptables') {
    await mustExec(lab, host, heredoc('iptables-restore', kubeProxyIptablesSave([CART, IDLE], { style: '1.28', family: 'ipv4', clusterCIDR: '10.244.0.0/16' })));
    await mustExec(lab, host, heredoc('ip6tables-restore', kubeProxyIptablesSave([CART6], { style: '1.20', family: 'ipv6', clusterCIDR: 'fd00:10:244::/56' })));
    // the canary kube-proxy's iptables Monitor keeps in three tables
    await mustExec(lab, host, 'for t in mangle nat filter; do iptables -t $t -N KUBE-PROXY-CANARY; done');
  } else if (mode === 'ipvs') {
    await mustExec(lab, host, heredoc('ipset restore', `${ipvsModeSets(false)}\n${ipvsModeSets(true)}`));
    await mustExec(lab, host, heredoc('iptables-restore', kubeProxyIpvsModeIptablesSave('ipv4')));
    await mustExec(lab, host, heredoc('ip6tables-restore', kubeProxyIpvsModeIptablesSave('ipv6')));
    await mustExec(lab, host, heredoc('cat >/run/kpm-lab-ipvs/table', ipvsTable(n2Address, n1Address)));
    // kube-proxy binds every Service address to kube-ipvs0 (dummy; ifb where the kernel has no dummy driver)
    const bind = ['10.96.0.1', '10.96.50.20', '192.0.2.10', '203.0.113.7', '10.96.0.10', '10.96.0.9'].map((ip) => `ip addr add ${ip}/32 dev kube-ipvs0`);
    await mustExec(lab, host, ['ip link add kube-ipvs0 type dummy 2>/dev/null || ip link add kube-ipvs0 type ifb', ...bind, 'ip -6 addr add fd00:10:96::a/128 dev kube-ipvs0 nodad'].join(' && '));
    // kube-vip holds its VIP on the node's own link
    await mustExec(lab, host, `ip addr add ${vip}/32 dev eth0`);
  } else {
    await mustExec(lab, host, heredoc('nft -f -', NFTABLES_MODE));
  }
  await mustExec(lab, host, FOREIGN);
}

interface NodeState {
  iptables: string[];
  ip6tables: string[];
  /** `nft list ruleset`, table by table, without iptables-nft's tables (iptables-save shows those, without packet counters) */
  nft: Record<string, string>;
  ipsets: string[];
  links: string[];
  ipvs: string[];
}

const saveLines = (text: string) => text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));

/**
 * iptables-save as rules and chains: iptables-nft prints built-in chains' packet counters even without
 * -c, and the SSH traffic of the test itself moves them.
 */
const ruleset = (text: string) => saveLines(text).map((l) => l.replace(/^(:\S+ \S+) \[\d+:\d+\]$/, '$1 [0:0]'));

/**
 * The host's disk, less the kmod shim's log of `modprobe -- ip_vs`: the real ipvsadm inside the lab's
 * IPVS fixture asks for ip_vs on every call because the lab's kernel has no IPVS (on a node where
 * ip_vs is loaded it would not), and the shim logs that as a load.
 */
async function disk(host: string): Promise<string> {
  return (await lab.manifest(host))
    .split('\n')
    .filter((l) => !l.startsWith('var/log/kpm-lab-kmod.log\t') && !/ pid=\d+ modprobe -- ip_vs$/.test(l))
    .join('\n');
}

const IPTABLES_NFT_TABLE = /^(ip|ip6) (filter|nat|mangle|raw|security)$/;

function nftTables(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  let name: string | undefined;
  let block: string[] = [];
  for (const line of stdout.split('\n')) {
    const open = /^table (\S+ \S+) \{$/.exec(line);
    if (open) [name, block] = [open[1]!, []];
    if (name !== undefined) block.push(line);
    if (line === '}' && name !== undefined) {
      if (!IPTABLES_NFT_TABLE.test(name)) out[name] = block.join('\n');
      name = undefined;
    }
  }
  return out;
}

async function state(host: string): Promise<NodeState> {
  const nft = await lab.exec(host, 'nft list ruleset');
  if (nft.code !== 0) throw new Error(`nft list ruleset on ${host}: ${nft.stderr}`);
  return {
    iptables: ruleset(await mustExec(lab, host, 'iptables-save')),
    ip6tables: ruleset(await mustExec(lab, host, 'ip6tables-save')),
    nft: nftTables(nft.stdout),
    ipsets: saveLines(await mustExec(lab, host, 'ipset list -n')),
    links: saveLines(await mustExec(lab, host, 'ip -br link')),
    ipvs: saveLines(await mustExec(lab, host, 'ipvsadm -Sn')),
  };
}

/** An iptables-save (lines) without the items' chains and rules of one family; nothing else touched. */
function withoutItems(lines: string[], items: CleanupItem[], family: 'ipv4' | 'ipv6'): string[] {
  const chains = new Set(items.flatMap((i) => (i.kind === 'chain' && i.family === family ? [`${i.table} ${i.chain}`] : [])));
  const rules = items.flatMap((i) => (i.kind === 'rule' && i.family === family ? [`${i.table} ${i.rule}`] : []));
  let table = '';
  return lines.filter((l) => {
    if (l.startsWith('*')) table = l.slice(1);
    const decl = /^:(\S+) /.exec(l);
    const rule = /^-A (\S+) /.exec(l);
    const chain = decl?.[1] ?? rule?.[1];
    if (chain !== undefined && chains.has(`${table} ${chain}`)) return false;
    const k = rules.indexOf(`${table} ${l}`);
    if (k >= 0) {
      rules.splice(k, 1);
      return false;
    }
    return true;
  });
}

/** What the whole node must look like after the items went: `before` minus exactly them. */
function expectedAfter(before: NodeState, items: CleanupItem[]): NodeState {
  const vs = new Set(items.flatMap((i) => (i.kind === 'virtual-server' ? [`${{ TCP: '-t', UDP: '-u', SCTP: '--sctp-service' }[i.protocol]} ${i.address}`] : [])));
  const names = (kind: 'ipset' | 'link') => new Set(items.flatMap((i) => (i.kind === kind ? [i.name] : [])));
  const tables = new Set(items.flatMap((i) => (i.kind === 'nft-table' ? [`${i.family} ${i.name}`] : [])));
  return {
    iptables: withoutItems(before.iptables, items, 'ipv4'),
    ip6tables: withoutItems(before.ip6tables, items, 'ipv6'),
    nft: Object.fromEntries(Object.entries(before.nft).filter(([name]) => !tables.has(name))),
    ipsets: before.ipsets.filter((s) => !names('ipset').has(s)),
    links: before.links.filter((l) => !names('link').has(l.split(/\s+/)[0]!)),
    ipvs: before.ipvs.filter((l) => !vs.has(l.split(' ').slice(1, 3).join(' '))),
  };
}

async function cleanup(host: string, from: ProxyMode, to: ProxyMode, dryRun = false): Promise<CleanupOutcome> {
  const session = await sessions.get(hosts.get(host)!);
  return cleanupOldMode(session, { from, to, cluster, dryRun });
}

/** `status`'s leftover judgement on the node as it is now. */
async function leftovers(host: string, mode: ProxyMode): Promise<string[]> {
  const session = await sessions.get(hosts.get(host)!);
  const summary = parseDataplaneSummary((await session.run(nodeReadScript('summary'))).stdout);
  return leftoversOf(mode, summary, cluster);
}

/** What FOREIGN put on every host, as the node prints it: all of it must outlive any cleanup. */
function expectForeignIntact(s: NodeState): void {
  expect(s.iptables).toEqual(
    expect.arrayContaining([
      '-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.0.9:22',
      ':MYCHAIN - [0:0]',
      '-A MYCHAIN -s 192.168.50.0/24 -j ACCEPT',
      '-A FORWARD -j MYCHAIN',
      '-A INPUT -m set --match-set user-blocklist src -j DROP',
      ':KUBE-FIREWALL - [0:0]',
      '-A INPUT -j KUBE-FIREWALL',
      '-A OUTPUT -j KUBE-FIREWALL',
      ':KUBE-KUBELET-CANARY - [0:0]',
    ]),
  );
  expect(s.ip6tables).toEqual(expect.arrayContaining(['-A INPUT -s fd00:99::/64 -p tcp -m tcp --dport 2222 -j ACCEPT', ':KUBE-KUBELET-CANARY - [0:0]']));
  expect(s.ipsets).toContain('user-blocklist');
  expect(Object.keys(s.nft)).toEqual(expect.arrayContaining(['inet user_fw', 'inet kube-proxy']));
}

/** The whole round on one host: dry run, cleanup, comparison, second cleanup, status. */
async function cleanupRound(host: string, from: ProxyMode, to: ProxyMode): Promise<{ before: NodeState; after: NodeState; dry: CleanupOutcome; real: CleanupOutcome }> {
  expect(await leftovers(host, to), 'status sees the old mode before the cleanup').not.toEqual([]);
  const before = await state(host);
  expectForeignIntact(before);
  const files = await disk(host);

  const dry = await cleanup(host, from, to, true);
  expect(dry.status).toBe('planned');
  expect(await state(host), 'a dry run changes nothing').toEqual(before);
  expect(await disk(host), 'a dry run writes nothing to disk').toEqual(files);
  const listed = dry.plan.items.map(itemLabel);
  expect(dry.lines.slice(1, 1 + listed.length)).toEqual(listed.map((l) => `  ${l}`));

  const real = await cleanup(host, from, to);
  expect(real.result, real.lines.join('\n')).toMatchObject({ failed: [], skipped: [], remaining: [], problems: [] });
  expect(real.status).toBe('cleaned');
  expect(real.result!.removed, 'the run removes exactly what the dry run listed').toEqual(listed);
  const after = await state(host);
  expect(after).toEqual(expectedAfter(before, dry.plan.items));
  expectForeignIntact(after);

  const again = await cleanup(host, from, to);
  expect(again.status).toBe('nothing to clean');
  expect(again.plan.items).toEqual([]);
  expect(await leftovers(host, to), "status's leftover judgement after the cleanup").toEqual([]);
  return { before, after, dry, real };
}

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'u' });
  [n1, n2, n3] = lab.hosts.map((h) => h.name) as [string, string, string];
  n2Address = lab.hosts[1]!.address;
  vip = lab.hosts[0]!.address.replace(/\.\d+$/, '.200');
  await Promise.all(lab.hosts.map((h) => mustExec(lab, h.name, 'DEBIAN_FRONTEND=noninteractive apt-get install -y ipvsadm ipset >/dev/null && modprobe ip_vs')));
  const inv = await loadInventory(writeLabInventory(lab));
  hosts = new Map(inv.hosts.map((h) => [h.name, h]));
  sessions = new SessionPool({ acceptNewHostKeys: false });
  await setUp(n1, 'iptables');
  await setUp(n2, 'ipvs');
  await setUp(n3, 'nftables');
});
afterAll(async () => {
  await sessions?.closeAll();
  await lab?.down();
});

describe.skipIf(!support.ok)('--cleanup-old-mode on lab hosts, over SSH', () => {
  test('from iptables to ipvs: the Service chains, iptables-only chains and the jumps into them go (IPv4 and IPv6); foreign and shared chains stay byte for byte', async () => {
    const { before, after, dry } = await cleanupRound(n1, 'iptables', 'ipvs');
    const listed = dry.plan.items.map(itemLabel);
    expect(listed).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^iptables nat chain: KUBE-SVC-/),
        expect.stringMatching(/^iptables nat chain: KUBE-SEP-/),
        expect.stringMatching(/^iptables nat chain: KUBE-EXT-/),
        expect.stringMatching(/^iptables nat chain: KUBE-SVL-/),
        expect.stringMatching(/^iptables nat chain: KUBE-FW-/),
        expect.stringMatching(/^ip6tables nat chain: KUBE-XLB-/),
        expect.stringMatching(/^ip6tables nat chain: KUBE-FW-/),
        'iptables nat chain: KUBE-NODEPORTS',
        'iptables filter chain: KUBE-SERVICES',
        'iptables filter chain: KUBE-EXTERNAL-SERVICES',
        'iptables mangle chain: KUBE-PROXY-CANARY',
        expect.stringMatching(/^iptables nat rule: -A KUBE-SERVICES -d 10\.96\.50\.20\/32 .* -j KUBE-SVC-/),
        expect.stringMatching(/^iptables filter rule: -A OUTPUT .* -j KUBE-SERVICES$/),
      ]),
    );
    expect(listed.join('\n')).not.toMatch(/MYCHAIN|2222|KUBE-FIREWALL|KUBE-MARK-DROP|KUBE-KUBELET-CANARY|KUBE-POSTROUTING|KUBE-MARK-MASQ|nat chain: KUBE-SERVICES|KUBE-PROXY-FIREWALL/);
    // independently of the plan: nothing of iptables mode's own is left, everyone else's is
    // (a shared chain's rule may still name a removed chain in its comment: KUBE-PROXY-FIREWALL's DROPs do)
    const gone = /^:KUBE-(SVC|SEP|EXT|SVL|FW|XLB)-|-[jg] KUBE-(SVC|SEP|EXT|SVL|FW|XLB)-|KUBE-NODEPORTS|KUBE-EXTERNAL-SERVICES|KUBE-PROXY-CANARY/m;
    expect(before.iptables.join('\n')).toMatch(gone);
    for (const lines of [after.iptables, after.ip6tables]) expect(lines.join('\n')).not.toMatch(gone);
    const kept = ['-A PREROUTING -p tcp -m tcp --dport 2222 -j DNAT --to-destination 10.0.0.9:22', ':MYCHAIN - [0:0]', '-A FORWARD -j MYCHAIN', '-A INPUT -j KUBE-FIREWALL', ':KUBE-MARK-MASQ - [0:0]', '-A INPUT -m set --match-set user-blocklist src -j DROP'];
    for (const l of kept) expect(after.iptables).toContain(l);
    expect(after.ip6tables).toEqual(expect.arrayContaining([':KUBE-MARK-DROP - [0:0]', ':KUBE-KUBELET-CANARY - [0:0]', '-A INPUT -s fd00:99::/64 -p tcp -m tcp --dport 2222 -j ACCEPT']));
    expect(after.nft).toEqual(before.nft);
    expect(after.ipsets).toEqual(['user-blocklist']);
  });

  test('from ipvs to iptables: the Services\' virtual servers, ipvs-only chains, their --match-set rules, KUBE-* ipsets and kube-ipvs0 go; the VIP, FWM and excluded virtual servers stay', async () => {
    const { before, after, dry } = await cleanupRound(n2, 'ipvs', 'iptables');
    const listed = dry.plan.items.map(itemLabel);
    expect(listed.filter((l) => l.startsWith('IPVS'))).toEqual([
      'IPVS virtual server: TCP 10.96.0.1:443',
      'IPVS virtual server: TCP 10.96.50.20:80',
      'IPVS virtual server: TCP 192.0.2.10:80',
      `IPVS virtual server: TCP ${n2Address}:30480`,
      'IPVS virtual server: UDP 10.96.0.10:53',
      'IPVS virtual server: SCTP 10.96.0.9:9999',
      'IPVS virtual server: UDP [fd00:10:96::a]:53',
    ]);
    expect(dry.plan.kept.map((k) => k.label)).toEqual(['IPVS virtual server: TCP 203.0.113.7:80', `IPVS virtual server: TCP ${vip}:443`, 'IPVS virtual server: FWM 100']);
    expect(after.ipvs).toEqual([
      '-A -t 203.0.113.7:80 -s rr',
      '-a -t 203.0.113.7:80 -r 10.244.1.11:8080 -m -w 1',
      `-A -t ${vip}:443 -s rr`,
      `-a -t ${vip}:443 -r ${lab.hosts[0]!.address}:6443 -m -w 1`,
      '-A -f 100 -s rr',
      '-a -f 100 -r 10.0.0.5:0 -g -w 1',
    ]);
    expect(before.links.some((l) => l.startsWith('kube-ipvs0 '))).toBe(true);
    expect(after.links.some((l) => l.startsWith('kube-ipvs0 '))).toBe(false);
    expect(before.ipsets.length).toBeGreaterThan(10);
    expect(after.ipsets).toEqual(['user-blocklist']);
    for (const lines of [after.iptables, after.ip6tables]) {
      const text = lines.join('\n');
      expect(text).not.toMatch(/--match-set KUBE-|KUBE-NODE-PORT|KUBE-LOAD-BALANCER|KUBE-IPVS-|KUBE-SOURCE-RANGES-FIREWALL/);
      // the chains iptables mode shares with ipvs mode stay, with their rules that use no ipset
      expect(text).toMatch(/^-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully$/m);
      expect(text).toMatch(/^-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD$/m);
      expect(text).toMatch(/^:KUBE-PROXY-FIREWALL - /m);
    }
    expect(after.iptables).toContain('-A INPUT -m set --match-set user-blocklist src -j DROP');
    expect(after.nft).toEqual(before.nft);
  });

  test('from nftables to iptables: the ip and ip6 kube-proxy tables go, the inet one and the user\'s table stay', async () => {
    const { before, after, dry } = await cleanupRound(n3, 'nftables', 'iptables');
    expect(dry.plan.items.map(itemLabel)).toEqual(['nftables table: ip kube-proxy', 'nftables table: ip6 kube-proxy']);
    expect(Object.keys(before.nft).sort()).toEqual(['inet kube-proxy', 'inet user_fw', 'ip kube-proxy', 'ip6 kube-proxy']);
    expect(Object.keys(after.nft).sort()).toEqual(['inet kube-proxy', 'inet user_fw']);
    expect(after.iptables).toEqual(before.iptables);
  });

  test('a table rewritten between the read and the write is read again and the change left alone; a restore that keeps failing is reported, the table untouched', async () => {
    const wrapper = (body: string) =>
      heredoc(
        'cat >/usr/local/sbin/iptables-restore',
        `#!/bin/bash
# TEST DOUBLE (cleanup-old-mode lab test), not iptables-restore: ${body.split('\n')[0]}
tx=$(cat)
${body.split('\n').slice(1).join('\n')}
printf '%s\\n' "$tx" | /usr/sbin/iptables-restore "$@"`,
        'chmod 755 /usr/local/sbin/iptables-restore',
      );
    try {
      // Another writer (a kube-proxy still syncing) changes nat once, right before the cleanup's
      // transaction: it drops a rule the plan removes and adds a new way into a chain the plan removes.
      await setUp(n1, 'iptables');
      const svc = (await mustExec(lab, n1, 'iptables-save -t nat')).match(/-j (KUBE-SVC-\w+)$/m)![1]!;
      await mustExec(
        lab,
        n1,
        wrapper(`kube-proxy rewrites nat once, between the cleanup's read and its write
if [[ $tx == '*nat'* ]] && [ ! -e /run/kpm-test-raced ]; then
  touch /run/kpm-test-raced
  iptables -t nat -D KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
  iptables -t nat -I KUBE-SERVICES 1 -d 10.96.50.99/32 -p tcp -m comment --comment "shop/cart:http external IP" -m tcp --dport 8080 -j ${svc}
fi`),
      );
      const raced = await cleanup(n1, 'iptables', 'ipvs');
      const r = raced.result!;
      expect(raced.status).toBe('failed');
      expect(r.failed).toEqual([]);
      expect(r.skipped).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^iptables nat rule: -A KUBE-SERVICES .*-j KUBE-NODEPORTS: not on the node any more as planned$/),
          `iptables nat chain: ${svc}: a rule the plan does not name leads into it now`,
          expect.stringMatching(new RegExp(`^iptables nat rule: -A KUBE-SERVICES -d 10\\.96\\.50\\.20/32 .*-j ${svc}: leads into ${svc}, which stays`)),
        ]),
      );
      // the chain stays whole, with the endpoint chains it leads to; the new rule is untouched
      const nat = await mustExec(lab, n1, 'iptables-save -t nat');
      expect(nat).toContain(`-A KUBE-SERVICES -d 10.96.50.99/32 -p tcp -m comment --comment "shop/cart:http external IP" -m tcp --dport 8080 -j ${svc}`);
      expect(nat).toMatch(new RegExp(`^-A ${svc} .*-j KUBE-SEP-`, 'm'));
      expect(nat).not.toMatch(/KUBE-EXT-|KUBE-FW-|:KUBE-NODEPORTS /);
      expect(r.remaining).toEqual(expect.arrayContaining([`iptables nat chain: ${svc}`, expect.stringMatching(/^iptables nat chain: KUBE-SEP-/)]));
      expect(r.removed).toContain('iptables filter chain: KUBE-SERVICES');

      // A restore that fails every time: reported for each object of the table, which stays as it was.
      await setUp(n1, 'iptables');
      await mustExec(lab, n1, wrapper(`nat always refused
if [[ $tx == '*nat'* ]]; then echo 'iptables-restore: line 2 failed' >&2; exit 1; fi`));
      const natBefore = ruleset(await mustExec(lab, n1, 'iptables-save -t nat'));
      const refused = await cleanup(n1, 'iptables', 'ipvs');
      expect(refused.status).toBe('failed');
      const natItems = refused.plan.items.filter((i) => (i.kind === 'rule' || i.kind === 'chain') && i.table === 'nat' && i.family === 'ipv4').map(itemLabel);
      expect(natItems.length).toBeGreaterThan(5);
      expect(refused.result!.failed).toEqual(natItems.map((l) => `${l}: iptables-restore --noflush failed on the first try and again after reading the table anew: iptables-restore: line 2 failed`));
      expect(ruleset(await mustExec(lab, n1, 'iptables-save -t nat'))).toEqual(natBefore);
      expect(refused.result!.removed).toContain('iptables filter chain: KUBE-SERVICES');
      expect(refused.result!.removed).toEqual(expect.arrayContaining([expect.stringMatching(/^ip6tables nat chain: KUBE-SVC-/)]));
      expect(refused.lines.join('\n')).toMatch(/^ {2}FAILED: iptables nat chain: KUBE-SVC-\w+: iptables-restore --noflush failed/m);
    } finally {
      await mustExec(lab, n1, 'rm -f /usr/local/sbin/iptables-restore /run/kpm-test-raced');
    }
  });
});
