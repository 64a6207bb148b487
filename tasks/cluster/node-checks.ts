import type { ProxyMode } from '../inventory/types.ts';
import type { RemoteSession } from '../remote/ssh.ts';
import { shQuote } from '../remote/quote.ts';
import { parseProbeOutput, probeScript, type ProbeOutcome, type ProbeTarget } from './probes.ts';

// What a node says about its kube-proxy, read on the node itself in one SSH exec: the running mode from
// kube-proxy's metrics endpoint (`/proxyMode`, the ground truth: editing the ConfigMap restarts nothing),
// for ipvs the IPVS table, and the Service probes. One exec before a node's switch and one after: each
// exec costs a round trip and a shell start, on every node of the serial recycle.

export interface NodeProxyState {
  /** what /proxyMode answered; null when nothing answered */
  mode: string | null;
  /** why mode is null */
  error?: string;
  /** `ipvsadm -Ln` output when asked for (null when ipvsadm is missing or failed) */
  ipvs?: string | null;
  /** the nftables or iptables mode's proof read (see proofCommand), null when it failed */
  proof?: { mode: string; code: number; text: string } | null;
}

/**
 * What shows, on the node, that kube-proxy programs the mode it answers: its nftables table, its
 * iptables entry chain. Read only where /proxyMode answers that mode (nft and iptables would load
 * their kernel modules otherwise: a change even a dry run would make).
 */
const PROOF_COMMANDS: Record<string, string> = {
  nftables: 'nft list tables',
  iptables: 'iptables -w 5 -t nat -S KUBE-SERVICES',
};

/**
 * Where to ask: kube-proxy's metricsBindAddress, as reachable from the node itself. A wildcard address
 * (0.0.0.0, ::, empty) is asked on loopback.
 */
export function metricsEndpoint(metricsBindAddress: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?(?::(\d+))?$/.exec(metricsBindAddress.trim()) ?? [];
  let host = m[1] ?? '';
  const port = m[2] ? Number(m[2]) : 10249;
  if (host === '' || host === '0.0.0.0' || host === '::') host = '127.0.0.1';
  return { host, port };
}

const MARK = '@@kpm:';

export interface NodeCheckOptions {
  /** also list the IPVS table (only read where kube-proxy answers ipvs) */
  ipvs?: boolean;
  /** also read the proof of this mode (nftables, iptables), where kube-proxy answers it */
  proof?: string;
  /**
   * the mode the node should answer: /proxyMode is asked again (every half second, up to 5 s) until it
   * does, since kube-proxy can report Ready a moment before its metrics server answers
   */
  expect?: string;
  /** Services to probe through the node, after the mode is read */
  probes?: ProbeTarget[];
}

export function nodeCheckScript(metricsBindAddress: string, o: NodeCheckOptions = {}): string {
  const { host, port } = metricsEndpoint(metricsBindAddress);
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}/proxyMode`;
  // curl where the node has it; bash's /dev/tcp otherwise (minimal images ship no curl).
  return `export LC_ALL=C PATH="$PATH:/usr/sbin:/sbin"
url=${shQuote(url)} h=${shQuote(host)} p=${shQuote(String(port))} want=${shQuote(o.expect ?? '')}
have_curl=0; command -v curl >/dev/null 2>&1 && have_curl=1
for ((try = 1; try <= 10; try++)); do
  if [ $have_curl = 1 ]; then
    body=$(curl -sS --max-time 3 "$url" 2>&1); rc=$?
  else
    body=$(exec 3<>"/dev/tcp/$h/$p" && printf 'GET /proxyMode HTTP/1.0\\r\\nHost: %s\\r\\n\\r\\n' "$h" >&3 && timeout 3 cat <&3 | sed '1,/^\\r\\{0,1\\}$/d' 2>&1); rc=$?
  fi
  { [ -z "$want" ] || { [ "$rc" = 0 ] && [ "$body" = "$want" ]; }; } && break
  sleep 0.5
