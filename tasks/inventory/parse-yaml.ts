// Ansible's YAML inventory format -> the raw tree (raw.ts), with a line for everything.
//
//   all:                      # top-level keys are groups; groups other than `all` are children of all
//     hosts: {node1: {ansible_host: 10.0.0.1}}
//     vars: {ansible_user: ubuntu}
//     children:
//       kube_node:            # a group: a map of hosts / children / vars, or nothing
//         hosts: {node1: }
//
// The document is parsed once and walked as a node tree, so every problem can name its line and key
// path. A repeated key anywhere is an error (findDuplicateKeys); aliases are resolved once, and the
// document is expanded with a small alias budget first, so an alias bomb cannot expand.
// Ansible's vars files (group_vars/, host_vars/: a map of variables) go through the same checks
// (parseYamlVarsFile).

import {
  type Alias,
  type Document,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  type Pair,
  parseDocument,
  visit,
  type YAMLMap,
} from 'yaml';
import { type Problem, showValue, suggest } from './errors.ts';
import { parseHostPattern } from './host-range.ts';
import {
  DeclarationBudget,
  groupNameProblem,
  looksSecret,
  type RawGroup,
  type RawHost,
  type RawInventory,
  type RawVar,
  safeKeyPart,
} from './raw.ts';

/** Alias expansions allowed in one document (yaml's count: uses x size of the anchored node). */
export const MAX_YAML_ALIASES = 50;
/** Alias nodes allowed in one document (each may be cheap, but thousands are no inventory). */
export const MAX_YAML_ALIAS_NODES = 1000;
/** Lists and maps inside each other: kubespray's deepest inventory needs about a dozen levels. */
export const MAX_YAML_DEPTH = 100;
const TOO_DEEP = `YAML nested too deeply: lists and maps inside each other more than ${MAX_YAML_DEPTH} levels`;

const GROUP_KEYS = ['hosts', 'children', 'vars'] as const;

interface Entry {
  key: string;
  /** the value node, aliases resolved; null for `key:` with nothing */
  value: Node | null;
  line: number;
}

/** A parsed YAML document, walked with lines and aliases resolved (shared by inventories and vars files). */
interface YamlReader {
  /** the top-level node, aliases resolved; null for an empty document */
  root: Node | null;
  lineOf(node: Node | null | undefined, fallback: number): number;
  /** the entries of a map: merge keys expanded, explicit keys winning, repeats dropped */
  entries(map: YAMLMap, path: string): Entry[];
  toValue(node: Node | null): unknown;
}

/**
 * Parses one document and runs the checks every YAML file gets: syntax, aliases (unknown, recursive,
 * bombs), repeated keys. Undefined when the document cannot be read as a whole (already reported).
 */
