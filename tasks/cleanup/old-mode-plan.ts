import { parseIptablesSave, type IptablesDump } from '../dataplane/iptables-save.ts';
import { parseIpvsadm } from '../dataplane/ipvsadm.ts';
import type { ProxyMode } from '../inventory/types.ts';
import {
  holdsIpvsSetRules,
  isIpvsModeChain,
  isIptablesModeChain,
  isKubeProxyIpset,
  isKubeProxyNftTable,
  parseNftTableLine,
  virtualServerJudge,
  type ServiceAddresses,
} from './kube-proxy-objects.ts';
import type { NodeDataplane, ReadProblem } from './old-mode-read.ts';

// What `--cleanup-old-mode` removes from a node, pure: the node's read and the cluster's Service
// addresses in, the old mode's objects out, in the order they are removed. kube-proxy cleans nothing up
// when it changes between iptables and ipvs (from 1.29 on, only a start in or out of nftables mode
// does), and what it leaves keeps steering traffic (iptables mode's REJECTs for Services that had no
// endpoints, ipvs mode's virtual servers) until someone removes it.

export type IpFamily = 'ipv4' | 'ipv6';

export type CleanupItem =
  /** a rule outside the removed chains that leads into them (or, from ipvs, matches its ipsets), as iptables-save prints it */
  | { kind: 'rule'; family: IpFamily; table: string; chain: string; rule: string }
  | { kind: 'chain'; family: IpFamily; table: string; chain: string }
  | { kind: 'virtual-server'; protocol: 'TCP' | 'UDP' | 'SCTP'; address: string }
  | { kind: 'link'; name: string }
  | { kind: 'ipset'; name: string }
  | { kind: 'nft-table'; family: 'ip' | 'ip6'; name: string };

/** The cluster's side: which addresses are Services', and what kube-proxy itself leaves alone. */
export interface CleanupCluster extends ServiceAddresses {
  serviceIPs: Set<string>;
  nodePorts: Set<number>;
  excludeCIDRs: string[];
}

export interface CleanupPlan {
  from: ProxyMode;
  to: ProxyMode;
  items: CleanupItem[];
  /** objects that looked like the old mode's but stay, and why */
  kept: { label: string; why: string }[];
  /** parts of the node that could not be read, so the plan may miss objects there */
  problems: string[];
}

const FAMILIES: [IpFamily, keyof Pick<NodeDataplane, 'iptables' | 'ip6tables'>][] = [
  ['ipv4', 'iptables'],
  ['ipv6', 'ip6tables'],
];

const tool = (family: IpFamily) => (family === 'ipv4' ? 'iptables' : 'ip6tables');

/** One line per object, the same in a dry run, the node's report and the read-back. */
export function itemLabel(item: CleanupItem): string {
  switch (item.kind) {
    case 'rule':
      return `${tool(item.family)} ${item.table} rule: ${item.rule}`;
    case 'chain':
      return `${tool(item.family)} ${item.table} chain: ${item.chain}`;
    case 'virtual-server':
      return `IPVS virtual server: ${item.protocol} ${item.address}`;
    case 'link':
      return `link: ${item.name}`;
    case 'ipset':
      return `ipset: ${item.name}`;
    case 'nft-table':
      return `nftables table: ${item.family} ${item.name}`;
  }
}

/** Which parts of the node a mode's objects live in, for the read problems that matter to it. */
const AREAS: Record<ProxyMode, ReadProblem['area'][]> = {
  iptables: ['iptables'],
  ipvs: ['ipvs', 'iptables', 'ipset', 'link'],
  nftables: ['nft'],
};

