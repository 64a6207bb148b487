import { createHash, createHmac } from 'node:crypto';
import { appendFileSync, chmodSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
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

const ASCII = /^[\x00-\x7f]*$/;

/**
 * A known_hosts host field as a predicate, built once per line: a run checks every host against every
 * line, and compiling a RegExp per pattern per host made that quadratic cost seconds at a few hundred
 * hosts. A pattern without wildcards is compared as text (case-insensitively, as the glob would).
 */
function hostFieldMatcher(field: string): (token: string) => boolean {
  if (field.startsWith('|1|')) {
    const [, , salt, hash] = field.split('|');
    if (!salt || !hash) return () => false;
    const key = Buffer.from(salt, 'base64');
    return (token) => createHmac('sha1', key).update(token).digest('base64') === hash;
  }
  const one = (pattern: string): ((token: string) => boolean) => {
    if (!/[*?]/.test(pattern) && ASCII.test(pattern)) {
      const want = pattern.toLowerCase();
      return (token) => (ASCII.test(token) ? token.toLowerCase() === want : globMatch(pattern, token));
    }
    return (token) => globMatch(pattern, token);
  };
  const patterns = field.split(',').map((p) => (p.startsWith('!') ? { negated: true, test: one(p.slice(1)) } : { negated: false, test: one(p) }));
  return (token) => {
    let matched = false;
    for (const p of patterns) {
      if (p.negated) {
        if (p.test(token)) return false;
      } else if (p.test(token)) {
        matched = true;
      }
    }
    return matched;
  };
}

interface Entry extends KnownKey {
  matches: (token: string) => boolean;
}

function parseEntries(text: string): Entry[] {
  const entries: Entry[] = [];
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
    entries.push({ type, blob, revoked, line: i + 1, matches: hostFieldMatcher(hosts) });
  }
  return entries;
}

function keysOf(entries: readonly Entry[], token: string): KnownKey[] {
  return entries.filter((e) => e.matches(token)).map(({ type, blob, revoked, line }) => ({ type, blob, revoked, line }));
}

/** Keys recorded for `token` in the text of a known_hosts file. */
export function keysFor(text: string, token: string): KnownKey[] {
  return keysOf(parseEntries(text), token);
}

// Each file is parsed once per change (size, mtime, inode), not once per host and check.
const parsed = new Map<string, { stamp: string; entries: Entry[] }>();

function entriesOf(file: string): Entry[] {
  let stamp: string;
  try {
    const st = statSync(file);
    stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    parsed.delete(file);
    return [];
  }
  const hit = parsed.get(file);
  if (hit && hit.stamp === stamp) return hit.entries;
  const entries = parseEntries(readFileSync(file, 'utf8'));
  parsed.set(file, { stamp, entries });
  return entries;
}

/** Decide whether `blob` is the right key for the host, from the file's content (missing file = empty). */
export function verifyHostKey(file: string, address: string, port: number, blob: Buffer): HostKeyVerdict {
  const keys = keysOf(entriesOf(file), hostToken(address, port));
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
  const keys = keysOf(entriesOf(file), hostToken(address, port));
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
  parsed.delete(file);
  if (fresh) chmodSync(file, 0o600);
}

/** ssh2 host key algorithm names for a known_hosts key type, newest signature first. */
export function algorithmsFor(keyType: string): string[] {
  if (keyType === 'ssh-rsa') return ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];
  return [keyType];
}
