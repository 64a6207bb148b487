import { describe, expect, test } from 'vitest';
import { parseInventoryText } from '../../tasks/inventory/load.ts';
import { selectTargets } from '../../tasks/inventory/limit.ts';
import type { Host } from '../../tasks/inventory/types.ts';
import { applyScript, parseApplyOutput, READBACK_MARKER } from '../../tasks/node/apply.ts';
import type { Facts, ModuleProbe } from '../../tasks/node/facts.ts';
import { ipvsModules } from '../../tasks/node/ipvs-requirements.ts';
import { planIsNoop, planNode } from '../../tasks/node/plan.ts';
import { verify } from '../../tasks/node/phase.ts';
import { readTemplate, renderModuleTemplate } from '../../tasks/node/templates.ts';

// The plan is the only thing that decides what changes on a node: checked here with plain values.

function host(vars = '', user = 'root'): Host {
  const inv = parseInventoryText(`all:\n  vars:\n    ansible_user: ${user}\n${vars}  hosts:\n    node1:\n      ansible_host: 10.0.0.1\n`, 'inv.yaml');
  return selectTargets(inv)[0]!;
}

const probe = (name: string, p: Partial<ModuleProbe> = {}): ModuleProbe => ({ name, loaded: false, builtin: false, available: true, message: '', ...p });

function facts(over: Partial<Facts> = {}): Facts {
  const modules: Record<string, ModuleProbe> = {};
  for (const m of ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'ip_vs_lc', 'nf_conntrack']) modules[m] = probe(m);
  modules.nf_conntrack_ipv4 = probe('nf_conntrack_ipv4', { available: false, message: 'modprobe: FATAL: Module nf_conntrack_ipv4 not found in directory /lib/modules/6.1.0-27-amd64' });
  return {
    os: { id: 'debian', idLike: [], versionId: '12', prettyName: 'Debian GNU/Linux 12 (bookworm)' },
    family: 'debian',
    kernel: '6.1.0-27-amd64',
    arch: 'x86_64',
    packageManagers: ['apt'],
    packages: { ipvsadm: false, ipset: false, conntrack: false, 'conntrack-tools': false },
    modules,
    loadedModules: [],
    files: {
      '/etc/sysconfig/modules/ipvs.modules': { path: '/etc/sysconfig/modules/ipvs.modules', exists: false },
      '/etc/modules-load.d/ipvs.conf': { path: '/etc/modules-load.d/ipvs.conf', exists: false },
    },
    systemd: true,
    user: 'root',
    ...over,
  };
}

const MODS = ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'nf_conntrack'];
function converged(f: Facts, mods = MODS): Facts {
  const script = renderModuleTemplate(readTemplate('ipvs.modules'), mods);
  const conf = renderModuleTemplate(readTemplate('ipvs.conf'), mods);
  const out = structuredClone(f);
  for (const p of Object.keys(out.packages)) out.packages[p] = p !== 'conntrack-tools';
  for (const m of mods) out.modules[m]!.loaded = true;
  out.files['/etc/sysconfig/modules/ipvs.modules'] = { path: '/etc/sysconfig/modules/ipvs.modules', exists: true, mode: '755', owner: 'root', group: 'root', content: script };
  out.files['/etc/modules-load.d/ipvs.conf'] = { path: '/etc/modules-load.d/ipvs.conf', exists: true, mode: '644', owner: 'root', group: 'root', content: conf };
  return out;
}