function openYaml(text: string, add: (line: number, key: string, message: string) => void): YamlReader | undefined {
  const lc = new LineCounter();
  // uniqueKeys is off on purpose: yaml checks it with a linear scan per key (quadratic: a 20,000-host map
  // takes seconds, a 10 MiB file minutes). findDuplicateKeys does the same check in one pass.
  let doc: Document;
  try {
    doc = parseDocument(text, { uniqueKeys: false, merge: true, lineCounter: lc, prettyErrors: false });
  } catch (e) {
    add(1, '', `YAML error: ${nestingOrFirstLine(e instanceof Error ? e.message : String(e))}`);
    return undefined;
  }
  const lineAt = (offset: number): number => lc.linePos(offset).line;
  const lineOf = (node: Node | null | undefined, fallback: number): number =>
    node?.range ? lineAt(node.range[0]) : fallback;
  let sourceLines: string[] | undefined;
  const secretLine = (line: number): boolean => looksSecret((sourceLines ??= text.split('\n'))[line - 1] ?? '');

  // 1. Syntax. A document that does not parse is reported and not looked at further. yaml quotes the
  // source in some messages (a block scalar header, a tag), so none is shown for a line that mentions a
  // password-like name.
  const syntax = doc.errors;
  let nestingSaid = false;
  for (const e of syntax) {
    const line = lineAt(e.pos[0]);
    const message = nestingOrFirstLine(e.message);
    if (message === TOO_DEEP) {
      if (!nestingSaid) add(line, '', message);
      nestingSaid = true;
    } else if (/multiple documents/i.test(message)) {
      add(line, '', 'expected one YAML document; a second one starts here (an inventory is a single document)');
    } else if (secretLine(line) || secretLine(lineAt(e.pos[1]))) {
      add(line, '', 'YAML syntax error (details not shown: this line mentions a password-like word)');
    } else {
      add(line, '', `YAML syntax error: ${message}`);
    }
  }
  if (syntax.length) return undefined;

  // 2. Nesting, before anything walks the tree recursively.
  const deep = tooDeep(doc);
  if (deep) {
    add(lineOf(deep, 1), '', TOO_DEEP);
    return undefined;
  }

  // 3. Aliases: unresolved, recursive, or too many expansions (alias bombs).
  const aliases = checkAliases(doc, lineAt, secretLine);
  if (!aliases.ok) {
    add(aliases.line, '', aliases.message);
    return undefined;
  }

  // 4. Repeated keys, named by path. The walk keeps the first one.
  for (const d of findDuplicateKeys(doc, lineAt)) add(d.line, d.key, d.message);

  const deref = (node: unknown): Node | null => {
    if (isAlias(node)) return aliases.targets.get(node) ?? null;
    return (node as Node | null) ?? null;
  };

  const keyText = (node: unknown): string | undefined => {
    const n = deref(node);
    if (!isScalar(n) || n.value === null || n.value === undefined) return undefined;
    if (typeof n.value === 'string') return n.value;
    return n.source ?? String(n.value);
  };

  const isMergePair = (pair: Pair): boolean => {
    const k = deref(pair.key);
    return isScalar(k) && typeof k.value === 'symbol';
  };

  const entries = (map: YAMLMap, path: string): Entry[] => {
    const explicit = new Set<string>();
    for (const pair of map.items) {
      if (!isMergePair(pair)) {
        const k = keyText(pair.key);
        if (k !== undefined) explicit.add(k);
      }
    }
    const result: Entry[] = [];
    const have = new Set<string>();
    for (const pair of map.items) {
      if (isMergePair(pair)) {
        const v = deref(pair.value);
        const sources = isSeq(v) ? v.items.map(deref) : [v];
        for (const src of sources) {
          if (!isMap(src)) continue; // yaml itself rejects merging a non-map
          for (const e of entries(src, path)) {
            if (!explicit.has(e.key) && !have.has(e.key)) {
              have.add(e.key);
              result.push(e);
            }
          }
        }
        continue;
      }
      const key = keyText(pair.key);
      const line = lineOf(pair.key as Node | null, lineOf(map, 1));
      if (key === undefined) {
        add(line, path, `expected a name as key, got ${describe(deref(pair.key), path)}`);
        continue;
      }
      if (have.has(key)) continue; // a repeated key: reported above
      have.add(key);
      const value = deref(pair.value);
      result.push({ key, value: isNothing(value) ? null : value, line });
    }
    return result;
  };

  const toValue = (node: Node | null): unknown =>
    node === null ? null : node.toJS(doc, { maxAliasCount: MAX_YAML_ALIASES });

  const root = deref(doc.contents);
  return { root: root === null || isNothing(root) ? null : root, lineOf, entries, toValue };
}

/** `name: value` entries of a map -> RawVars; `path` prefixes each key in messages ('' for a vars file). */
function readVars(r: YamlReader, map: YAMLMap, path: string): RawVar[] {
  return r.entries(map, path).map((e): RawVar => {
    const key = path ? `${path}.${safeKeyPart(e.key)}` : safeKeyPart(e.key);
    const v: RawVar = { name: e.key, value: r.toValue(e.value), line: e.line, key };
    if (isSeq(e.value)) v.itemLines = e.value.items.map((it) => r.lineOf(it as Node, e.line));
    // Ansible's own tags: `!vault` holds ciphertext, `!unsafe` a string Ansible never templates.
    if (isScalar(e.value) && e.value.tag === '!vault') v.vault = true;
    if (isScalar(e.value) && e.value.tag === '!unsafe') v.unsafe = true;
    return v;
  });
}

