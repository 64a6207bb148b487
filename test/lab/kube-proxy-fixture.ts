// TEST FIXTURE, NOT KUBE-PROXY: a stand-in kube-proxy on kpm lab hosts, for the test API server's
// simulated DaemonSet controller and kubelet (test/apiserver/).  When that server (re)starts the
// kube-proxy pod of a node, this runtime does on the lab host standing for the node what a real
// kube-proxy >= 1.26 does that the node can make fail, on the host's real state, and answers with
// kube-proxy's own log lines:
//
//   ipvs      iptables works, `ipset --version` works (>= 6.0), ip_vs and ip_vs_<scheduler> are
//             loaded (lsmod: the kmod shim's registry on --kmod-shim hosts); then the Service
//             default/kubernetes goes into the IPVS fixture table that the kmod-shim layer's
//             labelled ipvsadm wrapper lists, and its ClusterIP onto a kube-ipvs0 link;
//   iptables  iptables works; IPVS leftovers (table, kube-ipvs0) stay, as a real kube-proxy
//             leaves them when it moves off ipvs;
//   nftables  nft is installed.
//
// A ready "kube-proxy" is a small server in the host's namespaces (hostlab/kube-proxy-fixture/)
// answering GET /proxyMode and /healthz on metricsBindAddress, and /healthz, /livez on
// healthzBindAddress; it dies with the host.  The fixture never loads kernel modules: loading
// them is the job of the tool under test.
//
// Log lines follow kube-proxy 1.28-1.31 (CanUseIPVSProxier probes IPVS with a dummy virtual
// server since 1.27; the "required kernel modules are not loaded" message of <= 1.26 is gone).
// file:line positions are those of real 1.30/1.31 logs where one was found, and read off the
// source layout otherwise.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import type { KubeProxyConfig, NodeRuntime, StartInfo, StartResult } from '../apiserver/server.ts';
import { HOSTLAB_DIR, type Lab } from './lab.ts';

export interface LabKubeProxyOptions {
  /** ClusterIP:port of Service default/kubernetes; default kubeadm's 10.96.0.1:443 */
  kubernetesService?: string;
  /** its endpoints, "ip:port"; default the lab bridge's address (x.y.0.1) with port 6443 */
  apiServerEndpoints?: string[];
  /** for "Version info" when start() gets no StartInfo; default v1.31.0 */
  version?: string;
}

const FIXTURE_DIR = path.join(HOSTLAB_DIR, 'kube-proxy-fixture');
const HOST_DIR = '/run/kpm-lab-kube-proxy';
const CTL = 'kube-proxy-fixture.sh';
const SERVER = 'kube-proxy-test-fixture.py';

const sq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

// ---------------------------------------------------------------------------------------------
// klog / logrus text, as kube-proxy writes it to its container log

type KV = [string, unknown][];

function goQuote(s: string): string {
  return JSON.stringify(s);
}

function kvText(kv: KV): string {
  return kv
    .map(([k, v]) => {
      const text = typeof v === 'string' ? goQuote(v) : Array.isArray(v) ? `[${v.map((x) => goQuote(String(x))).join(',')}]` : String(v);
      return ` ${k}=${text}`;
    })
    .join('');
}

class KubeProxyLog {
  readonly lines: string[] = [];
  /** microseconds since the epoch of the line being written */
  private us: number;

  constructor(at: Date) {
    this.us = at.getTime() * 1000 + Math.floor(Math.random() * 1000);
  }

  /** The next line's time: lines of one start-up are some hundred microseconds apart. */
  private next(): Date {
    this.us += 150 + ((this.lines.length * 37) % 200);
    return new Date(Math.floor(this.us / 1000));
  }

  private stamp(): string {
    const t = this.next();
    const p = (n: number, w = 2) => String(n).padStart(w, '0');
    return `${p(t.getUTCMonth() + 1)}${p(t.getUTCDate())} ${p(t.getUTCHours())}:${p(t.getUTCMinutes())}:${p(t.getUTCSeconds())}.${p(this.us % 1_000_000, 6)}`;
  }

