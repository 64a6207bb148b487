import { readFileSync, statSync } from 'node:fs';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import type { Host } from '../inventory/types.ts';
import { KubeClient, loadKubeConfig } from '../cluster/kube.ts';
import { readProxyConfig } from '../cluster/kube-proxy-config.ts';
import { nodeCheckScript, parseNodeCheck } from '../cluster/node-checks.ts';
import { kubeProxyNodes } from '../cluster/preflight.ts';
import { nodeReadScript, parseDataplaneDump } from '../dataplane/node-read.ts';
import { parseIptablesSave } from '../dataplane/iptables-save.ts';
import { parseIpvsadm } from '../dataplane/ipvsadm.ts';
import { parseNftables } from '../dataplane/nftables.ts';
import {
  compareWithEndpoints,
  parseServiceRef,
  renderTraceTree,
  traceIptables,
  traceIpvs,
  traceNftables,
  type ExpectedEndpoint,
  type ExpectedFrontend,
  type ServiceRef,
  type ServiceTrace,
} from '../dataplane/trace.ts';
import { SessionPool } from '../remote/sessions.ts';
import { EXIT_CODES as EXIT } from './exit-codes.ts';
import { loadTargets, type ReadAccess } from './load-targets.ts';
import { UsageError } from './provision.ts';
import { kubeTargetOf } from './status.ts';

// `trace`: where does this Service's traffic go, on a node, really. Live: the Service and its
// EndpointSlices from the API, the node's dataplane over SSH (one exec), walked by the dataplane
// parsers and compared with the endpoints. Offline (--dump): a saved iptables-save, ipvsadm -Ln or
// nft list output, with no cluster and no SSH.

export interface TraceOptions extends ReadAccess {
  service: string;
  json: boolean;
  port?: string;
  /** live */
  inventory?: string;
  node?: string;
  /** offline */
  dump?: string;
  clusterIP?: string;
  nodePort?: number;
  protocol?: string;
}

/** Exit codes: traced and in line with the EndpointSlices (0); traced with warnings (2); not found at all (3). */
export const TRACE_EXIT = { clean: EXIT.ok, warnings: EXIT.failed, absent: 3 } as const;

/** Larger dumps are refused rather than read into memory: a 10,000-Service node's dump is ~20 MB. */
export const MAX_DUMP_BYTES = 256 * 1024 * 1024;

