import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InventoryError } from '../../tasks/inventory/errors.ts';
import { loadInventory } from '../../tasks/inventory/load.ts';
import type { Inventory } from '../../tasks/inventory/types.ts';
import { hostileCorpus, isRejected, PAYLOADS, writeCase, type HostileCase } from '../inventory-corpus.ts';

// Every case of the generated corpus (test/inventory-corpus.ts) through the loader the CLI uses: a refused
// case gives an InventoryError with its exact line (file, line, key, what was expected) and nothing else,
// never another exception; an accepted one keeps every hostile value exactly as written.

const ROOT = process.cwd();
const corpus = hostileCorpus();
let base = '';
const dirOf = (c: HostileCase) => path.join(base, c.name);
const markersBefore = new Set(pwned());

/** a file name as messages print it */
const escapeControls = (s: string) => s.replace(/[\u0000-\u001f]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`);

function pwned(): string[] {
  return readdirSync('/tmp').filter((n) => n.startsWith('pwned-'));
}

beforeAll(() => {
  base = mkdtempSync(path.join(tmpdir(), 'kpm-hostile-'));
  for (const c of corpus) {
    mkdirSync(dirOf(c));
    writeCase(dirOf(c), c);
  }
});
afterAll(() => {
  if (base) rmSync(base, { recursive: true, force: true });
});

async function load(c: HostileCase): Promise<{ inv?: Inventory; error?: unknown }> {
  try {
    const inv = await loadInventory(path.join(dirOf(c), c.inventory));
    return { inv };
  } catch (error) {
    return { error };
  }
}

describe('the hostile corpus', () => {
  it('has at least 100 cases, refused and accepted, of every kind', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(100);
    const rejected = corpus.filter((c) => isRejected(c.expect));
    expect(rejected.length).toBeGreaterThan(50);
    expect(corpus.length - rejected.length).toBeGreaterThan(20);
    const kinds = new Set(corpus.map((c) => c.kind));
    for (const k of ['type', 'unknown-key', 'duplicate', 'alias-bomb', 'size', 'nesting', 'address', 'port', 'range', 'injection', 'secret', 'encoding', 'ini', 'vars-dir']) {
      expect(kinds, k).toContain(k);
    }
    // every payload is tried as a host name, in a value that reaches nodes, and kept where it is harmless
    for (const p of PAYLOADS) {
      expect(corpus.filter((c) => c.markers.includes(p.marker)).length, p.tag).toBeGreaterThanOrEqual(5);
    }
  });
});

describe.each(corpus.map((c) => [c.name, c] as const))('%s', (_name, c) => {
  it(isRejected(c.expect) ? 'is refused with its exact message, and nothing else' : 'is accepted with every value as written', async () => {
    const { inv, error } = await load(c);
    const expectation = c.expect;
    if (error !== undefined && !(error instanceof InventoryError)) {
      // anything else (a TypeError, a RangeError from deep recursion) is a bug: show it whole
      throw new Error(`${c.name}: ${(error as Error)?.stack ?? String(error)}`);
    }
    if (isRejected(expectation)) {
      expect(error, `${c.name} was accepted`).toBeInstanceOf(InventoryError);
      const e = error as InventoryError;
      // messages name the file as given; compare them relative to the case directory
      const message = e.message.replaceAll(`${dirOf(c)}/`, '');
      expect(message).toMatch(expectation.reject);
      const lines = message.split('\n');
      expect(lines, message).toHaveLength(expectation.problems === undefined ? 1 : expectation.problems + (lines.at(-1)!.startsWith('... and ') ? 1 : 0));
      for (const l of lines) {
        if (l.startsWith('... and ')) continue;
        // each line names one of the case's files first
        expect(l, message).toMatch(/^[^:\s][^:]*(:\d+)?: /);
        expect(Object.keys(c.files).some((f) => l.startsWith(escapeControls(f))), l).toBe(true);
      }
      expect(message).not.toMatch(/\n\s+at /);
      for (const s of expectation.secrets ?? []) {
        expect(e.message).not.toContain(s);
        expect(JSON.stringify(e.problems)).not.toContain(s);
      }
    } else {
      expect(error, error instanceof Error ? error.message : '').toBeUndefined();
      expect(inv!.hosts.map((h) => h.name)).toEqual(expectation.hosts);
      for (const [host, vars] of Object.entries(expectation.vars ?? {})) {
        const h = inv!.hosts.find((x) => x.name === host)!;
        for (const [k, v] of Object.entries(vars)) expect(h.vars[k], `${host}.${k}`).toEqual(v);
      }
      for (const w of expectation.warnings ?? []) {
        expect((inv!.warnings ?? []).map((x) => x.replaceAll(`${dirOf(c)}/`, '')).some((x) => w.test(x)), `${w} in ${JSON.stringify(inv!.warnings)}`).toBe(true);
      }
    }
  }, 60_000); // the largest cases take seconds, more on a busy machine
});

describe('nothing in the corpus ran', () => {
  it('no marker file appeared on this machine', () => {
    expect(pwned().filter((m) => !markersBefore.has(m))).toEqual([]);
  });
});

describe('the command line on hostile inventories', () => {
  const cli = (c: HostileCase) => {
    const r = spawnSync(path.join(ROOT, 'node_modules/.bin/tsx'), [path.join(ROOT, 'tasks/cli.ts'), 'provision', '-i', path.join(dirOf(c), c.inventory), '--tags', 'node'], {
      cwd: dirOf(c),
      encoding: 'utf8',
      env: { ...process.env, CI: 'true' },
      timeout: 60_000,
    });
    return { code: r.status, out: r.stdout, err: r.stderr };
  };
  const byName = (n: string) => corpus.find((c) => c.name === n)!;

  it.each(['inject-dollar-host-name-yaml', 'alias-bomb-billion-laughs', 'nesting-20000-levels', 'encoding-binary-garbage', 'secret-yaml-unquoted-star', 'size-50-mib-inventory'])(
    '%s: exit 4, the exact message on stderr, no stack trace, no host contacted',
    (name) => {
      const c = byName(name);
      const r = cli(c);
      expect(r.code, r.err).toBe(4);
      expect(r.err.replaceAll(`${dirOf(c)}/`, '')).toMatch((c.expect as { reject: RegExp }).reject);
      expect(r.err).not.toMatch(/\n\s+at |Error:/);
      expect(r.out).toBe('');
      for (const s of (c.expect as { secrets?: string[] }).secrets ?? []) expect(r.err).not.toContain(s);
    },
    60_000,
  );
});
