// Entry points: read an inventory file, tell YAML from INI, read the group_vars/ and host_vars/ next
// to it, validate, resolve.

import { stat, readFile } from 'node:fs/promises';
import path from 'node:path';
import { InventoryError } from './errors.ts';
import { parseIniInventory } from './parse-ini.ts';
import { parseYamlInventory } from './parse-yaml.ts';
import { binaryProblem, type InventoryFormat, type RawInventory } from './raw.ts';
import { resolveInventory } from './resolve.ts';
import type { Inventory } from './types.ts';
import { isVaultFile, readVarsDirs, type VarsDirs } from './vars-dirs.ts';

export { selectTargets } from './limit.ts';

export const MAX_INVENTORY_BYTES = 10 * 1024 * 1024;

/**
 * `.yaml` / `.yml` / `.json` -> YAML; `.ini` / `.cfg` -> INI; anything else (no extension, e.g.
 * Ansible's `hosts`) by content: a first meaningful line starting with `[` is INI, one that looks
 * like a YAML key (`all:`) or `---` is YAML, anything else (`node1 ansible_host=...`) is INI.
 */
export function detectFormat(text: string, file: string): InventoryFormat {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.yaml' || ext === '.yml' || ext === '.json') return 'yaml';
  if (ext === '.ini' || ext === '.cfg') return 'ini';
  for (const raw of text.split(/\r\n|\n|\r/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('[')) return 'ini';
    if (line.startsWith('---') || line.startsWith('{') || /^[^\s=]+:(\s|$)/.test(line)) return 'yaml';
    return 'ini';
  }
  return 'yaml';
}

/** Text -> the raw tree, with the checks that concern the file as a whole. */
function parseRaw(text: string, file: string): RawInventory {
  const whole = (message: string, line = 0): RawInventory => ({
    file,
    format: 'yaml',
    groups: [],
    problems: [{ file, line, key: '', message }],
    fatal: true,
  });
  if (Buffer.byteLength(text, 'utf8') > MAX_INVENTORY_BYTES) return whole(tooBig());
  const nul = text.indexOf('\0');
  if (nul >= 0) {
    const p = binaryProblem(Buffer.from(text.slice(0, nul + 1), 'utf8'))!;
    return whole(p.message, p.line);
  }
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  if (isVaultFile(body)) {
    return whole(
      'the inventory file is vault-encrypted (Ansible Vault) and this tool cannot decrypt it; decrypt a copy into ' +
        'the same directory (ansible-vault decrypt --output FILE) and pass that',
    );
  }
  return detectFormat(body, file) === 'ini' ? parseIniInventory(body, file) : parseYamlInventory(body, file);
}

/** Every group and host name the file mentions: the ones whose group_vars/host_vars are looked up. */
function namesOf(raw: RawInventory): { groups: string[]; hosts: string[] } {
  const groups = new Set(['all', 'ungrouped']);
  const hosts = new Set<string>();
  for (const g of raw.groups) {
    groups.add(g.name);
    for (const c of g.children) groups.add(c.name);
    for (const h of g.hosts) for (const n of h.names) hosts.add(n);
  }
  return { groups: [...groups], hosts: [...hosts] };
}

/**
 * The pure core: text -> resolved inventory. `file` names the file in messages and anchors relative
 * paths. Reads no files: group_vars/host_vars are used only when given (loadInventory reads them).
 */
export function parseInventoryText(text: string, file: string, varsDirs?: VarsDirs): Inventory {
  return resolveInventory(parseRaw(text, file), { baseDir: path.dirname(path.resolve(file)), varsDirs });
}

/**
 * Reads, detects the format, reads group_vars/ and host_vars/ next to the file, validates and
 * resolves. Bad input throws InventoryError (all problems at once, from every file).
 */
export async function loadInventory(file: string): Promise<Inventory> {
  const fail = (message: string): never => {
    throw new InventoryError([{ file, line: 0, key: '', message }]);
  };
  let size: number;
  try {
    const st = await stat(file);
    if (st.isDirectory()) fail('is a directory; pass the inventory file itself (inventory.ini or hosts.yaml)');
    if (!st.isFile()) fail('is not a regular file');
    size = st.size;
  } catch (e) {
    if (e instanceof InventoryError) throw e;
    return fail(`cannot read the inventory file (${describeIoError(e)})`);
  }
  if (size > MAX_INVENTORY_BYTES) fail(tooBig());
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    return fail(`cannot read the inventory file (${describeIoError(e)})`);
  }
  // Read as UTF-8 regardless, a binary file would turn into replacement characters and odd messages.
  const binary = binaryProblem(bytes);
  if (binary) throw new InventoryError([{ file, line: binary.line, key: '', message: binary.message }]);
  const raw = parseRaw(bytes.toString('utf8'), file);
  const varsDirs = raw.fatal ? undefined : await readVarsDirs(file, namesOf(raw));
  return resolveInventory(raw, { baseDir: path.dirname(path.resolve(file)), varsDirs });
}

function tooBig(): string {
  return `expected an inventory file of at most 10 MiB; this one is larger (is it the right file?)`;
}

function describeIoError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  return code ?? (e instanceof Error ? e.message : String(e));
}
