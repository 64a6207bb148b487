// The raw inventory tree both parsers produce (YAML and INI alike), before validation and
// resolution. Every element carries its line and the `key` to name it by in messages, so the
// common code (schema.ts, resolve.ts) can report problems without knowing the file format.

import type { Problem } from './errors.ts';

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
  return `expected a host name of letters, digits, "_", "-" and "." (not starting with "-" or "."), got ${quoteName(name)}`;
}

export function groupNameProblem(name: string): string | undefined {
  if (name.length <= MAX_NAME_LENGTH && GROUP_NAME_RE.test(name)) return undefined;
  return `expected a group name of letters, digits, "_" and "-" (not starting with "-"), got ${quoteName(name)}`;
}

function quoteName(name: string): string {
  const cut = name.length > 60 ? name.slice(0, 57) + '...' : name;
  return JSON.stringify(cut);
}

/** A name as it may appear inside a `key` (path) in messages: control characters escaped. */
export function safeKeyPart(name: string): string {
  const s = JSON.stringify(name.length > 60 ? name.slice(0, 57) + '...' : name).slice(1, -1);
  return s;
}

/**
 * True for names that may hold a secret (ansible_password, ansible_become_pass, db_passwd ...).
 * Messages about such places never show the value, even when the problem is the structure.
 */
export function looksSecret(name: string): boolean {
  return /pass|secret|token/i.test(name);
}
