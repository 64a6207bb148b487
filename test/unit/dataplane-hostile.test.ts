import { describe, expect, it } from 'vitest';
import { parseIptablesSave } from '../../tasks/dataplane/iptables-save.ts';
import { parseIpvsadm } from '../../tasks/dataplane/ipvsadm.ts';
import { compareWithEndpoints, listIptablesServices, renderTraceTree, traceIptables, traceIpvs } from '../../tasks/dataplane/trace.ts';
import { kubeProxyIptablesSave, kubeProxyIpvsadm, manyServices } from '../dataplane-dumps.ts';

// Text that is not what the parsers expect: whatever it is, they answer, and say what they could not read.

/** A small deterministic generator, so that a failure can be replayed. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sample = kubeProxyIptablesSave(manyServices(12), { style: '1.28', family: 'ipv4', clusterCIDR: '10.244.0.0/16' });
const ipvsSample = kubeProxyIpvsadm(manyServices(12), { nodeAddresses: ['192.168.1.10'] });

/** Everything the API offers, on one text: none of it may throw. */
function exerciseIptables(text: string) {
  const d = parseIptablesSave(text);
  for (const r of d.rules) {
    void [r.tokens, r.target, r.comment, r.statistic, r.toDestination, r.other];
    JSON.stringify(r);
  }
  const list = listIptablesServices(d);
  for (const s of list.slice(0, 5)) {
    const t = traceIptables(d, s.service);
    renderTraceTree(compareWithEndpoints(t, [{ address: '10.0.0.1:80' }, { address: 'garbage' }]));
  }
  renderTraceTree(traceIptables(d, 'team-1/app-1'));
  return d;
}

function exerciseIpvs(text: string) {
  const t = parseIpvsadm(text);
  renderTraceTree(traceIpvs(t, { service: 'a/b', clusterIP: '10.96.0.1', port: 443, nodePort: 30000 }));
  return t;
}

describe('hostile text', () => {
  it('garbage lines are reported one by one, the rules around them still read', () => {
    const text = ['*nat', '\u0000\u0001binary', '{"json": true}', '│ -A KUBE-SVC-X -j KUBE-SEP-Y │', '-A KUBE-SVC-X -j KUBE-SEP-Y', ':', '[1:2', 'COMMIT'].join('\n');
    const d = exerciseIptables(text);
    expect(d.unknown.map((u) => u.line)).toEqual([2, 3, 4, 6, 7]);
    expect(d.rules.map((r) => r.line)).toEqual([5]);
    const t = exerciseIpvs(text);
    expect(t.unknown).toHaveLength(8);
    expect(t.services).toEqual([]);
  });

  it('unbalanced quotes: the rule is reported, not half-read', () => {
    const d = exerciseIptables('-A KUBE-SERVICES -m comment --comment "ns/svc:p cluster IP -d 10.0.0.1/32 -j KUBE-SVC-X\n-A KUBE-SVC-X -m comment --comment \'open -j Y\n-A OK -j ACCEPT\n');
    expect(d.unknown.map((u) => [u.line, u.reason])).toEqual([
      [1, 'unterminated double quote'],
      [2, 'unterminated single quote'],
    ]);
    expect(d.rules.map((r) => r.chain)).toEqual(['OK']);
  });

  it('a dump cut anywhere reads up to the cut', () => {
    const lines = sample.split('\n').length;
    for (let cut = 0; cut < sample.length; cut += 997) {
      const d = exerciseIptables(sample.slice(0, cut));
      expect(d.lines).toBeLessThanOrEqual(lines);
    }
    for (let cut = 0; cut < ipvsSample.length; cut += 211) exerciseIpvs(ipvsSample.slice(0, cut));
  });

  it('a 1 MB line is one unknown line, or one rule', () => {
    const big = 'x'.repeat(1 << 20);
    const d = parseIptablesSave(`*nat\n${big}\n-A X -m comment --comment "${big}" -j Y\n-A X ${'-m a '.repeat(100_000)}-j Z\nCOMMIT\n`);
    expect(d.unknown).toHaveLength(1);
    expect(d.unknown[0]!.text).toHaveLength(1 << 20);
    expect(d.rules[0]!.comment).toHaveLength(1 << 20);
    expect(d.rules[1]!.matches).toHaveLength(100_000);
    expect(d.rules[1]!.target).toBe('Z');
    const t = parseIpvsadm(`${big}\nTCP  10.0.0.1:80 rr ${'x '.repeat(200_000)}\n`);
    expect(t.unknown.map((u) => u.reason)).toEqual(['not an ipvsadm line', 'unknown virtual service field "x"']);
  });

  it('random bytes and random edits of real dumps never throw', () => {
    const next = random(20240115);
    const alphabet = ' \t\n"\'\\[]:!-/.0123456789abcdefKUBESVCPjAmd*#COMMIT';
    for (let round = 0; round < 60; round++) {
      let noise = '';
      const n = Math.floor(next() * 400);
      for (let i = 0; i < n; i++) noise += alphabet[Math.floor(next() * alphabet.length)];
      exerciseIptables(noise);
      exerciseIpvs(noise);
      // a real dump with a few characters changed
      const chars = sample.split('');
      for (let k = 0; k < 20; k++) chars[Math.floor(next() * chars.length)] = alphabet[Math.floor(next() * alphabet.length)]!;
      exerciseIptables(chars.join(''));
      const ic = ipvsSample.split('');
      for (let k = 0; k < 20; k++) ic[Math.floor(next() * ic.length)] = alphabet[Math.floor(next() * alphabet.length)]!;
      exerciseIpvs(ic.join(''));
    }
  });

  it('chains that jump in a circle end the walk with a warning', () => {
    const d = parseIptablesSave(
      [
        '-A KUBE-SERVICES -d 10.0.0.1/32 -p tcp -m comment --comment "ns/loop:p cluster IP" -m tcp --dport 80 -j KUBE-SVC-A',
        '-A KUBE-SVC-A -j KUBE-SVC-B',
        '-A KUBE-SVC-B -m statistic --mode random --probability 0.5 -j KUBE-SVC-A',
        '-A KUBE-SVC-B -j KUBE-SEP-C',
        '-A KUBE-SEP-C -p tcp -m tcp -j DNAT --to-destination 10.1.0.1:80',
      ].join('\n'),
    );
    const t = traceIptables(d, 'ns/loop');
    expect(t.frontends[0]!.backends).toEqual([{ address: '10.1.0.1:80', share: 0.5, chain: 'KUBE-SEP-C' }]);
    expect(t.warnings).toContain('ClusterIP 10.0.0.1:80/TCP: KUBE-SVC-B jumps back to KUBE-SVC-A: loop not followed');
  });

  it('empty input', () => {
    expect(parseIptablesSave('')).toMatchObject({ lines: 0, ruleCount: 0, tables: [], unknown: [] });
    expect(parseIpvsadm('')).toMatchObject({ lines: 0, services: [], unknown: [] });
    expect(renderTraceTree(traceIptables(parseIptablesSave(''), 'a/b'))).toBe('a/b (iptables)\n└─ (nothing found)\nwarnings:\n  ! no frontend of a/b in the dump (no KUBE-SERVICES or KUBE-NODEPORTS rule names it)\n');
  });
});
