// Ansible's INI inventory format (kubespray's sample inventory.ini) -> the raw tree (raw.ts).
//
//   node1 ansible_host=95.54.0.12       # hosts before any section belong to `ungrouped`
//   [kube_control_plane]                # a group's hosts: `host key=value key="quoted value" ...`
//   node1 ansible_host=95.54.0.12 ip=10.3.0.1
//   [etcd:children]                     # child groups, one per line
//   kube_control_plane
//   [all:vars]                          # group variables, one `key=value` per line
//   ansible_user=ubuntu
//
// Lines starting with `#` or `;` are comments; on host lines `#` starts a comment anywhere outside
// quotes (Ansible splits host lines with shlex). Values stay strings here; schema.ts types the
// values of the variables it knows (`22` -> 22, `True` -> true) and leaves the others as strings.

import { type Problem, quote } from './errors.ts';
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

type State = 'hosts' | 'vars' | 'children' | 'skip';

const VAR_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parseIniInventory(text: string, file: string): RawInventory {
  const problems: Problem[] = [];
  const out: RawInventory = { file, format: 'ini', groups: [], problems, fatal: false };
  const add = (line: number, key: string, message: string): void => {
    problems.push({ file, line, key, message });
  };

  let state: State = 'hosts';
  let current: RawGroup | null = null;
  let varLines = new Map<string, number>(); // [g:vars] keys seen in this section -> line

  const budget = new DeclarationBudget();
  /** past a bound: the rest of the file is not read */
  const stop = (line: number, key: string, message: string): void => {
    add(line, key, message);
    out.fatal = true;
  };

  const lines = text.split(/\r\n|\n|\r/);
  for (let i = 0; i < lines.length && !out.fatal; i++) {
    readLine(lines[i]!, i + 1);
  }

  function readLine(rawLine: string, lineNo: number): void {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;

    if (line.startsWith('[')) {
      const m = /^\[([^\]]*)\]\s*(?:[#;].*)?$/.exec(line);
      if (!m) {
        add(lineNo, '', `expected a section header like [group], [group:vars] or [group:children], got ${showLine(line)}`);
        state = 'skip';
        return;
      }
      const header = m[1]!.trim();
      const key = `[${safeKeyPart(header)}]`;
      const [name = '', type, ...extra] = header.split(':');
      if (extra.length > 0 || (type !== undefined && type !== 'vars' && type !== 'children')) {
        add(lineNo, key, 'unknown section type; expected [group], [group:vars] or [group:children]');
        state = 'skip';
        return;
      }
      const nameProblem = groupNameProblem(name);
      if (nameProblem) {
        add(lineNo, key, nameProblem);
        state = 'skip';
        return;
      }
      const over = budget.group(name);
      if (over) return stop(lineNo, key, over);
      state = type === 'vars' ? 'vars' : type === 'children' ? 'children' : 'hosts';
      current = { name, line: lineNo, key, topLevel: true, hosts: [], children: [], vars: [] };
      if (type === 'vars') current.varsOnly = true;
      out.groups.push(current);
      varLines = new Map();
      return;
    }

    if (state === 'skip') return;
    if (current === null) {
      // Hosts before the first section.
      current = { name: 'ungrouped', line: lineNo, key: '[ungrouped]', topLevel: true, hosts: [], children: [], vars: [] };
      out.groups.push(current);
    }
    const group = current;

    if (state === 'hosts') {
      const host = parseHostLine(rawLine, lineNo, group.name, add);
      if (!host) return;
      const over = budget.hosts(host.names);
      if (over) return stop(lineNo, host.key, over);
      group.hosts.push(host);
    } else if (state === 'vars') {
      const v = parseVarLine(line, lineNo, group.name, add);
      if (!v) return;
      const first = varLines.get(v.name);
      if (first !== undefined) {
        add(lineNo, v.key, `duplicate key ${JSON.stringify(v.name)} in this section (first on line ${first})`);
        return;
      }
      varLines.set(v.name, lineNo);
      group.vars.push(v);
    } else {
      const name = stripInlineComment(line).trim();
      const key = `[${group.name}:children] ${safeKeyPart(name)}`;
      if (/\s/.test(name)) {
        add(lineNo, key, `expected one group name per line, got ${quote(name)}`);
        return;
      }
      const nameProblem = groupNameProblem(name);
      if (nameProblem) {
        add(lineNo, key, nameProblem);
        return;
      }
      const over = budget.group(name);
      if (over) return stop(lineNo, key, over);
      group.children.push({ name, line: lineNo, key });
    }
  }

  // Ansible: a group must be declared by [name] or [name:children] somewhere in the file (before or
  // after); [name:vars] alone or a mention under [parent:children] does not declare it.
  const declared = new Set(['all', 'ungrouped']);
  for (const g of out.groups) if (!g.varsOnly) declared.add(g.name);
  for (const g of out.groups) {
    if (g.varsOnly && !declared.has(g.name)) {
      add(g.line, g.key, `group ${JSON.stringify(g.name)} is never declared; add a [${g.name}] or [${g.name}:children] section`);
      declared.add(g.name); // once
    }
    for (const c of g.children) {
      if (!declared.has(c.name)) {
        add(c.line, c.key, `group ${JSON.stringify(c.name)} is never declared; add a [${c.name}] section (it may be empty)`);
        declared.add(c.name);
      }
    }
  }
  return out;
}

function parseHostLine(
  rawLine: string,
  lineNo: number,
  group: string,
  add: (line: number, key: string, message: string) => void,
): RawHost | undefined {
  // A line that mentions a password must not be echoed in any message.
  const secret = looksSecret(rawLine);
  const split = shlexSplit(rawLine);
  const pattern = split.tokens[0] ?? '';
  if (pattern.includes('=')) {
    // `key=value` where the host name should be; never echoed (it may be a password).
    add(lineNo, `[${group}]`, 'expected a host name first, then key=value host variables');
    return undefined;
  }
  const hostKey = `[${group}] ${safeKeyPart(pattern)}`;
  if (!split.ok) {
    add(lineNo, hostKey, split.error);
    return undefined;
  }
  if (split.tokens.length === 0) return undefined; // only a comment
  const parsed = parseHostPattern(pattern);
  if (!parsed.ok) {
    add(lineNo, hostKey, parsed.message);
    return undefined;
  }
  const vars: RawVar[] = [];
  if (parsed.port !== undefined) vars.push({ name: 'ansible_port', value: String(parsed.port), line: lineNo, key: `${hostKey} (port)` });
  const seen = new Set<string>();
  let bad = false;
  for (const token of split.tokens.slice(1)) {
    const eq = token.indexOf('=');
    const name = eq > 0 ? token.slice(0, eq) : '';
    if (eq <= 0 || !VAR_NAME_RE.test(name)) {
      const got = secret ? 'something else (not shown: this line sets a password-like variable)' : quote(token);
      add(lineNo, hostKey, `expected key=value host variables after the host name, got ${got}`);
      return undefined; // one message per broken line
    }
    const key = `${hostKey} ${name}`;
    if (seen.has(name)) {
      add(lineNo, key, `duplicate key ${JSON.stringify(name)} on this line`);
      bad = true;
      continue;
    }
    seen.add(name);
    vars.push({ name, value: pyUnquote(token.slice(eq + 1)), line: lineNo, key });
  }
  if (bad) return undefined;
  return { pattern, names: parsed.names, vars, line: lineNo, key: hostKey };
}

function parseVarLine(
  line: string,
  lineNo: number,
  group: string,
  add: (line: number, key: string, message: string) => void,
): RawVar | undefined {
  const sectionKey = `[${group}:vars]`;
  const eq = line.indexOf('=');
  const name = eq > 0 ? line.slice(0, eq).trim() : '';
  if (eq <= 0 || !VAR_NAME_RE.test(name)) {
    const got = looksSecret(line) ? 'something else (not shown: it mentions a password-like name)' : showLine(line);
    add(lineNo, sectionKey, `expected key=value, got ${got}`);
    return undefined;
  }
  const value = pyUnquote(stripInlineComment(line.slice(eq + 1)).trim());
  return { name, value, line: lineNo, key: `${sectionKey} ${name}` };
}

function showLine(line: string): string {
  return quote(line);
}

/** Python-style quotes around a whole value ('x' or "x") are removed, as Ansible's literal_eval does. */
export function pyUnquote(v: string): string {
  if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v[v.length - 1] === v[0]) return v.slice(1, -1);
  return v;
}

