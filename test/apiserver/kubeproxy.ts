import { parse } from 'yaml';

// kube-proxy as the simulated kubelet starts it: its configuration read from the ConfigMap's config.conf,
// and what it logs, in klog's text format, with the messages kube-proxy 1.26+ prints.

export interface KubeProxyConfig {
  /** the mode kube-proxy will run in: config.conf's `mode`, "" resolved to "iptables" */
  mode: string;
  /** config.conf's `metricsBindAddress`, "" resolved to kube-proxy's default 127.0.0.1:10249 */
  metricsBindAddress: string;
  /** the whole config.conf text */
  raw: string;
}

export interface StartInfo {
  pod: string;
  internalIP: string;
  /** the cluster's gitVersion, "v1.31.4" */
  version: string;
}

export interface StartResult {
  /** false: kube-proxy exited, the container crash-loops with `log` as its output */
  ready: boolean;
  log: string[];
}

/** How kube-proxy starts on a node. The default one runs every mode everywhere; lab tests plug in real hosts. */
export interface NodeRuntime {
  start(node: string, config: KubeProxyConfig, info: StartInfo): Promise<StartResult>;
  /** the pod on `node` was stopped */
  stop?(node: string): Promise<void>;
}

export const PROXY_MODES = ['iptables', 'ipvs', 'nftables'];

/** config.conf as kube-proxy reads it, or the error it exits with. */
export function parseKubeProxyConfig(raw: string): { config: KubeProxyConfig } | { error: string } {
  let doc: unknown;
  try {
    doc = parse(raw);
  } catch (e) {
    return { error: `failed complete: failed to decode: ${(e as Error).message.split('\n')[0]}` };
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return { error: 'failed complete: failed to decode: config.conf is not a KubeProxyConfiguration' };
  const d = doc as Record<string, unknown>;
  if (d.kind !== 'KubeProxyConfiguration') return { error: `failed complete: no kind "${String(d.kind ?? '')}" is registered for version "${String(d.apiVersion ?? '')}"` };
  const mode = d.mode === undefined || d.mode === null ? '' : String(d.mode);
  if (mode !== '' && !PROXY_MODES.includes(mode)) {
    return { error: `KubeProxyConfiguration.Mode: Unsupported value: "${mode}": supported values: ${PROXY_MODES.map((m) => `"${m}"`).join(', ')}` };
  }
  const metrics = d.metricsBindAddress === undefined || d.metricsBindAddress === null ? '' : String(d.metricsBindAddress);
  return { config: { mode: mode === '' ? 'iptables' : mode, metricsBindAddress: metrics === '' ? '127.0.0.1:10249' : metrics, raw } };
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

function klogValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => JSON.stringify(x)).join(',')}]`;
  return String(v);
}

/** One klog line: `I1126 10:00:00.000000       1 server_linux.go:169] "Using ipvs Proxier"`. */
export function klog(severity: 'I' | 'W' | 'E' | 'F', where: string, message: string, kv: Record<string, unknown> = {}, at = new Date()): string {
  const micros = pad(at.getUTCMilliseconds(), 3) + '000';
  const head = `${severity}${pad(at.getUTCMonth() + 1)}${pad(at.getUTCDate())} ${pad(at.getUTCHours())}:${pad(at.getUTCMinutes())}:${pad(at.getUTCSeconds())}.${micros}`;
  const pairs = Object.entries(kv)
    .map(([k, v]) => ` ${k}=${klogValue(v)}`)
    .join('');
  return `${head}${String(1).padStart(8)} ${where}] ${JSON.stringify(message)}${pairs}`;
}

/** What kube-proxy 1.31 logs when it comes up in `mode`. */
export function startupLog(mode: string, info: StartInfo, at = new Date()): string[] {
  const l = (where: string, msg: string, kv?: Record<string, unknown>) => klog('I', where, msg, kv, at);
  const lines = [
    ...(mode === 'iptables' ? [l('server_linux.go:66', 'Using iptables proxy')] : []),
    l('server.go:677', 'Successfully retrieved node IP(s)', { IPs: [info.internalIP] }),
    l('conntrack.go:60', 'Setting nf_conntrack_max', { nfConntrackMax: 131072 }),
    l('server.go:243', 'kube-proxy running in dual-stack mode', { 'primary ipFamily': 'IPv4' }),
    l('server_linux.go:169', `Using ${mode} Proxier`),
  ];
  if (mode === 'ipvs') {
    lines.push(l('proxier.go:364', 'IPVS scheduler not specified, use rr by default', { ipFamily: 'IPv4' }));
  }
  lines.push(
    l('server.go:483', 'Version info', { version: info.version }),
    l('server.go:485', 'Golang settings', { GOGC: '', GOMAXPROCS: '', GOTRACEBACK: '' }),
    l('config.go:199', 'Starting service config controller'),
    l('config.go:105', 'Starting endpoint slice config controller'),
    l('config.go:328', 'Starting node config controller'),
    l('shared_informer.go:320', 'Caches are synced for node config'),
    l('shared_informer.go:320', 'Caches are synced for service config'),
    l('shared_informer.go:320', 'Caches are synced for endpoint slice config'),
  );
  return lines;
}

/** kube-proxy's error when a node lacks ipset (since 1.26 it exits rather than fall back to iptables) */
export const IPVS_IPSET_MISSING = "can't use the IPVS proxier: error getting ipset version, error: executable file not found in $PATH";

/** What kube-proxy logs before it exits with `err`. */
export function fatalLog(mode: string, err: string, info: StartInfo, at = new Date()): string[] {
  return [
    ...(mode === 'iptables' ? [klog('I', 'server_linux.go:66', 'Using iptables proxy', {}, at)] : []),
    klog('I', 'server.go:677', 'Successfully retrieved node IP(s)', { IPs: [info.internalIP] }, at),
    klog('E', 'server.go:558', 'Error running ProxyServer', { err }, at),
    klog('E', 'run.go:72', 'command failed', { err }, at),
  ];
}

export interface MemoryRuntime extends NodeRuntime {
  /** every start, in order */
  starts: { node: string; mode: string; ready: boolean }[];
}

/**
 * A runtime without hosts: kube-proxy starts in every mode on every node, unless `crash` returns the error
 * it exits with for that node and configuration.
 */
export function memoryRuntime(opts: { crash?: (node: string, config: KubeProxyConfig) => string | undefined } = {}): MemoryRuntime {
  const starts: MemoryRuntime['starts'] = [];
  return {
    starts,
    async start(node, config, info) {
      const err = opts.crash?.(node, config);
      starts.push({ node, mode: config.mode, ready: err === undefined });
      if (err !== undefined) return { ready: false, log: fatalLog(config.mode, err, info) };
      return { ready: true, log: startupLog(config.mode, info) };
    },
  };
}