export function parseYamlInventory(text: string, file: string): RawInventory {
  const problems: Problem[] = [];
  const out: RawInventory = { file, format: 'yaml', groups: [], problems, fatal: false };
  const add = (line: number, key: string, message: string): void => {
    problems.push({ file, line, key, message });
  };

  const r = openYaml(text, add);
  if (!r) {
    out.fatal = true;
    return out;
  }
  const { entries, lineOf } = r;
  const budget = new DeclarationBudget();
  /** past a bound: the rest of the file is not read */
  const stop = (line: number, key: string, message: string): void => {
    add(line, key, message);
    out.fatal = true;
  };

  const parseVars = (node: Node | null, path: string, line: number, what: string): RawVar[] => {
    if (node === null) return [];
    if (!isMap(node)) {
      add(line, path, `expected a map of ${what} (name: value), got ${describe(node, path)}`);
      return [];
    }
    return readVars(r, node, path);
  };

  const parseHosts = (group: RawGroup, node: Node | null, path: string, line: number): void => {
    if (node === null) return;
    if (!isMap(node)) {
      add(line, path, `expected a map of host names (like "node1: {ansible_host: 10.0.0.1}"), got ${describe(node, path)}`);
      return;
    }
    for (const e of entries(node, path)) {
      if (out.fatal) return;
      const key = `${path}.${safeKeyPart(e.key)}`;
      const pattern = parseHostPattern(e.key);
      if (!pattern.ok) {
        add(e.line, key, pattern.message);
        continue;
      }
      const over = budget.hosts(pattern.names);
      if (over) return stop(e.line, key, over);
      let vars: RawVar[] = [];
      if (e.value !== null && !isMap(e.value)) {
        add(
          e.line,
          key,
          `expected a map of host variables (or nothing), got ${describe(e.value, e.key)}` +
            (looksSecret(e.key) ? '' : `; to set the address write "${e.key}: {ansible_host: ...}"`),
        );
      } else {
        vars = parseVars(e.value, key, e.line, 'host variables');
      }
      const host: RawHost = { pattern: e.key, names: pattern.names, vars, line: e.line, key };
      if (pattern.port !== undefined) {
        host.vars.unshift({ name: 'ansible_port', value: pattern.port, line: e.line, key: `${key} (port)` });
      }
      group.hosts.push(host);
    }
  };

  const active = new Set<Node>();
  const parseGroup = (name: string, node: Node | null, path: string, line: number, parent: RawGroup | null): void => {
    if (out.fatal) return;
    const nameProblem = groupNameProblem(name);
    if (nameProblem) {
      add(line, path, nameProblem);
      return;
    }
    const over = budget.group(name);
    if (over) return stop(line, path, over);
    const group: RawGroup = { name, line, key: path, topLevel: parent === null, hosts: [], children: [], vars: [] };
    out.groups.push(group);
    parent?.children.push({ name, line, key: path });
    if (node === null) return;
    if (!isMap(node)) {
      add(line, path, `expected a group: a map with hosts, children and/or vars (or nothing), got ${describe(node, name)}`);
      return;
    }
    if (active.has(node)) return; // an aliased group inside itself; checkAliases reports recursion
    active.add(node);
    for (const e of entries(node, path)) {
      const key = `${path}.${safeKeyPart(e.key)}`;
      if (e.key === 'hosts') parseHosts(group, e.value, key, e.line);
      else if (e.key === 'vars') for (const v of parseVars(e.value, key, e.line, 'group variables')) group.vars.push(v);
      else if (e.key === 'children') {
        if (e.value === null) continue;
        if (!isMap(e.value)) {
          add(e.line, key, `expected a map of group names (like "kube_node: {hosts: ...}"), got ${describe(e.value, key)}`);
          continue;
        }
        for (const c of entries(e.value, key)) parseGroup(c.key, c.value, `${key}.${safeKeyPart(c.key)}`, c.line, group);
      } else {
        const s = suggest(e.key, GROUP_KEYS);
        add(e.line, key, `unknown key in a group; expected hosts, children or vars${s ? ` (did you mean ${s}?)` : ''}`);
      }
    }
    active.delete(node);
  };

  // The walk.
  const root = r.root;
  if (root === null) return out; // empty: resolve reports "no hosts"
  if (!isMap(root)) {
    add(lineOf(root, 1), '', `expected a map of groups at the top level (like "all:"), got ${describe(root)}`);
    return out;
  }
  for (const e of entries(root, '')) {
    if (out.fatal) break;
    if ((GROUP_KEYS as readonly string[]).includes(e.key)) {
      add(e.line, e.key, `expected group names at the top level, got "${e.key}" (did you forget "all:" above it?)`);
      continue;
    }
    parseGroup(e.key, e.value, safeKeyPart(e.key), e.line, null);
  }
  return out;
}

