import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { joinHostPort, normalizeIp } from '../../tasks/dataplane/addresses.ts';
import { parseIptablesSave } from '../../tasks/dataplane/iptables-save.ts';
import { parseIpvsadm } from '../../tasks/dataplane/ipvsadm.ts';
import {
  compareWithEndpoints,
  listIptablesServices,
  parseServiceRef,
  renderTraceTree,
  traceIptables,
  traceIpvs,
  type ServiceTrace,
  type TraceFrontend,
} from '../../tasks/dataplane/trace.ts';
import { expectedFrontends, kubeProxyIptablesSave, kubeProxyIpvsadm, type GenService } from '../dataplane-dumps.ts';

// Tracing a Service through a dump: the operator's wordpress-svc excerpts, then dumps generated the way
// kube-proxy 1.20 and 1.28 write them, for IPv4 and IPv6, where the trace must find exactly the
// frontends, endpoints and shares the dump was made from.

const WP = path.join(import.meta.dirname, 'dataplane-fixtures/wordpress-svc');
const wpIptables = parseIptablesSave(readFileSync(path.join(WP, 'iptables-save.excerpt.txt'), 'utf8'));
const wpIpvs = parseIpvsadm(readFileSync(path.join(WP, 'ipvsadm-Ln.excerpt.txt'), 'utf8'));