export async function trace(opts: TraceOptions): Promise<number> {
  const out = opts.out ?? ((l: string) => process.stdout.write(l + '\n'));
  const err = opts.err ?? ((l: string) => process.stderr.write(l + '\n'));
  try {
    const ref = parseServiceRef(opts.service);
    if (!ref) throw new UsageError(`${JSON.stringify(opts.service)} is not NAMESPACE/SERVICE[:PORT]`);
    if (opts.port !== undefined) ref.port = /^\d+$/.test(opts.port) ? Number(opts.port) : opts.port;
    const result = opts.dump ? traceDump(opts, ref) : await traceLive(opts, ref, err);
    if (opts.json) out(JSON.stringify(result, null, 2));
    else out(renderTraceTree(result).trimEnd());
    if (result.frontends.length === 0) return TRACE_EXIT.absent;
    return result.warnings.length ? TRACE_EXIT.warnings : TRACE_EXIT.clean;
  } catch (e) {
    if (e instanceof LoadFailed) return e.code;
    if (e instanceof UsageError || (e as Error).name === 'LimitError') {
      err(`trace: ${(e as Error).message}`);
      return EXIT.usage;
    }
    err(`trace: ${(e as Error).message}`);
    return EXIT.error;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Offline

/** iptables-save, ipvsadm -Ln or nft list? Told by the lines only each of them prints. */
export function dumpKind(text: string): 'iptables' | 'ipvs' | 'nftables' | undefined {
  if (/^\s*table\s+(ip6?|inet)\s+\S+\s*\{/m.test(text)) return 'nftables';
  if (/^(\*(nat|filter|mangle|raw)\b|:KUBE-\S+ |-A \S+ )/m.test(text)) return 'iptables';
  if (/^(IP Virtual Server version|Prot LocalAddress:Port|(TCP|UDP|SCTP)\s+\S+:\d+\s|FWM\s+\d+|\s+->\s+\S+:\d+|-A -[tuf] )/m.test(text)) return 'ipvs';
  return undefined;
}

function traceDump(opts: TraceOptions, ref: ServiceRef): ServiceTrace {
  const file = opts.dump!;
  let size: number;
  try {
    size = statSync(file).size;
  } catch (e) {
    throw new UsageError(`--dump ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (size > MAX_DUMP_BYTES) throw new UsageError(`--dump ${file}: ${size} bytes, more than the ${MAX_DUMP_BYTES} this reads`);
  const text = readFileSync(file, 'utf8');
  const kind = dumpKind(text);
  if (!kind) {
    throw new UsageError(`--dump ${file}: neither iptables-save, ipvsadm -Ln nor nft list output (no table, chain, rule or virtual service line)`);
  }
  const service = `${ref.namespace}/${ref.name}`;
  if (kind === 'iptables') return traceIptables(parseIptablesSave(text), ref, opts.protocol ? { protocol: opts.protocol } : {});
  if (kind === 'nftables') return traceNftables(parseNftables(text), ref, opts.protocol ? { protocol: opts.protocol } : {});
  // IPVS knows nothing of Services: the caller says which virtual service is this one
  if (!opts.clusterIP || typeof ref.port !== 'number') {
    throw new UsageError(`--dump ${file} is ipvsadm output, which has no Service names: give --cluster-ip IP and --port NUMBER (or ${service}:NUMBER)`);
  }
  return traceIpvs(parseIpvsadm(text), {
    service,
    clusterIP: opts.clusterIP,
    port: ref.port,
    ...(opts.nodePort ? { nodePort: opts.nodePort } : {}),
    ...(opts.protocol ? { protocol: opts.protocol.toUpperCase() } : {}),
  });
}

// ---------------------------------------------------------------------------------------------------------
// Live

/** The inventory could not be loaded: its message is already out; this carries the exit code. */
class LoadFailed extends Error {
  constructor(readonly code: number) {
    super('inventory');
  }
}

async function traceLive(opts: TraceOptions, ref: ServiceRef, err: (line: string) => void): Promise<ServiceTrace> {
  if (!opts.inventory) throw new UsageError('give --inventory (live: the Service from the API, the dataplane over SSH) or --dump FILE (offline)');
  const loaded = await loadTargets(opts.inventory, undefined, err, opts.knownHosts);
  if ('code' in loaded) throw new LoadFailed(loaded.code);
  const { inv, targets } = loaded;
  const namespace = opts.namespace ?? 'kube-system';
  const kube = new KubeClient(loadKubeConfig(kubeTargetOf(opts.kube, targets[0] ?? inv.hosts[0])));
  const [svc, slices, cm, nodes, pods] = await Promise.all([
    kube.readService(ref.namespace, ref.name),
    kube.listEndpointSlices(ref.namespace, ref.name),
    kube.readConfigMap(namespace, opts.configMap ?? 'kube-proxy'),
    kube.listNodes(),
    kube.listPods(namespace, 'k8s-app=kube-proxy'),
  ]);
  const key = opts.configKey ?? 'config.conf';
  const text = cm.data?.[key];
  if (text === undefined) throw new Error(`ConfigMap ${namespace}/${opts.configMap ?? 'kube-proxy'} has no key ${key}`);
  const conf = readProxyConfig(text, key);

  const mappings = kubeProxyNodes(nodes, pods.items, inv.hosts).filter((m) => m.host);
  const mapping = opts.node
    ? mappings.find((m) => m.node === opts.node || m.host!.name === opts.node)
    : mappings.find((m) => targets.some((t) => t.name === m.host!.name));
  if (!mapping) {
    throw new UsageError(
      opts.node
        ? `--node ${opts.node}: no node of that name (or inventory host) runs kube-proxy; known: ${mappings.map((m) => m.node).join(', ') || 'none'}`
        : 'no kube-proxy node of the cluster is in the inventory (matched by node name or InternalIP)',
    );
  }
  const host: Host = mapping.host!;
  const sessions = new SessionPool({ acceptNewHostKeys: false, ...(opts.becomePassword !== undefined ? { becomePassword: opts.becomePassword } : {}) });
  let stdout: string;
  try {
    const session = await sessions.get(host);
    const script = [nodeCheckScript(conf.metricsBindAddress), nodeReadScript('dump')].map((p) => `(\n${p}\n)`).join('\n');
    stdout = (await session.run(script, { timeoutMs: 120_000 })).stdout;
  } finally {
    await sessions.closeAll();
  }
  const running = parseNodeCheck(stdout);
  const dump = parseDataplaneDump(stdout);
  const mode = running.mode ?? conf.mode;
  const nodeAddresses = mapping.internalIPs.length ? mapping.internalIPs : [host.connection.address];
  const service = `${ref.namespace}/${ref.name}`;

  let result: ServiceTrace;
  if (mode === 'ipvs') {
    if (dump.ipvs === undefined) throw new Error(`${mapping.node} runs ipvs but its IPVS table could not be read: ${dump.errors.join('; ') || 'ip_vs is not loaded'}`);
    result = traceServiceIpvs(dump.ipvs, service, svc, ref, nodeAddresses);
  } else if (mode === 'iptables') {
    const families = svc.spec?.ipFamilies ?? ['IPv4'];
    const texts = [families.includes('IPv4') ? dump.iptables : undefined, families.includes('IPv6') ? dump.ip6tables : undefined].filter((t): t is string => t !== undefined);
    if (texts.length === 0) throw new Error(`${mapping.node} runs iptables but its rules could not be read: ${dump.errors.join('; ')}`);
    result = merge(
      service,
      'iptables',
      texts.map((t) => traceIptables(parseIptablesSave(t), ref, { nodeAddresses })),
    );
  } else if (mode === 'nftables') {
    const text = dump.nft;
    if (text === undefined) throw new Error(`${mapping.node} runs nftables but its kube-proxy tables could not be read: ${dump.nftError ?? 'no output'}`);
    const families = (svc.spec?.ipFamilies ?? ['IPv4']).map((f) => (f === 'IPv6' ? 'ip6' : 'ip'));
    const loadBalancerIPs = (svc.status?.loadBalancer?.ingress ?? []).map((i) => i.ip).filter((ip): ip is string => !!ip);
    result = traceNftables(parseNftables(text), ref, { nodeAddresses, families, loadBalancerIPs });
  } else {
    throw new Error(`${mapping.node} runs kube-proxy in ${mode} mode${running.mode ? '' : ` (from the ConfigMap: /proxyMode did not answer: ${running.error})`}; trace reads iptables, ipvs and nftables`);
  }
  if (!running.mode) result.warnings.unshift(`/proxyMode did not answer on ${mapping.node} (${running.error}): mode taken from the ConfigMap`);
  result.warnings.unshift(...dump.errors.map((e) => `${mapping.node}: ${e}`).filter((w) => !/ip6tables-save: not installed/.test(w)));
  const compared = compareWithEndpoints(result, expectedEndpoints(slices, svc, ref), { frontends: expectedFrontends(svc, ref, nodeAddresses) });
  return { ...compared, node: mapping.node } as ServiceTrace;
}

function servicePorts(svc: V1Service, ref: ServiceRef) {
  const ports = svc.spec?.ports ?? [];
  if (ref.port === undefined) return ports;
  const chosen = ports.filter((p) => p.name === ref.port || p.port === ref.port);
  if (chosen.length === 0) {
    throw new UsageError(`Service ${svc.metadata?.namespace}/${svc.metadata?.name} has no port ${ref.port} (its ports: ${ports.map((p) => `${p.name ? `${p.name}=` : ''}${p.port}/${p.protocol ?? 'TCP'}`).join(', ')})`);
  }
  return chosen;
}

function traceServiceIpvs(table: string, service: string, svc: V1Service, ref: ServiceRef, nodeAddresses: string[]): ServiceTrace {
  const parsed = parseIpvsadm(table);
  const clusterIPs = (svc.spec?.clusterIPs ?? [svc.spec?.clusterIP]).filter((ip): ip is string => !!ip && ip !== 'None');
  const traces = servicePorts(svc, ref).map((p) =>
    traceIpvs(parsed, {
      service,
      protocol: p.protocol ?? 'TCP',
      clusterIP: clusterIPs,
      port: p.port,
      // pairs the endpoints with this port even when two ports share a target port
      portName: p.name ?? '',
      ...(p.nodePort ? { nodePort: p.nodePort, nodeAddresses } : {}),
      externalIPs: svc.spec?.externalIPs ?? [],
      loadBalancerIPs: (svc.status?.loadBalancer?.ingress ?? []).map((i) => i.ip).filter((ip): ip is string => !!ip),
    }),
  );
  return merge(service, 'ipvs', traces);
}

function merge(service: string, mode: 'iptables' | 'ipvs', traces: ServiceTrace[]): ServiceTrace {
  return {
    service,
    mode,
    frontends: traces.flatMap((t) => t.frontends),
    warnings: [...new Set(traces.flatMap((t) => t.warnings))],
    ...(traces.some((t) => t.detached?.length) ? { detached: traces.flatMap((t) => t.detached ?? []) } : {}),
  };
}

/** The ready endpoints of the chosen ports, as "ip:targetPort", with the port's name. */
export function expectedEndpoints(slices: V1EndpointSlice[], svc: V1Service, ref: ServiceRef): ExpectedEndpoint[] {
  const names = new Set(servicePorts(svc, ref).map((p) => p.name ?? ''));
  const out: ExpectedEndpoint[] = [];
  for (const slice of slices) {
    for (const port of slice.ports ?? []) {
      if (!names.has(port.name ?? '') || port.port === undefined) continue;
      for (const ep of slice.endpoints ?? []) {
        if (ep.conditions?.ready === false) continue;
        for (const ip of ep.addresses) out.push({ address: ip.includes(':') ? `[${ip}]:${port.port}` : `${ip}:${port.port}`, portName: port.name ?? '' });
      }
    }
  }
  return out;
}

/** The frontends the Service's spec asks for: ClusterIP (each family), and the NodePort of each chosen port. */
export function expectedFrontends(svc: V1Service, ref: ServiceRef, nodeAddresses: string[]): ExpectedFrontend[] {
  const ips = (svc.spec?.clusterIPs ?? [svc.spec?.clusterIP]).filter((ip): ip is string => !!ip && ip !== 'None');
  const out: ExpectedFrontend[] = [];
  for (const p of servicePorts(svc, ref)) {
    const protocol = p.protocol ?? 'TCP';
    for (const ip of ips) out.push({ kind: 'ClusterIP', address: ip.includes(':') ? `[${ip}]:${p.port}` : `${ip}:${p.port}`, protocol });
    if (p.nodePort && (svc.spec?.type === 'NodePort' || svc.spec?.type === 'LoadBalancer')) {
      out.push({ kind: 'NodePort', address: nodeAddresses[0] ? `${nodeAddresses[0]}:${p.nodePort}` : `*:${p.nodePort}`, protocol });
    }
  }
  return out;
}
