// Ansible's group_vars/ and host_vars/ directories next to the inventory file (its `host_group_vars`
// vars plugin), read the way Ansible reads them, so a kubespray inventory means here what it means
// to ansible-playbook (kubespray keeps kube_proxy_mode in group_vars/k8s_cluster/k8s-cluster.yml).
//
// For each group and host of the inventory, `<dir>/group_vars/<name>` (or host_vars/<name>) is looked
// up as Ansible's DataLoader.find_vars_files does: the first of `<name>`, `<name>.yml`, `<name>.yaml`,
// `<name>.json` that exists is used and the others are not read. A directory is read recursively: its
// entries sorted by name, hidden ones (`.x`) and backups (`x~`) skipped, files with no extension or
// .yml/.yaml/.json read, subdirectories without an extension descended into; later files win.
// Entries for groups and hosts the inventory does not have are not read (as in Ansible); each gets a
// warning, since a renamed group (kubespray's k8s-cluster -> k8s_cluster) silently drops its settings.
//
// A file that starts with `$ANSIBLE_VAULT;` is skipped with a warning: it cannot be decrypted here,
// and refusing it would break every inventory that keeps its secrets in group_vars/all/vault.yml.
// Precedence is applied by resolve.ts; this module only finds, reads and parses.

import type { Dirent } from 'node:fs';
import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { formatProblem, printable, type Problem } from './errors.ts';
import { parseYamlVarsFile } from './parse-yaml.ts';
import { binaryProblem, type RawVar } from './raw.ts';

export const VARS_FILE_EXTENSIONS = ['.yml', '.yaml', '.json'] as const;
/** Same bound as an inventory file: a vars file bigger than this is not a vars file. */
export const MAX_VARS_FILE_BYTES = 10 * 1024 * 1024;

export interface VarsFile {
  /** as shown in messages: under the inventory file's directory, as the user named that file */
  file: string;
  vars: RawVar[];
  /** problems met reading or parsing it (the variables themselves are checked by resolve.ts) */
  problems: Problem[];
}

export interface VarsDirs {
  /** group name -> its vars files, in the order Ansible loads them */
  groups: Map<string, VarsFile[]>;
  /** host name -> its vars files, in the order Ansible loads them */
  hosts: Map<string, VarsFile[]>;
  /** problems that are not about one file's content (an unreadable directory) */
  problems: Problem[];
  warnings: string[];
}

export function emptyVarsDirs(): VarsDirs {
  return { groups: new Map(), hosts: new Map(), problems: [], warnings: [] };
}

/** Reads group_vars/ and host_vars/ next to `inventoryFile` for the given group and host names. */
export async function readVarsDirs(
  inventoryFile: string,
  names: { groups: readonly string[]; hosts: readonly string[] },
): Promise<VarsDirs> {
  const out = emptyVarsDirs();
  const dir = path.dirname(inventoryFile);
  await readKind(path.join(dir, 'group_vars'), 'group', names.groups, out.groups, out);
  await readKind(path.join(dir, 'host_vars'), 'host', names.hosts, out.hosts, out);
  // Warnings name files found in these directories, whatever their names hold.
  out.warnings = out.warnings.map(printable);
  return out;
}

async function readKind(
  kindDir: string,
  kind: 'group' | 'host',
  names: readonly string[],
  into: Map<string, VarsFile[]>,
  out: VarsDirs,
): Promise<void> {
  const problem = (file: string, message: string): void => {
    out.problems.push({ file, line: 0, key: '', message });
  };
  try {
    const st = await stat(kindDir);
    if (!st.isDirectory()) {
      out.warnings.push(`${kindDir}: not read: it is not a directory (Ansible skips it too)`);
      return;
    }
  } catch (e) {
    if (code(e) !== 'ENOENT' && code(e) !== 'ENOTDIR') problem(kindDir, `cannot read this directory (${describeIoError(e)})`);
    return;
  }
  let listing: Dirent[];
  try {
    listing = await readdir(kindDir, { withFileTypes: true });
  } catch (e) {
    problem(kindDir, `cannot read this directory (${describeIoError(e)})`);
    return;
  }
  const present = new Set(listing.map((d) => d.name));
  const used = new Set<string>();

  for (const name of names) {
    const listed = [name, ...VARS_FILE_EXTENSIONS.map((ext) => name + ext)].filter((c) => present.has(c));
    if (listed.length === 0) continue;
    listed.forEach((c) => used.add(c));
    // Ansible's path_exists follows symlinks: a dangling one does not exist, the next name is tried.
    const candidates: { name: string; isDir: boolean }[] = [];
    for (const c of listed) {
      try {
        candidates.push({ name: c, isDir: (await stat(path.join(kindDir, c))).isDirectory() });
      } catch (e) {
        if (code(e) !== 'ENOENT' && code(e) !== 'ELOOP') problem(path.join(kindDir, c), `cannot read it (${describeIoError(e)})`);
      }
    }
    if (candidates.length === 0) continue;
    const [first, ...shadowed] = candidates as [{ name: string; isDir: boolean }, ...{ name: string; isDir: boolean }[]];
    const firstPath = path.join(kindDir, first.name);
    const isDir = first.isDir;
    let files: string[];
    try {
      files = isDir ? await listVarsDir(firstPath, new Set()) : [firstPath];
    } catch (e) {
      problem(firstPath, `cannot read this directory (${describeIoError(e)})`);
      continue;
    }
    for (const s of shadowed) {
      out.warnings.push(
        `${path.join(kindDir, s.name)}${s.isDir ? '/' : ''}: not read: ${firstPath}${isDir ? '/' : ''} takes its place ` +
          `(Ansible reads only the first of ${name}, ${name}.yml, ${name}.yaml, ${name}.json)`,
      );
    }
    const loaded: VarsFile[] = [];
    for (const f of files) {
      const vf = await readVarsFile(f, out);
      if (vf) loaded.push(vf);
    }
    into.set(name, loaded);
  }

  for (const d of [...listing].sort((a, b) => compareNames(a.name, b.name))) {
    if (used.has(d.name) || d.name.startsWith('.') || d.name.endsWith('~')) continue;
    const ext = path.extname(d.name);
    const looksLikeVars = ext === '' || (VARS_FILE_EXTENSIONS as readonly string[]).includes(ext) || d.isDirectory();
    if (!looksLikeVars) continue;
    const stem = (VARS_FILE_EXTENSIONS as readonly string[]).includes(ext) ? d.name.slice(0, -ext.length) : d.name;
    out.warnings.push(
      `${path.join(kindDir, d.name)}${d.isDirectory() ? '/' : ''}: not read: the inventory has no ${kind} ${JSON.stringify(stem)} ` +
        '(Ansible ignores it too)',
    );
  }
}

