// A unified diff (diff -u format, 3 lines of context) for the small files the tool manages, so a dry run
// shows exactly what would be written. Quadratic LCS is fine at these sizes; big inputs get a summary.

const MAX_LINES = 4000;

type Op = { kind: ' ' | '-' | '+'; text: string };

function splitLines(s: string): string[] {
  if (s === '') return [];
  const lines = s.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

function editScript(a: string[], b: string[]): Op[] {
  const n = a.length;
  const m = b.length;
  // lcs[i][j] = length of the LCS of a[i..] and b[j..]
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      ops.push({ kind: ' ', text: a[i]! });
      i++;
      j++;
    } else if (lcs[i + 1]![j]! >= lcs[i]![j + 1]!) {
      ops.push({ kind: '-', text: a[i++]! });
    } else {
      ops.push({ kind: '+', text: b[j++]! });
    }
  }
  while (i < n) ops.push({ kind: '-', text: a[i++]! });
  while (j < m) ops.push({ kind: '+', text: b[j++]! });
  return ops;
}

/**
 * Unified diff from `before` to `after`; '' when equal. `before === null` means the file does not exist.
 * Labels follow diff -u: `--- path` / `+++ path` (with /dev/null for a missing side).
 */
export function unifiedDiff(path: string, before: string | null, after: string, context = 3): string {
  if (before === after) return '';
  const a = splitLines(before ?? '');
  const b = splitLines(after);
  const header = `--- ${before === null ? '/dev/null' : path}\n+++ ${path}\n`;
  if (a.length > MAX_LINES || b.length > MAX_LINES) {
    return header + `@@ content differs (${a.length} lines -> ${b.length} lines; too large to show) @@\n`;
  }
  const ops = editScript(a, b);
  // Group changes into hunks with `context` lines around them.
  const hunks: string[] = [];
  let k = 0;
  while (k < ops.length) {
    while (k < ops.length && ops[k]!.kind === ' ') k++;
    if (k >= ops.length) break;
    let start = Math.max(0, k - context);
    let end = k;
    // extend while changes are within 2*context of each other
    for (;;) {
      while (end < ops.length && ops[end]!.kind !== ' ') end++;
      let next = end;
      while (next < ops.length && ops[next]!.kind === ' ') next++;
      if (next < ops.length && next - end <= 2 * context) {
        end = next;
        continue;
      }
      end = Math.min(ops.length, end + context);
      break;
    }
    // line numbers at hunk start
    let aLine = 1;
    let bLine = 1;
    for (let x = 0; x < start; x++) {
      if (ops[x]!.kind !== '+') aLine++;
      if (ops[x]!.kind !== '-') bLine++;
    }
    const slice = ops.slice(start, end);
    const aCount = slice.filter((o) => o.kind !== '+').length;
    const bCount = slice.filter((o) => o.kind !== '-').length;
    const range = (line: number, count: number) => (count === 0 ? `${line - 1},0` : count === 1 ? `${line}` : `${line},${count}`);
    hunks.push(`@@ -${range(aLine, aCount)} +${range(bLine, bCount)} @@\n` + slice.map((o) => o.kind + o.text + '\n').join(''));
    k = end;
    start = end;
  }
  // Same lines but different bytes: only the final newline (or its absence) differs.
  if (hunks.length === 0) return header + '@@ only the newline at the end of the file differs @@\n';
  return header + hunks.join('');
}