describe('node plan', () => {
  test('fresh Debian node: install three packages, create both files, load the IPVS modules', () => {
    const p = planNode(host(), facts());
    expect(p.error).toBeUndefined();
    expect(p.install).toEqual(['ipvsadm', 'ipset', 'conntrack']);
    expect(p.modules).toEqual(MODS);
    expect(p.load).toEqual(MODS);
    expect(p.files.map((f) => [f.file.path, f.action])).toEqual([
      ['/etc/sysconfig/modules/ipvs.modules', 'create'],
      ['/etc/modules-load.d/ipvs.conf', 'create'],
    ]);
    expect(p.files[0]!.diff).toContain('+modprobe -- nf_conntrack\n');
    expect(p.files[0]!.diff).not.toContain('nf_conntrack_ipv4');
    expect(planIsNoop(p)).toBe(false);
  });

  test('converged node: nothing to do', () => {
    expect(planIsNoop(planNode(host(), converged(facts())))).toBe(true);
  });

  test('nf_conntrack_ipv4 is added only where modprobe finds it (probe, not kernel version)', () => {
    const f = facts({ kernel: '4.18.0-513.el8.x86_64' });
    expect(planNode(host(), f).modules).not.toContain('nf_conntrack_ipv4'); // RHEL 8.3+: merged by backport
    f.modules.nf_conntrack_ipv4 = probe('nf_conntrack_ipv4', { available: true });
    f.kernel = '3.10.0-1160.el7.x86_64';
    expect(planNode(host(), f).modules).toEqual([...MODS, 'nf_conntrack_ipv4']);
  });

  test('built-in modules are not loaded and not an error', () => {
    const f = facts();
    f.modules.nf_conntrack = probe('nf_conntrack', { builtin: true });
    f.modules.ip_vs = probe('ip_vs', { builtin: true });
    expect(planNode(host(), f).load).toEqual(['ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh']);
  });

  test('a kernel without ip_vs: the node fails before any change, with modprobe\'s message', () => {
    const f = facts();
    f.modules.ip_vs = probe('ip_vs', { available: false, message: 'modprobe: FATAL: Module ip_vs not found in directory /lib/modules/5.15.0-1030-kvm' });
    const p = planNode(host(), f);
    expect(p.error).toBe(
      'kernel 6.1.0-27-amd64 has no ip_vs module: IPVS mode cannot run on this node: ip_vs (modprobe: FATAL: Module ip_vs not found in directory /lib/modules/5.15.0-1030-kvm)',
    );
    expect(p.install).toEqual([]);
    expect(p.files).toEqual([]);
  });

  test('scheduler module and explicit module lists', () => {
    expect(ipvsModules(host('    kube_proxy_scheduler: lc\n').settings)).toEqual(['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'ip_vs_lc']);
    expect(ipvsModules(host('    kube_proxy_ipvs_modules: [ip_vs_wrr]\n    kube_proxy_scheduler: wrr\n').settings)).toEqual(['ip_vs', 'ip_vs_wrr']);
    expect(ipvsModules(host('    kube_proxy_ipvs_modules: []\n').settings)).toEqual(['ip_vs']);
    // an explicit list without the scheduler's module is refused before anything is changed
    const p = planNode(host('    kube_proxy_ipvs_modules: [ip_vs, ip_vs_rr]\n    kube_proxy_scheduler: lc\n'), facts());
    expect(p.error).toMatch(/^kube_proxy_scheduler lc needs kernel module ip_vs_lc, which kube_proxy_ipvs_modules does not list/);
    expect(p.install).toEqual([]);
  });

  test('RHEL family uses conntrack-tools with dnf; EL7 falls back to yum', () => {
    const rocky = facts({ os: { id: 'rocky', idLike: ['rhel', 'centos', 'fedora'], versionId: '9.4', prettyName: 'Rocky Linux 9.4' }, family: 'redhat', packageManagers: ['dnf', 'yum'] });
    const p = planNode(host(), rocky);
    expect(p.packageManager!.name).toBe('dnf');
    expect(p.install).toEqual(['ipvsadm', 'ipset', 'conntrack-tools']);
    const el7 = planNode(host(), { ...rocky, packageManagers: ['yum'] });
    expect(el7.packageManager!.name).toBe('yum');
  });

  test('unsupported distribution, missing package manager, non-root login: clear errors', () => {
    expect(planNode(host(), facts({ os: { id: 'alpine', idLike: [], versionId: '3.19', prettyName: 'Alpine Linux v3.19' }, family: null })).error).toMatch(
      /^unsupported distribution Alpine Linux v3.19 \(ID=alpine\); supported: debian \(apt\), redhat \(dnf\/yum\), suse \(zypper\)$/,
    );
    expect(planNode(host(), facts({ packageManagers: [] })).error).toMatch(/no package manager found/);
    expect(planNode(host(), facts({ user: 'ubuntu' })).error).toMatch(/connected as ubuntu without root/);
  });

  test('iptables mode: its tools (and conntrack), no module file, nothing loaded ahead', () => {
    const p = planNode(host('    kube_proxy_mode: iptables\n'), facts({ packages: { iptables: true, conntrack: false } }));
    expect(p.error).toBeUndefined();
    expect(p.mode).toBe('iptables');
    expect(p.packages).toEqual(['iptables', 'conntrack']);
    expect(p.install).toEqual(['conntrack']);
    expect(p.files).toEqual([]);
    expect(p.modules).toEqual([]);
    expect(planIsNoop(p)).toBe(false);
    expect(planIsNoop(planNode(host('    kube_proxy_mode: iptables\n'), facts({ packages: { iptables: true, conntrack: true } })))).toBe(true);
  });

  test('a family that names a package two ways: the installed name counts, the first is installed', () => {
    const el = { os: { id: 'rocky', idLike: ['rhel'], versionId: '9.4', prettyName: 'Rocky Linux 9.4' }, family: 'redhat' as const, packageManagers: ['dnf' as const] };
    const old = planNode(host('    kube_proxy_mode: iptables\n'), facts({ ...el, packages: { iptables: true, 'iptables-nft': false, 'conntrack-tools': true } }));
    expect(old.packages).toEqual(['iptables', 'conntrack-tools']);
    expect(planIsNoop(old)).toBe(true);
    const none = planNode(host('    kube_proxy_mode: iptables\n'), facts({ ...el, packages: { iptables: false, 'iptables-nft': false, 'conntrack-tools': true } }));
    expect(none.install).toEqual(['iptables-nft']);
  });

  test('nftables mode: nft and conntrack; kernel and nft gates refuse a node before any change, naming its versions', () => {
    const nftMods = (f: Facts): Facts => ({ ...f, modules: { ...f.modules, nf_tables: probe('nf_tables') } });
    const ok = planNode(host('    kube_proxy_mode: nftables\n'), nftMods(facts({ nftVersion: 'nftables v1.0.6 (Lester Gooch #5)' } as Partial<Facts>)));
    expect(ok.error).toBeUndefined();
    expect(ok.packages).toEqual(['nftables', 'conntrack']);
    expect(ok.files).toEqual([]);
    const oldKernel = planNode(host('    kube_proxy_mode: nftables\n'), nftMods(facts({ kernel: '5.10.0-28-amd64' })));
    expect(oldKernel.error).toBe("kernel 5.10.0-28-amd64 is older than 5.13: kube-proxy's nftables mode cannot run on this node");
    expect(oldKernel.install).toEqual([]);
    const oldNft = planNode(host('    kube_proxy_mode: nftables\n'), nftMods(facts({ kernel: '4.18.0-553.el8_10.x86_64', nftVersion: 'nftables v0.9.3 (Topsy)' } as Partial<Facts>)));
    expect(oldNft.error).toBe("kernel 4.18.0-553.el8_10.x86_64 is older than 5.13 and nft 0.9.3 is older than 1.0.0: kube-proxy's nftables mode cannot run on this node");
    const noNfTables = planNode(host('    kube_proxy_mode: nftables\n'), { ...facts(), modules: { ...facts().modules, nf_tables: probe('nf_tables', { available: false, message: 'modprobe: FATAL: Module nf_tables not found' }) } });
    expect(noNfTables.error).toMatch(/^kernel 6.1.0-27-amd64 has no nf_tables module: nftables mode cannot run on this node: nf_tables \(modprobe: FATAL/);
  });

  test('drift: an edited file shows a diff, a wrong mode is fixed in place', () => {
    const f = converged(facts());
    f.files['/etc/modules-load.d/ipvs.conf']!.content += 'br_netfilter\n';
    f.files['/etc/sysconfig/modules/ipvs.modules']!.mode = '644';
    const p = planNode(host(), f);
    expect(p.files.map((x) => x.action)).toEqual(['attributes', 'update']);
    expect(p.files[0]!.attributeChanges).toEqual(['mode 644 -> 755']);
    expect(p.files[1]!.diff).toContain('-br_netfilter');
  });

  test('temporary files of a write that was cut off: removed by the next run (a converged node is no longer a no-op), checked after', () => {
    const f = converged(facts());
    f.files['/etc/modules-load.d/ipvs.conf']!.strays = ['/etc/modules-load.d/.ipvs.conf.kpm-Ab12Cd'];
    const p = planNode(host(), f);
    expect(planIsNoop(p)).toBe(false);
    expect(p.files.map((x) => [x.action, x.strays])).toEqual([
      ['none', []],
      ['none', ['/etc/modules-load.d/.ipvs.conf.kpm-Ab12Cd']],
    ]);
    const s = applyScript(p, 'echo facts');
    expect(s).toContain('if kpm_go modules-load.d; then\nif rm -f -- /etc/modules-load.d/.ipvs.conf.kpm-Ab12Cd >>');
    expect(s).not.toContain('kpm_go ipvs.modules');
    expect(verify(p, f)).toEqual(['left behind: /etc/modules-load.d/.ipvs.conf.kpm-Ab12Cd']);
  });

  test('verify reads back the target state', () => {
    const p = planNode(host(), facts());
    expect(verify(p, converged(facts()))).toEqual([]);
    const bad = converged(facts());
    bad.packages.ipset = false;
    bad.modules.ip_vs_sh!.loaded = false;
    bad.files['/etc/modules-load.d/ipvs.conf']!.owner = 'nobody';
    expect(verify(p, bad)).toEqual([
      'not installed: ipset',
      '/etc/modules-load.d/ipvs.conf has mode 644 nobody:root, expected 644 root:root',
      'not loaded: ip_vs_sh',
    ]);
  });
});

describe('become', () => {
  test('defaults to sudo when logging in as someone other than the become user', () => {
    expect(host('', 'ubuntu').connection.become).toBe(true);
    expect(host('', 'root').connection.become).toBe(false);
    expect(host('    ansible_become: false\n', 'ubuntu').connection.become).toBe(false);
  });
});

describe('apply script', () => {
  test('quotes every value, applies only what differs, and ends with the read-back', () => {
    const f = converged(facts());
    f.packages.ipset = false;
    const p = planNode(host(), f);
    const s = applyScript(p, 'echo facts');
    expect(s).toContain("apt-get install -y -q --no-install-recommends");
    expect(s).toMatch(/install .* ipset/);
    expect(s).not.toContain('kpm_put /etc');
    expect(s).toContain('if kpm_go packages; then');
    expect(s).not.toContain('kpm_go modules');
    // the read-back runs in a subshell of the apply's bash, with the fresh shell's nounset
    expect(s.trimEnd().endsWith('(\nset +u\necho facts\n)')).toBe(true);
    const out = parseApplyOutput(
      `noise\n@@kpm:step packages changed txt:installed ipset 100%25%0Adone\n@@kpm:step modules ran b64:${Buffer.from('modprobe: ✗').toString('base64')}\n` +
        `@@kpm:step ipvs.modules failed txt:\n${READBACK_MARKER}\n@@kpm:begin 1\n`,
    );
    expect(out.steps).toEqual([
      { name: 'packages', status: 'changed', message: 'installed ipset 100%\ndone' },
      { name: 'modules', status: 'ran', message: 'modprobe: ✗' },
      { name: 'ipvs.modules', status: 'failed', message: '' },
    ]);
    expect(out.readback).toBe('@@kpm:begin 1\n');
  });
});
