import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { describe, expect, test } from 'vitest';
import { parseServerVersion, preflight, type NodeReadiness } from '../../tasks/cluster/preflight.ts';
import { parseInventoryText } from '../../tasks/inventory/load.ts';

const inv = parseInventoryText(
  `all:
  vars: {ansible_user: root}
  hosts:
    w1: {ansible_host: 10.0.0.11}
    w2: {ansible_host: 10.0.0.12}
    w3: {ansible_host: 10.0.0.13}
`,
  'inv.yaml',
);
const node = (name: string, ip: string): V1Node => ({ metadata: { name }, status: { addresses: [{ type: 'InternalIP', address: ip }] } });
const pod = (name: string, nodeName: string, created = '2026-01-01T00:00:00Z'): V1Pod => ({ metadata: { name, creationTimestamp: created as unknown as Date }, spec: { nodeName, containers: [] } });
const ready = (...names: string[]) => new Map<string, NodeReadiness>(names.map((n) => [n, { ready: true }]));
const v131 = parseServerVersion({ major: '1', minor: '31', gitVersion: 'v1.31.4' });

test('server versions as clusters report them', () => {
  expect(parseServerVersion({ major: '1', minor: '31+', gitVersion: 'v1.31.2-eks-7f9249a' })).toEqual({ major: 1, minor: 31, gitVersion: 'v1.31.2-eks-7f9249a' });
  expect(parseServerVersion({ gitVersion: 'v1.35.0' })).toMatchObject({ major: 1, minor: 35 });
});

test('nodes map to inventory hosts by name or InternalIP, in inventory order, canary first', () => {
  const r = preflight({
    version: v131,
    targetMode: 'ipvs',
    nodes: [node('ip-10-0-0-13', '10.0.0.13'), node('w1', '10.9.9.9'), node('worker-2', '10.0.0.12')],
    pods: [pod('kp-c', 'ip-10-0-0-13'), pod('kp-a', 'w1'), pod('kp-b', 'worker-2')],
    hosts: inv.hosts,
    readiness: ready('w1', 'w2', 'w3'),
    canary: 'w3',
  });
  expect(r.errors).toEqual([]);
  expect(r.warnings).toEqual([]);
  expect(r.nodes.map((m) => [m.node, m.host?.name, m.pod?.metadata?.name])).toEqual([
    ['ip-10-0-0-13', 'w3', 'kp-c'],
    ['w1', 'w1', 'kp-a'],
    ['worker-2', 'w2', 'kp-b'],
  ]);
});

test('a kube-proxy node missing from the inventory, or not prepared, stops the flip', () => {
  const r = preflight({
    version: v131,
    targetMode: 'ipvs',
    nodes: [node('w1', '10.0.0.11'), node('w2', '10.0.0.12'), node('stray', '10.0.0.99')],
    pods: [pod('a', 'w1'), pod('b', 'w2'), pod('c', 'stray')],
    hosts: inv.hosts,
    readiness: new Map([
      ['w1', { ready: true }],
      ['w2', { ready: false, reason: 'ipset is not installed' }],
    ]),
  });
  expect(r.errors).toEqual([
    '1 node runs kube-proxy but is not in the inventory (matched by node name or InternalIP): stray (10.0.0.99); add it so it is prepared first',
    'not ready for ipvs mode, so the ConfigMap is left as it is: w2 (host w2): ipset is not installed',
  ]);
});

test('every target mode needs its nodes ready (iptables too: its tools); IPVS on 1.35+ is said to be deprecated', () => {
  const base = { nodes: [node('w1', '10.0.0.11')], pods: [pod('a', 'w1')], hosts: inv.hosts, readiness: new Map<string, NodeReadiness>() };
  expect(preflight({ ...base, version: v131, targetMode: 'iptables' }).errors).toEqual([
    'not ready for iptables mode, so the ConfigMap is left as it is: w1 (host w1): not checked',
  ]);
  expect(preflight({ ...base, version: v131, targetMode: 'iptables', readiness: ready('w1') }).errors).toEqual([]);
  const r = preflight({ ...base, version: parseServerVersion({ major: '1', minor: '35', gitVersion: 'v1.35.1' }), targetMode: 'ipvs', readiness: ready('w1') });
  expect(r.errors).toEqual([]);
  expect(r.warnings[0]).toMatch(/^server is v1.35.1: IPVS mode is deprecated since Kubernetes 1.35 .* nftables mode is GA since 1.33/);
});

test('the newest pod of a node counts; a terminating one does not; no kube-proxy at all is an error', () => {
  const old = pod('old', 'w1', '2026-01-01T00:00:00Z');
  old.metadata!.deletionTimestamp = new Date();
  const r = preflight({ version: v131, targetMode: 'iptables', nodes: [node('w1', '10.0.0.11')], pods: [old, pod('new', 'w1', '2026-01-02T00:00:00Z')], hosts: inv.hosts, readiness: new Map() });
  expect(r.nodes[0]!.pod!.metadata!.name).toBe('new');
  expect(preflight({ version: v131, targetMode: 'iptables', nodes: [], pods: [], hosts: inv.hosts, readiness: new Map() }).errors[0]).toMatch(/no kube-proxy pod found/);
});

describe('nftables: the cluster must have the mode', () => {
  const base = { nodes: [node('w1', '10.0.0.11')], pods: [pod('a', 'w1')], hosts: inv.hosts, readiness: ready('w1'), targetMode: 'nftables' as const };
  const at = (minor: string) => parseServerVersion({ major: '1', minor, gitVersion: `v1.${minor}.2` });

  test('refused before 1.29, naming the version', () => {
    expect(preflight({ ...base, version: at('28') }).errors).toEqual([
      'server is v1.28.2: kube-proxy has nftables mode only from 1.29 on; upgrade the cluster first',
    ]);
  });

  test('1.29 and 1.30: alpha, refused unless the feature gate is on in the kube-proxy configuration', () => {
    expect(preflight({ ...base, version: at('30') }).errors[0]).toMatch(/^server is v1.30.2: nftables mode is alpha before 1.31 and needs the feature gate NFTablesProxyMode; set featureGates: \{NFTablesProxyMode: true\}/);
    const on = preflight({ ...base, version: at('29'), featureGates: { NFTablesProxyMode: true } });
    expect(on.errors).toEqual([]);
    expect(on.warnings).toEqual(['server is v1.29.2: nftables mode is beta before 1.33 (feature gate NFTablesProxyMode, on by default)']);
  });

  test('1.31 and 1.32: beta, on by default (a warning), refused when the gate is turned off', () => {
    const r = preflight({ ...base, version: at('32') });
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual(['server is v1.32.2: nftables mode is beta before 1.33 (feature gate NFTablesProxyMode, on by default)']);
    expect(preflight({ ...base, version: at('31'), featureGates: { NFTablesProxyMode: false } }).errors).toEqual([
      'server is v1.31.2: the kube-proxy configuration sets featureGates NFTablesProxyMode: false, which turns nftables mode off',
    ]);
  });

  test('GA from 1.33: nothing to say; no IPVS deprecation warning either', () => {
    const r = preflight({ ...base, version: at('35') });
    expect(r.errors).toEqual([]);
    expect(r.warnings).toEqual([]);
  });
});
