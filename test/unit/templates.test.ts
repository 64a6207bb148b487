import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { beforeEach, describe, expect, test, vi } from 'vitest';
import { readTemplate } from '../../tasks/node/templates.ts';

// readFileSync wrapped, to count how often readTemplate goes to disk (this file's modules are its own,
// so no template has been read before its tests run).
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  return { ...fs, readFileSync: vi.fn(fs.readFileSync) };
});

const onDisk = (name: string) => readFile(new URL(`../../templates/${name}`, import.meta.url), 'utf8');
const reads = (name: string) => vi.mocked(readFileSync).mock.calls.filter(([path]) => String(path).endsWith(`/templates/${name}`)).length;

describe('readTemplate', () => {
  beforeEach(() => {
    vi.mocked(readFileSync).mockClear();
  });

  test('reads each template from disk once and gives its text at every call', async () => {
    const modules = await onDisk('ipvs.modules');
    const conf = await onDisk('ipvs.conf');
    expect(modules).not.toBe(conf);
    for (let i = 0; i < 3; i++) {
      expect(readTemplate('ipvs.modules')).toBe(modules);
      expect(readTemplate('ipvs.conf')).toBe(conf);
    }
    expect(reads('ipvs.modules')).toBe(1);
    expect(reads('ipvs.conf')).toBe(1);
  });

  test('an unknown template throws, naming its file, at every call', () => {
    expect(() => readTemplate('no-such.template')).toThrow(/templates\/no-such\.template/);
    expect(() => readTemplate('no-such.template')).toThrow(/templates\/no-such\.template/);
    expect(reads('no-such.template')).toBe(2);
  });
});
