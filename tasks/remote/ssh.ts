import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
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
  /** scripts run, in their own exec or in a kept shell (the report's sshRoundTrips) */
  roundTrips = 0;
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
    const sudo = opts.become !== false && this.usesSudo;
    const { command, stdin } = this.becomeCommand(`env LC_ALL=C bash --noprofile --norc -c ${shQuote(script)}`, sudo);
    const timeoutMs = opts.timeoutMs ?? this.host.run.commandTimeout * 1000;
    const started = Date.now();
    this.execs++;
    this.roundTrips++;
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
          stdin,
          noTrim: true,
          onChannel: (ch) => {
            channel = ch;
          },
        }),
        timedOut,
      ]);
      if (sudo) this.checkBecome(res.stderr, res.code);
      return { stdout: res.stdout, stderr: res.stderr, code: res.code, signal: res.signal, ms: Date.now() - started };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * A bash kept running on the host for scripts that follow one another (the node phase's facts, then its
   * apply): one exec for all of them, so each script after the first costs no channel, no login shell and
   * no sudo start. Nothing is started until the first run.
   */
  shell(opts: { become?: boolean } = {}): RemoteShell {
    const sudo = opts.become !== false && this.usesSudo;
    // sudo -S reads the password from the same stdin that would carry the scripts, and after a refused
    // one it reads the next line as another attempt (each counting toward an account lock-out): with a
    // become password every script keeps its own exec, its stdin holding the password and nothing else.
    return new RemoteShell(this, sudo, sudo && this.options.becomePassword !== undefined);
  }

  /** @internal for RemoteShell: open the exec channel of a kept bash */
  openChannel(command: string): Promise<ClientChannel> {
    const client = this.ssh.connection;
    if (!client) return Promise.reject(new Error('the connection to the node was lost'));
    this.execs++;
    return new Promise((resolve, reject) => client.exec(command, {}, (err, ch) => (err ? reject(err) : resolve(ch))));
  }

  /** @internal the sudo command line and password for a command run as ansible_become_user */
  becomeCommand(bash: string, sudo: boolean): { command: string; stdin?: string } {
    const c = this.host.connection;
    const password = this.options.becomePassword;
    if (!sudo) return { command: bash };
    return {
      command: `sudo ${password !== undefined ? "-S -p ''" : '-n'} -H -u ${shQuote(c.becomeUser)} -- ${bash}`,
      ...(password !== undefined ? { stdin: password + '\n' } : {}),
    };
  }

  /** @internal */
  checkBecome(stderr: string, code: number | null): void {
    checkSudo(stderr, code, this.options.becomePassword !== undefined, this.host.connection.becomeUser);
  }

  close(): void {
    this.ssh.dispose();
  }
}

// The kept bash: scripts arrive framed on stdin (`@@kpm:run <bytes>`, then exactly that many bytes) and
// each runs in a subshell of it, with stdin on /dev/null and without the frame pipe; after each one a
// line `@@kpm:ran TAG <exit code>` goes to stdout and to stderr, so both streams are known complete. TAG is
// random per shell: no output can forge the end of a script. Any other input line is never run.
// `@@kpm:ready TAG` first says that the shell started (through sudo -n, if any) before a script is sent,
// and marks where the login shell's own output, if any, ends.
function keptBash(tag: string): string {
  return [
    'exec 3<&0 </dev/null',
    `printf '@@kpm:ready %s\\n' ${tag}`,
    "kpm_re='^@@kpm:run ([0-9]{1,9})$'",
    'while IFS= read -r -u 3 kpm_l; do',
    '  [[ $kpm_l =~ $kpm_re ]] || continue',
    "  IFS= read -r -d '' -u 3 -N \"${BASH_REMATCH[1]}\" kpm_s || exit 3",
    '  (eval "$kpm_s") 3<&-',
    '  kpm_rc=$?',
    `  printf '\\n@@kpm:ran %s %s\\n' ${tag} "$kpm_rc"`,
    `  printf '\\n@@kpm:ran %s %s\\n' ${tag} "$kpm_rc" >&2`,
    'done',
  ].join('\n');
}

