// The kube-proxy TEST FIXTURE on real lab hosts: kube-proxy's own start-up failures for what a host
// lacks, a running stand-in that answers /proxyMode, the IPVS fixture table behind the labelled
// ipvsadm wrapper, what a host restart takes away, and the other modes' state kube-proxy's
// platformCleanup removes at start-up.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { servicePortChainName, servicePortEndpointChainName } from '../../tasks/dataplane/chain-names.ts';
import type { KubeProxyConfig, NodeRuntime, StartInfo } from '../apiserver/server.ts';
import { labKubeProxyRuntime, type LabService } from './kube-proxy-fixture.ts';
import { labSupported, startLab, type ExecResult, type Lab } from './lab.ts';

const support = labSupported();
if (!support.ok) console.warn(`kube-proxy fixture tests skipped: ${support.reason}`);

const KLOG = /^[IWE]\d{4} \d\d:\d\d:\d\d\.\d{6} {7}1 [a-z_]+\.go:\d+\] \S/;
const LOGRUS = /^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ" level=(warning|error) msg="/;

function config(mode: string, extra = ''): KubeProxyConfig {
  return {
    mode: mode === '' ? 'iptables' : mode,
    metricsBindAddress: '127.0.0.1:10249',
    raw: `apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: "${mode}"\n${extra}`,
  };
}