describe('haha/wordpress-svc', () => {
  it('iptables: 2 endpoints at 50 % each, the second one unknown because its chain is not in the excerpt', () => {
    const t = traceIptables(wpIptables, 'haha/wordpress-svc');
    expect(t.service).toBe('haha/wordpress-svc');
    expect(t.mode).toBe('iptables');
    expect(t.frontends.map((f) => [f.kind, f.address, f.protocol])).toEqual([
      ['ClusterIP', '10.200.61.128:80', 'TCP'],
      ['NodePort', '*:30080', 'TCP'],
    ]);
    for (const f of t.frontends) {
      expect(f.backends).toEqual([
        { address: '10.100.1.69:80', share: 0.5, chain: 'KUBE-SEP-KQTOOYZ7OXINNODS' },
        { address: '?', share: 0.5, chain: 'KUBE-SEP-6ECN3VOPG4GTUUTC', resolved: false },
      ]);
      expect(f.path).toEqual([f.kind === 'NodePort' ? 'KUBE-NODEPORTS' : 'KUBE-SERVICES', 'KUBE-SVC-JTMI3DYZIM6D5ZYY']);
    }
    expect(t.frontends[0]!.masquerade).toEqual([{ chain: 'KUBE-SVC-JTMI3DYZIM6D5ZYY', condition: '! -s 10.100.0.0/16', line: 2 }]);
    expect(t.frontends[1]!.masquerade).toEqual([{ chain: 'KUBE-SVC-JTMI3DYZIM6D5ZYY', condition: 'always', line: 5 }]);
    expect(t.warnings).toEqual([
      'ClusterIP 10.200.61.128:80/TCP: KUBE-SEP-6ECN3VOPG4GTUUTC (50.0 %) is not in the dump: its DNAT address is unknown',
      'NodePort *:30080/TCP: KUBE-SEP-6ECN3VOPG4GTUUTC (50.0 %) is not in the dump: its DNAT address is unknown',
    ]);
  });

  it('iptables: the same with the node address given, and with a port filter', () => {
    const t = traceIptables(wpIptables, 'haha/wordpress-svc', { nodeAddresses: ['192.168.1.21'] });
    expect(t.frontends[1]!.address).toBe('192.168.1.21:30080');
    expect(traceIptables(wpIptables, 'haha/wordpress-svc:80').frontends).toHaveLength(2);
    expect(traceIptables(wpIptables, 'haha/wordpress-svc:30080').frontends.map((f) => f.kind)).toEqual(['ClusterIP', 'NodePort']);
    const none = traceIptables(wpIptables, 'haha/wordpress-svc:https');
    expect(none.frontends).toEqual([]);
    expect(none.warnings).toEqual(['haha/wordpress-svc has no port https in the dump']);
    expect(traceIptables(wpIptables, 'haha/other').warnings).toEqual(['no frontend of haha/other in the dump (no KUBE-SERVICES or KUBE-NODEPORTS rule names it)']);
  });

  it('iptables: the tree', () => {
    expect(renderTraceTree(traceIptables(wpIptables, 'haha/wordpress-svc'))).toBe(
      [
        'haha/wordpress-svc (iptables)',
        '├─ ClusterIP 10.200.61.128:80/TCP  KUBE-SERVICES → KUBE-SVC-JTMI3DYZIM6D5ZYY  masquerade: ! -s 10.100.0.0/16',
        '│  ├─ 50.0 %  KUBE-SEP-KQTOOYZ7OXINNODS → DNAT 10.100.1.69:80',
        '│  └─ 50.0 %  KUBE-SEP-6ECN3VOPG4GTUUTC → DNAT ?   (chain not in the dump)',
        '└─ NodePort *:30080/TCP  KUBE-NODEPORTS → KUBE-SVC-JTMI3DYZIM6D5ZYY  masquerade: always',
        '   ├─ 50.0 %  KUBE-SEP-KQTOOYZ7OXINNODS → DNAT 10.100.1.69:80',
        '   └─ 50.0 %  KUBE-SEP-6ECN3VOPG4GTUUTC → DNAT ?   (chain not in the dump)',
        'warnings:',
        '  ! ClusterIP 10.200.61.128:80/TCP: KUBE-SEP-6ECN3VOPG4GTUUTC (50.0 %) is not in the dump: its DNAT address is unknown',
        '  ! NodePort *:30080/TCP: KUBE-SEP-6ECN3VOPG4GTUUTC (50.0 %) is not in the dump: its DNAT address is unknown',
        '',
      ].join('\n'),
    );
  });

  it('ipvs: 2 real servers at 50 %; the node port is not in the grep excerpt', () => {
    const t = traceIpvs(wpIpvs, { service: 'haha/wordpress-svc', clusterIP: '10.200.61.128', port: 80, nodePort: 30080 });
    expect(t.mode).toBe('ipvs');
    expect(t.frontends).toEqual([
      {
        kind: 'ClusterIP',
        address: '10.200.61.128:80',
        protocol: 'TCP',
        line: 1,
        scheduler: 'rr',
        backends: [
          { address: '10.100.1.70:80', share: 0.5, weight: 1, forwarding: 'Masq', activeConn: 0, inactiveConn: 0 },
          { address: '10.100.5.9:80', share: 0.5, weight: 1, forwarding: 'Masq', activeConn: 0, inactiveConn: 0 },
        ],
      },
    ]);
    expect(t.warnings).toEqual(['NodePort *:30080/TCP: no IPVS virtual service on that port in the listing']);
    expect(renderTraceTree(t)).toBe(
      [
        'haha/wordpress-svc (ipvs)',
        '└─ ClusterIP 10.200.61.128:80/TCP  rr',
        '   ├─ 50.0 %  10.100.1.70:80  Masq  weight 1  active 0  inactive 0',
        '   └─ 50.0 %  10.100.5.9:80  Masq  weight 1  active 0  inactive 0',
        'warnings:',
        '  ! NodePort *:30080/TCP: no IPVS virtual service on that port in the listing',
        '',
      ].join('\n'),
    );
  });

  it('compared with the EndpointSlices of each moment', () => {
    // before the switch: the second endpoint could be behind the chain the excerpt lacks
    const before = compareWithEndpoints(traceIptables(wpIptables, 'haha/wordpress-svc'), [{ address: '10.100.1.69:80' }, { address: '10.100.5.8:80' }]);
    expect(before.warnings.slice(2)).toEqual([
      'endpoint 10.100.5.8:80 (unless it is one of the 1 backend(s) of unknown address) is in the EndpointSlices but not in the dataplane: ClusterIP 10.200.61.128:80/TCP, NodePort *:30080/TCP',
    ]);
    // after: the pods were recreated; comparing with the old endpoints finds both changes
    const after = compareWithEndpoints(traceIpvs(wpIpvs, { service: 'haha/wordpress-svc', clusterIP: '10.200.61.128', port: 80 }), [{ address: '10.100.1.69:80' }, { address: '10.100.5.9:80' }]);
    expect(after.warnings).toEqual([
      'endpoint 10.100.1.69:80 is in the EndpointSlices but not in the dataplane: ClusterIP 10.200.61.128:80/TCP',
      'backend 10.100.1.70:80 is in the dataplane but not in the EndpointSlices (stale): ClusterIP 10.200.61.128:80/TCP',
    ]);
    const fine = compareWithEndpoints(traceIpvs(wpIpvs, { service: 'haha/wordpress-svc', clusterIP: '10.200.61.128', port: 80 }), [{ address: '10.100.1.70:80' }, { address: '10.100.5.9:80' }]);
    expect(fine.warnings).toEqual([]);
  });
});

