import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { status, type StatusReport } from '../../tasks/commands/status.ts';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { labKubeProxyRuntime, labServiceObjects, startBackend, startSeededKubeProxies } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { mustExec, runProvision, stepOf, tempDir, writeLabInventory, type RunOutput } from './helpers.ts';

// Every switch the tool makes, through the test API server on 3 lab hosts whose fixture kube-proxy
// programs real netfilter state (iptables chains, a real nftables table; IPVS in the lab's fixture
// table, the kernel has none) and cleans up at start-up as kube-proxy >= 1.29 does (the other modes
// when entering or leaving nftables; nothing between iptables and ipvs): iptables -> nftables -> ipvs
// -> iptables -> ipvs, each with the mode's own proof per node and --cleanup-old-mode leaving no
// leftover, a rerun that changes nothing, a node below nftables' gate blocking the flip, and a node
// failing in its new mode rolled back.

const support = labSupported();
let lab: Lab;
let api: TestApiServer;
let names: string[];
let inv: string;

const WEB = { name: 'web', namespace: 'default', clusterIP: '10.96.100.10', port: 80, portName: 'http', nodePort: 30080 };

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 3, kmodShim: true, id: 'm' });
  names = lab.hosts.map((h) => h.name);
  const backend = lab.hosts[2]!;
  await startBackend(lab, backend.name, 8080, 'hello from web\n');
  const web = { ...WEB, backends: [{ ip: backend.address, port: 8080 }] };
  api = await startTestApiServer({
    nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })),
    runtime: labKubeProxyRuntime(lab, (n) => n, { services: [web] }),
    recreateDelayMs: 100,
    version: { major: '1', minor: '33', gitVersion: 'v1.33.5' },
  });
  const objects = labServiceObjects(web);
  api.store.create('services', objects.service as never);
  api.store.create('endpointslices', objects.slice as never);
  await startSeededKubeProxies(api, names);
  inv = writeLabInventory(lab, { vars: { kubeconfig: api.kubeconfigPath, kube_proxy_probe_services: ['default/web'] } });
});
afterAll(async () => {
  await api?.close();
  await lab?.down();
});