/** ` # comment` at the end of a [group:vars] value (outside quotes, after whitespace) is dropped. */
export function stripInlineComment(s: string): string {
  let q: string | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (q) {
      if (c === q) q = null;
    } else if (c === '"' || c === "'") {
      q = c;
    } else if ((c === '#' || c === ';') && (i === 0 || /\s/.test(s[i - 1]!))) {
      return s.slice(0, i);
    }
  }
  return s;
}

/**
 * Python's shlex.split(line, comments=True) (POSIX mode), which Ansible uses for host lines:
 * whitespace separates tokens, '...' and "..." quote (backslash escapes " and \ inside "..."),
 * a backslash outside quotes escapes the next character, # outside quotes ends the line.
 */
export function shlexSplit(s: string): { ok: true; tokens: string[] } | { ok: false; tokens: string[]; error: string } {
  const tokens: string[] = [];
  let cur = '';
  let inToken = false;
  let i = 0;
  while (i < s.length) {
    const c = s[i]!;
    if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) return { ok: false, tokens: inToken ? [...tokens, cur] : tokens, error: 'unterminated single quote' };
      cur += s.slice(i + 1, end);
      inToken = true;
      i = end + 1;
    } else if (c === '"') {
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === '\\' && (s[i + 1] === '"' || s[i + 1] === '\\')) {
          cur += s[i + 1];
          i += 2;
        } else {
          cur += s[i];
          i++;
        }
      }
      if (i >= s.length) return { ok: false, tokens: inToken ? [...tokens, cur] : tokens, error: 'unterminated double quote' };
      inToken = true;
      i++;
    } else if (c === '\\') {
      if (i + 1 >= s.length) return { ok: false, tokens, error: 'a backslash at the end of the line escapes nothing' };
      cur += s[i + 1];
      inToken = true;
      i += 2;
    } else if (/\s/.test(c)) {
      if (inToken) tokens.push(cur);
      cur = '';
      inToken = false;
      i++;
    } else if (c === '#') {
      break;
    } else {
      cur += c;
      inToken = true;
      i++;
    }
  }
  if (inToken) tokens.push(cur);
  return { ok: true, tokens };
}
