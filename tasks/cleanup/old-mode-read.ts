import { readFileSync } from 'node:fs';
import { markedEntries, nodeReadScript, parseDataplaneDump, parseDataplaneSummary } from '../dataplane/node-read.ts';

// The node read a cleanup is planned from: node-read.sh's dump (iptables-save, ip6tables-save,
// ipvsadm -Ln, kube-ipvs0, KUBE-* ipsets, nft tables) and old-mode-read.sh (the node's addresses, which
// tools are missing), in one exec. The same read follows the cleanup, to see what is left.

let supplement: string | undefined;

export function cleanupReadScript(): string {
  supplement ??= readFileSync(new URL('./old-mode-read.sh', import.meta.url), 'utf8');
  return [nodeReadScript('dump'), supplement].map((part) => `(\n${part}\n)`).join('\n');
}

/** A node's dataplane as far as a cleanup needs it; null: not there, or not readable (why in `problems`). */
export interface NodeDataplane {
  /** iptables-save / ip6tables-save output */
  iptables?: string;
  ip6tables?: string;
  /** ipvsadm -Ln output; undefined when ip_vs is not loaded (no IPVS object can exist) or ipvsadm failed */
  ipvs?: string;
  /** kube-ipvs0's addresses; null when the link is not there */
  kubeIpvs0: string[] | null;
  /** KUBE-* ipsets as node-read.sh lists them; null when not read */
  ipsets: string[] | null;
  /** `nft list tables` lines; null when not read */
  nftTables: string[] | null;
  /** the node's addresses (not kube-ipvs0's); null when not read */
  nodeAddresses: string[] | null;
  /** what could not be read, and why, by the part of the dataplane it hides */
  problems: ReadProblem[];
}

export interface ReadProblem {
  area: 'iptables' | 'ipvs' | 'ipset' | 'link' | 'nft';
  text: string;
}

const entries = (stdout: string) => markedEntries(stdout, 'cleanup-read');

const lines = (b64: string) =>
  Buffer.from(b64, 'base64')
    .toString('utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);

export function parseNodeDataplane(stdout: string): NodeDataplane {
  const dump = parseDataplaneDump(stdout);
  const summary = parseDataplaneSummary(stdout);
  const e = entries(stdout);
  const problems: ReadProblem[] = dump.errors.map((text) => ({ area: text.startsWith('ipvsadm') ? 'ipvs' : 'iptables', text }));
  const ipCmd = e.get('ip-cmd');
  if (ipCmd?.code === 127) problems.push({ area: 'link', text: 'ip (iproute2) is not installed: kube-ipvs0 and the node addresses not read' });
  if (e.get('ipset-cmd')?.code === 127) problems.push({ area: 'ipset', text: 'ipset is not installed: KUBE-* ipsets not read' });
  // where nf_tables is not in the kernel no table can exist: nothing is hidden
  const unread = dump.nftTablesUnread;
  if (unread?.reason === 'failed') problems.push({ area: 'nft', text: `nft list tables failed (exit ${unread.code}): ${unread.output.slice(-2).join(' | ')}` });
  else if (unread?.reason === 'not-installed') problems.push({ area: 'nft', text: 'nft is not installed: nftables tables not read' });
  else if (unread?.reason === 'missing-entry') problems.push({ area: 'nft', text: 'nft tables: not read' });
  const addresses = e.get('addresses');
  const out: NodeDataplane = {
    kubeIpvs0: ipCmd?.code === 127 ? null : summary.kubeIpvs0,
    ipsets: summary.ipsets,
    nftTables: dump.nftTables ?? null,
    nodeAddresses: addresses?.code === 0 ? lines(addresses.value) : null,
    problems,
  };
  if (dump.iptables !== undefined) out.iptables = dump.iptables;
  if (dump.ip6tables !== undefined) out.ip6tables = dump.ip6tables;
  if (dump.ipvs !== undefined) out.ipvs = dump.ipvs;
  return out;
}