const writes = () => api.requests.filter((r) => ['PUT', 'PATCH', 'POST', 'DELETE'].includes(r.method) && !r.path.includes('/leases'));
const configConf = () => (api.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;
const full = (mode: string, extra: Record<string, unknown> = {}) => ({
  tags: ['node', 'cluster'],
  mode: mode as 'ipvs',
  ...extra,
  cluster: { podTimeoutS: 60, backupDir: tempDir('kpm-bk-'), ...((extra.cluster as object) ?? {}) },
});
const proxyMode = async (host: string) => (await lab.exec(host, 'curl -s --max-time 3 127.0.0.1:10249/proxyMode')).stdout.trim();

async function runStatus(): Promise<StatusReport> {
  const out: string[] = [];
  await status({ inventory: inv, json: true, out: (l) => out.push(l), err: () => {} });
  return JSON.parse(out.join('\n')) as StatusReport;
}

/** Everything of each mode on a host, as the kernel lists it (the IPVS fixture table stands for the kernel's). */
async function dataplane(host: string) {
  return {
    iptables: await mustExec(lab, host, 'iptables-save -t nat | grep -v "^#" | sed "s/\\[[0-9]*:[0-9]*\\]//"'),
    nft: await mustExec(lab, host, 'nft list tables'),
    ipvs: await mustExec(lab, host, 'ipvsadm -Sn 2>/dev/null || true'),
    ipsets: await mustExec(lab, host, 'ipset list -n 2>/dev/null || true'),
    links: await mustExec(lab, host, 'ip -br link'),
  };
}

function expectSwitched(r: RunOutput, mode: string, proof: RegExp) {
  for (const n of names) {
    const s = stepOf(r, n, 'kube-proxy')!;
    expect(s.status, s.message).toBe('changed');
    expect(s.message).toMatch(new RegExp(`verified: /proxyMode: ${mode}, log: Using ${mode} Proxier`));
    expect(s.message).toMatch(proof);
  }
}

describe.skipIf(!support.ok)('every mode switch on lab hosts', () => {
  test('iptables -> nftables: each node proven by its kube-proxy table; kube-proxy itself removed the iptables Service chains, so cleanup finds nothing', async () => {
    for (const n of names) expect((await dataplane(n)).iptables).toMatch(/^:KUBE-SVC-/m);
    const dry = await runProvision(inv, { ...full('nftables', { cluster: { cleanupOldMode: true } }), dryRun: true });
    expect(dry.code, dry.out).toBe(0);
    expect(writes()).toEqual([]);
    // before the switch the iptables chains are live: the dry run lists them as what would go
    for (const n of names) expect(stepOf(dry, n, 'cleanup')?.message ?? '', dry.out).toMatch(/would remove[\s\S]*KUBE-SVC-/);

    const r = await runProvision(inv, full('nftables', { cluster: { cleanupOldMode: true } }));
    expect(r.code, r.out).toBe(0);
    expect(configConf()).toMatch(/^mode: "?nftables"?$/m);
    expectSwitched(r, 'nftables', /nft: table kube-proxy/);
    for (const n of names) {
      expect(await proxyMode(n)).toBe('nftables');
      const dp = await dataplane(n);
      expect(dp.nft).toMatch(/^table ip kube-proxy$/m);
      expect(dp.iptables).not.toMatch(/KUBE-(SVC|SEP|EXT|SVL|FW|XLB)-/);
      expect(stepOf(r, n, 'cleanup')!.status).toBe('ok');
    }
    const st = await runStatus();
    for (const n of st.nodes) expect(n.leftovers, n.node).toEqual([]);
  });

  test('rerun in nftables: no ConfigMap write, no DELETE, nothing left to clean', async () => {
    const before = writes().length;
    const r = await runProvision(inv, full('nftables', { cluster: { cleanupOldMode: true } }));
    expect(r.code, r.out).toBe(0);
    expect(writes().length).toBe(before);
    expect(r.report.summary.changed).toBe(0);
    for (const n of names) expect(stepOf(r, n, 'cleanup')!.message).toMatch(/nothing to clean/);
  });

  test('nftables -> ipvs: the IPVS modules prepared, each node proven by ipvsadm; no nftables table left', async () => {
    const r = await runProvision(inv, full('ipvs', { cluster: { cleanupOldMode: true } }));
    expect(r.code, r.out).toBe(0);
    expectSwitched(r, 'ipvs', /ipvsadm: 10.96.0.1:443/);
    for (const n of names) {
      expect(await proxyMode(n)).toBe('ipvs');
      const dp = await dataplane(n);
      expect(dp.nft).not.toMatch(/kube-proxy/);
      expect(dp.ipvs).toMatch(/-A -t 10.96.100.10:80/);
    }
    const st = await runStatus();
    for (const n of st.nodes) expect(n.leftovers, n.node).toEqual([]);
  });

  test('ipvs -> iptables with --cleanup-old-mode: proven by KUBE-SERVICES; the virtual servers, kube-ipvs0 and KUBE-* ipsets kube-proxy left are removed', async () => {
    const r = await runProvision(inv, full('iptables', { cluster: { cleanupOldMode: true } }));
    expect(r.code, r.out).toBe(0);
    expectSwitched(r, 'iptables', /iptables: KUBE-SERVICES/);
    for (const n of names) {
      expect(await proxyMode(n)).toBe('iptables');
      const c = stepOf(r, n, 'cleanup')!;
      expect(c.status, c.message).toBe('changed');
      expect(c.message).toMatch(/removed \d+ objects of ipvs mode/);
      const dp = await dataplane(n);
      expect(dp.ipvs).not.toMatch(/10\.96\./);
      expect(dp.links).not.toMatch(/kube-ipvs0/);
      expect(dp.ipsets).not.toMatch(/^KUBE-/m);
      expect(dp.iptables).toMatch(/^:KUBE-SVC-/m);
    }
    const st = await runStatus();
    for (const n of st.nodes) expect(n.leftovers, n.node).toEqual([]);
  });

  test('iptables -> ipvs with --cleanup-old-mode: the Service chains kube-proxy left behind are removed', async () => {
    const r = await runProvision(inv, full('ipvs', { cluster: { cleanupOldMode: true } }));
    expect(r.code, r.out).toBe(0);
    expectSwitched(r, 'ipvs', /ipvsadm: 10.96.0.1:443/);
    for (const n of names) {
      const c = stepOf(r, n, 'cleanup')!;
      expect(c.status, c.message).toBe('changed');
      expect(c.message).toMatch(/removed \d+ objects of iptables mode[\s\S]*KUBE-SVC-/);
      expect((await dataplane(n)).iptables).not.toMatch(/KUBE-(SVC|SEP|EXT|SVL|FW|XLB)-/);
    }
    const st = await runStatus();
    for (const n of st.nodes) expect(n.leftovers, n.node).toEqual([]);
  });

  test('a node whose nft is below 1.0.0 blocks the flip to nftables before any change, naming the node and its versions', async () => {
    const bad = names[1]!;
    // TEST FIXTURE: an nft that reports an old version (the real one stays next to it)
    await mustExec(lab, bad, 'mv /usr/sbin/nft /usr/sbin/nft.real && printf \'#!/bin/sh\\n[ "$1" = --version ] && { echo "nftables v0.9.8 (E.D.S.)"; exit 0; }\\nexec /usr/sbin/nft.real "$@"\\n\' >/usr/sbin/nft && chmod 755 /usr/sbin/nft');
    try {
      const before = writes().length;
      const r = await runProvision(inv, full('nftables'));
      expect(r.code).toBe(2);
      const pre = stepOf(r, bad, 'preflight')!;
      expect(pre.status).toBe('failed');
      expect(pre.message).toMatch(/nft 0\.9\.8 is older than 1\.0\.0: kube-proxy's nftables mode cannot run on this node/);
      const cluster = stepOf(r, 'cluster', 'preflight')!;
      expect(cluster.status).toBe('failed');
      expect(cluster.message).toContain(`not ready for nftables mode, so the ConfigMap is left as it is: ${bad} (host ${bad})`);
      expect(writes().length).toBe(before);
      for (const n of names) expect(await proxyMode(n)).toBe('ipvs');
    } finally {
      await mustExec(lab, bad, 'mv /usr/sbin/nft.real /usr/sbin/nft');
    }
  });

  test('a node that cannot run nftables after the flip: stopped, ConfigMap restored, the switched node back on ipvs', async () => {
    const original = configConf();
    // node 2 breaks in a way its package database does not show: its nft binary is gone
    await mustExec(lab, names[1]!, 'mv /usr/sbin/nft /usr/sbin/nft.gone');
    try {
      const r = await runProvision(inv, full('nftables', { tags: ['cluster'] }));
      expect(r.code).toBe(2);
      expect(stepOf(r, names[0]!, 'kube-proxy')!.status).toBe('changed');
      const failed = stepOf(r, names[1]!, 'kube-proxy')!;
      expect(failed.status).toBe('failed');
      expect(stepOf(r, names[2]!, 'kube-proxy')).toBeUndefined();
      expect(configConf()).toBe(original);
      expect(stepOf(r, 'cluster', 'rollback')!.status).toBe('changed');
      expect(stepOf(r, names[0]!, 'rollback')!.message).toMatch(/back on ipvs: .*ipvsadm: 10.96.0.1:443/);
      for (const n of names) expect(await proxyMode(n)).toBe('ipvs');
    } finally {
      await mustExec(lab, names[1]!, 'mv /usr/sbin/nft.gone /usr/sbin/nft');
    }
  });
});
