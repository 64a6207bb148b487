import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { NodeSSH } from 'node-ssh';
import type { ClientChannel } from 'ssh2';
import type { Host } from '../inventory/types.ts';
import {
  algorithmsFor,
  knownKeyTypes,
  recordHostKey,
  verifyHostKey,
  type HostKeyVerdict,
} from './known-hosts.ts';
import { shQuote } from './quote.ts';

// One SSH connection per host, reused for every step of that host. Remote work is sent as whole bash
// scripts (one exec per phase), because each exec costs a channel open and a login shell start-up.

export interface SessionOptions {
  /** trust and record the key of a host that known_hosts does not list yet */
  acceptNewHostKeys: boolean;
  /** sudo password (from -K or KPM_BECOME_PASSWORD); written only to sudo's stdin */
  becomePassword?: string;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: string | null;
  ms: number;
}

/** The host could not be reached or logged in to: Ansible's "unreachable". */
export class UnreachableError extends Error {
  constructor(
    message: string,
    readonly attempts: number,
  ) {
    super(message);
    this.name = 'UnreachableError';
  }
}

/** The host answered with a key that known_hosts does not vouch for: fail closed, never retried. */
export class HostKeyError extends Error {
  constructor(
    message: string,
    readonly verdict: HostKeyVerdict,
  ) {
    super(message);
    this.name = 'HostKeyError';
  }
}

/** sudo refused (wrong password, no password given, user not in sudoers). */
export class BecomeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BecomeError';
  }
}

/** A command ran longer than kpm_command_timeout. */
export class CommandTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandTimeoutError';
  }
}

function describeVerdict(host: Host, v: HostKeyVerdict): string {
  const where = `${host.connection.address}:${host.connection.port}`;
  switch (v.status) {
    case 'unknown':
      return (
        `host key of ${where} is not in ${host.run.knownHostsFile} (${v.type} ${v.fingerprint}); ` +
        `verify it and add it, or rerun with --accept-new-host-keys to trust it on first contact`
      );
    case 'changed':
      return (
        `HOST KEY CHANGED for ${where}: it offers ${v.type} ${v.fingerprint}, but ${v.file} ` +
        `(line ${v.lines.join(', ')}) expects ${v.expected.join(' or ')}; refusing to connect ` +
        `(a reinstalled node, or someone in the middle: check, then remove the old line)`
      );
    case 'revoked':
      return `host key of ${where} (${v.type} ${v.fingerprint}) is marked @revoked in ${v.file} line ${v.line}`;
    case 'known':
      return 'host key known';
  }
}

const DEFAULT_KEYS = ['id_ed25519', 'id_ecdsa', 'id_rsa'];

function authConfig(host: Host): { privateKey?: string; agent?: string } {
  const c = host.connection;
  if (c.privateKeyFile) {
    try {
      return { privateKey: readFileSync(c.privateKeyFile, 'utf8') };
    } catch (e) {
      throw new UnreachableError(`cannot read private key ${c.privateKeyFile}: ${(e as Error).message}`, 0);
    }
  }
  if (process.env.SSH_AUTH_SOCK) return { agent: process.env.SSH_AUTH_SOCK };
  for (const name of DEFAULT_KEYS) {
    const p = join(homedir(), '.ssh', name);
    if (existsSync(p)) return { privateKey: readFileSync(p, 'utf8') };
  }
  throw new UnreachableError(
    'no SSH credentials: set ansible_ssh_private_key_file, run an ssh-agent, or create ~/.ssh/id_ed25519',
    0,
  );
}

