import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ipvsHasVirtualServer, metricsEndpoint, nodeCheckScript, parseNodeCheck, proxierLine } from '../../tasks/cluster/node-checks.ts';
import { parseProbeOutput } from '../../tasks/cluster/probes.ts';

// The node check script runs here for real against a local HTTP server standing in for kube-proxy's
// metrics endpoint, with curl and (PATH without curl) with bash's /dev/tcp.

let server: Server;
let port = 0;
const dir = mkdtempSync(join(tmpdir(), 'kpm-nodecheck-'));
beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === '/proxyMode') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ipvs');
    } else {
      res.writeHead(404);
      res.end('404 page not found\n');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
  // a PATH with the usual tools but no curl
  const bin = join(dir, 'bin');
  execFileSync('mkdir', ['-p', bin]);
  for (const t of ['bash', 'base64', 'sed', 'timeout', 'cat', 'printf']) {
    const p = execFileSync('bash', ['-c', `command -v ${t} || true`], { encoding: 'utf8' }).trim();
    if (p.startsWith('/')) symlinkSync(p, join(bin, t));
  }
});
afterAll(() => {
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

// async: the stand-in server lives in this process and must keep answering while the script runs
const run = async (script: string, path = process.env.PATH!) =>
  (await promisify(execFile)('/bin/bash', ['-c', script], { encoding: 'utf8', env: { PATH: path } })).stdout;

describe('node check', () => {
  test('metrics address as seen from the node', () => {
    expect(metricsEndpoint('127.0.0.1:10249')).toEqual({ host: '127.0.0.1', port: 10249 });
    expect(metricsEndpoint('0.0.0.0:10249')).toEqual({ host: '127.0.0.1', port: 10249 });
    expect(metricsEndpoint('[::]:10249')).toEqual({ host: '127.0.0.1', port: 10249 });
    expect(metricsEndpoint('')).toEqual({ host: '127.0.0.1', port: 10249 });
    expect(metricsEndpoint('10.0.0.5')).toEqual({ host: '10.0.0.5', port: 10249 });
    expect(metricsEndpoint('[fd00::5]:9999')).toEqual({ host: 'fd00::5', port: 9999 });
  });

  test('reads /proxyMode with curl', async () => {
    expect(parseNodeCheck(await run(nodeCheckScript(`127.0.0.1:${port}`)))).toEqual({ mode: 'ipvs' });
  });

  test('reads /proxyMode with bash /dev/tcp where there is no curl', async () => {
    expect(parseNodeCheck(await run(nodeCheckScript(`127.0.0.1:${port}`), join(dir, 'bin')))).toEqual({ mode: 'ipvs' });
  });

  test('nothing listening: no mode, and the reason', async () => {
    const s = parseNodeCheck(await run(nodeCheckScript('127.0.0.1:1')));
    expect(s.mode).toBeNull();
    expect(s.error).toMatch(/connect|refused/i);
  });

  test('one exec waits for the expected mode (a kube-proxy whose metrics lag its readiness), then runs the probes', async () => {
    // answers iptables twice, then ipvs: the restarted kube-proxy's metrics server catching up
    let calls = 0;
    const lagging = createServer((req, res) => {
      calls++;
      res.writeHead(200);
      res.end(req.url === '/proxyMode' ? (calls <= 2 ? 'iptables' : 'ipvs') : 'ok');
    });
    await new Promise<void>((r) => lagging.listen(0, '127.0.0.1', r));
    const lp = (lagging.address() as AddressInfo).port;
    try {
      const probes = [
        { service: 'default/web', via: 'ClusterIP' as const, ip: '127.0.0.1', port: lp, kind: 'http' as const, path: '/' },
        { service: 'default/gone', via: 'ClusterIP' as const, ip: '127.0.0.1', port: 1, kind: 'tcp' as const },
      ];
      const out = await run(nodeCheckScript(`127.0.0.1:${lp}`, { expect: 'ipvs', probes }));
      expect(parseNodeCheck(out)).toEqual({ mode: 'ipvs' });
      expect(calls).toBeGreaterThanOrEqual(4); // 3 mode reads + the HTTP probe
      const [web, gone] = parseProbeOutput(out, 2);
      expect(web).toMatchObject({ ok: true, detail: 'HTTP 200' });
      expect(gone!.ok).toBe(false);

      // without `expect`, one read: whatever the node answers first
      calls = 0;
      expect(parseNodeCheck(await run(nodeCheckScript(`127.0.0.1:${lp}`)))).toEqual({ mode: 'iptables' });
      expect(calls).toBe(1);
    } finally {
      lagging.close();
    }
  });

  test('ipvsadm output is carried when asked for; a missing ipvsadm is null', async () => {
    const s = parseNodeCheck(await run(nodeCheckScript(`127.0.0.1:${port}`, { ipvs: true }), join(dir, 'bin')));
    expect(s.ipvs).toBeNull();
  });

  test('virtual servers in ipvsadm -Ln output', () => {
    const out = `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 192.168.10.11:6443           Masq    1      3          0
TCP  10.96.0.10:53 rr
UDP  10.96.0.10:53 rr
TCP  [fd00:10:96::1]:443 rr
`;
    expect(ipvsHasVirtualServer(out, '10.96.0.1', 443)).toBe(true);
    expect(ipvsHasVirtualServer(out, '10.96.0.1', 6443)).toBe(false);
    expect(ipvsHasVirtualServer(out, '10.96.0.10', 53, 'UDP')).toBe(true);
    expect(ipvsHasVirtualServer(out, 'fd00:10:96::1', 443)).toBe(true);
    expect(ipvsHasVirtualServer(out, '10.96.0.100', 443)).toBe(false);
  });

  test("the proxier line in every version's form", () => {
    expect(proxierLine('I1126 10:00:00.000000       1 server_linux.go:66] "Using ipvs Proxier"', 'ipvs')).toBeDefined();
    expect(proxierLine('I0715 08:12:01.123456       1 server_others.go:259] Using ipvs Proxier.', 'ipvs')).toBeDefined();
    expect(proxierLine('I0715 server_others.go:206] Using iptables Proxier.', 'ipvs')).toBeUndefined();
    expect(proxierLine('W0715 server_others.go:559] Unknown proxy mode "", assuming iptables proxy\nI0715 server_others.go:206] Using iptables Proxier.', 'iptables')).toBeDefined();
  });
});