export function planCleanup(from: ProxyMode, to: ProxyMode, node: NodeDataplane, cluster: CleanupCluster): CleanupPlan {
  if (from === to) throw new Error(`cleanup of the old mode: the old and the new mode are both ${from}`);
  const plan: CleanupPlan = { from, to, items: [], kept: [], problems: node.problems.filter((p) => AREAS[from].includes(p.area)).map((p) => p.text) };
  if (from === 'iptables') {
    for (const [family, key] of FAMILIES) {
      const text = node[key];
      if (text !== undefined) planChains(plan, family, parseIptablesSave(text), isIptablesModeChain, () => false);
    }
  } else if (from === 'ipvs') {
    planIpvs(plan, node, cluster);
  } else {
    for (const line of node.nftTables ?? []) {
      const t = parseNftTableLine(line);
      if (t && isKubeProxyNftTable(t.family, t.name)) plan.items.push({ kind: 'nft-table', family: t.family as 'ip' | 'ip6', name: t.name });
    }
  }
  return plan;
}

/**
 * The chains `removable` names, and every rule elsewhere that jumps (or goes) to one of them or that
 * `own` claims. Rules inside a removed chain go with the chain's flush, so they are not listed.
 * Returns the rules that stay, for the ipset check.
 */
function planChains(
  plan: CleanupPlan,
  family: IpFamily,
  dump: IptablesDump,
  removable: (table: string, chain: string) => boolean,
  own: (table: string, chain: string, sets: readonly string[]) => boolean,
): { raw: string; sets: string[] }[] {
  const staying: { raw: string; sets: string[] }[] = [];
  for (const p of dump.problems) plan.problems.push(`${tool(family)}-save: ${p}`);
  for (const table of dump.tables) {
    if (table.name === '') continue;
    const removed = new Set(table.chains.filter((c) => removable(table.name, c.name)).map((c) => c.name));
    const rules: CleanupItem[] = [];
    for (const chain of table.chains) {
      if (removed.has(chain.name)) continue;
      for (const r of chain.rules) {
        const to = r.goto ?? r.target;
        const sets = (r.matchSets ?? []).map((s) => s.name);
        if ((to !== undefined && removed.has(to)) || own(table.name, chain.name, sets)) {
          rules.push({ kind: 'rule', family, table: table.name, chain: chain.name, rule: r.raw });
        } else if (sets.length) {
          staying.push({ raw: `${tool(family)} ${table.name}: ${r.raw}`, sets });
        }
      }
    }
    plan.items.push(...rules);
    for (const name of removed) plan.items.push({ kind: 'chain', family, table: table.name, chain: name });
  }
  return staying;
}

function planIpvs(plan: CleanupPlan, node: NodeDataplane, cluster: CleanupCluster): void {
  const judge = virtualServerJudge(cluster, node.nodeAddresses ?? []);
  for (const vs of node.ipvs === undefined ? [] : parseIpvsadm(node.ipvs).services) {
    const owner = judge(vs);
    const label = `IPVS virtual server: ${vs.protocol} ${vs.address}`;
    if (owner === 'service' && vs.protocol !== 'FWM') plan.items.push({ kind: 'virtual-server', protocol: vs.protocol, address: vs.address });
    else if (owner === 'excluded') plan.kept.push({ label, why: 'under ipvs.excludeCIDRs' });
    else plan.kept.push({ label, why: 'not a Service address (neither a Service IP nor a NodePort on this node)' });
  }

  const staying: { raw: string; sets: string[] }[] = [];
  for (const [family, key] of FAMILIES) {
    const text = node[key];
    if (text === undefined) continue;
    const ipvsSetRule = (table: string, chain: string, sets: readonly string[]) => holdsIpvsSetRules(table, chain) && sets.some(isKubeProxyIpset);
    staying.push(...planChains(plan, family, parseIptablesSave(text), isIpvsModeChain, ipvsSetRule));
  }

  // An ipset a rule still matches cannot be destroyed, and that rule is not ipvs mode's to remove.
  for (const name of (node.ipsets ?? []).filter(isKubeProxyIpset)) {
    const user = staying.find((r) => r.sets.includes(name));
    if (user) plan.kept.push({ label: `ipset: ${name}`, why: `still matched by ${user.raw}` });
    else plan.items.push({ kind: 'ipset', name });
  }
  if (node.kubeIpvs0 !== null) plan.items.push({ kind: 'link', name: 'kube-ipvs0' });
}
