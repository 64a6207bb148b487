import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseProbeOutput, parseProbeSpec, probeScript, regressions, targetsFor, type ProbeTarget } from '../../tasks/cluster/probes.ts';

// The probe script runs here for real, against a local HTTP server, as it runs on a node.

let server: Server;
let port = 0;
beforeAll(async () => {
  server = createServer((req, res) => {
    res.writeHead(req.url === '/healthz' ? 200 : 503);
    res.end('x');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => server?.close());

const run = async (targets: ProbeTarget[]) => {
  const { stdout } = await promisify(execFile)('/bin/bash', ['-c', probeScript(targets, 2, 1)], { encoding: 'utf8' });
  return parseProbeOutput(stdout, targets.length);
};
const t = (over: Partial<ProbeTarget>): ProbeTarget => ({ service: 'default/web', via: 'ClusterIP', ip: '127.0.0.1', port, kind: 'tcp', ...over });

describe('service probes', () => {
  test('spec syntax: namespace/name[:port][/path][=codes]', () => {
    expect(parseProbeSpec('kube-system/kube-dns:53')).toEqual({ namespace: 'kube-system', name: 'kube-dns', port: 53 });
    expect(parseProbeSpec('default/web:80/healthz=200,204')).toEqual({ namespace: 'default', name: 'web', port: 80, path: '/healthz', codes: [200, 204] });
    expect(parseProbeSpec('default/web')).toEqual({ namespace: 'default', name: 'web' });
    expect(() => parseProbeSpec('web')).toThrow(/not a probe spec/);
  });

  test('targets: ClusterIP always, the node\'s NodePort for NodePort and LoadBalancer Services', () => {
    const svc = { spec: { type: 'NodePort', clusterIP: '10.96.7.7', ports: [{ name: 'http', port: 80, nodePort: 30080, protocol: 'TCP' }] } };
    expect(targetsFor(svc, { namespace: 'default', name: 'web', path: '/healthz' }, '10.0.0.11').targets).toEqual([
      { service: 'default/web', via: 'ClusterIP', ip: '10.96.7.7', port: 80, kind: 'http', path: '/healthz' },
      { service: 'default/web', via: 'NodePort', ip: '10.0.0.11', port: 30080, kind: 'http', path: '/healthz' },
    ]);
    expect(targetsFor({ spec: { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443 }] } }, { namespace: 'default', name: 'kubernetes' }, undefined).targets[0]!.kind).toBe('tls');
    expect(targetsFor({ spec: { clusterIP: 'None', ports: [{ port: 80 }] } }, { namespace: 'default', name: 'h' }, undefined).problem).toMatch(/headless/);
    expect(targetsFor({ spec: { clusterIP: '10.96.0.10', ports: [{ port: 53, protocol: 'UDP' }] } }, { namespace: 'kube-system', name: 'dns', port: 53 }, undefined).problem).toMatch(/only TCP/);
  });

  test('tcp connect, http with status codes, a closed port', async () => {
    const [tcp, http, wrongCode, anyCode, closed] = await run([
      t({}),
      t({ kind: 'http', path: '/healthz', codes: [200] }),
      t({ kind: 'http', path: '/other', codes: [200] }),
      t({ kind: 'http', path: '/healthz' }),
      t({ port: 1 }),
    ]);
    expect(tcp).toMatchObject({ ok: true, detail: 'TCP connect ok' });
    expect(http).toMatchObject({ ok: true, detail: 'HTTP 200' });
    expect(wrongCode).toMatchObject({ ok: false, detail: 'HTTP 503' });
    expect(anyCode).toMatchObject({ ok: true });
    expect(closed!.ok).toBe(false);
    expect(tcp!.ms).toBeGreaterThanOrEqual(0);
  });

  test('a failed probe says why, never the text curl prints on success: TLS to a plain HTTP server, nothing listening', async () => {
    const [tls, http, tlsClosed] = await run([t({ kind: 'tls' }), t({ kind: 'http', path: '/healthz', port: 1 }), t({ kind: 'tls', port: 1 })]);
    expect(tls!.ok).toBe(false);
    expect(tls!.detail).not.toMatch(/TLS ok|HTTP 000|@@/);
    expect(tls!.detail).toMatch(/curl: \(35\)|SSL|TLS|wrong version/i);
    expect(http!.ok).toBe(false);
    expect(http!.detail).not.toMatch(/000|@@/);
    expect(http!.detail).toMatch(/curl: \(7\)|connect/i);
    expect(tlsClosed!.detail).toMatch(/curl: \(7\)|connect/i);
  });

  test('regressions: answered before, fails after', () => {
    const ok = { ok: true, ms: 1, detail: '' };
    const bad = { ok: false, ms: 1, detail: 'x' };
    const recs = [
      { target: t({}), before: ok, after: bad },
      { target: t({}), before: bad, after: bad },
      { target: t({}), before: ok, after: ok },
    ];
    expect(regressions(recs)).toEqual([recs[0]]);
  });
});
