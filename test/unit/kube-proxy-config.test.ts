import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  checkSchedulerModules,
  editConfigMapData,
  editProxyConfig,
  ProxyConfigError,
  proxyWish,
  readConfigMapData,
  readProxyConfig,
  schedulerModule,
  type ProxyWish,
} from '../../tasks/cluster/kube-proxy-config.ts';

// kube-proxy's configuration in the kube-system/kube-proxy ConfigMap: reading it, and editing it so that
// only the edited values change. Fixtures: test/fixtures/configmaps (README.md there says what each is).

const DIR = path.join(import.meta.dirname, '../fixtures/configmaps');

interface ConfigMap {
  data: Record<string, string>;
  metadata: { name: string };
}

function configMap(rel: string): ConfigMap {
  return parse(readFileSync(path.join(DIR, rel), 'utf8')) as ConfigMap;
}

/**
 * A line diff (longest common subsequence of lines; a '\r' stays part of its line): the lines only in
 * `a` and only in `b`, and both texts with those lines taken out, which must then be identical.
 */
function lineDiff(a: string, b: string): { removed: string[]; added: string[]; keptA: string[]; keptB: string[] } {
  const x = a.split('\n');
  const y = b.split('\n');
  const lcs: number[][] = Array.from({ length: x.length + 1 }, () => new Array<number>(y.length + 1).fill(0));
  for (let i = x.length - 1; i >= 0; i--) {
    for (let j = y.length - 1; j >= 0; j--) {
      lcs[i]![j] = x[i] === y[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const removed: string[] = [];
  const added: string[] = [];
  const keptA: string[] = [];
  const keptB: string[] = [];
  let i = 0;
  let j = 0;
  while (i < x.length || j < y.length) {
    if (i < x.length && j < y.length && x[i] === y[j]) {
      keptA.push(x[i]!);
      keptB.push(y[j]!);
      i++;
      j++;
    } else if (j < y.length && (i === x.length || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) {
      added.push(y[j++]!);
    } else {
      removed.push(x[i++]!);
    }
  }
  return { removed, added, keptA, keptB };
}

/** The ProxyConfigError `fn` throws (fails the test when it throws something else or nothing). */
function proxyError(fn: () => unknown): ProxyConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ProxyConfigError);
    return e as ProxyConfigError;
  }
  throw new Error('expected a ProxyConfigError');
}

const HEAD = 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n';

const TO_IPVS: ProxyWish = {
  mode: 'ipvs',
  scheduler: 'rr',
  strictARP: true,
  excludeCIDRs: ['10.0.0.0/8', 'fd00::/8'],
  tcpTimeout: '900s',
  tcpFinTimeout: '120s',
  udpTimeout: '300s',
};

/** Everything TO_IPVS changes, put back to what kubeadm writes. */
const KUBEADM_DEFAULTS: ProxyWish = {
  mode: '',
  scheduler: '',
  strictARP: false,
  excludeCIDRs: [],
  tcpTimeout: '0s',
  tcpFinTimeout: '0s',
  udpTimeout: '0s',
};

const KUBEADM_VERSIONS = ['1.20', '1.24', '1.28', '1.31', '1.35'] as const;

describe.each(KUBEADM_VERSIONS)('kubeadm %s ConfigMap', (version) => {
  const cm = configMap(`kubeadm-v${version}.yaml`);
  const text = cm.data['config.conf']!;

  it('reads mode "" as iptables, the default metrics address and the IPVS fields kubeadm writes', () => {
    expect(readProxyConfig(text)).toEqual({
      apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
      kind: 'KubeProxyConfiguration',
      mode: 'iptables',
      modeRaw: '',
      metricsBindAddress: '127.0.0.1:10249',
      metricsBindAddressRaw: '',
      ipvs: {
        scheduler: '',
        strictARP: false,
        excludeCIDRs: [],
        tcpTimeout: '0s',
        tcpFinTimeout: '0s',
        udpTimeout: '0s',
        syncPeriod: '0s',
        minSyncPeriod: '0s',
      },
      featureGates: {},
    });
    expect(readConfigMapData(cm.data)).toEqual(readProxyConfig(text));
  });

  it('edits to IPVS changing only the edited lines, byte for byte, in kubeadm\'s style', () => {
    const edit = editProxyConfig(text, TO_IPVS);
    expect(edit.changed).toBe(true);
    expect(edit.changes).toEqual([
      'mode: "" -> "ipvs"',
      'ipvs.excludeCIDRs: null -> ["10.0.0.0/8", "fd00::/8"]',
      'ipvs.scheduler: "" -> "rr"',
      'ipvs.strictARP: false -> true',
      'ipvs.tcpFinTimeout: "0s" -> "120s"',
      'ipvs.tcpTimeout: "0s" -> "900s"',
      'ipvs.udpTimeout: "0s" -> "300s"',
    ]);
    const d = lineDiff(text, edit.text);
    expect(d.removed).toEqual([
      '  excludeCIDRs: null',
      '  scheduler: ""',
      '  strictARP: false',
      '  tcpFinTimeout: 0s',
      '  tcpTimeout: 0s',
      '  udpTimeout: 0s',
      'mode: ""',
    ]);
    expect(d.added).toEqual([
      '  excludeCIDRs:',
      '  - 10.0.0.0/8',
      '  - fd00::/8',
      '  scheduler: "rr"',
      '  strictARP: true',
      '  tcpFinTimeout: 120s',
      '  tcpTimeout: 900s',
      '  udpTimeout: 300s',
      'mode: "ipvs"',
    ]);
    // every other line is there, unchanged and in order
    expect(d.keptB).toEqual(d.keptA);
    expect(d.keptA.length).toBe(text.split('\n').length - d.removed.length);
    expect(edit.text.endsWith('\n')).toBe(text.endsWith('\n'));

    expect(readProxyConfig(edit.text)).toMatchObject({
      mode: 'ipvs',
      modeRaw: 'ipvs',
      ipvs: { scheduler: 'rr', strictARP: true, excludeCIDRs: ['10.0.0.0/8', 'fd00::/8'], tcpTimeout: '900s', tcpFinTimeout: '120s', udpTimeout: '300s' },
    });
    // and as data, the document differs in exactly those fields
    const before = parse(text) as Record<string, Record<string, unknown>>;
    const after = parse(edit.text) as Record<string, Record<string, unknown>>;
    expect(after).toEqual({
      ...before,
      mode: 'ipvs',
      ipvs: {
        ...before['ipvs'],
        excludeCIDRs: ['10.0.0.0/8', 'fd00::/8'],
        scheduler: 'rr',
        strictARP: true,
        tcpFinTimeout: '120s',
        tcpTimeout: '900s',
        udpTimeout: '300s',
      },
    });
  });

  it('re-editing with the same wish changes nothing and returns the very same text', () => {
    const once = editProxyConfig(text, TO_IPVS).text;
    const twice = editProxyConfig(once, TO_IPVS);
    expect(twice).toEqual({ text: once, changed: false, changes: [] });
    expect(twice.text).toBe(once);
  });

  it('edits back to iptables (mode line only, its quotes kept), or to kubeadm\'s defaults byte for byte', () => {
    const ipvs = editProxyConfig(text, TO_IPVS).text;
    const iptables = editProxyConfig(ipvs, { mode: 'iptables' });
    expect(iptables.changes).toEqual(['mode: "ipvs" -> "iptables"']);
    expect(lineDiff(ipvs, iptables.text)).toMatchObject({ removed: ['mode: "ipvs"'], added: ['mode: "iptables"'] });
    expect(readProxyConfig(iptables.text).mode).toBe('iptables');

    const restored = editProxyConfig(ipvs, KUBEADM_DEFAULTS);
    expect(restored.changes).toEqual([
      'mode: "ipvs" -> ""',
      'ipvs.excludeCIDRs: ["10.0.0.0/8", "fd00::/8"] -> []',
      'ipvs.scheduler: "rr" -> ""',
      'ipvs.strictARP: true -> false',
      'ipvs.tcpFinTimeout: "120s" -> "0s"',
      'ipvs.tcpTimeout: "900s" -> "0s"',
      'ipvs.udpTimeout: "300s" -> "0s"',
    ]);
    expect(restored.text).toBe(text);
    expect(editProxyConfig(text, KUBEADM_DEFAULTS)).toEqual({ text, changed: false, changes: [] });
  });

  it('edits the ConfigMap data: config.conf only, kubeconfig.conf passed through', () => {
    const edit = editConfigMapData(cm.data, { mode: 'ipvs' });
    expect(edit.changes).toEqual(['mode: "" -> "ipvs"']);
    expect(Object.keys(edit.data)).toEqual(['config.conf', 'kubeconfig.conf']);
    expect(edit.data['kubeconfig.conf']).toBe(cm.data['kubeconfig.conf']);
    expect(edit.data['config.conf']).toBe(text.replace('\nmode: ""\n', '\nmode: "ipvs"\n'));
    expect(cm.data['config.conf']).toBe(text); // the input is not modified
    const again = editConfigMapData(edit.data, { mode: 'ipvs' });
    expect(again.changed).toBe(false);
    expect(again.data).toBe(edit.data);
  });
});

describe('the kubeadm fixtures', () => {
  it('carry each version\'s own field set', () => {
    const keys = (v: string): string[] => {
      const doc = parse(configMap(`kubeadm-v${v}.yaml`).data['config.conf']!) as Record<string, unknown>;
      return Object.keys(doc);
    };
    expect(keys('1.20')).toContain('udpIdleTimeout');
    expect(keys('1.20')).not.toContain('detectLocal');
    expect(keys('1.24')).toEqual(expect.arrayContaining(['detectLocal', 'udpIdleTimeout']));
    expect(keys('1.24')).not.toContain('logging');
    expect(keys('1.28')).toContain('logging');
    expect(keys('1.28')).not.toContain('udpIdleTimeout');
    expect(keys('1.28')).not.toContain('nftables');
    expect(keys('1.31')).toContain('nftables');
    expect(keys('1.35')).toEqual(keys('1.31'));
    for (const v of KUBEADM_VERSIONS) {
      const k = keys(v);
      expect(k).toEqual([...k].sort()); // sigs.k8s.io/yaml sorts keys
    }
  });
});

describe('edge ConfigMaps', () => {
  it('keeps an operator\'s comments, including those on the edited lines and their spacing', () => {
    const text = configMap('edge/operator-comments.yaml').data['config.conf']!;
    expect(readProxyConfig(text)).toMatchObject({ mode: 'iptables', modeRaw: '', metricsBindAddress: '0.0.0.0:10249' });
    const edit = editProxyConfig(text, TO_IPVS);
    const d = lineDiff(text, edit.text);
    expect(d.removed).toEqual([
      '  excludeCIDRs: null',
      '  scheduler: ""   # empty means rr',
      '  strictARP: false # MetalLB in L2 mode needs true',
      '  tcpFinTimeout: 0s',
      '  tcpTimeout: 0s',
      '  udpTimeout: 0s',
      'mode: "" # "" is iptables',
    ]);
    expect(d.added).toEqual([
      '  excludeCIDRs:',
      '  - 10.0.0.0/8',
      '  - fd00::/8',
      '  scheduler: "rr"   # empty means rr',
      '  strictARP: true # MetalLB in L2 mode needs true',
      '  tcpFinTimeout: 120s',
      '  tcpTimeout: 900s',
      '  udpTimeout: 300s',
      'mode: "ipvs" # "" is iptables',
    ]);
    expect(d.keptB).toEqual(d.keptA);
    const comments = (s: string): string[] => s.split('\n').filter((l) => l.trimStart().startsWith('#'));
    expect(comments(edit.text)).toEqual(comments(text));
    expect(comments(text)).toContain('# we tried ipvs in 2021');
    expect(editProxyConfig(edit.text, TO_IPVS).changed).toBe(false);
  });

  it('a hand-edited `mode: ipvs` stays unquoted; values that already match are not touched', () => {
    const text = configMap('edge/user-edited-ipvs-unquoted.yaml').data['config.conf']!;
    expect(readProxyConfig(text)).toMatchObject({ mode: 'ipvs', modeRaw: 'ipvs', ipvs: { scheduler: 'lc', strictARP: true } });
    expect(editProxyConfig(text, { mode: 'ipvs', scheduler: 'lc', strictARP: true })).toEqual({ text, changed: false, changes: [] });

    const edit = editProxyConfig(text, { mode: 'ipvs', scheduler: 'rr', strictARP: true });
    expect(edit.changes).toEqual(['ipvs.scheduler: "lc" -> "rr"']);
    expect(lineDiff(text, edit.text)).toMatchObject({ removed: ['  scheduler: lc'], added: ['  scheduler: rr'] });

    const back = editProxyConfig(text, { mode: 'iptables' });
    expect(lineDiff(text, back.text)).toMatchObject({ removed: ['mode: ipvs'], added: ['mode: iptables'] });
    // '' cannot be written plain: it gets the quotes kubeadm gives it
    const reset = editProxyConfig(text, { mode: '' });
    expect(lineDiff(text, reset.text)).toMatchObject({ removed: ['mode: ipvs'], added: ['mode: ""'] });
  });

  it('an explicit `mode: iptables` reads as such and is edited in place', () => {
    const text = configMap('edge/mode-iptables-explicit.yaml').data['config.conf']!;
    expect(readProxyConfig(text)).toMatchObject({ mode: 'iptables', modeRaw: 'iptables' });
    const edit = editProxyConfig(text, { mode: 'ipvs' });
    expect(edit.changes).toEqual(['mode: "iptables" -> "ipvs"']);
    expect(lineDiff(text, edit.text)).toMatchObject({ removed: ['mode: iptables'], added: ['mode: ipvs'] });
  });

  it('a config.conf without ipvs: gets the section where kubeadm puts it, with only the wished fields', () => {
    const text = configMap('edge/ipvs-missing.yaml').data['config.conf']!;
    expect(readProxyConfig(text).ipvs).toEqual({
      scheduler: '',
      strictARP: false,
      excludeCIDRs: [],
      tcpTimeout: '',
      tcpFinTimeout: '',
      udpTimeout: '',
      syncPeriod: '',
      minSyncPeriod: '',
    });
    const edit = editProxyConfig(text, TO_IPVS);
    expect(edit.changes).toEqual([
      'mode: "" -> "ipvs"',
      'ipvs.excludeCIDRs: (absent) -> ["10.0.0.0/8", "fd00::/8"]',
      'ipvs.scheduler: (absent) -> "rr"',
      'ipvs.strictARP: (absent) -> true',
      'ipvs.tcpFinTimeout: (absent) -> "120s"',
      'ipvs.tcpTimeout: (absent) -> "900s"',
      'ipvs.udpTimeout: (absent) -> "300s"',
    ]);
    const d = lineDiff(text, edit.text);
    expect(d.removed).toEqual(['mode: ""']);
    expect(d.added).toEqual([
      'ipvs:',
      '  excludeCIDRs:',
      '  - 10.0.0.0/8',
      '  - fd00::/8',
      '  scheduler: rr',
      '  strictARP: true',
      '  tcpFinTimeout: 120s',
      '  tcpTimeout: 900s',
      '  udpTimeout: 300s',
      'mode: "ipvs"',
    ]);
    const lines = edit.text.split('\n');
    expect(lines[lines.indexOf('ipvs:') - 1]).toBe('  syncPeriod: 0s'); // the end of iptables:
    expect(lines[lines.indexOf('ipvs:') + 9]).toBe('kind: KubeProxyConfiguration');
    expect(editProxyConfig(edit.text, TO_IPVS).changed).toBe(false);
    // without IPVS fields in the wish, nothing is added
    expect(lineDiff(text, editProxyConfig(text, { mode: 'ipvs' }).text).added).toEqual(['mode: "ipvs"']);
  });

  it('EKS: the key is `config`; missing IPVS fields are added in sorted position', () => {
    const cm = configMap('edge/eks-kube-proxy-config.yaml');
    expect(cm.metadata.name).toBe('kube-proxy-config');
    expect(proxyError(() => readConfigMapData(cm.data)).message).toBe(
      `config.conf: missing from the ConfigMap's data (it has: config); "config" holds a KubeProxyConfiguration: pass that key`,
    );
    expect(readConfigMapData(cm.data, 'config')).toMatchObject({
      mode: 'iptables',
      modeRaw: 'iptables',
      metricsBindAddress: '0.0.0.0:10249',
      ipvs: { scheduler: '', strictARP: false, tcpTimeout: '', syncPeriod: '30s', minSyncPeriod: '0s' },
    });

    const edit = editConfigMapData(cm.data, TO_IPVS, 'config');
    const text = cm.data['config']!;
    expect(edit.changes).toEqual([
      'mode: "iptables" -> "ipvs"',
      'ipvs.excludeCIDRs: null -> ["10.0.0.0/8", "fd00::/8"]',
      'ipvs.scheduler: "" -> "rr"',
      'ipvs.strictARP: (absent) -> true',
      'ipvs.tcpFinTimeout: (absent) -> "120s"',
      'ipvs.tcpTimeout: (absent) -> "900s"',
      'ipvs.udpTimeout: (absent) -> "300s"',
    ]);
    const d = lineDiff(text, edit.data['config']!);
    expect(d.removed).toEqual(['  excludeCIDRs: null', '  scheduler: ""', 'mode: "iptables"']);
    expect(d.added).toEqual([
      '  excludeCIDRs:',
      '  - 10.0.0.0/8',
      '  - fd00::/8',
      '  scheduler: "rr"',
      '  strictARP: true',
      '  tcpFinTimeout: 120s',
      '  tcpTimeout: 900s',
      '  udpTimeout: 300s',
      'mode: "ipvs"',
    ]);
    const ipvsLines = edit.text.split('\n').filter((l) => /^ {2}[a-zA-Z]/.test(l)).slice(-8);
    expect(ipvsLines.map((l) => l.trim().split(':')[0])).toEqual([
      'excludeCIDRs',
      'minSyncPeriod',
      'scheduler',
      'strictARP',
      'syncPeriod',
      'tcpFinTimeout',
      'tcpTimeout',
      'udpTimeout',
    ]);
    expect(Object.keys(edit.data)).toEqual(['config']);
  });

  it('CRLF line endings stay CRLF, on edited and added lines too', () => {
    const cm = configMap('edge/crlf.yaml');
    const text = cm.data['config.conf']!;
    expect(text).toContain('\r\n');
    expect(text.replace(/\r\n/g, '')).not.toContain('\n');
    expect(readProxyConfig(text).mode).toBe('iptables');

    const edit = editConfigMapData(cm.data, TO_IPVS);
    const out = edit.data['config.conf']!;
    expect(out.replace(/\r\n/g, '')).not.toContain('\n');
    expect(out.split('\r\n').length).toBe(text.split('\r\n').length + 2);
    const d = lineDiff(text, out);
    expect(d.added).toEqual([
      '  excludeCIDRs:\r',
      '  - 10.0.0.0/8\r',
      '  - fd00::/8\r',
      '  scheduler: "rr"\r',
      '  strictARP: true\r',
      '  tcpFinTimeout: 120s\r',
      '  tcpTimeout: 900s\r',
      '  udpTimeout: 300s\r',
      'mode: "ipvs"\r',
    ]);
    expect(d.keptB).toEqual(d.keptA);
    expect(edit.data['kubeconfig.conf']).toBe(cm.data['kubeconfig.conf']);
    expect(editProxyConfig(editProxyConfig(out, KUBEADM_DEFAULTS).text, KUBEADM_DEFAULTS).text).toBe(text);
  });
});

describe('reading', () => {
  it('metricsBindAddress gets kube-proxy\'s defaults: port 10249, IPv6 in brackets, loopback when empty', () => {
    const metrics = (line: string): string => readProxyConfig(HEAD + line).metricsBindAddress;
    expect(metrics('metricsBindAddress: ""')).toBe('127.0.0.1:10249');
    expect(metrics('mode: ipvs')).toBe('127.0.0.1:10249');
    expect(metrics('bindAddress: "::"')).toBe('[::1]:10249');
    expect(metrics('metricsBindAddress: 0.0.0.0:10249')).toBe('0.0.0.0:10249');
    expect(metrics('metricsBindAddress: 0.0.0.0')).toBe('0.0.0.0:10249');
    expect(metrics('metricsBindAddress: 10.0.0.5:9100')).toBe('10.0.0.5:9100');
    expect(metrics('metricsBindAddress: "[::]:10249"')).toBe('[::]:10249');
    expect(metrics('metricsBindAddress: "::"')).toBe('[::]:10249');
    expect(metrics('metricsBindAddress: fd00::5')).toBe('[fd00::5]:10249');
    expect(readProxyConfig(HEAD + 'metricsBindAddress: 0.0.0.0').metricsBindAddressRaw).toBe('0.0.0.0');
  });

  it('reads values as kube-proxy (YAML 1.1) does, and any mode string', () => {
    expect(readProxyConfig(HEAD + 'ipvs:\n  strictARP: yes\n').ipvs.strictARP).toBe(true);
    expect(readProxyConfig(HEAD + 'ipvs:\n  strictARP: off\n').ipvs.strictARP).toBe(false);
    expect(readProxyConfig(HEAD + 'mode: kernelspace\n')).toMatchObject({ mode: 'kernelspace', modeRaw: 'kernelspace' });
    expect(readProxyConfig(HEAD + 'mode:\nipvs:\n')).toMatchObject({ mode: 'iptables', modeRaw: '', ipvs: { scheduler: '', excludeCIDRs: [] } });
    expect(readProxyConfig(HEAD + 'ipvs:\n  excludeCIDRs: ["10.0.0.0/8"]\n').ipvs.excludeCIDRs).toEqual(['10.0.0.0/8']);
    expect(readProxyConfig(`\uFEFF${HEAD}mode: ipvs`).mode).toBe('ipvs');
  });

  const INVALID: Array<[string, string]> = [
    ['', 'config.conf: empty; expected a KubeProxyConfiguration'],
    ['# nothing but a comment\n', 'config.conf: empty; expected a KubeProxyConfiguration'],
    ['- a\n- b\n', 'config.conf:1: expected a KubeProxyConfiguration map, got a list'],
    ['ipvs', 'config.conf:1: expected a KubeProxyConfiguration map, got "ipvs"'],
    ['apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n', 'config.conf:2: kind: expected KubeProxyConfiguration, got "KubeletConfiguration"'],
    ['apiVersion: kubeproxy.config.k8s.io/v1alpha1\nmode: ipvs\n', 'config.conf: kind: expected KubeProxyConfiguration, got nothing'],
    ['apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n', 'config.conf:1: apiVersion: expected kubeproxy.config.k8s.io/v1alpha1, got "kubeproxy.config.k8s.io/v1alpha2"'],
    ['kind: KubeProxyConfiguration\n', 'config.conf: apiVersion: expected kubeproxy.config.k8s.io/v1alpha1, got nothing'],
    [`${HEAD}mode: 5\n`, 'config.conf:3: mode: expected a string (iptables, ipvs, nftables, or "" for the default), got the number 5'],
    [`${HEAD}mode: on\n`, 'config.conf:3: mode: expected a string (iptables, ipvs, nftables, or "" for the default), got the boolean true'],
    [`${HEAD}mode:\n  name: ipvs\n`, 'config.conf:4: mode: expected a string (iptables, ipvs, nftables, or "" for the default), got a map'],
    [`${HEAD}ipvs: rr\n`, 'config.conf:3: ipvs: expected a map, got "rr"'],
    [`${HEAD}ipvs:\n- scheduler: rr\n`, 'config.conf:4: ipvs: expected a map, got a list'],
    [`${HEAD}ipvs:\n  scheduler: 5\n`, 'config.conf:4: ipvs.scheduler: expected a string, got the number 5'],
    [`${HEAD}ipvs:\n  strictARP: "true"\n`, 'config.conf:4: ipvs.strictARP: expected true or false, got "true"'],
    [`${HEAD}ipvs:\n  excludeCIDRs: 10.0.0.0/8\n`, 'config.conf:4: ipvs.excludeCIDRs: expected a list of CIDRs, got "10.0.0.0/8"'],
    [
      `${HEAD}ipvs:\n  excludeCIDRs:\n  - 10.0.0.0/8\n  - 10.0.0.1\n`,
      'config.conf:6: ipvs.excludeCIDRs[1]: expected an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8), got "10.0.0.1"',
    ],
    [`${HEAD}ipvs:\n  tcpTimeout: 900\n`, 'config.conf:4: ipvs.tcpTimeout: expected a Go duration string (like 900s, 15m0s or 0s), got the number 900'],
    [`${HEAD}ipvs:\n  udpTimeout: 5 minutes\n`, 'config.conf:4: ipvs.udpTimeout: expected a Go duration (like 900s, 15m0s or 0s), got "5 minutes"'],
    [`${HEAD}ipvs:\n  syncPeriod: -30s\n`, 'config.conf:4: ipvs.syncPeriod: expected a Go duration (like 900s, 15m0s or 0s), got "-30s"'],
    [
      `${HEAD}metricsBindAddress: localhost:10249\n`,
      'config.conf:3: metricsBindAddress: expected an IP address with an optional port (like 127.0.0.1:10249, 0.0.0.0:10249 or [::]:10249), got "localhost:10249"',
    ],
    [
      `${HEAD}metricsBindAddress: 0.0.0.0:70000\n`,
      'config.conf:3: metricsBindAddress: expected an IP address with an optional port (like 127.0.0.1:10249, 0.0.0.0:10249 or [::]:10249), got "0.0.0.0:70000"',
    ],
    [`${HEAD}mode: ipvs\nmode: iptables\n`, 'config.conf:4:1: malformed YAML: Map keys must be unique'],
    [`${HEAD}ipvs:\n\tscheduler: rr\n`, 'config.conf:4:1: malformed YAML: Tabs are not allowed as indentation'],
    [`${HEAD}ipvs: {scheduler: rr\nmode: ipvs\n`, 'config.conf:4:1: malformed YAML: Flow map in block collection must be sufficiently indented and end with a }'],
    [`${HEAD}mode: ""\n  ipvs: x\n`, 'config.conf:4:1: malformed YAML: All mapping items must start at the same column'],
    [`${HEAD}---\n${HEAD}`, 'config.conf:3:1: malformed YAML: more than one YAML document (---); expected only the KubeProxyConfiguration'],
    [`${HEAD}ipvs: &ipvs {scheduler: rr}\nnftables: *ipvs\n`, 'config.conf:4: anchors and aliases (*name) are not supported here; write the value out'],
  ];

  it.each(INVALID)('refuses %j', (text, message) => {
    const e = proxyError(() => readProxyConfig(text));
    expect(e.message).toBe(message);
    // editing reads first, so it refuses the same way
    expect(proxyError(() => editProxyConfig(text, { mode: 'ipvs' })).message).toBe(message);
  });

  it('errors carry key, line, column and field apart, and name the data key', () => {
    const e = proxyError(() => readProxyConfig(`${HEAD}ipvs:\n  strictARP: maybe\n`, 'config'));
    expect(e).toMatchObject({ key: 'config', line: 4, column: 0, field: 'ipvs.strictARP', reason: 'expected true or false, got "maybe"' });
    expect(e.message).toBe('config:4: ipvs.strictARP: expected true or false, got "maybe"');
    expect(proxyError(() => readProxyConfig(`${HEAD}a: [\n`))).toMatchObject({ key: 'config.conf', line: 4, column: 1 });
  });

  it('ConfigMap data without the configuration', () => {
    expect(proxyError(() => readConfigMapData(undefined)).message).toBe('config.conf: missing: the ConfigMap has no data');
    expect(proxyError(() => readConfigMapData({})).message).toBe('config.conf: missing: the ConfigMap has no data');
    expect(proxyError(() => readConfigMapData({ 'kubeconfig.conf': 'apiVersion: v1\nkind: Config\n' })).message).toBe(
      "config.conf: missing from the ConfigMap's data (it has: kubeconfig.conf)",
    );
    expect(proxyError(() => editConfigMapData({ 'kubeconfig.conf': '' }, { mode: 'ipvs' })).message).toBe(
      "config.conf: missing from the ConfigMap's data (it has: kubeconfig.conf)",
    );
    expect(proxyError(() => readConfigMapData({ config: HEAD }, 'config.yaml')).message).toBe(
      `config.yaml: missing from the ConfigMap's data (it has: config); "config" holds a KubeProxyConfiguration: pass that key`,
    );
  });
});

describe('editing', () => {
  const edited = (text: string, want: ProxyWish): string => {
    const e = editProxyConfig(text, want);
    expect(editProxyConfig(e.text, want).changed).toBe(false);
    return e.text;
  };

  it('keeps each scalar\'s quoting: double, single, plain; a block scalar becomes one quoted line', () => {
    expect(edited(`${HEAD}mode: ""\n`, { mode: 'ipvs' })).toBe(`${HEAD}mode: "ipvs"\n`);
    expect(edited(`${HEAD}mode: 'iptables'\n`, { mode: 'ipvs' })).toBe(`${HEAD}mode: 'ipvs'\n`);
    expect(edited(`${HEAD}mode: iptables\n`, { mode: 'ipvs' })).toBe(`${HEAD}mode: ipvs\n`);
    expect(edited(`${HEAD}mode: |-\n  iptables\nipvs: {}\n`, { mode: 'ipvs' })).toBe(`${HEAD}mode: "ipvs"\nipvs: {}\n`);
    expect(edited(`${HEAD}mode:\nipvs:\n  scheduler: ''\n`, { mode: 'nftables', scheduler: 'wrr' })).toBe(`${HEAD}mode: nftables\nipvs:\n  scheduler: 'wrr'\n`);
    expect(edited(`${HEAD}mode: ipvs\n`, { mode: '' })).toBe(`${HEAD}mode: ""\n`);
  });

  it('leaves values that already say the wish alone: durations by length, absent keys by kube-proxy\'s default', () => {
    const text = `${HEAD}ipvs:\n  tcpTimeout: 15m0s\n  udpTimeout: 0s\n  excludeCIDRs: []\nmode: ipvs\n`;
    expect(editProxyConfig(text, { mode: 'ipvs', tcpTimeout: '900s', udpTimeout: '0', tcpFinTimeout: '0s', strictARP: false, scheduler: '', excludeCIDRs: [] })).toEqual({
      text,
      changed: false,
      changes: [],
    });
    expect(editProxyConfig(`${HEAD}mode: ipvs`, { mode: 'ipvs', strictARP: false, excludeCIDRs: [] }).changed).toBe(false);
    expect(editProxyConfig(`${HEAD}mode: ""`, { mode: '' }).changed).toBe(false);
    expect(editProxyConfig(HEAD, { mode: '' }).changed).toBe(false);
    // "" and iptables mean the same to kube-proxy, but the wish says which one to write
    expect(editProxyConfig(`${HEAD}mode: ""`, { mode: 'iptables' }).changes).toEqual(['mode: "" -> "iptables"']);
  });

  it('writes 0 as 0s, as kubeadm does', () => {
    const e = editProxyConfig(`${HEAD}ipvs:\n  tcpTimeout: 900s\n`, { mode: '', tcpTimeout: '0' });
    expect(e.changes).toEqual(['ipvs.tcpTimeout: "900s" -> "0s"']);
    expect(e.text).toBe(`${HEAD}ipvs:\n  tcpTimeout: 0s\n`);
  });

  it('lists: block lists keep their indentation, flow lists stay flow, an emptied list becomes null', () => {
    expect(edited(`${HEAD}ipvs:\n    excludeCIDRs:\n      - 10.0.0.0/8\n    scheduler: rr\n`, { mode: '', excludeCIDRs: ['192.168.0.0/16', '10.96.0.0/12'] })).toBe(
      `${HEAD}ipvs:\n    excludeCIDRs:\n      - 192.168.0.0/16\n      - 10.96.0.0/12\n    scheduler: rr\n`,
    );
    expect(edited(`${HEAD}ipvs:\n  excludeCIDRs: [10.0.0.0/8]\n`, { mode: '', excludeCIDRs: ['fd00::/8', '10.0.0.0/8'] })).toBe(
      `${HEAD}ipvs:\n  excludeCIDRs: ["fd00::/8", 10.0.0.0/8]\n`,
    );
    expect(edited(`${HEAD}ipvs:\n  excludeCIDRs: [10.0.0.0/8]\n`, { mode: '', excludeCIDRs: [] })).toBe(`${HEAD}ipvs:\n  excludeCIDRs: []\n`);
    const emptied = editProxyConfig(`${HEAD}ipvs:\n  excludeCIDRs:\n  - 10.0.0.0/8\n  scheduler: rr\n`, { mode: '', excludeCIDRs: [] });
    expect(emptied.changes).toEqual(['ipvs.excludeCIDRs: ["10.0.0.0/8"] -> []']);
    expect(emptied.text).toBe(`${HEAD}ipvs:\n  excludeCIDRs: null\n  scheduler: rr\n`);
    expect(edited(`${HEAD}ipvs:\n  excludeCIDRs:\n  scheduler: rr\n`, { mode: '', excludeCIDRs: ['10.0.0.0/8'] })).toBe(
      `${HEAD}ipvs:\n  excludeCIDRs:\n  - 10.0.0.0/8\n  scheduler: rr\n`,
    );
  });

  it('a comment after a replaced null stays on the key\'s line', () => {
    expect(edited(`${HEAD}ipvs:\n  excludeCIDRs: null # none yet\n`, { mode: '', excludeCIDRs: ['10.0.0.0/8'] })).toBe(
      `${HEAD}ipvs:\n  excludeCIDRs: # none yet\n  - 10.0.0.0/8\n`,
    );
    expect(edited(`${HEAD}ipvs: null # unused\nmode: ipvs\n`, { mode: 'ipvs', strictARP: true })).toBe(
      `${HEAD}ipvs: # unused\n  strictARP: true\nmode: ipvs\n`,
    );
  });

  it('an empty or null ipvs gets a block map; a flow map gets more entries', () => {
    expect(edited(`${HEAD}ipvs:\nmode: ipvs\n`, { mode: 'ipvs', scheduler: 'sh', strictARP: true })).toBe(
      `${HEAD}ipvs:\n  scheduler: sh\n  strictARP: true\nmode: ipvs\n`,
    );
    expect(edited(`${HEAD}ipvs: {}\nmode: ipvs`, { mode: 'ipvs', scheduler: 'sh' })).toBe(`${HEAD}ipvs:\n  scheduler: sh\nmode: ipvs`);
    expect(edited(`${HEAD}ipvs: {scheduler: rr}\n`, { mode: '', strictARP: true, excludeCIDRs: ['fd00::/8'] })).toBe(
      `${HEAD}ipvs: {scheduler: rr, excludeCIDRs: ["fd00::/8"], strictARP: true}\n`,
    );
    expect(edited('{apiVersion: kubeproxy.config.k8s.io/v1alpha1, kind: KubeProxyConfiguration, mode: ""}', { mode: 'ipvs', scheduler: 'rr' })).toBe(
      '{apiVersion: kubeproxy.config.k8s.io/v1alpha1, kind: KubeProxyConfiguration, mode: "ipvs", ipvs: {scheduler: rr}}',
    );
  });

  it('adds missing keys in sorted position in sorted maps, at the end of others, nested ones first', () => {
    // sorted: mode goes after kind, ipvs between iptables and kind
    expect(edited(`${HEAD.trimEnd()}`, { mode: 'ipvs', scheduler: 'rr' })).toBe(
      'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nipvs:\n  scheduler: rr\nkind: KubeProxyConfiguration\nmode: ipvs',
    );
    // unsorted (kind first): appended; the ipvs addition goes before the top-level one at the same spot
    expect(
      edited('kind: KubeProxyConfiguration\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nipvs:\n  strictARP: false\n  scheduler: ""\n', {
        mode: 'ipvs',
        tcpTimeout: '1h',
      }),
    ).toBe('kind: KubeProxyConfiguration\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nipvs:\n  strictARP: false\n  scheduler: ""\n  tcpTimeout: 1h\nmode: ipvs\n');
    // comments indented under the last value stay with it; a comment introducing the next key stays above it
    expect(edited(`${HEAD}ipvs:\n  scheduler: rr\n  # about the scheduler\n# the end\n`, { mode: 'nftables', udpTimeout: '5s' })).toBe(
      `${HEAD}ipvs:\n  scheduler: rr\n  udpTimeout: 5s\n  # about the scheduler\nmode: nftables\n# the end\n`,
    );
    expect(edited(`apiVersion: kubeproxy.config.k8s.io/v1alpha1\n# what kind\nkind: KubeProxyConfiguration\n`, { mode: '', strictARP: true })).toBe(
      'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nipvs:\n  strictARP: true\n# what kind\nkind: KubeProxyConfiguration\n',
    );
    // the indentation of a new ipvs map follows the document's
    expect(edited('apiVersion: kubeproxy.config.k8s.io/v1alpha1\niptables:\n    syncPeriod: 30s\nkind: KubeProxyConfiguration\n', { mode: '', strictARP: true })).toBe(
      'apiVersion: kubeproxy.config.k8s.io/v1alpha1\niptables:\n    syncPeriod: 30s\nipvs:\n    strictARP: true\nkind: KubeProxyConfiguration\n',
    );
  });

  const BAD_WISHES: Array<[ProxyWish, string]> = [
    [{ mode: 'ipvss' }, 'config.conf: mode: cannot set "ipvss": expected iptables, ipvs, nftables or "" (the default, iptables)'],
    [{ mode: 'userspace' }, 'config.conf: mode: cannot set "userspace": expected iptables, ipvs, nftables or "" (the default, iptables)'],
    [
      { mode: 'ipvs', scheduler: 'fastest' },
      'config.conf: ipvs.scheduler: cannot set "fastest": expected an IPVS scheduler (rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh) or "" (the default, rr)',
    ],
    [{ mode: 'ipvs', tcpTimeout: '15 minutes' }, 'config.conf: ipvs.tcpTimeout: cannot set "15 minutes": expected a Go duration (like 900s, 15m0s or 0s)'],
    [{ mode: 'ipvs', udpTimeout: '-5s' }, 'config.conf: ipvs.udpTimeout: cannot set "-5s": expected a Go duration (like 900s, 15m0s or 0s)'],
    [{ mode: 'ipvs', tcpFinTimeout: '' }, 'config.conf: ipvs.tcpFinTimeout: cannot set "": expected a Go duration (like 900s, 15m0s or 0s)'],
    [
      { mode: 'ipvs', excludeCIDRs: ['10.0.0.0/8', '10.0.0.0/33'] },
      'config.conf: ipvs.excludeCIDRs[1]: cannot set "10.0.0.0/33": expected an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8)',
    ],
    [{ mode: 'ipvs', strictARP: 'yes' as unknown as boolean }, 'config.conf: ipvs.strictARP: cannot set "yes": expected true or false'],
  ];

  it.each(BAD_WISHES)('refuses the wish %j', (want, message) => {
    const text = configMap('kubeadm-v1.31.yaml').data['config.conf']!;
    expect(proxyError(() => editProxyConfig(text, want)).message).toBe(message);
  });

  it('accepts every Go duration form, and refuses what Go or kube-proxy would', () => {
    const text = `${HEAD}ipvs:\n  tcpTimeout: 7s\n`;
    for (const d of ['0', '0s', '900s', '15m0s', '1h30m', '1.5s', '.5s', '1.s', '100ms', '250us', '250µs', '250μs', '10ns', '2h45m30.5s']) {
      const out = editProxyConfig(text, { mode: '', tcpTimeout: d }).text;
      expect(readProxyConfig(out).ipvs.tcpTimeout).toBe(d === '0' ? '0s' : d);
    }
    for (const d of ['900', '-1s', '+1s', '1d', '1 s', 's', '1hm', '1e3s', '3000000h']) {
      expect(proxyError(() => editProxyConfig(HEAD, { mode: '', tcpTimeout: d })).field).toBe('ipvs.tcpTimeout');
    }
  });
});

describe('IPVS scheduler modules', () => {
  it('maps a scheduler to its kernel module, "" to rr\'s', () => {
    expect(schedulerModule('')).toBe('ip_vs_rr');
    expect(schedulerModule('rr')).toBe('ip_vs_rr');
    expect(schedulerModule('wlc')).toBe('ip_vs_wlc');
    expect(schedulerModule('mh')).toBe('ip_vs_mh');
    expect(proxyError(() => schedulerModule('r r')).message).toBe('ipvs.scheduler: not an IPVS scheduler name: "r r"');
  });

  it('says what a node lacks, from its loaded and built-in modules (- and _ alike)', () => {
    expect(checkSchedulerModules('rr', ['nf_conntrack', 'ip_vs', 'ip_vs_rr'])).toBeUndefined();
    expect(checkSchedulerModules('', new Set(['ip_vs', 'ip-vs-rr']))).toBeUndefined();
    expect(checkSchedulerModules('wlc', ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh'])).toBe(
      'IPVS scheduler "wlc" needs kernel module ip_vs_wlc, which is neither loaded nor built into this node\'s kernel; run the node phase (--tags node) for it first',
    );
    expect(checkSchedulerModules('', [])).toBe(
      'IPVS scheduler "" (the default, rr) needs kernel modules ip_vs and ip_vs_rr, which are neither loaded nor built into this node\'s kernel; run the node phase (--tags node) for it first',
    );
  });
});

describe('proxyWish', () => {
  it('turns a host\'s inventory settings into a wish, the timeouts only when set', () => {
    const base = { mode: 'ipvs' as const, scheduler: 'rr', strictArp: true, excludeCidrs: ['10.0.0.0/8'], ipvsModules: null };
    expect(proxyWish(base)).toEqual({ mode: 'ipvs', scheduler: 'rr', strictARP: true, excludeCIDRs: ['10.0.0.0/8'] });
    expect(proxyWish({ ...base, tcpTimeout: '900s', udpTimeout: '0s' })).toEqual({
      mode: 'ipvs',
      scheduler: 'rr',
      strictARP: true,
      excludeCIDRs: ['10.0.0.0/8'],
      tcpTimeout: '900s',
      udpTimeout: '0s',
    });
  });
});