/** See RemoteSession.shell. One script at a time; after a timeout or a lost connection it runs nothing more. */
export class RemoteShell {
  private channel?: Promise<ClientChannel>;
  private readonly tag = randomBytes(12).toString('hex');
  private out = '';
  private err = '';
  private ready = false;
  private ended?: { code: number | null; signal: string | null };
  private wake?: () => void;
  private dead?: Error;

  constructor(
    private readonly session: RemoteSession,
    private readonly sudo: boolean,
    /** run each script in its own exec instead (see RemoteSession.shell) */
    private readonly perExec = false,
  ) {}

  private start(): Promise<ClientChannel> {
    const bash = `env LC_ALL=C bash --noprofile --norc -c ${shQuote(keptBash(this.tag))}`;
    const { command } = this.session.becomeCommand(bash, this.sudo);
    return this.session.openChannel(command).then((ch) => {
      const outText = new StringDecoder('utf8');
      const errText = new StringDecoder('utf8');
      let code: number | null = null;
      let signal: string | null = null;
      ch.on('data', (b: Buffer) => {
        this.out += outText.write(b);
        this.wake?.();
      });
      ch.stderr.on('data', (b: Buffer) => {
        this.err += errText.write(b);
        this.wake?.();
      });
      ch.on('exit', (c: number | null, s?: string) => {
        code = c ?? null;
        signal = s ?? null;
      });
      ch.on('close', () => {
        this.out += outText.end();
        this.err += errText.end();
        this.ended = { code, signal };
        this.wake?.();
      });
      return ch;
    });
  }

  /** Wait until `done` holds or the channel ends. */
  private async until(done: () => boolean): Promise<void> {
    while (!done() && !this.ended) await new Promise<void>((r) => (this.wake = r));
    this.wake = undefined;
  }

  async run(script: string, opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    if (this.dead) throw this.dead;
    if (this.perExec) return this.session.run(script, { become: this.sudo, ...opts });
    const timeoutMs = opts.timeoutMs ?? this.session.host.run.commandTimeout * 1000;
    const started = Date.now();
    this.session.roundTrips++;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.dead = new CommandTimeoutError(`command timed out after ${Math.round(timeoutMs / 1000)}s`);
        this.channel
          ?.then((ch) => {
            ch.signal?.('KILL');
            ch.close();
          })
          .catch(() => undefined);
        this.wake?.();
        reject(this.dead);
      }, timeoutMs);
    });
    try {
      return await Promise.race([this.exchange(script, started), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async exchange(script: string, started: number): Promise<ExecResult> {
    this.channel ??= this.start();
    const ch = await this.channel;
    const readyLine = `@@kpm:ready ${this.tag}\n`;
    if (!this.ready) {
      await this.until(() => this.out.includes(readyLine) || this.dead !== undefined);
      if (this.dead) throw this.dead;
      if (!this.out.includes(readyLine)) return this.finish(started);
      this.out = this.out.slice(this.out.indexOf(readyLine) + readyLine.length);
      this.ready = true;
    }
    ch.write(`@@kpm:run ${Buffer.byteLength(script)}\n`);
    ch.write(script);
    const mark = new RegExp(`\\n@@kpm:ran ${this.tag} (\\d+)\\n`);
    await this.until(() => (mark.test(this.out) && mark.test(this.err)) || this.dead !== undefined);
    if (this.dead) throw this.dead;
    const o = mark.exec(this.out);
    const e = mark.exec(this.err);
    if (!o || !e) return this.finish(started);
    const res: ExecResult = { stdout: this.out.slice(0, o.index), stderr: this.err.slice(0, e.index), code: Number(o[1]), signal: null, ms: Date.now() - started };
    this.out = this.out.slice(o.index + o[0].length);
    this.err = this.err.slice(e.index + e[0].length);
    return res;
  }

  /** The shell ended before the script did: what it said, and how it ended (sudo's refusal included). */
  private finish(started: number): ExecResult {
    const res: ExecResult = { stdout: this.out, stderr: this.err, code: this.ended?.code ?? null, signal: this.ended?.signal ?? null, ms: Date.now() - started };
    this.dead = new Error('the remote shell has ended');
    if (this.sudo) this.session.checkBecome(res.stderr, res.code);
    return res;
  }

  /** End the shell (its stdin closes, the loop ends); the channel closes by itself. */
  close(): void {
    this.dead ??= new Error('the remote shell is closed');
    void this.channel?.then((ch) => ch.end()).catch(() => undefined);
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
