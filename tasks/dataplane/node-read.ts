import { readFileSync } from 'node:fs';

// A node's kube-proxy dataplane as the node itself has it, read in one exec by node-read.sh: counts for
// `status`, full dumps for `trace`. The parsers here only split the script's output; what the dumps
// mean is for the dataplane parsers.

export type ReadKind = 'summary' | 'dump';

let scriptText: string | undefined;

export function nodeReadScript(kind: ReadKind): string {
  scriptText ??= readFileSync(new URL('./node-read.sh', import.meta.url), 'utf8');
  return `KPM_READ=${kind}\n${scriptText}`;
}

/** The exit code the script uses for "not read, on purpose" (the kernel module is not loaded). */
const NOT_READ = 200;

export interface Entry {
  code: number;
  value: string;
}

/** The `@@kpm:<tag> <key> <exit code> <value>` lines of a node script's output, by key. */
export function markedEntries(stdout: string, tag: string): Map<string, Entry> {
  const map = new Map<string, Entry>();
  const prefix = `@@kpm:${tag} `;
  for (const line of stdout.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const m = /^(\S+) (\d+) ?(.*)$/.exec(line.slice(prefix.length));
    if (m) map.set(m[1]!, { code: Number(m[2]), value: m[3] ?? '' });
  }
  return map;
}

function entries(stdout: string): Map<string, Entry> {
  return markedEntries(stdout, 'dp');
}

const decode = (v: string) => Buffer.from(v, 'base64').toString('utf8');
const lines = (v: string) => decode(v).split('\n').map((l) => l.trim()).filter(Boolean);

export interface IptablesCounts {
  /** every KUBE-* chain of the nat table */
  chains: number;
  svc: number;
  sep: number;
  ext: number;
  svl: number;
  fw: number;
  xlb: number;
  /** KUBE-SERVICES rules jumping to a per-Service chain: Services iptables mode routes */
  serviceRules: number;
}

export interface IpvsVirtualServer {
  protocol: string;
  /** "10.96.0.1:443", "[fd00::1]:443", or the mark of an FWM service */
  address: string;
}

export interface DataplaneSummary {
  /** per family; a string says why it could not be read */
  iptables: { v4: IptablesCounts | string; v6: IptablesCounts | string };
  /** null: ip_vs is not loaded (nothing of IPVS can be on the node) */
  ipvs: IpvsVirtualServer[] | null;
  ipvsError?: string;
  /** kube-ipvs0's addresses; null when the link does not exist */
  kubeIpvs0: string[] | null;
  /** kube-proxy's KUBE-* ipsets; null when not read (ip_set not loaded or ipset missing) */
  ipsets: string[] | null;
  /**
   * kube-proxy's own tables, as `table ip kube-proxy` / `table ip6 kube-proxy` lines; null when nf_tables is
   * not in the kernel or nft is missing; [] also when `nft list tables` itself failed (the summary does not
   * tell that apart)
   */
  nftTables: string[] | null;
}

function counts(e: Entry | undefined): IptablesCounts | string {
  if (!e) return 'not read';
  if (e.code === 127) return 'not installed';
  if (e.code !== 0) return `failed (exit ${e.code})`;
  const n = (k: string) => Number(new RegExp(`\\b${k}=(\\d+)`).exec(e.value)?.[1] ?? 0);
  return { chains: n('chains'), svc: n('svc'), sep: n('sep'), ext: n('ext'), svl: n('svl'), fw: n('fw'), xlb: n('xlb'), serviceRules: n('service_rules') };
}

