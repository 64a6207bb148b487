// TEST FIXTURE, NOT KUBE-PROXY: a stand-in kube-proxy on the VM tier's Debian guests, for the test
// API server's simulated DaemonSet controller and kubelet (test/apiserver/).  When that server
// (re)starts the kube-proxy pod of a node, this runtime runs guest/kube-proxy-fixture.sh in the guest
// of the same name over SSH.  The guest has Debian's stock kernel, so the fixture's checks and its
// dataplane are real: in ipvs mode it checks ipset, runs moby/ipvs's `modprobe -va ip_vs`, creates
// and deletes kube-proxy's dummy virtual server with the configured scheduler, then programs real
// IPVS virtual servers with the real ipvsadm for the Services below (ClusterIPs on kube-ipvs0,
// the KUBE-CLUSTER-IP ipset), and in iptables mode kube-proxy's DNAT chains.  /proxyMode is served
// on metricsBindAddress in the guest.
//
// What it answers the simulated kubelet with are kube-proxy's own log lines (1.28-1.31 wording, the
// file:line positions of test/lab/kube-proxy-fixture.ts): "Using ipvs Proxier", and on failure
// "can't use the IPVS proxier: ..." after the same checks, so a node the tool left unprepared
// crash-loops here as it would in a cluster.
//
// The Services' endpoints are TEST BACKENDS in each guest (its own address, 10.0.2.15): an HTTPS
// server on :6443 for default/kubernetes and an HTTP server on :8080 for default/web.  Traffic to a
// ClusterIP from the node itself therefore crosses the node's real IPVS (or its real iptables DNAT
// before the switch) and comes back, which is what the tool's Service probes look at.

import { servicePortChainName, servicePortEndpointChainName } from '../../tasks/dataplane/chain-names.ts';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { klog, type KubeProxyConfig, type NodeRuntime, type StartInfo, type StartResult } from '../apiserver/server.ts';
import { GUEST_IP, VM_DIR, type VmCluster } from './vm.ts';

export interface VmService {
  namespace: string;
  name: string;
  clusterIP: string;
  port: number;
  /** the endpoint in the guest ("ip:port") */
  endpoint: string;
  nodePort?: number;
}

/** default/kubernetes as the test API server has it, with the guest's HTTPS backend as the API server */
export const KUBERNETES_SERVICE: VmService = { namespace: 'default', name: 'kubernetes', clusterIP: '10.96.0.1', port: 443, endpoint: `${GUEST_IP}:6443` };
/** a web Service, ClusterIP and NodePort, backed by the guest's HTTP backend */
export const WEB_SERVICE: VmService = { namespace: 'default', name: 'web', clusterIP: '10.96.100.10', port: 80, endpoint: `${GUEST_IP}:8080`, nodePort: 30080 };

/** The Service object for the test API server's store. */
export function serviceObject(s: VmService): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: s.name, namespace: s.namespace },
    spec: {
      type: s.nodePort ? 'NodePort' : 'ClusterIP',
      clusterIP: s.clusterIP,
      clusterIPs: [s.clusterIP],
      ports: [{ name: 'http', port: s.port, protocol: 'TCP', targetPort: Number(s.endpoint.split(':')[1]), ...(s.nodePort ? { nodePort: s.nodePort } : {}) }],
    },
  };
}

