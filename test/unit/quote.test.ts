// shQuote / shWords, proven by real shells: the quoted word goes through a shell's parser and must come
// out byte for byte as the original string.

import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shQuote, shWords } from '../../tasks/remote/quote.ts';

const TRICKY = [
  '',
  'plain',
  ' ',
  'two words',
  "it's",
  "''",
  "'",
  "a'b'c",
  '"double"',
  '$(reboot)',
  '`reboot`',
  '${HOME}',
  '$HOME',
  'a;b',
  'a && b || c',
  'a|b',
  'a > /tmp/x',
  'line1\nline2',
  '\n',
  'trailing newline\n\n',
  'tab\there',
  'back\\slash',
  '\\',
  '*',
  '?',
  '[abc]',
  '~',
  '~root',
  '#comment',
  '!',
  '!!',
  '-n',
  '-e',
  '--',
  'FOO=bar',
  '=',
  '%',
  'héllo wörld ✓ 日本語 🎉',
  '\u0001\u0002\u007f',
  '\r\n',
  "mixed 'single' and \"double\" and $(cmd) and `cmd`\nand newline",
];

/** Run `<shell> -c "<inner shell> -c 'printf %s \"$1\"' _ <quoted>"`: the outer shell parses the quoted word. */
function echoThrough(shell: string, quoted: string): string {
  const r = spawnSync(shell, ['-c', `bash -c 'printf %s "$1"' _ ${quoted}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${shell} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

describe('shQuote', () => {
  it.each(TRICKY.map((s) => [JSON.stringify(s), s]))('round-trips %s through bash for real', (_label, s) => {
    expect(echoThrough('bash', shQuote(s))).toBe(s);
  });

  it('round-trips the same strings through dash (POSIX sh)', () => {
    const dash = spawnSync('/bin/sh', ['-c', 'command -v dash'], { encoding: 'utf8' }).stdout.trim();
    const shell = dash || '/bin/sh';
    for (const s of TRICKY) expect(echoThrough(shell, shQuote(s)), JSON.stringify(s)).toBe(s);
  });

  it('leaves safe words bare and quotes everything else', () => {
    expect(shQuote('ipvsadm')).toBe('ipvsadm');
    expect(shQuote('/etc/modules-load.d/ipvs.conf')).toBe('/etc/modules-load.d/ipvs.conf');
    expect(shQuote('conntrack-tools')).toBe('conntrack-tools');
    expect(shQuote('')).toBe("''");
    expect(shQuote("it's")).toBe("'it'\\''s'");
    expect(shQuote('a b')).toBe("'a b'");
    // `=` is quoted so a quoted word can never become an assignment in command position
    expect(shQuote('FOO=bar')).toBe("'FOO=bar'");
    expect(shQuote('~')).toBe("'~'");
  });

  it('refuses a NUL byte, which no shell argument can carry', () => {
    expect(() => shQuote('a\0b')).toThrow(/NUL/);
  });
});

describe('shWords', () => {
  it('makes one shell word per item (checked by bash and dash)', () => {
    const list = [...TRICKY, 'last'];
    for (const shell of ['bash', '/bin/sh']) {
      const r = spawnSync(shell, ['-c', `printf '%s\\0' ${shWords(list)}`], { encoding: 'utf8' });
      expect(r.status).toBe(0);
      expect(r.stdout.split('\0').slice(0, -1)).toEqual(list);
    }
  });

  it('round-trips random strings (deterministic fuzz, one bash run)', () => {
    let seed = 0x2545f491;
    const rand = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pool = [..."abcXYZ019 '\"`$(){}[];&|<>*?~#!\\\n\t\r=%+-_./,:@^é✓日🎉"];
    const list = Array.from({ length: 300 }, () => Array.from({ length: rand(12) }, () => pool[rand(pool.length)]).join(''));
    const r = spawnSync('bash', ['-c', `printf '%s\\0' ${shWords(list)}`], { encoding: 'utf8', maxBuffer: 1 << 24 });
    expect(r.status).toBe(0);
    expect(r.stdout.split('\0').slice(0, -1)).toEqual(list);
  });

  it('is empty for an empty list', () => {
    expect(shWords([])).toBe('');
  });
});