// ---- generated dumps ----

const v4: GenService[] = [
  { namespace: 'default', name: 'kubernetes', clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443, protocol: 'TCP', endpoints: [{ ip: '172.18.0.2', port: 6443, local: true }] }] },
  {
    namespace: 'shop',
    name: 'web',
    clusterIP: '10.96.10.10',
    externalIPs: ['192.0.2.10'],
    loadBalancerIPs: ['198.51.100.7'],
    affinitySeconds: 10800,
    ports: [
      { name: 'http', port: 80, protocol: 'TCP', nodePort: 30080, endpoints: [{ ip: '10.244.1.5', port: 8080, local: true }, { ip: '10.244.2.6', port: 8080 }, { ip: '10.244.3.7', port: 8080 }] },
      { name: 'metrics', port: 9100, protocol: 'TCP', endpoints: [] },
    ],
  },
  {
    namespace: 'shop',
    name: 'local',
    clusterIP: '10.96.10.11',
    loadBalancerIPs: ['198.51.100.8'],
    loadBalancerSourceRanges: ['203.0.113.0/24'],
    externalTrafficPolicy: 'Local',
    ports: [{ name: 'https', port: 443, protocol: 'TCP', nodePort: 30443, endpoints: [{ ip: '10.244.1.9', port: 8443, local: true }, { ip: '10.244.2.9', port: 8443 }, { ip: '10.244.3.9', port: 8443 }] }],
  },
  {
    namespace: 'shop',
    name: 'nolocal',
    clusterIP: '10.96.10.12',
    externalTrafficPolicy: 'Local',
    ports: [{ name: '', port: 8080, protocol: 'TCP', nodePort: 31000, endpoints: [{ ip: '10.244.2.11', port: 8080 }, { ip: '10.244.3.11', port: 8080 }] }],
  },
  {
    namespace: 'data',
    name: 'db',
    clusterIP: '10.96.20.5',
    ports: [
      { name: '', port: 5432, protocol: 'TCP', endpoints: [1, 2, 3, 4, 5].map((i) => ({ ip: `10.244.${i}.30`, port: 5432 })) },
      { name: 'dns', port: 53, protocol: 'UDP', endpoints: [{ ip: '10.244.1.31', port: 53 }, { ip: '10.244.2.31', port: 53 }] },
    ],
  },
];

/** The same Services in IPv6, written as iptables-save and ipvsadm print them. */
const toV6 = (ip: string): string => (ip.includes('/') ? v6Of(ip) : normalizeIp(v6Of(ip)));
function v6Of(ip: string): string {
  const p = ip.split('.').map(Number);
  if (p[0] === 10 && p[1] === 96) return `fd00:10:96::${p[2]!.toString(16)}:${p[3]!.toString(16)}`;
  if (p[0] === 10 && p[1] === 244) return `fd00:10:244:${p[2]!.toString(16)}::${p[3]!.toString(16)}`;
  if (p[0] === 192) return `2001:db8:2::${p[3]!.toString(16)}`;
  if (p[0] === 198) return `2001:db8:198::${p[3]!.toString(16)}`;
  if (p[0] === 203) return '2001:db8:203::/64';
  return `fc00:f853:ccd:e793::${p[3]!.toString(16)}`;
}
const v6: GenService[] = v4.map((s) => ({
  ...s,
  clusterIP: toV6(s.clusterIP),
  externalIPs: s.externalIPs?.map(toV6),
  loadBalancerIPs: s.loadBalancerIPs?.map(toV6),
  loadBalancerSourceRanges: s.loadBalancerSourceRanges?.map(toV6),
  ports: s.ports.map((p) => ({ ...p, endpoints: p.endpoints.map((e) => ({ ...e, ip: toV6(e.ip) })) })),
}));

