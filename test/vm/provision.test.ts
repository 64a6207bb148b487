import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { status, type StatusReport } from '../../tasks/commands/status.ts';
import { trace } from '../../tasks/commands/trace.ts';
import type { ServiceTrace } from '../../tasks/dataplane/trace-types.ts';
import { startTestApiServer, type TestApiServer } from '../apiserver/server.ts';
import { runProvision, stepOf, tempDir } from '../lab/helpers.ts';
import { DEFAULT_MODULES, installed, ipvsConns, keepRun, lsmod, writeVmInventory } from './support.ts';
import { endpointSliceObject, KUBERNETES_SERVICE, serviceObject, vmKubeProxyRuntime, WEB_SERVICE, type VmKubeProxyRuntime } from './kube-proxy-fixture.ts';
import { GUEST_IP, startVms, type VmCluster } from './vm.ts';

// The tool against real Debian bookworm guests with Debian's stock 6.1 kernel under QEMU: the node
// phase installs the packages from a repository served to the guests and loads real modules; the
// files it writes bring them back after a real reboot; a third guest's kernel has no IPVS at all;
// then the whole flow with the test API server, whose simulated kubelet starts the VM kube-proxy
// TEST FIXTURE in each guest, which programs real IPVS. One boot for the file; the tests run in
// order on the same guests.

const NAMES = ['kpmvm1', 'kpmvm2'];
const NO_IPVS = 'kpmvm3';
const PACKAGES = ['ipvsadm', 'ipset', 'conntrack'];
let vms: VmCluster;
let api: TestApiServer | undefined;
let runtime: VmKubeProxyRuntime;

beforeAll(async () => {
  vms = await startVms([...NAMES.map((name) => ({ name })), { name: NO_IPVS, ipvs: false }]);
});
afterAll(async () => {
  await api?.close();
  await vms?.down();
});

const inventory = (vars: Record<string, unknown> = {}, hosts = NAMES) => writeVmInventory(vms, { vars, hosts });
// writes that change the cluster; the tool's own run lock (a Lease) is not one of them
const writesOf = (server: TestApiServer) => server.requests.filter((q) => ['PUT', 'PATCH', 'POST', 'DELETE'].includes(q.method) && !q.path.includes('/leases'));
const podDeletesOf = (server: TestApiServer) => server.requests.filter((q) => q.method === 'DELETE' && q.path.includes('/pods/'));
const configConfOf = (server: TestApiServer) => (server.store.get('configmaps', 'kube-system', 'kube-proxy') as unknown as { data: Record<string, string> }).data['config.conf']!;
const proxyMode = async (n: string) => (await vms.exec(n, 'curl -s --max-time 5 127.0.0.1:10249/proxyMode')).stdout.trim();
const full = () => ({ tags: ['node', 'cluster'], cluster: { podTimeoutS: 180, backupDir: tempDir('kpm-vm-bk-') } });
const forEachVm = <T>(fn: (n: string) => Promise<T>) => Promise.all(NAMES.map(fn));

/** `status --json` of the guests, read through the tool's own command. */
async function statusOf(label: string, inv: string): Promise<{ code: number; report: StatusReport; text: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await status({ inventory: inv, json: true, out: (l) => out.push(l), err: (l) => err.push(l) });
  const text = `${out.join('\n')}\n${err.join('\n')}`;
  keepRun(`status-${label}`, { code, out: text, err: '', report: { hosts: {}, summary: {} } } as never);
  return { code, report: JSON.parse(out.join('\n')) as StatusReport, text };
}

