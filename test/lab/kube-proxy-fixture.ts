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
//   nftables  nft is installed; then the Services go into real `table ip kube-proxy` and
//             `table ip6 kube-proxy` (both, as on a node that has both families), replaced in one
//             `nft -f` transaction.
//
// Before those checks every start removes, best effort, what kube-proxy >= 1.29 removes first thing
// in platformCleanup (cmd/kube-proxy/app/server_linux.go), so that the mode a node leaves steers no
// traffic beside the new one.  Starting in nftables mode: what iptables.CleanupLeftovers and
// ipvs.CleanupLeftovers remove, IPv4 and IPv6 -- kube-proxy's KUBE-* nat and filter chains and the
// jumps to them from the built-in chains, all of IPVS (ipvs.Flush() empties the table, virtual
// servers of others too) with the fixture's IPVS emulation, kube-ipvs0, ipvs mode's KUBE-* ipsets.
// Starting in iptables or ipvs mode: kube-proxy's two nftables tables (nftables.CleanupLeftovers).
// Between iptables and ipvs nothing, as those modes share chains.  Kubelet's chains (KUBE-FIREWALL,
// KUBE-MARK-DROP, KUBE-KUBELET-CANARY), KPM-LAB-DATAPLANE-FAULT and anyone else's chains, ipsets and
// nftables tables stay: kube-proxy removes only what it names (hostlab/kube-proxy-fixture/ has the
// lists).
//
// Services given in the options carry real traffic: in iptables mode as kube-proxy's own nat
// chains (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT, KUBE-NODEPORTS); in ipvs mode as rows of
// the IPVS fixture table, an ipset-based KUBE-SERVICES that leaves the KUBE-SVC-* chains stale,
// and, as the kernel has no IPVS, DNAT rules in the fixture's KPM-LAB-IPVS-EMULATION chain; in
// nftables mode as kube-proxy 1.31's table (service-ips -> service-* -> endpoint-* DNAT,
// service-nodeports, no-endpoint-services; test/dataplane-dumps.ts writes it).  A test can make
// an iptables or ipvs start drop the Services' traffic while kube-proxy looks healthy
// (dataplaneFault).
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

import { servicePortChainName, servicePortEndpointChainName } from '../../tasks/dataplane/chain-names.ts';
import { kubeProxyNftables, type GenService } from '../dataplane-dumps.ts';
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
  /** Services whose traffic the fixture's dataplane carries (iptables, ipvs and nftables modes); default none */
  services?: LabService[];
  /** 'drop' makes that start drop traffic to the Services' ClusterIPs while kube-proxy looks healthy */
  dataplaneFault?: (node: string, mode: string) => 'drop' | undefined;
}

export interface LabService {
  name: string;
  namespace: string;
  clusterIP: string;
  port: number;
  /** the Service port's name: kube-proxy's comments and chain hashes carry it ("ns/name:http"); default unnamed */
  portName?: string;
  protocol?: 'TCP';
  backends: { ip: string; port: number }[];
  nodePort?: number;
}

const FIXTURE_DIR = path.join(HOSTLAB_DIR, 'kube-proxy-fixture');
const HOST_DIR = '/run/kpm-lab-kube-proxy';
const CTL = 'kube-proxy-fixture.sh';
const SERVER = 'kube-proxy-test-fixture.py';

/** kubeadm's podSubnet as Calico and Flannel set it up, for a config.conf without clusterCIDR */
const POD_CIDR = '10.244.0.0/16';

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
  clusterCIDR: string;
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
    clusterCIDR: str(doc.clusterCIDR),
  };
}

// ---------------------------------------------------------------------------------------------
// The Services' netfilter state, as kube-proxy writes it (kube-proxy-fixture.sh applies it)


interface Dataplane {
  nat: string;
  raw: string;
  ipset: string;
  ipvs: string;
  /** nftables mode: an `nft -f` file replacing both kube-proxy tables at once */
  nft: string;
  /** the ClusterIPs, one a line */
  vips: string;
}