  /** A structured klog line: `I1126 10:00:00.000000       1 server.go:677] "msg" k="v"`. */
  k(sev: 'I' | 'W' | 'E', where: string, msg: string, kv: KV = []): this {
    this.lines.push(`${sev}${this.stamp()} ${String(1).padStart(7)} ${where}] ${goQuote(msg)}${kvText(kv)}`);
    return this;
  }

  /** A printf-style klog line (client-go's informers still log unquoted). */
  printf(where: string, msg: string): this {
    this.lines.push(`I${this.stamp()} ${String(1).padStart(7)} ${where}] ${msg}`);
    return this;
  }

  /** moby/ipvs logs through logrus. */
  logrus(level: 'warning' | 'error', msg: string): this {
    const t = this.next();
    this.lines.push(`time="${t.toISOString().replace(/\.\d{3}Z$/, 'Z')}" level=${level} msg=${goQuote(msg)}`);
    return this;
  }

  /** kube-proxy exits with `err`. */
  fatal(err: string): this {
    return this.k('E', 'server.go:558', 'Error running ProxyServer', [['err', err]]).k('E', 'run.go:74', 'command failed', [['err', err]]);
  }
}

// ---------------------------------------------------------------------------------------------
// What of config.conf kube-proxy's start-up depends on

interface Settings {
  rawMode: string;
  scheduler: string;
  healthzBindAddress: string;
  nodePortAddressesSet: boolean;
  localhostNodePorts: boolean;
  conntrackMaxPerCore: number;
  conntrackMin: number;
}

function settings(raw: string): Settings {
  let doc: Record<string, unknown> = {};
  try {
    const d: unknown = parse(raw);
    if (d && typeof d === 'object' && !Array.isArray(d)) doc = d as Record<string, unknown>;
  } catch {
    /* the API server has already refused a config.conf kube-proxy could not read */
  }
  const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
  const str = (v: unknown): string => (v === undefined || v === null ? '' : String(v));
  const num = (v: unknown, dflt: number): number => (typeof v === 'number' ? v : dflt);
  const nodePort = doc.nodePortAddresses;
  return {
    rawMode: str(doc.mode),
    scheduler: str(obj(doc.ipvs).scheduler),
    healthzBindAddress: str(doc.healthzBindAddress) || '0.0.0.0:10256',
    nodePortAddressesSet: Array.isArray(nodePort) && nodePort.length > 0,
    localhostNodePorts: obj(doc.iptables).localhostNodePorts !== false,
    conntrackMaxPerCore: num(obj(doc.conntrack).maxPerCore, 32768),
    conntrackMin: num(obj(doc.conntrack).min, 131072),
  };
}

// ---------------------------------------------------------------------------------------------
// The runtime

interface HostReport {
  result: string;
  facts: Map<string, string>;
}

function parseReport(stdout: string): HostReport | null {
  const facts = new Map<string, string>();
  for (const line of stdout.split('\n')) {
    const m = /^([a-z_]+)=(.*)$/.exec(line);
    if (m) facts.set(m[1]!, m[2]!);
  }
  const result = facts.get('result');
  return result ? { result, facts } : null;
}

function labEnv(lab: Lab): Map<string, string> {
  const env = new Map<string, string>();
  for (const line of readFileSync(path.join(lab.stateDir, 'lab.env'), 'utf8').split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) env.set(line.slice(0, i), line.slice(i + 1));
  }
  return env;
}

/**
 * The kube-proxy TEST FIXTURE on `lab`'s hosts as a NodeRuntime for the test API server.  Node names
 * map to host names through `nodeToHost` (default: the same name).
 */
