import { createHash, createHmac } from 'node:crypto';
import { appendFileSync, chmodSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';

// OpenSSH's known_hosts, read the way `ssh` reads it: plain and hashed (|1|salt|hash) host fields,
// `[host]:port` for non-default ports, `*`/`?` wildcards and `!` negation, and the @revoked marker.
// A key of the same type that differs is a *changed* key (refused even with --accept-new-host-keys).

export interface KnownKey {
  type: string;
  /** base64 of the key blob, as in the file */
  blob: string;
  revoked: boolean;
  line: number;
}

export type HostKeyVerdict =
  | { status: 'known' }
  | { status: 'unknown'; fingerprint: string; type: string }
  | { status: 'changed'; fingerprint: string; expected: string[]; type: string; file: string; lines: number[] }
  | { status: 'revoked'; fingerprint: string; type: string; file: string; line: number };

/** `SHA256:` + unpadded base64 of sha256(blob), as `ssh-keygen -lf` prints it. */
export function fingerprint(blob: Buffer): string {
  return 'SHA256:' + createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

/** The key type named inside an SSH public key blob (first length-prefixed string). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const len = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + len).toString('latin1');
}

/** The name known_hosts uses for a host: bare for port 22, `[addr]:port` otherwise. */
export function hostToken(address: string, port: number): string {
  return port === 22 ? address : `[${address}]:${port}`;
}

function globMatch(pattern: string, text: string): boolean {
  const re = new RegExp(
    '^' + pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.') + '$',
    'i',
  );
  return re.test(text);
}

function hostFieldMatches(field: string, token: string): boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (!salt || !hash) return false;
    const digest = createHmac('sha1', Buffer.from(salt, 'base64')).update(token).digest('base64');
    return digest === hash;
  }
  let matched = false;
  for (const pattern of field.split(',')) {
    if (pattern.startsWith('!')) {
      if (globMatch(pattern.slice(1), token)) return false;
    } else if (globMatch(pattern, token)) {
      matched = true;
    }
  }
  return matched;
}

/** Keys recorded for `token` in the text of a known_hosts file. */
export function keysFor(text: string, token: string): KnownKey[] {
  const keys: KnownKey[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '' || raw.startsWith('#')) continue;
    const fields = raw.split(/\s+/);
    let revoked = false;
    if (fields[0]?.startsWith('@')) {
      const marker = fields.shift();
      if (marker === '@cert-authority') continue; // certificates are not supported: such lines vouch for no plain key
      revoked = marker === '@revoked';
    }
    const [hosts, type, blob] = fields;
    if (!hosts || !type || !blob) continue;
    if (!hostFieldMatches(hosts, token)) continue;
    keys.push({ type, blob, revoked, line: i + 1 });
  }
  return keys;
}

/** Decide whether `blob` is the right key for the host, from the file's content (missing file = empty). */
export function verifyHostKey(file: string, address: string, port: number, blob: Buffer): HostKeyVerdict {
  const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const token = hostToken(address, port);
  const keys = keysFor(text, token);
  const type = keyTypeOf(blob);
  const b64 = blob.toString('base64');
  const fp = fingerprint(blob);
  const revoked = keys.find((k) => k.revoked && k.blob === b64);
  if (revoked) return { status: 'revoked', fingerprint: fp, type, file, line: revoked.line };
  if (keys.some((k) => !k.revoked && k.blob === b64)) return { status: 'known' };
  const sameType = keys.filter((k) => !k.revoked && k.type === type);
  if (sameType.length > 0) {
    return {
      status: 'changed',
      fingerprint: fp,
      type,
      file,
      expected: sameType.map((k) => fingerprint(Buffer.from(k.blob, 'base64'))),
      lines: sameType.map((k) => k.line),
    };
  }
  return { status: 'unknown', fingerprint: fp, type };
}

/** Key types recorded for a host, so the SSH client can ask for those host key algorithms first. */
export function knownKeyTypes(file: string, address: string, port: number): string[] {
  if (!existsSync(file)) return [];
  const keys = keysFor(readFileSync(file, 'utf8'), hostToken(address, port));
  return [...new Set(keys.filter((k) => !k.revoked).map((k) => k.type))];
}

/** Record a newly accepted key (as `ssh -o StrictHostKeyChecking=accept-new` does). */
export function recordHostKey(file: string, address: string, port: number, blob: Buffer): void {
  const dir = dirname(file);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  const fresh = !existsSync(file);
  const existing = fresh ? '' : readFileSync(file, 'utf8');
  const prefix = existing === '' || existing.endsWith('\n') ? '' : '\n';
  // One appendFileSync per line: O_APPEND keeps concurrent writers from interleaving within a line.
  appendFileSync(file, `${prefix}${hostToken(address, port)} ${keyTypeOf(blob)} ${blob.toString('base64')}\n`, {
    mode: 0o600,
  });
  if (fresh) chmodSync(file, 0o600);
}

/** ssh2 host key algorithm names for a known_hosts key type, newest signature first. */
export function algorithmsFor(keyType: string): string[] {
  if (keyType === 'ssh-rsa') return ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
  return [keyType];
}