/**
 * An Ansible vars file (group_vars/<group>.yml, host_vars/<host>.yml, or a file in such a directory):
 * a map of `name: value` at the top level, or nothing. `fatal` when it cannot be read as a whole.
 */
export function parseYamlVarsFile(text: string, file: string): { vars: RawVar[]; problems: Problem[]; fatal: boolean } {
  const problems: Problem[] = [];
  const add = (line: number, key: string, message: string): void => {
    problems.push({ file, line, key, message });
  };
  const r = openYaml(text, add);
  if (!r) return { vars: [], problems, fatal: true };
  if (r.root === null) return { vars: [], problems, fatal: false };
  if (!isMap(r.root)) {
    add(r.lineOf(r.root, 1), '', `expected a map of variables (name: value) at the top level, got ${describe(r.root)}`);
    return { vars: [], problems, fatal: true };
  }
  return { vars: readVars(r, r.root, ''), problems, fatal: false };
}

function isNothing(node: Node | null): boolean {
  return node === null || (isScalar(node) && (node.value === null || node.value === undefined));
}

/** What a node is, for "got ..." in messages; values under password-like names are never shown. */
function describe(node: Node | null, underKey?: string): string {
  if (node === null) return 'nothing';
  if (underKey !== undefined && looksSecret(underKey) && isScalar(node)) return 'a value (not shown)';
  if (isSeq(node)) return 'a list';
  if (isMap(node)) return 'a map';
  if (isScalar(node)) return showValue(node.value);
  return 'something else';
}

function firstLine(message: string): string {
  return message.split('\n')[0]!.trim();
}

/**
 * One pass over the document: resolves every alias to its anchor (the last one of that name before
 * it, as YAML says), and finds unknown and recursive aliases; then expands the document once with a
 * small alias budget, which stops alias bombs. The line is the first offending alias.
 */