describe('node phase on real Debian guests (stock kernel, real modules)', () => {
  test('first run on fresh guests: packages installed by the tool, both module files written, the real modules loaded; nf_conntrack_ipv4 neither loaded nor a failure', async () => {
    // what the tool has to do is really not done yet
    await forEachVm(async (n) => {
      expect(await installed(vms, n, PACKAGES)).toEqual([]);
      const mods = await lsmod(vms, n);
      for (const m of ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh']) expect(mods.has(m), `${n}: ${m} loaded before the run`).toBe(false);
      expect((await vms.exec(n, 'test -e /etc/modules-load.d/ipvs.conf || test -e /etc/sysconfig/modules/ipvs.modules')).code).not.toBe(0);
      expect((await vms.run(n, 'uname -r')).trim()).toBe(vms.image.kver);
    });

    const r = keepRun('first-run', await runProvision(inventory()));
    expect(r.code, r.out).toBe(0);
    for (const n of NAMES) {
      expect(r.report.hosts[n]!.status, r.out).toBe('changed');
      expect(stepOf(r, n, 'packages')!.status).toBe('changed');
      expect(stepOf(r, n, 'packages')!.message).toMatch(/ipvsadm.*ipset.*conntrack|installed/);
      expect(stepOf(r, n, 'ipvs.modules')!.status).toBe('changed');
      expect(stepOf(r, n, 'modules-load.d')!.status).toBe('changed');
      expect(stepOf(r, n, 'modules')!.status).toBe('changed');
      expect(r.out).toMatch(new RegExp(`^${n} +: ok=\\d+ +changed=[1-9]\\d* +unreachable=0 +failed=0`, 'm'));
    }

    await forEachVm(async (n) => {
      // installed through apt from the repository this run served at 10.0.2.2
      expect(await installed(vms, n, PACKAGES)).toEqual(PACKAGES);
      expect(await vms.run(n, 'ls /var/lib/apt/lists/')).toContain('10.0.2.2');
      expect(await vms.run(n, 'ipvsadm -Ln')).toMatch(/^IP Virtual Server version \d+\.\d+\.\d+/);

      const files = await vms.run(n, 'stat -c "%n %a %U:%G" /etc/sysconfig/modules/ipvs.modules /etc/modules-load.d/ipvs.conf');
      expect(files).toContain('/etc/sysconfig/modules/ipvs.modules 755 root:root');
      expect(files).toContain('/etc/modules-load.d/ipvs.conf 644 root:root');
      const conf = (await vms.run(n, 'cat /etc/modules-load.d/ipvs.conf')).split('\n').filter((l) => l !== '' && !l.startsWith('#'));
      expect(conf).toEqual(DEFAULT_MODULES);
      const script = (await vms.run(n, 'cat /etc/sysconfig/modules/ipvs.modules')).split('\n').filter((l) => l.startsWith('modprobe'));
      expect(script).toEqual(DEFAULT_MODULES.map((m) => `modprobe -- ${m}`));

      const mods = await lsmod(vms, n);
      for (const m of DEFAULT_MODULES) expect(mods.has(m), `${n}: ${m} not loaded`).toBe(true);
      // kernel 6.1 has no nf_conntrack_ipv4 (merged into nf_conntrack in 4.19): nothing asked for it
      const legacy = await vms.exec(n, 'modprobe -n nf_conntrack_ipv4');
      expect(legacy.code).not.toBe(0);
      expect(legacy.stderr).toMatch(/Module nf_conntrack_ipv4 not found/);
      expect(mods.has('nf_conntrack_ipv4')).toBe(false);
      expect(await vms.run(n, 'cat /etc/modules-load.d/ipvs.conf /etc/sysconfig/modules/ipvs.modules')).not.toContain('nf_conntrack_ipv4');
    });
  });

  test('second run: nothing to change on any guest', async () => {
    const r = keepRun('second-run', await runProvision(inventory()));
    expect(r.code, r.out).toBe(0);
    expect(r.report.summary.changed, r.out).toBe(0);
    for (const n of NAMES) {
      expect(r.report.hosts[n]!.status).toBe('ok');
      expect(r.out).toMatch(new RegExp(`^${n} +: ok=\\d+ +changed=0 +unreachable=0 +failed=0 .*converged`, 'm'));
    }
  });

  test('real reboot of each guest: systemd-modules-load loads the modules again from ipvs.conf; a rerun changes nothing', async () => {
    const bootIds = await forEachVm((n) => vms.run(n, 'cat /proc/sys/kernel/random/boot_id'));
    await vms.reboot(...NAMES);
    await forEachVm(async (n) => {
      expect(await vms.run(n, 'cat /proc/sys/kernel/random/boot_id')).not.toBe(bootIds[NAMES.indexOf(n)]);
      expect((await vms.exec(n, 'systemctl is-active systemd-modules-load.service')).stdout.trim()).toBe('active');
      expect((await vms.run(n, 'systemctl show -p ExecMainStatus --value systemd-modules-load.service')).trim()).toBe('0');
      // by identifier: it runs before journald, so its lines come in through kmsg without the unit field
      const journal = await vms.run(n, 'journalctl -b --no-pager -o cat -t systemd-modules-load');
      // ip_vs pulls nf_conntrack in as a dependency, so that one may be "already loaded" by its turn
      for (const m of ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh']) expect(journal, `${n} journal:\n${journal}`).toContain(`Inserted module '${m}'`);
      expect(journal).not.toMatch(/Failed to (find|insert) module/);
      const mods = await lsmod(vms, n);
      for (const m of DEFAULT_MODULES) expect(mods.has(m), `${n}: ${m} not loaded after the reboot`).toBe(true);
    });
    const r = keepRun('after-reboot', await runProvision(inventory()));
    expect(r.code, r.out).toBe(0);
    expect(r.report.summary.changed, r.out).toBe(0);

    // `status` reads the same from each rebooted guest: prerequisites met, modules loaded, files persisted
    const rt = vmKubeProxyRuntime(vms);
    const server = await startTestApiServer({ nodes: NAMES.map((name) => ({ name, internalIP: GUEST_IP })), runtime: rt, recreateDelayMs: 100 });
    try {
      const s = await statusOf('after-reboot', inventory({ kubeconfig: server.kubeconfigPath }));
      expect(s.code, s.text).toBe(0);
      for (const n of NAMES) {
        const st = s.report.nodes.find((x) => x.node === n)!;
        expect(st.runningMode, s.text).toBe('iptables');
        expect(st.prerequisites, s.text).toMatchObject({ packagesMissing: [], modulesNotLoaded: [], filesNotPersisted: [] });
      }
    } finally {
      await server.close();
    }
  });
});

describe('a kernel without ip_vs', () => {
  test('the node phase fails on that guest naming ip_vs and leaves it untouched; the cluster phase refuses to flip: ConfigMap unchanged, no pod deleted', async () => {
    const READY = NAMES[0]!;
    // the guest's kernel really has no IPVS, while nf_conntrack is there; the other guest's has IPVS
    const probe = await vms.exec(NO_IPVS, 'modprobe -n ip_vs');
    expect(probe.code).not.toBe(0);
    expect(probe.stderr).toMatch(/Module ip_vs not found in directory \/lib\/modules\/6\./);
    expect((await vms.exec(NO_IPVS, 'modprobe -n nf_conntrack')).code).toBe(0);
    expect((await vms.exec(READY, 'modprobe -n ip_vs')).code).toBe(0);

    const rt = vmKubeProxyRuntime(vms);
    const server = await startTestApiServer({ nodes: [READY, NO_IPVS].map((name) => ({ name, internalIP: GUEST_IP })), runtime: rt, recreateDelayMs: 100 });
    try {
      const original = configConfOf(server);
      const r = keepRun('no-ipvs', await runProvision(inventory({ kubeconfig: server.kubeconfigPath }, [READY, NO_IPVS]), full()));
      expect(r.code, r.out).toBe(2);

      // node phase: the guest without IPVS fails in preflight, with the module named, and is left as it was
      const pre = stepOf(r, NO_IPVS, 'preflight')!;
      expect(pre.status, r.out).toBe('failed');
      expect(pre.message).toMatch(/has no ip_vs module: IPVS mode cannot run on this node/);
      expect(pre.message).toMatch(/ip_vs \(.*not found/);
      expect(r.report.hosts[NO_IPVS]!.status).toBe('failed');
      expect(stepOf(r, NO_IPVS, 'packages')?.status ?? 'not run').not.toBe('changed');
      expect(await installed(vms, NO_IPVS, PACKAGES)).toEqual([]);
      expect((await vms.exec(NO_IPVS, 'test -e /etc/modules-load.d/ipvs.conf || test -e /etc/sysconfig/modules/ipvs.modules')).code).not.toBe(0);
      expect(r.report.hosts[READY]!.status).toBe('ok');

      // cluster phase: refused before any write
      const cpre = stepOf(r, 'cluster', 'preflight')!;
      expect(cpre.status).toBe('failed');
      expect(cpre.message).toMatch(/not ready for ipvs mode, so the ConfigMap is left as it is/);
      expect(cpre.message).toContain(NO_IPVS);
      expect(stepOf(r, 'cluster', 'configmap')).toBeUndefined();
      expect(writesOf(server)).toEqual([]);
      expect(configConfOf(server)).toBe(original);
      expect(server.events.filter((e) => e.type === 'pod-deleted')).toEqual([]);
      // no kube-proxy was started in ipvs mode; both still run iptables
      expect(rt.starts.filter((s) => s.mode === 'ipvs')).toEqual([]);
      for (const n of [READY, NO_IPVS]) expect(await proxyMode(n)).toBe('iptables');
    } finally {
      await server.close();
    }
  });
});

describe('the whole flow with the test API server; kube-proxy fixture on real IPVS', () => {
  const writes = () => writesOf(api!);
  const configConf = () => configConfOf(api!);
  const web = async (n: string, url = `http://${WEB_SERVICE.clusterIP}/`) => (await vms.exec(n, `curl -s --max-time 5 ${url}`)).stdout;

  test('full provision (node + cluster): ConfigMap flipped, each guest recycled one at a time, verified with the real ipvsadm; Service probes pass through real IPVS', async () => {
    runtime = vmKubeProxyRuntime(vms);
    // the nodes' kube-proxy starts in iptables mode (config.conf's mode "") when the server comes up
    api = await startTestApiServer({ nodes: NAMES.map((name) => ({ name, internalIP: GUEST_IP })), runtime, recreateDelayMs: 100 });
    api.store.create('services', serviceObject(WEB_SERVICE) as never);
    api.store.create('endpointslices', endpointSliceObject(WEB_SERVICE) as never);
    expect(runtime.starts.map((s) => `${s.node} ${s.mode} ${s.ready}`).sort()).toEqual(NAMES.map((n) => `${n} iptables true`));
    await forEachVm(async (n) => {
      expect(await proxyMode(n)).toBe('iptables');
      // before the switch the Services answer through kube-proxy's iptables DNAT
      expect(await web(n)).toBe(`hello from web on ${n}\n`);
    });

    const r = keepRun('full-flow', await runProvision(inventory({ kubeconfig: api.kubeconfigPath, kube_proxy_probe_services: ['default/web:80/'] }), full()));
    expect(r.code, r.out).toBe(0);
    expect(configConf()).toMatch(/^mode: "ipvs"$/m);
    // one at a time, in inventory order, each replaced by a pod the fixture started in ipvs mode
    const recycled = r.out.split('\n').filter((l) => / \| kube-proxy +\| changed /.test(l)).map((l) => l.split(' ')[0]);
    expect(recycled).toEqual(NAMES);
    expect(podDeletesOf(api).length).toBe(NAMES.length);
    expect(writes().filter((w) => w.path.includes('/configmaps')).length).toBeGreaterThan(0);
    expect(api.events.filter((e) => e.type === 'pod-deleted').map((e) => e.node)).toEqual(NAMES);
    expect(Math.max(...api.unavailableTimeline().map((p) => p.unavailable))).toBe(1);
    expect(runtime.starts.filter((s) => s.mode === 'ipvs').map((s) => `${s.node} ${s.result}`)).toEqual(NAMES.map((n) => `${n} ready`));

    for (const n of NAMES) {
      const step = stepOf(r, n, 'kube-proxy')!;
      expect(step.status).toBe('changed');
      expect(step.message).toMatch(/verified: \/proxyMode: ipvs, log: Using ipvs Proxier, ipvsadm: 10.96.0.1:443/);
      const probes = (step as unknown as { probes: { service: string; via: string; before?: { ok: boolean; detail: string }; after?: { ok: boolean; detail: string } }[] }).probes;
      const of = (service: string, via: string) => probes.find((p) => p.service === service && p.via === via);
      // TLS handshake with the guest's HTTPS backend through 10.96.0.1:443, before (iptables) and after (IPVS)
      expect(of('default/kubernetes', 'ClusterIP')).toMatchObject({ before: { ok: true }, after: { ok: true, detail: expect.stringMatching(/^TLS ok, HTTP 200/) } });
      expect(of('default/web', 'ClusterIP')).toMatchObject({ before: { ok: true }, after: { ok: true, detail: 'HTTP 200' } });
      expect(of('default/web', 'NodePort')).toMatchObject({ before: { ok: true }, after: { ok: true, detail: 'HTTP 200' } });
    }

    await forEachVm(async (n) => {
      expect(await proxyMode(n)).toBe('ipvs');
      // the real kernel's IPVS table, as the tool's verification read it
      const table = await vms.run(n, 'ipvsadm -Ln');
      expect(table).toMatch(new RegExp(`TCP  10\\.96\\.0\\.1:443 rr\\n +-> ${KUBERNETES_SERVICE.endpoint.replace(/\./g, '\\.')} +Masq +1 `));
      expect(table).toMatch(/TCP  10\.96\.100\.10:80 rr\n +-> 10\.0\.2\.15:8080 +Masq/);
      expect(table).toMatch(/TCP  10\.0\.2\.15:30080 rr/);
      expect(await vms.run(n, 'ip -4 -o addr show dev kube-ipvs0')).toMatch(/10\.96\.0\.1\/32[\s\S]*10\.96\.100\.10\/32/);
      // no DNAT left in the way: KUBE-SERVICES is the IPVS proxier's, so ClusterIP traffic is IPVS's
      const nat = await vms.run(n, 'iptables-save -t nat');
      expect(nat).not.toMatch(/-A KUBE-SERVICES -d 10\.96\./);
      // the after-probes went through IPVS, and one more request is counted by it (IPVS folds its
      // per-CPU counters into what it reports every 2 seconds)
      const conns = await ipvsConns(vms, n, '10.96.100.10:80');
      expect(conns).toBeGreaterThan(0);
      expect(await ipvsConns(vms, n, '10.96.0.1:443')).toBeGreaterThan(0);
      expect(await web(n)).toBe(`hello from web on ${n}\n`);
      let after = conns;
      for (let i = 0; i < 20 && after === conns; i++) {
        await new Promise((res) => setTimeout(res, 1000));
        after = await ipvsConns(vms, n, '10.96.100.10:80');
      }
      expect(after).toBe(conns + 1);
    });
  });

  test('status and trace read the real IPVS table: every guest in ipvs, in sync; default/web through its virtual server to the real server', async () => {
    const inv = inventory({ kubeconfig: api!.kubeconfigPath });
    const s = await statusOf('after-switch', inv);
    expect(s.code, s.text).toBe(0);
    expect(s.report.nodes.map((x) => `${x.node} ${x.runningMode}`)).toEqual(NAMES.map((n) => `${n} ipvs`));
    for (const n of NAMES) {
      const out: string[] = [];
      const err: string[] = [];
      const code = await trace({ service: 'default/web', inventory: inv, node: n, json: true, out: (l) => out.push(l), err: (l) => err.push(l) });
      keepRun(`trace-${n}`, { code, out: out.join('\n'), err: err.join('\n') } as never);
      expect(code, `${out.join('\n')}\n${err.join('\n')}`).toBe(0);
      const t = JSON.parse(out.join('\n')) as ServiceTrace;
      expect(t.mode).toBe('ipvs');
      expect(t.warnings).toEqual([]);
      // the ClusterIP and the NodePort virtual servers, each to the guest's backend, as the kernel holds them
      const clusterIP = t.frontends.find((f) => f.kind === 'ClusterIP');
      expect(clusterIP, out.join('\n')).toMatchObject({ address: '10.96.100.10:80', protocol: 'TCP', scheduler: 'rr' });
      expect(clusterIP!.backends.map((b) => [b.address, b.share])).toEqual([['10.0.2.15:8080', 1]]);
      const nodePort = t.frontends.find((f) => f.kind === 'NodePort');
      expect(nodePort?.address, out.join('\n')).toMatch(/:30080$/);
      expect(nodePort!.backends.map((b) => b.address)).toEqual(['10.0.2.15:8080']);
    }
  });

  test('rerun: no ConfigMap write, no pod deleted, every node ok', async () => {
    const before = writes().length;
    const r = keepRun('full-flow-rerun', await runProvision(inventory({ kubeconfig: api!.kubeconfigPath, kube_proxy_probe_services: ['default/web:80/'] }), full()));
    expect(r.code, r.out).toBe(0);
    expect(writes().length).toBe(before);
    for (const n of NAMES) expect(stepOf(r, n, 'kube-proxy')!.status).toBe('ok');
    expect(r.report.summary.changed).toBe(0);
  });
});
