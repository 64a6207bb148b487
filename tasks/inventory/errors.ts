// Errors for bad inventories and bad --limit patterns. Both are "bad input" errors: the CLI prints
// `.message` as is (no stack trace). Messages never contain the value of a password variable.

export interface Problem {
  /** the file the problem is in, as the user named it: the inventory file, or one of the group_vars/ or
   *  host_vars/ files next to it ('' when not about a file, e.g. --limit) */
  file: string;
  /** 1-based line of the offending key or value; 0 when the problem is about the whole file */
  line: number;
  /** where in the inventory: `all.children.kube_node.hosts.node3.ansible_port` (YAML) or
   *  `[kube_node] node3 ansible_port` (INI); '' when there is no key to name */
  key: string;
  /** what was expected (and what was found, unless it is a secret) */
  message: string;
}

/** `inventory/prod.yaml:12: all.hosts.node3.ansible_port: expected an integer port 1-65535, got "70000"` */
export function formatProblem(p: Problem): string {
  let out = '';
  if (p.file) out += p.line > 0 ? `${p.file}:${p.line}: ` : `${p.file}: `;
  if (p.key) out += `${p.key}: `;
  // One problem is one line of a terminal: a file name read from a group_vars/ listing, or a parser's
  // message quoting the source, must not move the cursor, clear the screen or reverse the text.
  return printable(out + p.message);
}

/** Messages past this many are counted, not listed: a generated file can have millions. */
export const MAX_PROBLEMS_SHOWN = 100;

/** Every problem found in one inventory (its file and its vars files; all of them, not just the first). */
export class InventoryError extends Error {
  override name = 'InventoryError';
  readonly problems: Problem[];

  constructor(problems: Problem[]) {
    const sorted = sortProblems(problems);
    const lines = sorted.slice(0, MAX_PROBLEMS_SHOWN).map(formatProblem);
    if (sorted.length > MAX_PROBLEMS_SHOWN) {
      const more = sorted.length - MAX_PROBLEMS_SHOWN;
      lines.push(`... and ${more} more problem${more === 1 ? '' : 's'} (fix the ones above first)`);
    }
    super(lines.join('\n'));
    this.problems = sorted;
  }
}

/**
 * A --limit pattern that selects nothing (or selects hosts that are not targets): a usage error, not
 * an inventory error, so it is deliberately not an InventoryError. Same shape: `.problems`, and a
 * `.message` with one `--limit: ...` line per problem.
 */
export class LimitError extends Error {
  override name = 'LimitError';
  readonly problems: Problem[];

  constructor(problems: Problem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.problems = problems;
  }
}

function sortProblems(problems: Problem[]): Problem[] {
  // Files in the order they were first met, lines in order within a file; stable, so problems on the
  // same line keep the order they were found in.
  const fileRank = new Map<string, number>();
  for (const p of problems) if (!fileRank.has(p.file)) fileRank.set(p.file, fileRank.size);
  return problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => fileRank.get(a.p.file)! - fileRank.get(b.p.file)! || a.p.line - b.p.line || a.i - b.i)
    .map(({ p }) => p);
}

/**
 * How a found value is shown in a message: scalars quoted (`"70000"`, `"maybe"`), long ones cut,
 * control characters escaped; collections by kind. Never call this on a secret.
 */
export function showValue(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (ArrayBuffer.isView(v)) return 'binary data';
  if (v instanceof Map || typeof v === 'object') return 'a map';
  // A value in the wrong place may be a password pasted there (`ansible_password:hunter2`, no space,
  // is one string in YAML): what was expected is said, the value is not.
  if (typeof v === 'string' && SECRET_WORD.test(v)) return 'a value that mentions a password-like word (not shown)';
  return quote(String(v));
}

/** Words that mark a name or a text as holding a secret (ansible_password, db_passwd, api_token ...). */
export const SECRET_WORD = /pass|secret|token/i;

/**
 * For a name refused although it may look right: where its first character beyond ASCII is (a Cyrillic
 * "о" in place of an "o", an invisible mark). '' when it is all ASCII.
 */
export function nonAsciiNote(s: string): string {
  const chars = [...s];
  const i = chars.findIndex((c) => c.codePointAt(0)! > 0x7e);
  if (i < 0) return '';
  const code = chars[i]!.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0');
  return ` (character ${i + 1} is U+${code}, not ASCII)`;
}

/** A name or token in a message, quoted and cut like showValue. */
export function quote(s: string, max = 60): string {
  const cut = s.length > max ? s.slice(0, max - 3) + '...' : s;
  return printable(JSON.stringify(cut));
}

// Control characters (C0 but tab, DEL, C1) and the invisible ones that reorder or hide text on a
// terminal: bidi embeddings, overrides and isolates, zero-width characters, the byte order mark, line
// and paragraph separators.
const UNPRINTABLE = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/g;

/** `s` with every unprintable character written as a `\uXXXX` escape; everything else as it is. */
export function printable(s: string): string {
  return s.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Edit distance (with adjacent transpositions) used for "did you mean" suggestions. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    d[i] = [i];
  }
  for (let j = 0; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest candidate within edit distance 2 (first one wins a tie), if any. */
export function suggest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = 3;
  for (const c of candidates) {
    const dist = editDistance(name, c);
    if (dist < bestD) {
      best = c;
      bestD = dist;
    }
  }
  return best;
}