describe.skipIf(!support.ok)(`kube-proxy test fixture on lab hosts${support.ok ? '' : ` (skipped: ${support.reason})`}`, () => {
  let lab: Lab;
  let runtime: NodeRuntime;
  let info: StartInfo;
  let apiServer: string;

  const sh = (host: string, cmd: string): Promise<ExecResult> => lab.exec(host, cmd);
  const out = async (host: string, cmd: string): Promise<string> => {
    const r = await sh(host, cmd);
    expect(r.code, `${cmd}: ${r.stderr}`).toBe(0);
    return r.stdout;
  };
  const proxyMode = (host: string) => sh(host, 'curl -sS --max-time 3 http://127.0.0.1:10249/proxyMode');
  const fixtureProcesses = async (host: string) => Number((await out(host, 'pgrep -fc "^python3 .*[k]ube-proxy-test-fixture" || true')).trim());
  const ipvsTable = (rows: string[]) =>
    ['IP Virtual Server version 1.2.1 (size=4096)', 'Prot LocalAddress:Port Scheduler Flags', '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn', ...rows, ''].join('\n');

  beforeAll(async () => {
    lab = await startLab({ hosts: 3, kmodShim: true, id: 'k' });
    runtime = labKubeProxyRuntime(lab);
    info = { pod: 'kube-proxy-x7c4n', internalIP: lab.hosts[0]!.address, version: 'v1.31.4' };
    apiServer = `${lab.hosts[0]!.address.split('.').slice(0, 2).join('.')}.0.1:6443`;
  });

  afterAll(async () => {
    await lab?.down();
  });

  it('fails ipvs on a fresh host with kube-proxy 1.31\'s ipset error and leaves nothing running', async () => {
    const r = await runtime.start('node001', config('ipvs'), info);
    expect(r.ready).toBe(false);
    for (const l of r.log) expect(l).toMatch(new RegExp(`${KLOG.source}|${LOGRUS.source}`));
    const err = "can't use the IPVS proxier: error getting ipset version, error: executable file not found in $PATH";
    expect(r.log.at(-2)).toMatch(/^E\d{4} [\d:.]+ {7}1 server\.go:558\] "Error running ProxyServer" err=/);
    expect(r.log.at(-1)).toMatch(/^E\d{4} [\d:.]+ {7}1 run\.go:74\] "command failed" err=/);
    expect(r.log.at(-1)!.endsWith(` err=${JSON.stringify(err)}`)).toBe(true);
    // ip_vs is not loaded either: moby/ipvs says so before the ipset check runs
    expect(r.log.some((l) => /level=error msg="Could not get ipvs family information from the kernel\./.test(l))).toBe(true);
    expect(r.log).toContainEqual(expect.stringContaining(`server.go:677] "Successfully retrieved node IP(s)" IPs=["${info.internalIP}"]`));
    expect((await proxyMode('node001')).code).not.toBe(0);
    expect(await fixtureProcesses('node001')).toBe(0);
  });

  it('once the packages are in, fails while ip_vs is not loaded, and loads no module itself', async () => {
    const install = await sh('node001', 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q ipvsadm ipset conntrack');
    expect(install.code, install.stderr).toBe(0);
    const r = await runtime.start('node001', config('ipvs'), info);
    expect(r.ready).toBe(false);
    expect(r.log).toContainEqual(expect.stringMatching(/ proxier\.go:646\] "Dummy VS not created" scheduler="rr"$/));
    expect(r.log.at(-1)).toMatch(/ run\.go:74\] "command failed" err="can't use the IPVS proxier: Ipvs not supported"$/);
    expect(r.log[r.log.length - 5]).toMatch(
      /^time="[^"]+" level=warning msg="Running modprobe ip_vs failed with message: `modprobe: WARNING: Module ip_vs not found in directory \/lib\/modules\/\S+`, error: exit status 1"$/,
    );
    expect(await out('node001', 'lsmod')).not.toMatch(/^ip_vs/m);
    expect(await out('node001', 'cat /var/log/kpm-lab-kmod.log 2>/dev/null || true')).toBe('');
    expect((await proxyMode('node001')).code).not.toBe(0);
  });

  it('fails on the scheduler module when only ip_vs is loaded', async () => {
    await out('node001', 'modprobe ip_vs');
    const r = await runtime.start('node001', config('ipvs', 'ipvs:\n  scheduler: "wrr"\n'), info);
    expect(r.ready).toBe(false);
    expect(r.log.some((l) => l.includes('Could not get ipvs family'))).toBe(false);
    expect(r.log.at(-3)).toMatch(/^E\d{4} [\d:.]+ {7}1 proxier\.go:634\] "Could not create dummy VS" err="no such file or directory" scheduler="wrr"$/);
    expect(r.log.at(-1)).toMatch(/"command failed" err="can't use the IPVS proxier: no such file or directory"$/);
  });

  it('runs in ipvs mode once ip_vs and ip_vs_rr are loaded: /proxyMode, the IPVS table, kube-ipvs0', async () => {
    await out('node001', 'modprobe ip_vs_rr');
    const r = await runtime.start('node001', config('ipvs'), info);
    expect(r.ready, r.log.join('\n')).toBe(true);
    for (const l of r.log) expect(l).toMatch(KLOG);
    expect(r.log).toContainEqual(expect.stringMatching(/ server_linux\.go:\d+\] "Using ipvs Proxier"$/));
    expect(r.log).toContainEqual(expect.stringMatching(/ proxier\.go:\d+\] "IPVS scheduler not specified, use rr by default" ipFamily="IPv4"$/));
    expect(r.log).toContainEqual(expect.stringMatching(/ server\.go:\d+\] "Version info" version="v1\.31\.4"$/));
    expect(r.log.some((l) => l.includes('Using iptables'))).toBe(false);

    expect(await proxyMode('node001')).toMatchObject({ code: 0, stdout: 'ipvs' });
    const headers = await out('node001', 'curl -sS -i --max-time 3 http://127.0.0.1:10249/proxyMode');
    expect(headers).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(headers).toMatch(/^Content-Type: text\/plain; charset=utf-8\r$/m);
    expect(await out('node001', 'curl -sS --max-time 3 http://127.0.0.1:10249/healthz')).toBe('ok');
    expect(await out('node001', 'curl -sS -o /dev/null -w "%{http_code}" --max-time 3 http://127.0.0.1:10249/nope')).toBe('404');
    const healthz = JSON.parse(await out('node001', 'curl -sS --max-time 3 http://127.0.0.1:10256/healthz')) as Record<string, unknown>;
    expect(healthz).toMatchObject({ nodeEligible: true });
    expect(healthz.lastUpdated).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC$/);

    const row = `  -> ${apiServer.padEnd(28)} Masq    1      0          0         `;
    expect(await out('node001', 'ipvsadm -Ln')).toBe(ipvsTable(['TCP  10.96.0.1:443 rr', row]));
    expect(await out('node001', 'ipvsadm -L')).toContain('TCP  10.96.0.1:https rr\n');
    expect(await out('node001', 'ipvsadm -Sn')).toBe(`-A -t 10.96.0.1:443 -s rr\n-a -t 10.96.0.1:443 -r ${apiServer} -m -w 1\n`);
    expect(await out('node001', 'ipvsadm --version')).toMatch(/^ipvsadm v1\.31 .*\n.*test fixture; not ipvsadm/);
    expect(await out('node001', 'ipvsadm -h')).toContain('test fixture; not ipvsadm');
    const unsupported = await sh('node001', 'ipvsadm -A -t 10.0.0.1:80 -s rr');
    expect(unsupported.code).toBe(2);
    expect(unsupported.stderr).toContain('kpm-lab ipvsadm test fixture');
    expect(await out('node001', 'ip -br link show kube-ipvs0')).toMatch(/^kube-ipvs0\s+DOWN\s+\S+ <BROADCAST,NOARP>/);
    expect(await out('node001', 'ip -br addr show kube-ipvs0')).toMatch(/\b10\.96\.0\.1\/32\b/);

    // The server is a background process of the host: it outlives the exec that started it.
    await new Promise((res) => setTimeout(res, 500));
    expect(await proxyMode('node001')).toMatchObject({ code: 0, stdout: 'ipvs' });
    expect(await fixtureProcesses('node001')).toBe(1);
  });

  it('restarts in iptables mode in place of the ipvs one, leaving the IPVS leftovers behind', async () => {
    const r = await runtime.start('node001', config(''), info);
    expect(r.ready).toBe(true);
    expect(r.log[0]).toMatch(/ server_linux\.go:66\] "Using iptables proxy"$/);
    expect(r.log).toContainEqual(expect.stringMatching(/ server_linux\.go:169\] "Using iptables Proxier"$/));
    expect(await proxyMode('node001')).toMatchObject({ code: 0, stdout: 'iptables' });
    expect(await fixtureProcesses('node001')).toBe(1);
    expect(await out('node001', 'ipvsadm -Ln')).toContain('TCP  10.96.0.1:443 rr\n');
    expect(await out('node001', 'ip -br addr show kube-ipvs0')).toMatch(/\b10\.96\.0\.1\/32\b/);
  });

  it('dies with its host: after a restart nothing answers, and the IPVS table and kube-ipvs0 are gone', async () => {
    await lab.restart('node001');
    const r = await proxyMode('node001');
    expect(r.code).toBe(7); // curl: connection refused
    expect(await fixtureProcesses('node001')).toBe(0);
    expect((await sh('node001', 'ip link show kube-ipvs0')).code).not.toBe(0);
    expect((await sh('node001', 'test -e /run/kpm-lab-ipvs/table')).code).toBe(1);
    // the package survives the reboot, the modules and the table do not
    expect(await out('node001', 'lsmod')).not.toMatch(/^ip_vs_rr/m);
    expect(await out('node001', 'ipvsadm -Ln')).toBe(ipvsTable([]));
  });

  it('leaves ipvsadm "command not found" where the package is not installed, as on a real node', async () => {
    const missing = await sh('node002', 'ipvsadm -Ln');
    expect(missing.code).toBe(127);
    expect(missing.stderr).toMatch(/ipvsadm: command not found/);
    expect((await sh('node002', 'command -v ipvsadm')).code).toBe(1);

    await out('node002', 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q ipvsadm');
    expect((await out('node002', 'command -v ipvsadm')).trim()).toBe('/usr/sbin/ipvsadm');
    expect(await out('node002', 'dpkg -S /sbin/ipvsadm')).toContain('local diversion to: /sbin/ipvsadm.real\nipvsadm: /sbin/ipvsadm\n');
    expect(await out('node002', 'ls -l /usr/sbin/ipvsadm')).toMatch(/ -> \.\.\/lib\/kpm-lab-ipvs\/ipvsadm$/m);
    await out('node002', 'DEBIAN_FRONTEND=noninteractive apt-get remove -y -q ipvsadm');
    expect((await sh('node002', 'command -v ipvsadm')).code).toBe(1);
  });

  it('fails with kube-proxy\'s iptables error on a host without iptables', async () => {
    await out('node002', 'rm /usr/sbin/iptables /usr/sbin/ip6tables');
    const r = await runtime.start('node002', config('ipvs'), { ...info, internalIP: lab.hosts[1]!.address });
    expect(r.ready).toBe(false);
    expect(r.log.at(-1)).toMatch(/"command failed" err="iptables is not available on this host"$/);
    expect(r.log.some((l) => l.includes('ipvs'))).toBe(false);
  });

  it('maps node names to hosts and serves the configured bind addresses, until stopped', async () => {
    const mapped = labKubeProxyRuntime(lab, (node) => (node === 'worker-c' ? 'node003' : node));
    const host = lab.hosts[2]!.address;
    const cfg: KubeProxyConfig = {
      mode: 'nftables',
      metricsBindAddress: '0.0.0.0:10249',
      raw: 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\nhealthzBindAddress: 0.0.0.0:10256\nmetricsBindAddress: 0.0.0.0:10249\n',
    };
    const r = await mapped.start('worker-c', cfg, { ...info, internalIP: host });
    expect(r.ready).toBe(true);
    expect(r.log).toContainEqual(expect.stringMatching(/"Using nftables Proxier"$/));
    expect(r.log.some((l) => l.includes('nodePortAddresses is unset'))).toBe(false);

    const res = await fetch(`http://${host}:10249/proxyMode`, { signal: AbortSignal.timeout(5000) });
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(await res.text()).toBe('nftables');
    const health = await fetch(`http://${host}:10256/livez`, { signal: AbortSignal.timeout(5000) });
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ nodeEligible: true });
    expect((await sh('node003', 'ip link show kube-ipvs0')).code).not.toBe(0);

    await mapped.stop!('worker-c');
    await expect(fetch(`http://${host}:10249/proxyMode`, { signal: AbortSignal.timeout(5000) })).rejects.toThrow();
    await expect(mapped.start('worker-z', cfg, info)).rejects.toThrow(/node worker-z maps to worker-z, which lab k does not have/);
  });

  describe('platformCleanup at start-up', () => {
    const host = 'node003';
    let svcRuntime: NodeRuntime;
    let hostInfo: StartInfo;
    let web: LabService;
    const startIn = async (mode: string) => {
      const r = await svcRuntime.start(host, config(mode), hostInfo);
      if (!r.ready) throw new Error(`the fixture kube-proxy did not start in ${mode || 'iptables'} mode: ${r.log.join('\n')}`);
    };
    const lines = (text: string) => text.split('\n').filter((l) => l !== '');
    /** iptables-save without its dated comment lines and the chains' counters */
    const saved = async (tool: 'iptables' | 'ip6tables') =>
      lines(await out(host, `${tool}-save`))
        .filter((l) => !l.startsWith('#'))
        .map((l) => l.replace(/ \[\d+:\d+\]$/, ''));
    /** "table:chain" of every chain a save declares */
    const chains = (save: string[]) => {
      let table = '';
      return save.flatMap((l) => {
        if (l.startsWith('*')) table = l.slice(1);
        return l.startsWith(':') ? [`${table}:${l.slice(1).split(' ')[0]}`] : [];
      });
    };
    const gone = <T,>(before: T[], after: T[]) => before.filter((x) => !after.includes(x));
    /** every line that names a chain kube-proxy's iptables and ipvs proxiers own, or the fixture's IPVS emulation */
    const KUBE_PROXY_LINE = /KUBE-(SERVICES|EXTERNAL-SERVICES|NODEPORTS|NODE-PORT|POSTROUTING|MARK-MASQ|FORWARD|PROXY-FIREWALL|IPVS-FILTER|SVC-|SEP-)|KPM-LAB-IPVS-EMULATION/;

    // What a real node holds besides the fixture's own rules: kube-proxy's filter chains (both
    // modes) and IPv6 nat chains, kubelet's chains, and chains of someone else.
    const SEED_V4 = `*nat
:KUBE-MARK-DROP - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:LAB-FOREIGN - [0:0]
-A PREROUTING -m comment --comment "lab foreign" -j LAB-FOREIGN
-A LAB-FOREIGN -d 192.0.2.50/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.0.2.51:8080
-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:LAB-FOREIGN - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A INPUT -m comment --comment "kubernetes ipvs access filter" -j KUBE-IPVS-FILTER
-A INPUT -j KUBE-FIREWALL
-A INPUT -m comment --comment "lab foreign" -j LAB-FOREIGN
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -m comment --comment "kubernetes firewall for dropping marked packets" -m mark --mark 0x8000/0x8000 -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.99/32 -p tcp -m comment --comment "default/idle has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
-A LAB-FOREIGN -s 192.0.2.99/32 -j DROP
COMMIT
*mangle
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
`;
    const SVC6 = servicePortChainName('default/web6', 'tcp');
    const SEED_V6 = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:${SVC6} - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:LAB-FOREIGN - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m comment --comment "lab foreign" -j LAB-FOREIGN
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-SERVICES -d fd00:10:96::10/128 -p tcp -m comment --comment "default/web6 cluster IP" -m tcp --dport 80 -j ${SVC6}
-A ${SVC6} -j KUBE-MARK-MASQ
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A LAB-FOREIGN -d 2001:db8::50/128 -j RETURN
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-FIREWALL - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
`;
    const FOREIGN_VS = ['-A -t 192.0.2.50:80 -s wlc', '-a -t 192.0.2.50:80 -r 192.0.2.51:8080 -g -w 1'];
    const FOREIGN_NFT = "add table inet lab-foreign; add chain inet lab-foreign input { type filter hook input priority 0; policy accept; }; add rule inet lab-foreign input ip saddr 192.0.2.99 drop";
    const kubeProxyTables = ['table ip kube-proxy', 'table ip6 kube-proxy'];
    let nftTables: string[];
    let foreignNft: string;

    beforeAll(async () => {
      hostInfo = { ...info, internalIP: lab.hosts[2]!.address };
      web = { name: 'web', namespace: 'default', clusterIP: '10.96.100.10', port: 80, nodePort: 30080, backends: [{ ip: lab.hosts[0]!.address, port: 8080 }] };
      svcRuntime = labKubeProxyRuntime(lab, (n) => n, { services: [web], dataplaneFault: (_node, mode) => (mode === 'ipvs' ? 'drop' : undefined) });
      await out(host, 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q ipvsadm ipset && modprobe ip_vs && modprobe ip_vs_rr');
    });

    it('starting in nftables mode removes iptables and ipvs modes\' state (IPv4 and IPv6) and flushes IPVS, a foreign virtual server too; kubelet\'s chains, the fault chain, foreign chains and a foreign ipset stay', async () => {
      // an iptables start leaves its Service chains, which the ipvs start after it keeps, unreferenced
      await startIn('');
      await startIn('ipvs');
      await out(host, `iptables-restore -w 5 --noflush <<'EOF'\n${SEED_V4}EOF\nip6tables-restore -w 5 --noflush <<'EOF'\n${SEED_V6}EOF`);
      await out(host, `printf '%s\\n' ${FOREIGN_VS.map((l) => `'${l}'`).join(' ')} >>/run/kpm-lab-ipvs/table`);
      await out(host, `ipset create lab-foreign hash:ip && ipset add lab-foreign 192.0.2.50 && nft '${FOREIGN_NFT}'`);
      const v4 = await saved('iptables');
      const v6 = await saved('ip6tables');
      const vs = lines(await out(host, 'ipvsadm -Sn'));
      const sets = lines(await out(host, 'ipset list -n'));
      const foreignSet = await out(host, 'ipset save lab-foreign');
      const links = lines(await out(host, 'ip -br link')).map((l) => l.split(/\s+/)[0]);
      nftTables = lines(await out(host, 'nft list tables')).filter((t) => !kubeProxyTables.includes(t));
      foreignNft = await out(host, 'nft list table inet lab-foreign');

      await startIn('nftables');

      const v4After = await saved('iptables');
      const v6After = await saved('ip6tables');
      const backend = `${web.backends[0]!.ip}:${web.backends[0]!.port}`;
      expect(gone(chains(v4), chains(v4After)).sort()).toEqual(
        [
          'nat:KUBE-SERVICES',
          'nat:KUBE-POSTROUTING',
          'nat:KUBE-MARK-MASQ',
          'nat:KUBE-NODEPORTS',
          'nat:KUBE-NODE-PORT',
          `nat:${servicePortChainName('default/web', 'tcp')}`,
          `nat:${servicePortEndpointChainName('default/web', 'tcp', backend)}`,
          'nat:KPM-LAB-IPVS-EMULATION',
          'filter:KUBE-EXTERNAL-SERVICES',
          'filter:KUBE-FORWARD',
          'filter:KUBE-NODEPORTS',
          'filter:KUBE-PROXY-FIREWALL',
          'filter:KUBE-SERVICES',
          'filter:KUBE-IPVS-FILTER',
        ].sort(),
      );
      expect(gone(chains(v6), chains(v6After)).sort()).toEqual(['nat:KUBE-SERVICES', 'nat:KUBE-POSTROUTING', 'nat:KUBE-MARK-MASQ', `nat:${SVC6}`, 'filter:KUBE-FORWARD'].sort());
      // everything else, KPM-LAB-DATAPLANE-FAULT and its DROP rule included, byte for byte and in order
      expect(v4After).toEqual(v4.filter((l) => !KUBE_PROXY_LINE.test(l)));
      expect(v6After).toEqual(v6.filter((l) => !KUBE_PROXY_LINE.test(l)));

      // ipvs.Flush() empties IPVS, the foreign virtual server too
      expect(gone(vs, lines(await out(host, 'ipvsadm -Sn')))).toEqual([
        '-A -t 10.96.0.1:443 -s rr',
        `-a -t 10.96.0.1:443 -r ${apiServer} -m -w 1`,
        '-A -t 10.96.100.10:80 -s rr',
        `-a -t 10.96.100.10:80 -r ${backend} -m -w 1`,
        `-A -t ${hostInfo.internalIP}:30080 -s rr`,
        `-a -t ${hostInfo.internalIP}:30080 -r ${backend} -m -w 1`,
        ...FOREIGN_VS,
      ]);
      expect(gone(links, lines(await out(host, 'ip -br link')).map((l) => l.split(/\s+/)[0]))).toEqual(['kube-ipvs0']);
      expect({ gone: gone(sets, lines(await out(host, 'ipset list -n'))), left: await out(host, 'ipset save') }).toEqual({
        gone: ['KUBE-CLUSTER-IP', 'KUBE-NODE-PORT-TCP'],
        left: foreignSet,
      });
    });

    it('starting in iptables mode removes kube-proxy\'s nftables tables and nothing else of nftables', async () => {
      const before = lines(await out(host, 'nft list tables'));
      await startIn('');
      const after = lines(await out(host, 'nft list tables'));
      expect({ gone: gone(before, after), left: after, foreign: await out(host, 'nft list table inet lab-foreign') }).toEqual({
        gone: kubeProxyTables,
        left: nftTables,
        foreign: foreignNft,
      });
    });
  });
});
