import { trace } from '../../tasks/commands/trace.ts';
import type { ServiceTrace } from '../../tasks/dataplane/trace.ts';
import type { GenService } from '../dataplane-dumps.ts';

// What the trace lab tests share: a generated Service as the API objects trace reads (the Service and
// one EndpointSlice, endpoints on port 8080), and a JSON trace run.

export function genServiceObjects(svc: GenService, endpoints: string[]) {
  const p = svc.ports[0]!;
  const family = svc.clusterIP.includes(':') ? 'IPv6' : 'IPv4';
  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: svc.name, namespace: svc.namespace },
    spec: {
      type: p.nodePort ? 'NodePort' : 'ClusterIP',
      clusterIP: svc.clusterIP,
      clusterIPs: [svc.clusterIP],
      ipFamilies: [family],
      ports: [{ ...(p.name ? { name: p.name } : {}), port: p.port, protocol: p.protocol, targetPort: 8080, ...(p.nodePort ? { nodePort: p.nodePort } : {}) }],
    },
  };
  const slice = {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc.name}-abcde`, namespace: svc.namespace, labels: { 'kubernetes.io/service-name': svc.name } },
    addressType: family,
    ports: [{ ...(p.name ? { name: p.name } : {}), port: 8080, protocol: p.protocol }],
    endpoints: endpoints.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
  };
  return { service, slice };
}

/** `trace SERVICE` on `node` with --json (unless `extra` says otherwise): exit code, output, the parsed trace. */
export async function runTraceJson(inventory: string, node: string, service: string, extra: Partial<Parameters<typeof trace>[0]> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const opts = { service, inventory, node, json: true, out: (l: string) => out.push(l), err: (l: string) => err.push(l), ...extra };
  const code = await trace(opts);
  return { code, err: err.join('\n'), out: out.join('\n'), trace: opts.json && code < 4 && out.length ? (JSON.parse(out.join('\n')) as ServiceTrace) : undefined };
}
