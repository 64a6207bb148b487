// Which hosts a run works on: the default targets, narrowed by --limit (Ansible's pattern syntax).
//
//   default targets  the hosts of group k8s_cluster when the inventory has that group, else every host
//   --limit          patterns separated by "," (or ":" when there is no comma):
//                      node1 | kube_node | all      a host or group name
//                      node*  | node[0-3]           an fnmatch glob over host and group names
//                      ~node\d+                     a regular expression (matched at the start)
//                      @file                        one pattern per line (Ansible's .retry files;
//                                                   blank lines and # comments ignored; relative to cwd)
//                      !pattern                     minus these hosts
//                      &pattern                     only hosts also in this
//                    Plain patterns are applied first (union), then &, then !; with only & and !
//                    patterns the start is `all`. The result keeps inventory order.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { LimitError } from './errors.ts';
import type { Host, Inventory } from './types.ts';

export interface SelectOptions {
  /** directory @file paths are relative to (default: process.cwd()) */
  cwd?: string;
  /** reads an @file (default: fs.readFileSync as UTF-8) */
  readFile?: (p: string) => string;
}

export const TARGET_GROUP = 'k8s_cluster';
/** kubespray's name for the group before it was renamed (Ansible deprecated dashes in group names) */
const LEGACY_TARGET_GROUP = 'k8s-cluster';