interface Seen {
  kind: string;
  address: string;
  protocol: string;
  backends: string[];
}

const seen = (f: TraceFrontend): Seen => ({ kind: f.kind, address: f.address, protocol: f.protocol, backends: f.backends.map((b) => `${b.address} ${b.share.toFixed(6)}`) });

/** What a trace of the Service must find: every frontend, and behind it the endpoints with equal shares. */
function expected(svc: GenService, nodeAddress = '*'): Seen[] {
  const out: Seen[] = [];
  for (const p of svc.ports) {
    const local = p.endpoints.filter((e) => e.local);
    for (const f of expectedFrontends(svc, p, nodeAddress)) {
      const eps = f.kind !== 'ClusterIP' && svc.externalTrafficPolicy === 'Local' ? local : p.endpoints;
      out.push({ ...f, backends: eps.map((e) => `${joinHostPort(e.ip, e.port)} ${(1 / eps.length).toFixed(6)}`) });
    }
  }
  return out.sort((a, b) => `${a.kind}${a.address}${a.protocol}`.localeCompare(`${b.kind}${b.address}${b.protocol}`));
}

const sorted = (t: ServiceTrace) => t.frontends.map(seen).sort((a, b) => `${a.kind}${a.address}${a.protocol}`.localeCompare(`${b.kind}${b.address}${b.protocol}`));