export function labKubeProxyRuntime(lab: Lab, nodeToHost: (node: string) => string = (n) => n, opts: LabKubeProxyOptions = {}): NodeRuntime {
  const env = labEnv(lab);
  // In loopback mode hosts share the machine's network: kube-ipvs0 and the listeners would land there.
  if (env.get('LAB_NET') !== 'netns') throw new Error(`the kube-proxy test fixture needs a lab in netns mode (lab ${lab.id} is ${env.get('LAB_NET')})`);
  const service = opts.kubernetesService ?? '10.96.0.1:443';
  const endpoints = opts.apiServerEndpoints ?? [`${env.get('LAB_NET_PREFIX')}.0.1:6443`];
  const version = opts.version ?? 'v1.31.0';

  const hostOf = (node: string): string => {
    const host = nodeToHost(node);
    if (!lab.hosts.some((h) => h.name === host)) throw new Error(`kube-proxy test fixture: node ${node} maps to ${host}, which lab ${lab.id} does not have`);
    return host;
  };

  // One operation at a time per host: a pod restart's stop and start must not interleave.
  const queues = new Map<string, Promise<unknown>>();
  const serial = <T>(host: string, fn: () => Promise<T>): Promise<T> => {
    const job = (queues.get(host) ?? Promise.resolve()).then(fn);
    queues.set(host, job.catch(() => undefined));
    return job;
  };

  const ship = (): string => {
    const put = (name: string) => {
      const b64 = readFileSync(path.join(FIXTURE_DIR, name)).toString('base64');
      return `printf %s ${sq(b64)} | base64 -d >"$d/${name}.new" && mv "$d/${name}.new" "$d/${name}"`;
    };
    return `d=${HOST_DIR}; mkdir -p "$d" && ${put(CTL)} && ${put(SERVER)}`;
  };

  async function start(node: string, config: KubeProxyConfig, info?: StartInfo): Promise<StartResult> {
    const host = hostOf(node);
    const s = settings(config.raw);
    const args = [config.mode, config.metricsBindAddress, s.healthzBindAddress, s.scheduler, service, endpoints.join(',')];
    const r = await serial(host, () => lab.exec(host, `${ship()} && exec bash "$d/${CTL}" run ${args.map(sq).join(' ')}`));
    const report = parseReport(r.stdout);
    if (r.code !== 0 || !report) {
      throw new Error(`kube-proxy test fixture on ${host} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
    }
    const { result, facts } = report;
    if (result === 'fixture-error') throw new Error(`kube-proxy test fixture on ${host}: ${facts.get('detail') ?? 'unknown error'}`);

    const log = new KubeProxyLog(new Date());
    const mode = config.mode;
    const nodeIP = info?.internalIP ?? facts.get('node_ip') ?? '';
    const ipFamily: KV = [['ipFamily', 'IPv4']];
    if (s.rawMode === '') log.k('I', 'server_linux.go:66', 'Using iptables proxy');
    log.k('I', 'server.go:677', 'Successfully retrieved node IP(s)', [['IPs', [nodeIP]]]);
    if (s.conntrackMaxPerCore > 0) {
      const max = Math.max(s.conntrackMaxPerCore * Number(facts.get('ncpu') ?? '1'), s.conntrackMin);
      log.k('I', 'conntrack.go:60', 'Setting nf_conntrack_max', [['nfConntrackMax', max]]);
    }
    if (mode !== 'nftables' && !s.nodePortAddressesSet) {
      log.k('E', 'server.go:234', 'Kube-proxy configuration may be incomplete or incorrect', [
        ['err', 'nodePortAddresses is unset; NodePort connections will be accepted on all local IPs. Consider using `--nodeport-addresses primary`'],
      ]);
    }
    if (result === 'iptables-unavailable') return { ready: false, log: log.fatal('iptables is not available on this host').lines };
    log.k('I', 'server.go:243', 'kube-proxy running in dual-stack mode', [['primary ipFamily', 'IPv4']]);

    const scheduler = s.scheduler || 'rr';
    if (mode === 'ipvs') {
      if (facts.get('ipvs_loaded') === '0') {
        // moby/ipvs, when kube-proxy opens its IPVS handle: its own modprobe finds no module to load
        log.logrus('warning', `Running modprobe ip_vs failed with message: \`modprobe: WARNING: Module ip_vs not found in directory /lib/modules/${facts.get('krel') ?? ''}\`, error: exit status 1`);
        log.logrus('error', 'Could not get ipvs family information from the kernel. It is possible that ipvs is not enabled in your kernel. Native loadbalancing will not work until this is fixed.');
      }
      const cant = (err: string) => ({ ready: false, log: log.fatal(`can't use the IPVS proxier: ${err}`).lines });
      switch (result) {
        case 'ipset-missing':
          return cant('error getting ipset version, error: executable file not found in $PATH');
        case 'ipset-failed':
          return cant(`error getting ipset version, error: exit status ${facts.get('ipset_exit') ?? '1'}`);
        case 'ipset-old':
          return cant(`ipset version: ${facts.get('ipset_version') ?? ''} is less than min required version: 6.0`);
        case 'ipvs-missing':
          // The dummy virtual server "succeeds" on a kernel without IPVS and is then not there.
          log.k('I', 'proxier.go:646', 'Dummy VS not created', [['scheduler', scheduler]]);
          return cant('Ipvs not supported');
        case 'scheduler-missing':
          log.k('E', 'proxier.go:634', 'Could not create dummy VS', [['err', 'no such file or directory'], ['scheduler', scheduler]]);
          return cant('no such file or directory');
      }
      log.k('I', 'server_linux.go:230', 'Using ipvs Proxier');
      for (const family of ['IPv4', 'IPv6']) {
        if (s.scheduler === '') log.k('I', 'proxier.go:353', 'IPVS scheduler not specified, use rr by default', [['ipFamily', family]]);
      }
    } else if (mode === 'nftables') {
      log.k('I', 'server_linux.go:292', 'Using nftables Proxier');
      if (result === 'nft-missing') return { ready: false, log: log.fatal('unable to create proxier: could not find nftables binary: exec: "nft": executable file not found in $PATH').lines };
    } else {
      log.k('I', 'server_linux.go:169', 'Using iptables Proxier');
      if (s.localhostNodePorts && !s.nodePortAddressesSet) {
        log.k('I', 'proxier.go:255', 'Setting route_localnet=1 to allow node-ports on localhost; to change this either disable iptables.localhostNodePorts (--iptables-localhost-nodeports) or set nodePortAddresses (--nodeport-addresses) to filter loopback addresses', ipFamily);
      }
    }
    if (result !== 'ready') throw new Error(`kube-proxy test fixture on ${host}: unexpected result ${result} in ${mode} mode`);

    log
      .k('I', 'server.go:483', 'Version info', [['version', info?.version ?? version]])
      .k('I', 'server.go:485', 'Golang settings', [['GOGC', ''], ['GOMAXPROCS', ''], ['GOTRACEBACK', '']])
      .k('I', 'config.go:197', 'Starting service config controller')
      .k('I', 'config.go:104', 'Starting endpoint slice config controller')
      .printf('shared_informer.go:313', 'Waiting for caches to sync for service config')
      .printf('shared_informer.go:313', 'Waiting for caches to sync for endpoint slice config')
      .k('I', 'config.go:326', 'Starting node config controller')
      .printf('shared_informer.go:313', 'Waiting for caches to sync for node config')
      .printf('shared_informer.go:320', 'Caches are synced for node config')
      .printf('shared_informer.go:320', 'Caches are synced for endpoint slice config')
      .printf('shared_informer.go:320', 'Caches are synced for service config');
    return { ready: true, log: log.lines };
  }

  async function stop(node: string): Promise<void> {
    const host = hostOf(node);
    let r;
    try {
      r = await serial(host, () => lab.exec(host, `${ship()} && exec bash "$d/${CTL}" stop`));
    } catch (e) {
      // A host that is off runs no kube-proxy to stop.
      if (/is not running/.test((e as Error).message)) return;
      throw e;
    }
    if (r.code !== 0) throw new Error(`kube-proxy test fixture on ${host}: stop failed (exit ${r.code}): ${r.stderr.trim()}`);
  }

  return { start, stop };
}