export function parseDataplaneSummary(stdout: string): DataplaneSummary {
  const e = entries(stdout);
  const ipvs = e.get('ipvs');
  const summary: DataplaneSummary = {
    iptables: { v4: counts(e.get('ipt4')), v6: counts(e.get('ipt6')) },
    ipvs: null,
    kubeIpvs0: e.get('kube-ipvs0')?.code === 0 ? lines(e.get('kube-ipvs0')!.value) : null,
    ipsets: e.get('ipset')?.code === 0 ? lines(e.get('ipset')!.value) : null,
    nftTables: e.get('nft')?.code === 0 ? lines(e.get('nft')!.value) : null,
  };
  if (ipvs && ipvs.code !== NOT_READ) {
    if (ipvs.code === 0) {
      summary.ipvs = lines(ipvs.value).map((l) => {
        const [protocol = '', address = ''] = l.split(/\s+/);
        return { protocol, address };
      });
    } else {
      summary.ipvs = [];
      summary.ipvsError = ipvs.code === 127 ? 'ip_vs is loaded but ipvsadm is not installed' : `ipvsadm -Ln failed (exit ${ipvs.code})`;
    }
  }
  return summary;
}

export interface DataplaneDump {
  /** iptables-save output; undefined when not available (the reason in `errors`) */
  iptables?: string;
  ip6tables?: string;
  /** ipvsadm -Ln output; undefined when ip_vs is not loaded */
  ipvs?: string;
  /** nft list table {ip,ip6} kube-proxy, of the families that have the table */
  nft?: string;
  /** why `nft` is not there: nft missing, nf_tables not in the kernel, no kube-proxy table, nft's error */
  nftError?: string;
  /** `nft list tables`, every table; undefined when not read (why in nftTablesUnread) */
  nftTables?: string[];
  /** why `nftTables` is not there, for each caller to word its own way */
  nftTablesUnread?: NftTablesUnread;
  errors: string[];
}

export type NftTablesUnread =
  /** nft is not installed */
  | { reason: 'not-installed' }
  /** nf_tables is not in the running kernel: nft was not run (it would load the module), and no table can exist */
  | { reason: 'not-in-kernel' }
  /** `nft list tables` exited non-zero; `output`: its non-empty lines */
  | { reason: 'failed'; code: number; output: string[] }
  /** no `nft list tables` entry though nft was neither missing nor kept from running: a summary read, or output cut short */
  | { reason: 'missing-entry' };

export function parseDataplaneDump(stdout: string): DataplaneDump {
  const e = entries(stdout);
  const dump: DataplaneDump = { errors: [] };
  const take = (key: string, what: string, set: (text: string) => void) => {
    const x = e.get(key);
    if (!x) return dump.errors.push(`${what}: not read`);
    if (x.code === NOT_READ) return;
    if (x.code === 127) return dump.errors.push(`${what}: not installed`);
    const text = decode(x.value);
    if (x.code !== 0) return dump.errors.push(`${what} failed (exit ${x.code}): ${text.trim().split('\n').slice(-3).join(' | ')}`);
    set(text);
  };
  take('ipt4', 'iptables-save', (t) => (dump.iptables = t));
  take('ipt6', 'ip6tables-save', (t) => (dump.ip6tables = t));
  take('ipvs', 'ipvsadm -Ln', (t) => (dump.ipvs = t));
  const nft = e.get('nft');
  if (nft?.code === 0) dump.nft = decode(nft.value);
  else if (!nft) dump.nftError = 'not read';
  else if (nft.code === 127) dump.nftError = 'nft is not installed';
  else if (nft.code === NOT_READ) dump.nftError = 'nf_tables is not in the running kernel';
  else dump.nftError = decode(nft.value).trim().split('\n').slice(-3).join(' | ') || `nft failed (exit ${nft.code})`;
  const tables = e.get('nft-tables');
  if (tables?.code === 0) dump.nftTables = lines(tables.value);
  else if (tables) dump.nftTablesUnread = { reason: 'failed', code: tables.code, output: lines(tables.value) };
  else if (nft?.code === 127) dump.nftTablesUnread = { reason: 'not-installed' };
  else if (nft?.code === NOT_READ) dump.nftTablesUnread = { reason: 'not-in-kernel' };
  else dump.nftTablesUnread = { reason: 'missing-entry' };
  return dump;
}