describe.each([
  ['1.20', 'ipv4', v4, '10.244.0.0/16'],
  ['1.28', 'ipv4', v4, '10.244.0.0/16'],
  ['1.20', 'ipv6', v6, 'fd00:10:244::/56'],
  ['1.28', 'ipv6', v6, 'fd00:10:244::/56'],
] as const)('kube-proxy %s, %s', (style, family, services, cidr) => {
  const text = kubeProxyIptablesSave(services, { style, family, clusterCIDR: cidr });
  const dump = parseIptablesSave(text);

  it('the dump reads without a line left over', () => {
    expect(dump.unknown).toEqual([]);
    expect(dump.problems).toEqual([]);
    expect(dump.family).toBe(family);
  });

  it.each(services.map((s) => [`${s.namespace}/${s.name}`, s] as const))('%s: every frontend, endpoint and share', (name, svc) => {
    const t = traceIptables(dump, name);
    expect(sorted(t)).toEqual(expected(svc));
  });

  it('ClusterIP traffic from outside the pod network is masqueraded', () => {
    const f = traceIptables(dump, 'data/db').frontends.find((x) => x.protocol === 'TCP')!;
    expect(f.masquerade!.map((m) => [m.chain, m.condition])).toEqual([[style === '1.20' ? 'KUBE-SERVICES' : f.path![1], `! -s ${cidr}`]]);
  });

  it('a port without endpoints is rejected, an external policy without local endpoints dropped', () => {
    const web = traceIptables(dump, 'shop/web:metrics');
    expect(web.frontends.map((f) => [f.kind, f.backends.length, f.drops?.map((d) => d.target)])).toEqual([
      ['ClusterIP', 0, ['REJECT']],
      ['ExternalIP', 0, ['REJECT']],
      // the filter rule does not say, but port http has a load-balancer frontend on that address
      ['LoadBalancer', 0, ['REJECT']],
    ]);
    const nolocal = traceIptables(dump, 'shop/nolocal');
    const np = nolocal.frontends.find((f) => f.kind === 'NodePort')!;
    expect(np.backends).toEqual([]);
    expect(np.drops!.map((d) => d.target)).toEqual([style === '1.20' ? 'KUBE-MARK-DROP' : 'DROP']);
    expect(np.alternatives!.map((a) => a.backends.length)).toEqual([2, 2]);
    expect(nolocal.warnings.some((w) => w.startsWith('NodePort *:31000/TCP: no endpoint reached'))).toBe(true);
  });

  it('session affinity and load-balancer source ranges show on their frontends', () => {
    const web = traceIptables(dump, 'shop/web:http');
    expect(web.frontends.every((f) => f.affinity?.timeoutSeconds === 10800)).toBe(true);
    const lb = traceIptables(dump, 'shop/local').frontends.find((f) => f.kind === 'LoadBalancer')!;
    expect(lb.sourceRanges).toEqual([services[2]!.loadBalancerSourceRanges![0]]);
    expect(lb.policy).toBe('Local');
    expect(lb.path![1]).toMatch(/^KUBE-FW-/);
  });

  it('lists every Service port', () => {
    const list = listIptablesServices(dump);
    expect(list.map((s) => `${s.service}:${s.portName}/${s.protocol} ${s.endpoints.length}${s.noEndpoints ? ' none' : ''}`)).toEqual([
      'data/db:/TCP 5',
      'data/db:dns/UDP 2',
      'default/kubernetes:https/TCP 1',
      'shop/local:https/TCP 3',
      'shop/nolocal:/TCP 2',
      'shop/web:http/TCP 3',
      'shop/web:metrics/TCP 0 none',
    ]);
  });

  it('finds missing, stale and absent with the EndpointSlices', () => {
    const db = traceIptables(dump, 'data/db:5432');
    const eps = services[4]!.ports[0]!.endpoints.map((e) => ({ address: joinHostPort(e.ip, e.port) }));
    expect(compareWithEndpoints(db, eps).warnings).toEqual([]);
    const extra = { address: joinHostPort(family === 'ipv4' ? '10.244.9.9' : 'fd00:10:244:9::9', 5432) };
    const r = compareWithEndpoints(db, [...eps.slice(1), extra], { frontends: [{ kind: 'NodePort', address: '*:32000', protocol: 'TCP' }, { address: db.frontends[0]!.address }] });
    expect(r.warnings).toEqual([
      `endpoint ${extra.address} is in the EndpointSlices but not in the dataplane: ClusterIP ${db.frontends[0]!.address}/TCP`,
      `backend ${eps[0]!.address} is in the dataplane but not in the EndpointSlices (stale): ClusterIP ${db.frontends[0]!.address}/TCP`,
      'frontend NodePort *:32000/TCP is absent from the dataplane',
    ]);
    // a Local path has only this node's endpoints: the others are not missing, an unknown one is stale
    const local = traceIptables(dump, 'shop/local');
    const all = services[2]!.ports[0]!.endpoints.map((e) => ({ address: joinHostPort(e.ip, e.port) }));
    expect(compareWithEndpoints(local, all).warnings).toEqual([]);
    expect(compareWithEndpoints(local, all.slice(1)).warnings.map((w) => w.split(':')[0])).toEqual([`backend ${all[0]!.address.split(':')[0]}`]);
  });
});

