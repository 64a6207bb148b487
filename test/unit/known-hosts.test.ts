import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  fingerprint,
  hostToken,
  keyTypeOf,
  knownKeyTypes,
  recordHostKey,
  verifyHostKey,
} from '../../tasks/remote/known-hosts.ts';

// Real keys from ssh-keygen, and real hashed lines from `ssh-keygen -H`, so the reader is checked against
// what OpenSSH writes rather than against itself.

const dir = mkdtempSync(join(tmpdir(), 'kpm-kh-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
function newKey(name: string, type = 'ed25519'): { line: string; blob: Buffer } {
  const f = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-f', f]);
  const line = readFileSync(f + '.pub', 'utf8').trim();
  return { line, blob: Buffer.from(line.split(' ')[1]!, 'base64') };
}

let a: ReturnType<typeof newKey>;
let b: ReturnType<typeof newKey>;
let rsa: ReturnType<typeof newKey>;
beforeAll(() => {
  a = newKey('a');
  b = newKey('b');
  rsa = newKey('r', 'rsa');
});

function khFile(text: string): string {
  const f = join(mkdtempSync(join(dir, 'k')), 'known_hosts');
  writeFileSync(f, text);
  return f;
}
const typeAndKey = (k: { line: string }) => k.line.split(' ').slice(0, 2).join(' ');

describe('known_hosts', () => {
  test('fingerprint matches ssh-keygen -lf', () => {
    const out = execFileSync('ssh-keygen', ['-lf', join(dir, 'a.pub')], { encoding: 'utf8' });
    expect(out.split(' ')[1]).toBe(fingerprint(a.blob));
    expect(keyTypeOf(a.blob)).toBe('ssh-ed25519');
    expect(keyTypeOf(rsa.blob)).toBe('ssh-rsa');
  });

  test('plain entry: known, unknown, changed', () => {
    const f = khFile(`# comment\n10.0.0.1,node1 ${typeAndKey(a)}\n`);
    expect(verifyHostKey(f, '10.0.0.1', 22, a.blob).status).toBe('known');
    expect(verifyHostKey(f, 'node1', 22, a.blob).status).toBe('known');
    expect(verifyHostKey(f, '10.0.0.2', 22, a.blob)).toMatchObject({ status: 'unknown', fingerprint: fingerprint(a.blob) });
    const changed = verifyHostKey(f, '10.0.0.1', 22, b.blob);
    expect(changed).toMatchObject({ status: 'changed', fingerprint: fingerprint(b.blob), expected: [fingerprint(a.blob)], lines: [2] });
  });

  test('a key of another type on record is not a change: the host is unknown for that type', () => {
    const f = khFile(`10.0.0.1 ${typeAndKey(rsa)}\n`);
    expect(verifyHostKey(f, '10.0.0.1', 22, a.blob).status).toBe('unknown');
    expect(knownKeyTypes(f, '10.0.0.1', 22)).toEqual(['ssh-rsa']);
  });

  test('non-default port uses [addr]:port', () => {
    const f = khFile(`[10.0.0.1]:2222 ${typeAndKey(a)}\n`);
    expect(hostToken('10.0.0.1', 2222)).toBe('[10.0.0.1]:2222');
    expect(verifyHostKey(f, '10.0.0.1', 2222, a.blob).status).toBe('known');
    expect(verifyHostKey(f, '10.0.0.1', 22, a.blob).status).toBe('unknown');
  });

  test('hashed entries written by ssh-keygen -H', () => {
    const f = khFile(`10.9.8.7 ${typeAndKey(a)}\n[10.9.8.7]:2200 ${typeAndKey(b)}\n`);
    execFileSync('ssh-keygen', ['-H', '-f', f], { stdio: 'ignore' });
    const text = readFileSync(f, 'utf8');
    expect(text).not.toContain('10.9.8.7');
    expect(text).toMatch(/^\|1\|/m);
    expect(verifyHostKey(f, '10.9.8.7', 22, a.blob).status).toBe('known');
    expect(verifyHostKey(f, '10.9.8.7', 2200, b.blob).status).toBe('known');
    expect(verifyHostKey(f, '10.9.8.7', 22, b.blob).status).toBe('changed');
    expect(verifyHostKey(f, '10.9.8.6', 22, a.blob).status).toBe('unknown');
  });

  test('wildcards, negation and @revoked', () => {
    const f = khFile(`10.1.*,!10.1.0.9 ${typeAndKey(a)}\n@revoked * ${typeAndKey(b)}\n`);
    expect(verifyHostKey(f, '10.1.2.3', 22, a.blob).status).toBe('known');
    expect(verifyHostKey(f, '10.1.0.9', 22, a.blob).status).toBe('unknown');
    expect(verifyHostKey(f, '10.1.2.3', 22, b.blob)).toMatchObject({ status: 'revoked', line: 2 });
  });

  test('missing file: every host is unknown; recording creates the file 0600 and makes the host known', () => {
    const f = join(mkdtempSync(join(dir, 'n')), 'sub', 'known_hosts');
    expect(verifyHostKey(f, '10.0.0.5', 22, a.blob).status).toBe('unknown');
    recordHostKey(f, '10.0.0.5', 22, a.blob);
    recordHostKey(f, '10.0.0.6', 2222, b.blob);
    expect(verifyHostKey(f, '10.0.0.5', 22, a.blob).status).toBe('known');
    expect(verifyHostKey(f, '10.0.0.6', 2222, b.blob).status).toBe('known');
    expect(readFileSync(f, 'utf8')).toBe(`10.0.0.5 ${typeAndKey(a)}\n[10.0.0.6]:2222 ${typeAndKey(b)}\n`);
    // and OpenSSH itself accepts what was written
    const found = execFileSync('ssh-keygen', ['-F', '[10.0.0.6]:2222', '-f', f], { encoding: 'utf8' });
    expect(found).toContain(typeAndKey(b));
  });
});