function checkAliases(
  doc: Document,
  lineAt: (offset: number) => number,
  secretLine: (line: number) => boolean,
): { ok: true; targets: Map<Alias, Node> } | { ok: false; line: number; message: string } {
  const anchors = new Map<string, Node>();
  const targets = new Map<Alias, Node>();
  let found: { ok: false; line: number; message: string } | undefined;
  let firstAliasLine: number | undefined;
  let count = 0;
  visit(doc, (_key, node, path) => {
    if (isAlias(node)) {
      const line = node.range ? lineAt(node.range[0]) : 1;
      firstAliasLine ??= line;
      if (++count > MAX_YAML_ALIAS_NODES) {
        found = { ok: false, line, message: `too many YAML aliases (more than ${MAX_YAML_ALIAS_NODES})` };
        return visit.BREAK;
      }
      const source = anchors.get(node.source);
      if (!source) {
        // An unquoted password that starts with `*` reads as an alias: its name is the password.
        const message = secretLine(line)
          ? 'YAML error: unknown alias (its name is not shown: this line mentions a password-like word; quote a value that starts with *)'
          : `YAML error: unknown alias *${safeKeyPart(node.source)} (the anchor must be defined before it is used)`;
        found = { ok: false, line, message };
        return visit.BREAK;
      }
      if ((path as readonly unknown[]).includes(source)) {
        found = { ok: false, line, message: `YAML error: alias *${safeKeyPart(node.source)} is used inside its own anchor (a recursive document)` };
        return visit.BREAK;
      }
      targets.set(node, source);
    } else if ((isScalar(node) || isMap(node) || isSeq(node)) && node.anchor) {
      anchors.set(node.anchor, node);
    }
    return undefined;
  });
  if (found) return found;
  if (count === 0) return { ok: true, targets };
  try {
    doc.toJS({ maxAliasCount: MAX_YAML_ALIASES });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const line = firstAliasLine ?? 1;
    if (/alias count/i.test(msg)) {
      return {
        ok: false,
        line,
        message: `YAML aliases expand too much (more than ${MAX_YAML_ALIASES} alias expansions); refusing a document that looks like an alias bomb`,
      };
    }
    return { ok: false, line, message: secretLine(line) ? 'YAML error (details not shown: this line mentions a password-like word)' : `YAML error: ${nestingOrFirstLine(msg)}` };
  }
  return { ok: true, targets };
}

/** The first collection nested deeper than MAX_YAML_DEPTH, found without recursion (aliases not followed). */
function tooDeep(doc: Document): Node | undefined {
  const stack: [unknown, number][] = [[doc.contents, 1]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (isMap(node)) {
      if (depth > MAX_YAML_DEPTH) return node;
      for (const pair of node.items) stack.push([pair.key, depth + 1], [pair.value, depth + 1]);
    } else if (isSeq(node)) {
      if (depth > MAX_YAML_DEPTH) return node;
      for (const item of node.items) stack.push([item, depth + 1]);
    }
  }
  return undefined;
}

/** yaml turns a stack overflow in its own recursion into an ordinary error message. */
function nestingOrFirstLine(message: string): string {
  return /call stack/i.test(message) ? TOO_DEEP : firstLine(message);
}

/**
 * Every key repeated in the same map (a host listed twice in one group's hosts, a variable set twice),
 * with the path of the map, in one pass (a Set per map).
 */
function findDuplicateKeys(doc: Document, lineAt: (offset: number) => number): { line: number; key: string; message: string }[] {
  const found: { line: number; key: string; message: string }[] = [];
  visit(doc, {
    Map(_key, map, ancestors) {
      const first = new Map<string, number>();
      for (const pair of map.items) {
        const k = pair.key as Node | null;
        if (!isScalar(k) || typeof k.value === 'symbol' || k.value === null) continue; // merge keys, odd keys
        const name = scalarText(k);
        const line = k.range ? lineAt(k.range[0]) : 0;
        const firstAt = first.get(name);
        if (firstAt === undefined) {
          first.set(name, line);
          continue;
        }
        const path = [...pathOf(ancestors, map), name];
        const message =
          path[path.length - 2] === 'hosts'
            ? `host ${JSON.stringify(name)} is declared twice in this group's hosts (first on line ${firstAt})`
            : `duplicate key ${JSON.stringify(name)} (first on line ${firstAt})`;
        found.push({ line, key: path.map(safeKeyPart).join('.').replace(/\.\[/g, '['), message });
      }
      return undefined;
    },
  });
  return found;
}

/** The key path of `node` from the visitor's ancestors: map keys, and [i] for list items. */
function pathOf(ancestors: readonly unknown[], node: unknown): string[] {
  const chain = [...ancestors, node];
  const path: string[] = [];
  for (let i = 0; i < chain.length; i++) {
    const a = chain[i];
    if (isPair(a)) path.push(scalarText(a.key as Node | null));
    else if (isSeq(a) && i + 1 < chain.length) path.push(`[${a.items.indexOf(chain[i + 1] as never)}]`);
  }
  return path;
}

function scalarText(node: Node | null): string {
  if (isScalar(node)) return typeof node.value === 'string' ? node.value : (node.source ?? String(node.value));
  return '?';
}