describe('IPVS listings generated for the same Services', () => {
  it.each([
    ['ipv4', v4, '192.168.1.10'],
    ['ipv6', v6, 'fd00:1::10'],
  ] as const)('%s: every frontend, real server and share', (_family, services, node) => {
    for (const format of ['list', 'save'] as const) {
      const table = parseIpvsadm(kubeProxyIpvsadm(services, { nodeAddresses: [node], format }));
      expect(table.unknown).toEqual([]);
      for (const svc of services) {
        for (const p of svc.ports) {
          if (p.endpoints.length === 0) continue;
          const t = traceIpvs(table, {
            service: `${svc.namespace}/${svc.name}`,
            clusterIP: svc.clusterIP,
            port: p.port,
            protocol: p.protocol,
            nodePort: p.nodePort,
            nodeAddresses: [node],
            externalIPs: svc.externalIPs,
            loadBalancerIPs: svc.loadBalancerIPs,
          });
          const want = expected({ ...svc, ports: [p] }, node).filter((f) => f.backends.length > 0);
          expect(sorted(t).filter((f) => f.backends.length > 0)).toEqual(want);
          if (svc.affinitySeconds) expect(t.frontends.every((f) => f.persistent === svc.affinitySeconds)).toBe(true);
        }
      }
    }
  });

  it('NodePort frontends are found on every address when the node addresses are not given', () => {
    const table = parseIpvsadm(kubeProxyIpvsadm(v4, { nodeAddresses: ['192.168.1.10', '10.0.2.15'] }));
    const t = traceIpvs(table, { service: 'shop/web', nodePort: 30080 });
    expect(t.frontends.map((f) => f.address)).toEqual(['192.168.1.10:30080', '10.0.2.15:30080']);
    expect(traceIpvs(table, { service: 'shop/web', clusterIP: '10.96.99.99', port: 80 }).warnings).toEqual(['ClusterIP 10.96.99.99:80/TCP is not an IPVS virtual service in the listing']);
    expect(traceIpvs(table, { service: 'shop/web' }).warnings).toEqual(['no address given for shop/web: nothing to look up']);
  });

  it('compares each port of a multi-port Service with its own endpoints', () => {
    const table = parseIpvsadm(kubeProxyIpvsadm(v4, { nodeAddresses: ['192.168.1.10'] }));
    const db = v4[4]!;
    const expected = db.ports.flatMap((p) => p.endpoints.map((e) => ({ address: joinHostPort(e.ip, e.port), portName: p.name })));
    for (const p of db.ports) {
      const query = { service: 'data/db', clusterIP: db.clusterIP, port: p.port, protocol: p.protocol };
      // told the port's name, or left to pair by target port: the other port's endpoints are not missing here
      expect(compareWithEndpoints(traceIpvs(table, { ...query, portName: p.name }), expected).warnings).toEqual([]);
      expect(compareWithEndpoints(traceIpvs(table, query), expected).warnings).toEqual([]);
    }
    const lost = expected.filter((e) => e.address !== '10.244.2.30:5432');
    const t = traceIpvs(table, { service: 'data/db', clusterIP: db.clusterIP, port: 5432, portName: '' });
    expect(compareWithEndpoints(t, lost).warnings).toEqual(['backend 10.244.2.30:5432 is in the dataplane but not in the EndpointSlices (stale): ClusterIP 10.96.20.5:5432/TCP']);
  });

  it('--stats listing: equal shares, said to be assumed', () => {
    const table = parseIpvsadm(kubeProxyIpvsadm(v4, { nodeAddresses: ['192.168.1.10'], format: 'stats' }));
    expect(table.format).toBe('stats');
    const t = traceIpvs(table, { service: 'data/db', clusterIP: '10.96.20.5', port: 5432 });
    expect(t.frontends[0]!.backends.map((b) => b.share)).toEqual([0.2, 0.2, 0.2, 0.2, 0.2]);
    expect(t.frontends[0]!.backends[0]!.stats).toEqual({ conns: 1, inPkts: 6, outPkts: 4, inBytes: 300, outBytes: 420 });
  });
});

describe('service references', () => {
  it('reads ns/name and an optional port name or number', () => {
    expect(parseServiceRef('haha/wordpress-svc')).toEqual({ namespace: 'haha', name: 'wordpress-svc' });
    expect(parseServiceRef('kube-system/kube-dns:dns-tcp')).toEqual({ namespace: 'kube-system', name: 'kube-dns', port: 'dns-tcp' });
    expect(parseServiceRef('a/b:8080')).toEqual({ namespace: 'a', name: 'b', port: 8080 });
    expect(parseServiceRef('nonsense')).toBeUndefined();
    expect(traceIptables(wpIptables, 'nonsense').warnings).toEqual(['"nonsense" is not a Service reference (namespace/name[:port])']);
  });
});