// Errors worth another attempt: the network or the daemon was not ready. Authentication and host key
// failures are answers, not accidents, and retrying them only delays the report.
function isTransient(e: Error): boolean {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'EAI_AGAIN'].includes(code))
    return true;
  return /Timed out while waiting for handshake|Connection lost before handshake|read ECONNRESET|socket hang up/i.test(
    e.message,
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RemoteSession {
  /** SSH execs this session has run (the report's sshExecs) */
  execs = 0;
  private constructor(
    readonly host: Host,
    private readonly ssh: NodeSSH,
    private readonly options: SessionOptions,
  ) {}

  static async open(host: Host, options: SessionOptions): Promise<RemoteSession> {
    const c = host.connection;
    const auth = authConfig(host);
    const known = knownKeyTypes(host.run.knownHostsFile, c.address, c.port);
    let lastError: Error | undefined;
    const attempts = host.run.connectRetries + 1;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      let verdict: HostKeyVerdict | undefined;
      const ssh = new NodeSSH();
      try {
        await ssh.connect({
          host: c.address,
          port: c.port,
          username: c.user,
          ...auth,
          readyTimeout: host.run.connectTimeout * 1000,
          keepaliveInterval: 15_000,
          keepaliveCountMax: 4,
          // Ask first for the key types known_hosts has for this host, as OpenSSH does, so a host with
          // several keys is checked against the one on record rather than called unknown.
          ...(known.length > 0
            ? {
                algorithms: {
                  serverHostKey: [
                    ...known.flatMap(algorithmsFor),
                    'ssh-ed25519',
                    'ecdsa-sha2-nistp256',
                    'ecdsa-sha2-nistp384',
                    'ecdsa-sha2-nistp521',
                    'rsa-sha2-512',
                    'rsa-sha2-256',
                  ].filter((a, i, all) => all.indexOf(a) === i) as never,
                },
              }
            : {}),
          hostVerifier: (key: Buffer) => {
            verdict = verifyHostKey(host.run.knownHostsFile, c.address, c.port, key);
            if (verdict.status === 'unknown' && options.acceptNewHostKeys) {
              recordHostKey(host.run.knownHostsFile, c.address, c.port, key);
              return true;
            }
            return verdict.status === 'known';
          },
        });
        // ssh2 leaves Nagle's algorithm on: every small exec round trip would wait for delayed ACKs.
        (ssh.connection as unknown as { setNoDelay?: (on: boolean) => void })?.setNoDelay?.(true);
        return new RemoteSession(host, ssh, options);
      } catch (err) {
        ssh.dispose();
        const e = err as Error;
        if (verdict && verdict.status !== 'known' && !(verdict.status === 'unknown' && options.acceptNewHostKeys)) {
          throw new HostKeyError(describeVerdict(host, verdict), verdict);
        }
        lastError = e;
        if (!isTransient(e) || attempt === attempts) break;
        await sleep(Math.min(500 * 2 ** (attempt - 1), 4000));
      }
    }
    const msg = lastError?.message ?? 'unknown error';
    const hint = /All configured authentication methods failed/i.test(msg)
      ? ` (as ${c.user}: check ansible_user and ansible_ssh_private_key_file)`
      : '';
    throw new UnreachableError(
      `cannot connect to ${c.address}:${c.port}: ${msg}${hint}` +
        (attempts > 1 ? ` (after ${attempts} attempts)` : ''),
      attempts,
    );
  }

  /** Whether commands run through sudo on this host. */
  get usesSudo(): boolean {
    const c = this.host.connection;
    return c.become && c.user !== c.becomeUser;
  }

  /**
   * Run a bash script on the host in one exec. `become` runs it as ansible_become_user through sudo.
   * The script travels as one quoted argument (not on stdin), so a sudo that needs no password can never
   * hand the password line to bash as a command.
   */
  async run(script: string, opts: { become?: boolean; timeoutMs?: number } = {}): Promise<ExecResult> {
    const c = this.host.connection;
    const bash = `env LC_ALL=C bash --noprofile --norc -c ${shQuote(script)}`;
    const sudo = opts.become !== false && this.usesSudo;
    const password = this.options.becomePassword;
    const command = sudo
      ? `sudo ${password !== undefined ? "-S -p ''" : '-n'} -H -u ${shQuote(c.becomeUser)} -- ${bash}`
      : bash;
    const timeoutMs = opts.timeoutMs ?? this.host.run.commandTimeout * 1000;
    const started = Date.now();
    this.execs++;
    let channel: ClientChannel | undefined;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        channel?.signal?.('KILL');
        channel?.close();
        reject(new CommandTimeoutError(`command timed out after ${Math.round(timeoutMs / 1000)}s`));
      }, timeoutMs);
    });
    try {
      const res = await Promise.race([
        this.ssh.execCommand(command, {
          stdin: sudo && password !== undefined ? password + '\n' : undefined,
          noTrim: true,
          onChannel: (ch) => {
            channel = ch;
          },
        }),
        timedOut,
      ]);
      if (sudo) checkSudo(res.stderr, res.code, password !== undefined, c.becomeUser);
      return { stdout: res.stdout, stderr: res.stderr, code: res.code, signal: res.signal, ms: Date.now() - started };
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    this.ssh.dispose();
  }
}

function checkSudo(stderr: string, code: number | null, hadPassword: boolean, becomeUser: string): void {
  if (code === 0) return;
  if (/a password is required|a terminal is required/i.test(stderr) && !hadPassword) {
    throw new BecomeError(
      `sudo needs a password to become ${becomeUser}: run with -K (--ask-become-pass) or set KPM_BECOME_PASSWORD`,
    );
  }
  if (/incorrect password|Sorry, try again|no password was provided/i.test(stderr)) {
    throw new BecomeError(`sudo refused the become password (to become ${becomeUser})`);
  }
  if (/is not in the sudoers file|is not allowed to (execute|run)|may not run sudo/i.test(stderr)) {
    throw new BecomeError(`sudo refused: ${lastLine(stderr)}`);
  }
  if (/\bsudo: (command )?not found|\bsudo: No such file/i.test(stderr)) {
    throw new BecomeError('sudo is not installed on the host, but ansible_become is set');
  }
}

function lastLine(s: string): string {
  const lines = s.trim().split('\n');
  return lines[lines.length - 1] ?? '';
}