/** Its EndpointSlice: the one endpoint the fixture programs, so `trace` finds the dataplane in line with it. */
export function endpointSliceObject(s: VmService): Record<string, unknown> {
  const [ip, port] = s.endpoint.split(':');
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${s.name}-vm1`, namespace: s.namespace, labels: { 'kubernetes.io/service-name': s.name } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: Number(port), protocol: 'TCP' }],
    endpoints: [{ addresses: [ip], conditions: { ready: true } }],
  };
}

const SCRIPT = path.join(VM_DIR, 'guest', 'kube-proxy-fixture.sh');
const GUEST_DIR = '/run/kpm-vm-kube-proxy';
const sq = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

// ---------------------------------------------------------------------------------------------
// kube-proxy's nat chains for the Services, as iptables-restore input (--noflush: only these chains)


function natRules(mode: string, services: VmService[]): string {
  const chains: string[] = [];
  const rules: string[] = [];
  if (mode === 'iptables') {
    chains.push('KUBE-SERVICES', 'KUBE-NODEPORTS');
    for (const s of services) {
      const name = `${s.namespace}/${s.name}`;
      const svc = servicePortChainName(name, 'tcp');
      const sep = servicePortEndpointChainName(name, 'tcp', s.endpoint);
      chains.push(svc, sep);
      rules.push(
        `-A KUBE-SERVICES -d ${s.clusterIP}/32 -p tcp -m comment --comment "${name} cluster IP" -m tcp --dport ${s.port} -j ${svc}`,
        `-A ${svc} -m comment --comment "${name} -> ${s.endpoint}" -j ${sep}`,
        `-A ${sep} -p tcp -m comment --comment "${name}" -m tcp -j DNAT --to-destination ${s.endpoint}`,
      );
      if (s.nodePort) rules.push(`-A KUBE-NODEPORTS -p tcp -m comment --comment "${name}" -m tcp --dport ${s.nodePort} -j ${svc}`);
    }
    rules.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  } else if (mode === 'ipvs') {
    chains.push('KUBE-SERVICES', 'KUBE-NODE-PORT');
    rules.push(
      '-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT',
      '-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT',
      '-A KUBE-NODE-PORT -p tcp -m comment --comment "Kubernetes nodeport TCP port" -m set --match-set KUBE-NODE-PORT-TCP dst -j ACCEPT',
    );
  }
  return ['*nat', ...chains.map((c) => `:${c} - [0:0]`), ...rules, 'COMMIT', ''].join('\n');
}

const servicesText = (services: VmService[]) => services.map((s) => `${s.clusterIP} ${s.port} ${s.nodePort ?? '-'} ${s.endpoint}`).join('\n') + '\n';

// ---------------------------------------------------------------------------------------------
// The runtime

interface Settings {
  rawMode: string;
  scheduler: string;
  nodePortAddressesSet: boolean;
}

function settings(raw: string): Settings {
  let doc: Record<string, unknown> = {};
  try {
    const d: unknown = parse(raw);
    if (d && typeof d === 'object' && !Array.isArray(d)) doc = d as Record<string, unknown>;
  } catch {
    /* the API server has already refused a config.conf kube-proxy could not read */
  }
  const ipvs = doc.ipvs && typeof doc.ipvs === 'object' ? (doc.ipvs as Record<string, unknown>) : {};
  return {
    rawMode: doc.mode === undefined || doc.mode === null ? '' : String(doc.mode),
    scheduler: ipvs.scheduler === undefined || ipvs.scheduler === null ? '' : String(ipvs.scheduler),
    nodePortAddressesSet: Array.isArray(doc.nodePortAddresses) && doc.nodePortAddresses.length > 0,
  };
}

export interface FixtureStart {
  node: string;
  mode: string;
  result: string;
  ready: boolean;
}

export interface VmKubeProxyRuntime extends NodeRuntime {
  /** every start, in order */
  starts: FixtureStart[];
}

export interface VmKubeProxyOptions {
  /** default: KUBERNETES_SERVICE and WEB_SERVICE */
  services?: VmService[];
  /** for "Version info" when start() gets no StartInfo; default v1.31.0 */
  version?: string;
}

/** The kube-proxy TEST FIXTURE on the guests of `vms` as a NodeRuntime; node names are guest names. */
export function vmKubeProxyRuntime(vms: VmCluster, opts: VmKubeProxyOptions = {}): VmKubeProxyRuntime {
  const services = opts.services ?? [KUBERNETES_SERVICE, WEB_SERVICE];
  const script = readFileSync(SCRIPT);
  const starts: FixtureStart[] = [];

  const guestOf = (node: string): string => {
    if (!vms.vms.some((v) => v.name === node)) throw new Error(`kube-proxy test fixture: no guest for node ${node}`);
    return node;
  };
  // One operation at a time per guest: a pod restart's stop and start must not interleave.
  const queues = new Map<string, Promise<unknown>>();
  const serial = <T>(node: string, fn: () => Promise<T>): Promise<T> => {
    const job = (queues.get(node) ?? Promise.resolve()).then(fn);
    queues.set(node, job.catch(() => undefined));
    return job;
  };
  const ship = (files: Record<string, string | Buffer>): string =>
    [`d=${GUEST_DIR}`, 'mkdir -p "$d"', ...Object.entries(files).map(([n, c]) => `printf %s ${sq(b64(c))} | base64 -d >"$d/${n}"`)].join(' && ');

  async function start(node: string, config: KubeProxyConfig, info?: StartInfo): Promise<StartResult> {
    const guest = guestOf(node);
    const s = settings(config.raw);
    const mode = config.mode;
    const scheduler = s.scheduler || 'rr';
    const files = { 'kube-proxy-fixture.sh': script, services: servicesText(services), nat: natRules(mode, services) };
    const cmd = `${ship(files)} && exec bash "$d/kube-proxy-fixture.sh" run ${[mode, config.metricsBindAddress, s.scheduler].map(sq).join(' ')}`;
    const r = await serial(guest, () => vms.exec(guest, cmd, { timeoutMs: 180_000 }));
    const facts = new Map<string, string>();
    for (const line of r.stdout.split('\n')) {
      const m = /^([a-z_0-9]+)=(.*)$/.exec(line);
      if (m) facts.set(m[1]!, m[2]!);
    }
    const result = facts.get('result');
    const text = (k: string) => Buffer.from(facts.get(k) ?? '', 'base64').toString('utf8').trim();
    if (r.code !== 0 || !result) throw new Error(`kube-proxy test fixture on ${guest} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
    if (result === 'fixture-error') throw new Error(`kube-proxy test fixture on ${guest}: ${text('detail')}`);

    const at = new Date();
    const lines: string[] = [];
    const k = (sev: 'I' | 'W' | 'E', where: string, msg: string, kv: Record<string, unknown> = {}) => lines.push(klog(sev, where, msg, kv, at));
    const fatal = (err: string): StartResult => {
      k('E', 'server.go:558', 'Error running ProxyServer', { err });
      k('E', 'run.go:74', 'command failed', { err });
      starts.push({ node, mode, result, ready: false });
      return { ready: false, log: lines };
    };
    const nodeIP = info?.internalIP ?? facts.get('node_ip') ?? '';
    if (s.rawMode === '') k('I', 'server_linux.go:66', 'Using iptables proxy');
    k('I', 'server.go:677', 'Successfully retrieved node IP(s)', { IPs: [nodeIP] });
    k('I', 'conntrack.go:60', 'Setting nf_conntrack_max', { nfConntrackMax: Math.max(32768 * Number(facts.get('ncpu') ?? '1'), 131072) });
    if (mode !== 'nftables' && !s.nodePortAddressesSet) {
      k('E', 'server.go:234', 'Kube-proxy configuration may be incomplete or incorrect', {
        err: 'nodePortAddresses is unset; NodePort connections will be accepted on all local IPs. Consider using `--nodeport-addresses primary`',
      });
    }
    if (result === 'iptables-unavailable') return fatal('iptables is not available on this host');
    k('I', 'server.go:243', 'kube-proxy running in dual-stack mode', { 'primary ipFamily': 'IPv4' });

    if (mode === 'ipvs') {
      if (facts.has('modprobe_exit') && facts.get('modprobe_exit') !== '0') {
        // moby/ipvs logs through logrus when its modprobe fails
        const msg = `Running modprobe ip_vs failed with message: \`${text('modprobe_output')}\`, error: exit status ${facts.get('modprobe_exit')}`;
        lines.push(`time="${at.toISOString().replace(/\.\d{3}Z$/, 'Z')}" level=warning msg=${JSON.stringify(msg)}`);
      }
      const cant = (err: string) => fatal(`can't use the IPVS proxier: ${err}`);
      switch (result) {
        case 'ipset-missing':
          return cant('error getting ipset version, error: executable file not found in $PATH');
        case 'ipset-failed':
          return cant(`error getting ipset version, error: exit status ${facts.get('ipset_exit') ?? '1'}`);
        case 'ipset-old':
          return cant(`ipset version: ${facts.get('ipset_version') ?? ''} is less than min required version: 6.0`);
        case 'ipvs-missing':
          k('I', 'proxier.go:646', 'Dummy VS not created', { scheduler });
          return cant('Ipvs not supported');
        case 'scheduler-missing':
          k('E', 'proxier.go:634', 'Could not create dummy VS', { err: text('dummy_error') || 'no such file or directory', scheduler });
          return cant('no such file or directory');
      }
      k('I', 'server_linux.go:230', 'Using ipvs Proxier');
      if (s.scheduler === '') for (const family of ['IPv4', 'IPv6']) k('I', 'proxier.go:353', 'IPVS scheduler not specified, use rr by default', { ipFamily: family });
    } else if (mode === 'nftables') {
      k('I', 'server_linux.go:292', 'Using nftables Proxier');
      if (result === 'nft-missing') return fatal('unable to create proxier: could not find nftables binary: exec: "nft": executable file not found in $PATH');
    } else {
      k('I', 'server_linux.go:169', 'Using iptables Proxier');
    }
    if (result !== 'ready') throw new Error(`kube-proxy test fixture on ${guest}: unexpected result ${result} in ${mode} mode`);
    k('I', 'server.go:483', 'Version info', { version: info?.version ?? opts.version ?? 'v1.31.0' });
    k('I', 'config.go:197', 'Starting service config controller');
    k('I', 'config.go:104', 'Starting endpoint slice config controller');
    k('I', 'config.go:326', 'Starting node config controller');
    k('I', 'shared_informer.go:320', 'Caches are synced for node config');
    k('I', 'shared_informer.go:320', 'Caches are synced for endpoint slice config');
    k('I', 'shared_informer.go:320', 'Caches are synced for service config');
    starts.push({ node, mode, result, ready: true });
    return { ready: true, log: lines };
  }

  async function stop(node: string): Promise<void> {
    const guest = guestOf(node);
    const r = await serial(guest, () => vms.exec(guest, `f=${GUEST_DIR}/kube-proxy-fixture.sh; [ ! -f "$f" ] || bash "$f" stop`, { timeoutMs: 60_000 }));
    if (r.code !== 0) throw new Error(`kube-proxy test fixture on ${guest}: stop failed (exit ${r.code}): ${r.stderr.trim()}`);
  }

  return { start, stop, starts };
}