done
printf '${MARK}mode %s %s\\n' "$rc" "$(printf '%s' "$body" | base64 -w0)"
${
  o.ipvs
    ? `# only where kube-proxy runs ipvs: elsewhere ipvsadm would modprobe ip_vs, a change even a dry run would make
if [ "$rc" = 0 ] && [ "$body" = ipvs ] && command -v ipvsadm >/dev/null 2>&1; then out=$(ipvsadm -Ln 2>&1); printf '${MARK}ipvs %s %s\\n' "$?" "$(printf '%s' "$out" | base64 -w0)"; else printf '${MARK}ipvs 127 \\n'; fi`
    : ''
}
${
  o.proof && PROOF_COMMANDS[o.proof]
    ? `if [ "$rc" = 0 ] && [ "$body" = ${shQuote(o.proof)} ]; then out=$(${PROOF_COMMANDS[o.proof]} 2>&1); printf '${MARK}proof %s %s\n' "$?" "$(printf '%s' "$out" | base64 -w0)"; fi`
    : ''
}
${o.probes?.length ? `(\n${probeScript(o.probes)})` : ''}
`;
}

export function parseNodeCheck(stdout: string): NodeProxyState {
  const state: NodeProxyState = { mode: null };
  for (const line of stdout.split('\n')) {
    const m = /^@@kpm:(mode|ipvs|proof) (\d+) ?(\S*)$/.exec(line);
    if (!m) continue;
    const text = Buffer.from(m[3] ?? '', 'base64').toString('utf8').trim();
    if (m[1] === 'mode') {
      if (m[2] === '0' && /^[a-z]+$/.test(text)) state.mode = text;
      else state.error = m[2] === '0' ? `unexpected answer ${JSON.stringify(text.slice(0, 80))}` : text || `no answer (exit ${m[2]})`;
    } else if (m[1] === 'proof') {
      state.proof = { mode: state.mode ?? '', code: Number(m[2]), text };
    } else {
      state.ipvs = m[2] === '0' ? text : null;
    }
  }
  if (state.mode === null && !state.error) state.error = 'the node check printed nothing';
  return state;
}

export interface NodeRead extends NodeProxyState {
  /** one per probe target asked for, in order */
  probes: ProbeOutcome[];
}

/** Mode, IPVS table and probes in one exec (see NodeCheckOptions). */
export async function readNode(session: RemoteSession, metricsBindAddress: string, o: NodeCheckOptions = {}): Promise<NodeRead> {
  const probes = o.probes ?? [];
  const timeoutMs = 20_000 + (o.expect ? 40_000 : 0) + (probes.length ? 30_000 + probes.length * 15_000 : 0);
  const res = await session.run(nodeCheckScript(metricsBindAddress, o), { timeoutMs });
  return { ...parseNodeCheck(res.stdout), probes: parseProbeOutput(res.stdout, probes.length) };
}

/** Does `ipvsadm -Ln` list this virtual server? (`TCP  10.96.0.1:443 rr`; IPv6 as `[fd00::1]:443`) */
export function ipvsHasVirtualServer(ipvsadm: string, ip: string, port: number, protocol = 'TCP'): boolean {
  const addr = ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
  return ipvsadm.split('\n').some((l) => {
    const f = l.trim().split(/\s+/);
    return f[0] === protocol && f[1]?.toLowerCase() === addr.toLowerCase();
  });
}

/**
 * The mode's own proof from a node read (nftables: kube-proxy's table listed; iptables: the KUBE-SERVICES
 * chain in nat): undefined when it holds, else why not.
 */
export function proofProblem(mode: string, state: NodeProxyState): { check: string; message: string } | undefined {
  const cmd = PROOF_COMMANDS[mode];
  if (!cmd) return undefined;
  const p = state.proof;
  if (!p) return { check: cmd, message: `${cmd} was not read on the node` };
  if (mode === 'nftables') {
    if (p.code !== 0) return { check: cmd, message: `${cmd} failed: ${p.text.split('\n')[0] || `exit ${p.code}`}` };
    if (!/^table ip6? kube-proxy$/m.test(p.text)) return { check: cmd, message: `${cmd} lists no kube-proxy table (${p.text.split('\n').filter(Boolean).join(', ') || 'no table at all'})` };
    return undefined;
  }
  if (p.code !== 0 || !/^-N KUBE-SERVICES$/m.test(p.text)) {
    return { check: cmd, message: `the nat table has no KUBE-SERVICES chain (${p.text.split('\n')[0] || `exit ${p.code}`})` };
  }
  return undefined;
}

/** kube-proxy's proxier line for a mode, in the forms of every version (≤1.25 ends with a dot). */
export function proxierLine(log: string, mode: ProxyMode): string | undefined {
  const re = new RegExp(`Using ${mode} [Pp]roxier`);
  return log.split('\n').find((l) => re.test(l));
}