export function selectTargets(inv: Inventory, limit?: string, opts: SelectOptions = {}): Host[] {
  const hasGroup = (g: string): boolean => Object.hasOwn(inv.groups, g);
  const targetGroup = [TARGET_GROUP, LEGACY_TARGET_GROUP].find(hasGroup) ?? TARGET_GROUP;
  const targetNames = new Set(hasGroup(targetGroup) ? inv.groups[targetGroup]! : inv.hosts.map((h) => h.name));
  const targetsAre = hasGroup(targetGroup) ? `the hosts of group ${targetGroup}` : 'all hosts';

  if (limit === undefined || limit.trim() === '') {
    if (targetNames.size === 0) throw new LimitError([msg(`group ${targetGroup} has no hosts, so there is nothing to work on`)]);
    return inv.hosts.filter((h) => targetNames.has(h.name));
  }

  const errors: string[] = [];
  const patterns = expandFiles(splitPatterns(limit), opts, errors);

  const hostNames = inv.hosts.map((h) => h.name);
  const hostSet = new Set(hostNames);
  const groupNames = Object.keys(inv.groups);

  const regular: string[] = [];
  const intersect: string[] = [];
  const exclude: string[] = [];
  for (const p of patterns) {
    if (p.startsWith('!')) exclude.push(p.slice(1));
    else if (p.startsWith('&')) intersect.push(p.slice(1));
    else regular.push(p);
  }

  const match = (pattern: string, positive: boolean): Set<string> | undefined => {
    if (pattern === '') {
      errors.push('--limit: empty pattern after "!" or "&"');
      return undefined;
    }
    let test: (name: string) => boolean;
    if (pattern.startsWith('~')) {
      let re: RegExp;
      try {
        re = new RegExp(`^(?:${pattern.slice(1)})`);
      } catch {
        errors.push(`--limit: ${quoteP(pattern)} is not a valid regular expression`);
        return undefined;
      }
      test = (n) => re.test(n);
    } else {
      let re: RegExp;
      try {
        re = fnmatchRegExp(pattern);
      } catch {
        errors.push(`--limit: ${quoteP(pattern)} is not a valid pattern`);
        return undefined;
      }
      test = (n) => re.test(n);
    }
    const result = new Set<string>();
    const groupsMatched = groupNames.filter(test);
    for (const g of groupsMatched) for (const h of inv.groups[g]!) result.add(h);
    // Like Ansible: host names are tried when no group matched, or when the pattern is a glob/regex.
    if (groupsMatched.length === 0 || /[~*?[.]/.test(pattern)) for (const h of hostNames) if (test(h)) result.add(h);

    if (result.size === 0) {
      errors.push(
        groupsMatched.length > 0
          ? `--limit: group ${quoteP(pattern)} has no hosts`
          : `--limit: no host or group matches ${quoteP(pattern)}`,
      );
      return undefined;
    }
    if (positive) {
      if (hostSet.has(pattern) && groupsMatched.length === 0 && !targetNames.has(pattern)) {
        errors.push(`--limit: host ${quoteP(pattern)} is not a target (targets are ${targetsAre})`);
      } else if (![...result].some((h) => targetNames.has(h))) {
        errors.push(`--limit: ${quoteP(pattern)} matches no target host (targets are ${targetsAre})`);
      }
    }
    return result;
  };

  let selected: Set<string>;
  if (regular.length === 0) selected = new Set(hostNames);
  else {
    selected = new Set();
    for (const p of regular) for (const h of match(p, true) ?? []) selected.add(h);
  }
  for (const p of intersect) {
    const m = match(p, true);
    if (m) selected = new Set([...selected].filter((h) => m.has(h)));
  }
  for (const p of exclude) {
    const m = match(p, false);
    if (m) for (const h of m) selected.delete(h);
  }

  const result = inv.hosts.filter((h) => selected.has(h.name) && targetNames.has(h.name));
  if (errors.length === 0 && result.length === 0) errors.push(`--limit: ${quoteP(limit.trim())} leaves no hosts to work on`);
  if (errors.length > 0) throw new LimitError([...new Set(errors)].map(msg));
  return result;
}

const msg = (message: string) => ({ file: '', line: 0, key: '', message });

const quoteP = (p: string): string => `'${p.length > 80 ? p.slice(0, 77) + '...' : p}'`;

/** Ansible's split: on "," when there is one, else on ":" outside [...] (so node[1:3] stays whole). */
export function splitPatterns(limit: string): string[] {
  const s = limit.trim();
  if (s.includes(',')) return s.split(',').map((p) => p.trim()).filter(Boolean);
  const out: string[] = [];
  let cur = '';
  let depth = 0;
  for (const c of s) {
    if (c === '[') depth++;
    else if (c === ']') depth = Math.max(0, depth - 1);
    if (c === ':' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out.map((p) => p.trim()).filter(Boolean);
}

function expandFiles(patterns: string[], opts: SelectOptions, errors: string[]): string[] {
  const out: string[] = [];
  const read = opts.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  for (const p of patterns) {
    if (!p.startsWith('@')) {
      out.push(p);
      continue;
    }
    const name = p.slice(1);
    const full = path.resolve(opts.cwd ?? process.cwd(), name);
    let text: string;
    try {
      text = read(full);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (code ?? 'unreadable');
      errors.push(`--limit: cannot read ${quoteP(p)} (${why})`);
      continue;
    }
    const lines = text
      .split(/\r?\n/)
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    if (lines.length === 0) errors.push(`--limit: ${quoteP(p)} names no hosts`);
    for (const l of lines) out.push(l);
  }
  return out;
}

/** Python's fnmatch.translate: * ? [seq] [!seq], anchored at both ends, case-sensitive. */
export function fnmatchRegExp(pattern: string): RegExp {
  let re = '';
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i]!;
    i++;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      let j = i;
      if (pattern[j] === '!') j++;
      if (pattern[j] === ']') j++;
      while (j < pattern.length && pattern[j] !== ']') j++;
      if (j >= pattern.length) re += '\\[';
      else {
        let set = pattern.slice(i, j).replace(/\\/g, '\\\\');
        i = j + 1;
        if (set.startsWith('!')) set = '^' + set.slice(1);
        else if (set.startsWith('^')) set = '\\' + set;
        re += `[${set}]`;
      }
    } else re += c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  }
  return new RegExp(`^(?:${re})$`, 's');
}