/** The files of a group_vars/<group>/ directory, in Ansible's order (see the top of this file). */
async function listVarsDir(dir: string, seen: Set<string>): Promise<string[]> {
  // A symlink back up the tree would make Ansible recurse until the path is too long; read each
  // directory once.
  const real = await realpath(dir);
  if (seen.has(real)) return [];
  seen.add(real);
  const names = (await readdir(dir)).sort(compareNames);
  const found: string[] = [];
  for (const name of names) {
    if (name.startsWith('.') || name.endsWith('~')) continue;
    const full = path.join(dir, name);
    const ext = path.extname(name);
    let st;
    try {
      st = await stat(full);
    } catch {
      continue; // a dangling symlink: Ansible's is_file/is_directory are false for it too
    }
    if (st.isDirectory() && ext === '') for (const f of await listVarsDir(full, seen)) found.push(f);
    else if (st.isFile() && (ext === '' || (VARS_FILE_EXTENSIONS as readonly string[]).includes(ext))) found.push(full);
  }
  return found;
}

async function readVarsFile(file: string, out: VarsDirs): Promise<VarsFile | undefined> {
  const fail = (message: string, line = 0): VarsFile => ({ file, vars: [], problems: [{ file, line, key: '', message }] });
  let bytes: Buffer;
  try {
    const st = await stat(file);
    // A FIFO would block the read forever and a device (a link to /dev/zero) never end.
    if (!st.isFile()) return fail('expected a vars file; this is not a regular file');
    if (st.size > MAX_VARS_FILE_BYTES) return fail('expected a vars file of at most 10 MiB; this one is larger');
    bytes = await readFile(file);
  } catch (e) {
    return fail(`cannot read this vars file (${describeIoError(e)})`);
  }
  const binary = binaryProblem(bytes);
  if (binary) return fail(binary.message, binary.line);
  const text = bytes.toString('utf8');
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  if (isVaultFile(body)) {
    out.warnings.push(
      formatProblem({
        file,
        line: 0,
        key: '',
        message: 'skipped: the file is vault-encrypted (Ansible Vault) and this tool cannot decrypt it; none of its variables are read',
      }),
    );
    return undefined;
  }
  const parsed = parseYamlVarsFile(body, file);
  return { file, vars: parsed.vars, problems: parsed.problems };
}

/** Ansible Vault's envelope, as ansible-vault writes it (`$ANSIBLE_VAULT;1.1;AES256` ...). */
export function isVaultFile(text: string): boolean {
  return text.startsWith('$ANSIBLE_VAULT;');
}

/** Python's sorted() on str: by code point (not by locale). */
function compareNames(a: string, b: string): number {
  const ca = Array.from(a, (c) => c.codePointAt(0)!);
  const cb = Array.from(b, (c) => c.codePointAt(0)!);
  for (let i = 0; i < Math.min(ca.length, cb.length); i++) if (ca[i] !== cb[i]) return ca[i]! - cb[i]!;
  return ca.length - cb.length;
}

function code(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException).code;
}

export function describeIoError(e: unknown): string {
  const c = code(e);
  if (c === 'ENOENT') return 'no such file';
  if (c === 'EACCES' || c === 'EPERM') return 'permission denied';
  if (c === 'EISDIR') return 'is a directory';
  return c ?? (e instanceof Error ? e.message : String(e));
}
