// Services carrying real traffic on lab hosts through the kube-proxy TEST FIXTURE: a ClusterIP probed
// from a node answers through kube-proxy-style iptables chains, then through the (emulated) IPVS
// dataplane after the move to ipvs, and stops answering under an injected fault while /proxyMode
// still looks healthy.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeProxyConfig, NodeRuntime, StartInfo } from '../apiserver/server.ts';
import { labKubeProxyRuntime, startBackend, type LabKubeProxyOptions } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type ExecResult, type Lab } from './lab.ts';

const support = labSupported();
if (!support.ok) console.warn(`service dataplane tests skipped: ${support.reason}`);

const BODY = 'hello from the node003 test backend\n';
const VIP = '10.96.100.10';

function config(mode: string): KubeProxyConfig {
  return {
    mode,
    metricsBindAddress: '127.0.0.1:10249',
    raw: `apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: "${mode}"\n`,
  };
}

describe.skipIf(!support.ok)(`Service dataplane of the kube-proxy test fixture${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let runtime: NodeRuntime;
  let backendIP: string;
  const faults = new Map<string, 'drop'>();

  const sh = (host: string, cmd: string): Promise<ExecResult> => lab.exec(host, cmd);
  const out = async (host: string, cmd: string): Promise<string> => {
    const r = await sh(host, cmd);
    expect(r.code, `${cmd}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const probe = (host: string) => sh(host, `curl -s --max-time 3 http://${VIP}/`);
  const info = (i: number): StartInfo => ({ pod: `kube-proxy-${i}`, internalIP: lab.hosts[i]!.address, version: 'v1.31.4' });
  const start = async (node: string, mode: string, i: number) => {
    const r = await runtime.start(node, config(mode), info(i));
    expect(r.ready, r.log.join('\n')).toBe(true);
  };
  const nat = (host: string) => out(host, 'iptables-save -t nat');
  const rulesOf = (save: string, chain: string) => save.split('\n').filter((l) => l.startsWith(`-A ${chain} `));

  beforeAll(async () => {
    lab = await startLab({ hosts: 3, kmodShim: true, id: 'd' });
    backendIP = lab.hosts[2]!.address;
    await startBackend(lab, 'node003', 8080, BODY);
    const opts: LabKubeProxyOptions = {
      services: [{ name: 'web', namespace: 'default', clusterIP: VIP, port: 80, backends: [{ ip: backendIP, port: 8080 }] }],
      dataplaneFault: (node, mode) => faults.get(`${node}/${mode}`),
    };
    runtime = labKubeProxyRuntime(lab, undefined, opts);
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('serves the backend directly, and not through the ClusterIP before kube-proxy programs it', async () => {
    expect(await out('node001', `curl -s --max-time 3 http://${backendIP}:8080/`)).toBe(BODY);
    expect((await probe('node001')).code).not.toBe(0);
  });

  it('carries the ClusterIP through KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP DNAT in iptables mode', async () => {
    await start('node001', 'iptables', 0);
    await start('node002', 'iptables', 1);
    expect(await out('node001', `curl -s --max-time 3 http://${VIP}/`)).toBe(BODY);
    expect(await out('node002', `curl -s --max-time 3 http://${VIP}/`)).toBe(BODY);

    const save = await nat('node001');
    expect(save).toMatch(/^-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES$/m);
    expect(save).toMatch(/^-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES$/m);
    const toSvc = rulesOf(save, 'KUBE-SERVICES').find((l) => l.includes(`-d ${VIP}/32`));
    expect(toSvc).toMatch(/^-A KUBE-SERVICES -d 10\.96\.100\.10\/32 -p tcp -m comment --comment "default\/web cluster IP" -m tcp --dport 80 -j KUBE-SVC-[A-Z2-7]{16}$/);
    const svcChain = /-j (KUBE-SVC-\S+)$/.exec(toSvc!)![1]!;
    const [masq, ...toSep] = rulesOf(save, svcChain);
    expect(masq).toMatch(/^-A KUBE-SVC-\S+ ! -s 10\.244\.0\.0\/16 -d 10\.96\.100\.10\/32 .* -j KUBE-MARK-MASQ$/);
    expect(toSep).toHaveLength(1);
    const sepChain = /-j (KUBE-SEP-[A-Z2-7]{16})$/.exec(toSep[0]!)![1]!;
    expect(rulesOf(save, sepChain)).toContain(`-A ${sepChain} -p tcp -m comment --comment "default/web" -m tcp -j DNAT --to-destination ${backendIP}:8080`);
    expect(rulesOf(save, 'KUBE-SERVICES').at(-1)).toMatch(/-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS$/);
    expect(save).not.toContain('KPM-LAB-IPVS-EMULATION');

    // a restart replaces the rules instead of adding to them
    await start('node001', 'iptables', 0);
    const again = await nat('node001');
    expect(rulesOf(again, 'OUTPUT')).toHaveLength(1);
    expect(rulesOf(again, 'KUBE-SERVICES')).toEqual(rulesOf(save, 'KUBE-SERVICES'));
  });

  it('keeps the ClusterIP working in ipvs mode, through the IPVS table, with the KUBE-SVC chains left stale', async () => {
    const before = await nat('node001');
    const svcChain = /-j (KUBE-SVC-\S+)$/m.exec(rulesOf(before, 'KUBE-SERVICES').join('\n'))![1]!;
    await out('node001', 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q ipvsadm ipset conntrack');
    await out('node001', 'modprobe ip_vs && modprobe ip_vs_rr');
    await start('node001', 'ipvs', 0);
    expect(await out('node001', 'curl -sS --max-time 3 http://127.0.0.1:10249/proxyMode')).toBe('ipvs');
    expect(await out('node001', `curl -s --max-time 3 http://${VIP}/`)).toBe(BODY);

    const table = await out('node001', 'ipvsadm -Ln');
    expect(table).toContain(`TCP  ${VIP}:80 rr\n  -> ${`${backendIP}:8080`.padEnd(28)} Masq    1`);
    expect(table).toContain('TCP  10.96.0.1:443 rr\n');
    expect(await out('node001', 'ip -br addr show kube-ipvs0')).toMatch(new RegExp(`\\b${VIP.replace(/\./g, '\\.')}/32\\b`));
    expect(await out('node001', 'ipset list KUBE-CLUSTER-IP')).toContain(`${VIP},tcp:80`);

    const save = await nat('node001');
    expect(save).toMatch(new RegExp(`^:${svcChain} `, 'm'));
    expect(rulesOf(save, 'KUBE-SERVICES').some((l) => l.includes('KUBE-SVC-'))).toBe(false);
    expect(rulesOf(save, 'KUBE-SERVICES')).toContain('-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT');
    expect(rulesOf(save, 'OUTPUT')[0]).toMatch(/TEST FIXTURE.* -j KPM-LAB-IPVS-EMULATION$/);
    expect(rulesOf(save, 'KPM-LAB-IPVS-EMULATION').join('\n')).toContain(`-d ${VIP}/32 -p tcp -m tcp --dport 80 -m comment --comment "kpm-lab TEST FIXTURE, IPVS emulation: default/web -> ${backendIP}:8080" -j DNAT --to-destination ${backendIP}:8080`);
  });

  it('drops the ClusterIP\'s traffic under an injected fault while /proxyMode still answers ipvs', async () => {
    faults.set('node001/ipvs', 'drop');
    await start('node001', 'ipvs', 0);
    expect(await out('node001', 'curl -sS --max-time 3 http://127.0.0.1:10249/proxyMode')).toBe('ipvs');
    const r = await probe('node001');
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(await out('node001', 'iptables -t raw -S KPM-LAB-DATAPLANE-FAULT')).toContain('-j DROP');
    // the backend itself is fine
    expect(await out('node001', `curl -s --max-time 3 http://${backendIP}:8080/`)).toBe(BODY);
    // node002 is not affected
    expect(await out('node002', `curl -s --max-time 3 http://${VIP}/`)).toBe(BODY);

    faults.delete('node001/ipvs');
    await start('node001', 'ipvs', 0);
    expect(await out('node001', `curl -s --max-time 3 http://${VIP}/`)).toBe(BODY);
  });

  it('goes back to iptables mode: its own chains again, the emulation gone, the stale chains reused', async () => {
    await start('node001', 'iptables', 0);
    expect(await out('node001', `curl -s --max-time 3 http://${VIP}/`)).toBe(BODY);
    const save = await nat('node001');
    expect(save).not.toContain('KPM-LAB-IPVS-EMULATION');
    expect(rulesOf(save, 'KUBE-SERVICES').some((l) => /-j KUBE-SVC-/.test(l))).toBe(true);
    expect(save.match(/^:KUBE-SVC-/gm)).toHaveLength(1);
  });
});
