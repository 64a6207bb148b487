// The raw inventory tree both parsers produce (YAML and INI alike), before validation and
// resolution. Every element carries its line and the `key` to name it by in messages, so the
// common code (schema.ts, resolve.ts) can report problems without knowing the file format.

import { nonAsciiNote, printable, SECRET_WORD, type Problem } from './errors.ts';

export type InventoryFormat = 'yaml' | 'ini';

/** One variable assignment at one place in the file. */
export interface RawVar {
  name: string;
  /** as parsed: any YAML value; for INI always a string (typed later by the schema for known keys) */
  value: unknown;
  line: number;
  /** `all.vars.kpm_forks` / `[all:vars] kpm_forks` */
  key: string;
  /** for a YAML sequence value: the line of each item (so list errors point at the item) */
  itemLines?: number[];
  /** YAML `!vault`: the value is Ansible Vault ciphertext, unreadable without the vault password */
  vault?: boolean;
  /** YAML `!unsafe`: Ansible never templates the value, so `{{` in it is plain text */
  unsafe?: boolean;
}

/** One host entry in one group's `hosts` (a range pattern is one entry naming several hosts). */
export interface RawHost {
  /** as written: `node1`, `node[01:03]`, `node1:2222` */
  pattern: string;
  /** the host names it declares, in order (already validated) */
  names: string[];
  vars: RawVar[];
  line: number;
  /** `all.children.kube_node.hosts.node3` / `[kube_node] node3` */
  key: string;
}

export interface RawChildRef {
  name: string;
  line: number;
  /** `all.children.k8s_cluster.children.kube_node` / `[k8s_cluster:children] kube_node` */
  key: string;
}

/**
 * One declaration of a group. A group may be declared several times (YAML: under several parents;
 * INI: several sections); resolve.ts merges the declarations in file order.
 */
export interface RawGroup {
  name: string;
  line: number;
  key: string;
  /** YAML: a top-level key; INI: any section. Such groups without a parent are children of `all`. */
  topLevel: boolean;
  /** INI only: declared by `[name:vars]` alone (Ansible requires a real declaration elsewhere) */
  varsOnly?: boolean;
  hosts: RawHost[];
  children: RawChildRef[];
  vars: RawVar[];
}

export interface RawInventory {
  file: string;
  format: InventoryFormat;
  /** in file order */
  groups: RawGroup[];
  problems: Problem[];
  /** true when the file could not be read as a whole (syntax error): nothing else is checked */
  fatal: boolean;
}

// Host and group names end up in messages, file names (retry files) and remote commands, so only
// Ansible's plain characters are accepted. A leading '-' would read as an option to ssh.
export const HOST_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
export const GROUP_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]*$/;
export const MAX_NAME_LENGTH = 253;

export function hostNameProblem(name: string): string | undefined {
  if (name.length <= MAX_NAME_LENGTH && HOST_NAME_RE.test(name)) return undefined;
  return `expected a host name of letters, digits, "_", "-" and "." (not starting with "-" or "."), got ${quoteName(name)}${nonAsciiNote(name)}`;
}

export function groupNameProblem(name: string): string | undefined {
  if (name.length <= MAX_NAME_LENGTH && GROUP_NAME_RE.test(name)) return undefined;
  return `expected a group name of letters, digits, "_" and "-" (not starting with "-"), got ${quoteName(name)}${nonAsciiNote(name)}`;
}

function quoteName(name: string): string {
  const cut = name.length > 60 ? name.slice(0, 57) + '...' : name;
  return printable(JSON.stringify(cut));
}

/** A name as it may appear inside a `key` (path) in messages: control characters escaped. */
export function safeKeyPart(name: string): string {
  return printable(JSON.stringify(name.length > 60 ? name.slice(0, 57) + '...' : name).slice(1, -1));
}

/**
 * True for names that may hold a secret (ansible_password, ansible_become_pass, db_passwd ...).
 * Messages about such places never show the value, even when the problem is the structure.
 */
export function looksSecret(name: string): boolean {
  return SECRET_WORD.test(name);
}

// Bounds on what one inventory may declare. Each is far above a real cluster's inventory (Kubernetes
// supports 5,000 nodes), and each keeps a small file from costing minutes or gigabytes: one line
// `n[1:10000]` declares 10,000 hosts, and a host's variables are copied once per host.
/** distinct hosts */
export const MAX_INVENTORY_HOSTS = 10_000;
/** host names declared, counting a host once for every place that lists it (ranges expanded) */
export const MAX_HOST_ENTRIES = 100_000;
/** distinct groups */
export const MAX_INVENTORY_GROUPS = 1_000;

const count = (n: number): string => n.toLocaleString('en-US');

/** Counts the hosts and groups a parser declares; the first message past a bound ends the parse. */
export class DeclarationBudget {
  private entries = 0;
  private readonly hostNames = new Set<string>();
  private readonly groupNames = new Set<string>(['all', 'ungrouped']);

  hosts(names: readonly string[]): string | undefined {
    this.entries += names.length;
    if (this.entries > MAX_HOST_ENTRIES) {
      return (
        `expected at most ${count(MAX_HOST_ENTRIES)} host names in all, counting a host once for every group that ` +
        `lists it (ranges expanded); the inventory has more by here (is it the right file?)`
      );
    }
    for (const n of names) this.hostNames.add(n);
    if (this.hostNames.size > MAX_INVENTORY_HOSTS) {
      return (
        `expected at most ${count(MAX_INVENTORY_HOSTS)} hosts in one inventory (Kubernetes supports 5,000 nodes ` +
        `in a cluster); the inventory has more by here (is it the right file?)`
      );
    }
    return undefined;
  }

  group(name: string): string | undefined {
    this.groupNames.add(name);
    if (this.groupNames.size > MAX_INVENTORY_GROUPS + 2) {
      return `expected at most ${count(MAX_INVENTORY_GROUPS)} groups besides all and ungrouped; the inventory has more by here (is it the right file?)`;
    }
    return undefined;
  }
}

/**
 * Why bytes read from a file are not an inventory's text: invalid UTF-8 or a NUL byte (a binary file,
 * or one in another encoding), with the 1-based line; undefined for good text.
 */
export function binaryProblem(bytes: Uint8Array): { line: number; message: string } | undefined {
  const lineAt = (offset: number): number => {
    let line = 1;
    for (let i = 0; i < offset; i++) if (bytes[i] === 0x0a) line++;
    return line;
  };
  const nul = bytes.indexOf(0);
  const bad = firstInvalidUtf8(bytes);
  if (bad >= 0 && (nul < 0 || bad < nul)) {
    const hex = bytes[bad]!.toString(16).padStart(2, '0');
    return { line: lineAt(bad), message: `expected UTF-8 text; byte ${bad + 1} of the file (0x${hex}) is not UTF-8: is it a binary file, or in another encoding?` };
  }
  if (nul >= 0) return { line: lineAt(nul), message: `expected text; byte ${nul + 1} of the file is a NUL byte: is it a binary file?` };
  return undefined;
}

/** Offset of the first byte that does not belong to a well-formed UTF-8 sequence, or -1. */
function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    if (c < 0x80) {
      i++;
      continue;
    }
    // continuation bytes, and the smallest code point that needs them (shorter forms are overlong)
    const [n, min] = c >= 0xc2 && c <= 0xdf ? [1, 0x80] : c >= 0xe0 && c <= 0xef ? [2, 0x800] : c >= 0xf0 && c <= 0xf4 ? [3, 0x10000] : [0, 0];
    if (n === 0) return i;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const x = b[i + k];
      if (x === undefined || (x & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (x & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += n + 1;
  }
  return -1;
}