/** kube-proxy's nftables tables for the Services, in one `nft -f` transaction: made if missing, deleted, made anew. */
function nftTables(services: LabService[], nodeIP: string, clusterCIDR: string): string {
  const gen: GenService[] = services.map((svc) => ({
    namespace: svc.namespace,
    name: svc.name,
    clusterIP: svc.clusterIP,
    ports: [
      {
        name: svc.portName ?? '',
        port: svc.port,
        protocol: svc.protocol ?? 'TCP',
        ...(svc.nodePort !== undefined ? { nodePort: svc.nodePort } : {}),
        endpoints: svc.backends.map((b) => ({ ip: b.ip, port: b.port })),
      },
    ],
  }));
  // kube-proxy's default nodePortAddresses in nftables mode is the node's primary address
  const nodeAddresses = nodeIP ? [nodeIP] : [];
  return (['ip', 'ip6'] as const)
    .map((family) => {
      const v6 = family === 'ip6';
      const table = kubeProxyNftables(gen, { family: v6 ? 'ipv6' : 'ipv4', nodeAddresses, ...(v6 ? {} : { clusterCIDR }) });
      return `table ${family} kube-proxy\ndelete table ${family} kube-proxy\n${table}`;
    })
    .join('');
}

function dataplane(mode: string, services: LabService[], fault: 'drop' | undefined, nodeIP: string, scheduler: string, clusterCIDR: string): Dataplane {
  const nat: string[] = [];
  const rules: string[] = [];
  const chain = (name: string) => nat.push(`:${name} - [0:0]`);
  const masq = [
    '-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
  const probability = (i: number, n: number) => (i < n - 1 ? ` -m statistic --mode random --probability ${(1 / (n - i)).toFixed(11)}` : '');
  const ipset: string[] = [];
  const ipvs: string[] = [];

  for (const c of ['KUBE-SERVICES', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ']) chain(c);
  rules.push(...masq);
  if (mode === 'iptables') {
    chain('KUBE-NODEPORTS');
    for (const svc of services) {
      const name = `${svc.namespace}/${svc.name}${svc.portName ? `:${svc.portName}` : ''}`;
      const proto = (svc.protocol ?? 'TCP').toLowerCase();
      const svcChain = servicePortChainName(name, proto);
      chain(svcChain);
      if (svc.backends.length === 0) continue;
      // Traffic not from a pod is masqueraded; that includes a node's own, sent from a ClusterIP
      // that ipvs mode left on kube-ipvs0.
      rules.push(`-A ${svcChain} ! -s ${clusterCIDR} -d ${svc.clusterIP}/32 -p ${proto} -m comment --comment "${name} cluster IP" -m ${proto} --dport ${svc.port} -j KUBE-MARK-MASQ`);
      rules.push(`-A KUBE-SERVICES -d ${svc.clusterIP}/32 -p ${proto} -m comment --comment "${name} cluster IP" -m ${proto} --dport ${svc.port} -j ${svcChain}`);
      if (svc.nodePort !== undefined) {
        rules.push(`-A KUBE-NODEPORTS -p ${proto} -m comment --comment "${name}" -m ${proto} --dport ${svc.nodePort} -j KUBE-MARK-MASQ`);
        rules.push(`-A KUBE-NODEPORTS -p ${proto} -m comment --comment "${name}" -m ${proto} --dport ${svc.nodePort} -j ${svcChain}`);
      }
      svc.backends.forEach((b, i) => {
        const ep = `${b.ip}:${b.port}`;
        const sepChain = servicePortEndpointChainName(name, proto, ep);
        chain(sepChain);
        rules.push(`-A ${svcChain} -m comment --comment "${name} -> ${ep}"${probability(i, svc.backends.length)} -j ${sepChain}`);
        rules.push(`-A ${sepChain} -s ${b.ip}/32 -m comment --comment "${name}" -j KUBE-MARK-MASQ`);
        rules.push(`-A ${sepChain} -p ${proto} -m comment --comment "${name}" -m ${proto} -j DNAT --to-destination ${ep}`);
      });
    }
    rules.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  } else if (mode === 'ipvs') {
    chain('KUBE-NODE-PORT');
    chain('KPM-LAB-IPVS-EMULATION');
    ipset.push(
      'create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536',
      'create KUBE-NODE-PORT-TCP bitmap:port range 0-65535',
      'flush KUBE-CLUSTER-IP',
      'flush KUBE-NODE-PORT-TCP',
    );
    rules.push(
      '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ',
      '-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT',
      '-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT',
      '-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port for masquerade purpose" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ',
    );
    const emulate = (match: string, name: string, backends: LabService['backends']) =>
      backends.forEach((b, i) => {
        const ep = `${b.ip}:${b.port}`;
        rules.push(`-A KPM-LAB-IPVS-EMULATION ${match} -m comment --comment "kpm-lab TEST FIXTURE, IPVS emulation: ${name} -> ${ep}"${probability(i, backends.length)} -j DNAT --to-destination ${ep}`);
      });
    for (const svc of services) {
      const name = `${svc.namespace}/${svc.name}`;
      const vs = `${svc.clusterIP}:${svc.port}`;
      ipset.push(`add KUBE-CLUSTER-IP ${svc.clusterIP},tcp:${svc.port}`);
      ipvs.push(`-A -t ${vs} -s ${scheduler}`, ...svc.backends.map((b) => `-a -t ${vs} -r ${b.ip}:${b.port} -m -w 1`));
      // Locally sent packets to a VIP on kube-ipvs0 leave with the VIP as source: without SNAT the
      // backend's replies would not find their way back.
      rules.push(`-A KPM-LAB-IPVS-EMULATION -d ${svc.clusterIP}/32 -p tcp -m tcp --dport ${svc.port} -j KUBE-MARK-MASQ`);
      emulate(`-d ${svc.clusterIP}/32 -p tcp -m tcp --dport ${svc.port}`, name, svc.backends);
      if (svc.nodePort !== undefined) {
        ipset.push(`add KUBE-NODE-PORT-TCP ${svc.nodePort}`);
        if (nodeIP) ipvs.push(`-A -t ${nodeIP}:${svc.nodePort} -s ${scheduler}`, ...svc.backends.map((b) => `-a -t ${nodeIP}:${svc.nodePort} -r ${b.ip}:${b.port} -m -w 1`));
        // IPVS masquerades NodePort traffic, so replies come back through this node
        rules.push(`-A KPM-LAB-IPVS-EMULATION -p tcp -m addrtype --dst-type LOCAL -m tcp --dport ${svc.nodePort} -j KUBE-MARK-MASQ`);
        emulate(`-p tcp -m addrtype --dst-type LOCAL -m tcp --dport ${svc.nodePort}`, name, svc.backends);
      }
    }
  }

  const raw = ['*raw', ':KPM-LAB-DATAPLANE-FAULT - [0:0]'];
  if (fault === 'drop') {
    for (const svc of services) {
      raw.push(`-A KPM-LAB-DATAPLANE-FAULT -d ${svc.clusterIP}/32 -p tcp -m tcp --dport ${svc.port} -m comment --comment "kpm-lab TEST FIXTURE: injected fault, drops ${svc.namespace}/${svc.name}" -j DROP`);
    }
  }
  raw.push('COMMIT');
  const text = (lines: string[]) => (lines.length ? `${lines.join('\n')}\n` : '');
  const vips = mode === 'iptables' || mode === 'ipvs' || mode === 'nftables' ? [...new Set(services.map((svc) => svc.clusterIP))] : [];
  const nft = mode === 'nftables' ? nftTables(services, nodeIP, clusterCIDR) : '';
  return { nat: text([...nat, ...rules]), raw: text(raw), ipset: text(ipset), ipvs: text(ipvs), nft, vips: text(vips) };
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

  // Written on every start, so that nothing of an earlier start's Services or fault lingers.
  const shipDataplane = (dp: Dataplane): string => {
    const put = (name: keyof Dataplane) => `printf %s ${sq(Buffer.from(dp[name]).toString('base64'))} | base64 -d >"$d/dataplane/${name}"`;
    return `mkdir -p "$d/dataplane" && ${put('nat')} && ${put('raw')} && ${put('ipset')} && ${put('ipvs')} && ${put('nft')} && ${put('vips')}`;
  };

  async function start(node: string, config: KubeProxyConfig, info?: StartInfo): Promise<StartResult> {
    const host = hostOf(node);
    const s = settings(config.raw);
    const args = [config.mode, config.metricsBindAddress, s.healthzBindAddress, s.scheduler, service, endpoints.join(',')];
    const nodeAddress = info?.internalIP ?? lab.hosts.find((h) => h.name === host)!.address;
    const dp = dataplane(config.mode, opts.services ?? [], opts.dataplaneFault?.(node, config.mode), nodeAddress, s.scheduler || 'rr', s.clusterCIDR || POD_CIDR);
    const r = await serial(host, () => lab.exec(host, `${ship()} && ${shipDataplane(dp)} && exec bash "$d/${CTL}" run ${args.map(sq).join(' ')}`));
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

// ---------------------------------------------------------------------------------------------
// A Service backend

const BACKEND_DIR = '/run/kpm-lab-backend';
const BACKEND_SCRIPT = `# kpm-lab TEST BACKEND: a Service endpoint for dataplane tests; not kube-proxy, not the tool under test.
# Answers every GET with 200 and the given body; dies with its host.
import base64
import http.server
import socketserver
import sys

port = int(sys.argv[1])
body = base64.b64decode(sys.argv[2])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain; charset=utf-8')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):
        # HTTPServer's own server_bind does a reverse DNS lookup, which a lab host cannot answer.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


Server(('0.0.0.0', port), Handler).serve_forever()
`;

/**
 * Start a TEST BACKEND on `host` (in its namespaces, in the background): an HTTP server on
 * 0.0.0.0:`port` answering 200 with `body` (default "<host>:<port>\n").  Resolves once it answers.
 */
export async function startBackend(lab: Lab, host: string, port: number, body?: string): Promise<void> {
  const b64 = (t: string) => sq(Buffer.from(t).toString('base64'));
  const script = `${BACKEND_DIR}/kpm-lab-test-backend.py`;
  const cmd = [
    `mkdir -p ${BACKEND_DIR}`,
    `printf %s ${b64(BACKEND_SCRIPT)} | base64 -d >${script}`,
    `(setsid python3 ${script} ${port} ${b64(body ?? `${host}:${port}\n`)} </dev/null >>${BACKEND_DIR}/${port}.log 2>&1 &)`,
    `for _ in $(seq 1 100); do curl -s -o /dev/null --max-time 1 http://127.0.0.1:${port}/ && exit 0; sleep 0.05; done`,
    `tail -n 3 ${BACKEND_DIR}/${port}.log >&2; exit 1`,
  ].join('\n');
  const r = await lab.exec(host, cmd);
  if (r.code !== 0) throw new Error(`test backend on ${host}:${port} did not start: ${r.stderr.trim()}`);
}

/**
 * The API objects of a lab Service: the Service (ClusterIP, one TCP port) and an EndpointSlice with
 * its backends, ready. For the in-repo API server's store.
 */
export function labServiceObjects(svc: LabService, targetPort = svc.backends[0]?.port ?? 8080): { service: object; slice: object } {
  const port = { ...(svc.portName ? { name: svc.portName } : {}), protocol: 'TCP' };
  return {
    service: {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: svc.name, namespace: svc.namespace },
      spec: { type: svc.nodePort ? 'NodePort' : 'ClusterIP', clusterIP: svc.clusterIP, clusterIPs: [svc.clusterIP], ports: [{ ...port, port: svc.port, targetPort, ...(svc.nodePort ? { nodePort: svc.nodePort } : {}) }] },
    },
    slice: {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${svc.name}-lab1`, namespace: svc.namespace, labels: { 'kubernetes.io/service-name': svc.name } },
      addressType: 'IPv4',
      ports: [{ ...port, port: targetPort }],
      endpoints: svc.backends.map((b) => ({ addresses: [b.ip], conditions: { ready: true } })),
    },
  };
}

/**
 * The API server's seeded kube-proxy pods are running only on paper: start the fixture kube-proxy on
 * each node's host in the mode the ConfigMap has (iptables, kubeadm's default), as their kubelet would.
 */
export async function startSeededKubeProxies(api: { runtime: NodeRuntime; store: { get(r: string, ns: string, n: string): unknown } }, nodes: string[]): Promise<void> {
  const raw = (api.store.get('configmaps', 'kube-system', 'kube-proxy') as { data: Record<string, string> }).data['config.conf']!;
  for (const n of nodes) {
    const r = await api.runtime.start(n, { mode: 'iptables', metricsBindAddress: '127.0.0.1:10249', raw } as never, undefined as never);
    if (!r.ready) throw new Error(`the fixture kube-proxy did not start on ${n}: ${r.log.join('\n')}`);
  }
}
