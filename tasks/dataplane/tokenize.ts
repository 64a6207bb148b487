// Words of one iptables-save line, the way iptables-restore reads them back: blanks separate words,
// double quotes group (iptables-save quotes every comment and escapes `"` and `\` inside), and like a
// shell, single quotes group too and a backslash outside quotes escapes the next character.
//
// Dumps of big clusters are tens of megabytes, so the common line — no backslash, no single quote, no
// tab, quotes only around whole words — is split natively; anything else goes through the character
// loop.

export interface Tokens {
  tokens: string[];
  /** set when the line ends inside a quote; the open quote's text is still the last token */
  error?: string;
}

export function tokenize(line: string): Tokens {
  if (line.indexOf('\\') < 0 && line.indexOf("'") < 0 && line.indexOf('\t') < 0) {
    const fast = splitFast(line);
    if (fast) return { tokens: fast };
  }
  return tokenizeSlow(line);
}

function splitFast(line: string): string[] | undefined {
  // slices of the line, not concatenations: a dump's rules are kept, and every extra string object
  // they hold costs garbage-collector time on big clusters
  const out: string[] = [];
  const n = line.length;
  let i = 0;
  let nextQuote = line.indexOf('"');
  while (i < n) {
    while (i < n && line.charCodeAt(i) === 32) i++;
    if (i >= n) break;
    if (line.charCodeAt(i) === 34) {
      const close = line.indexOf('"', i + 1);
      if (close < 0 || (close + 1 < n && line.charCodeAt(close + 1) !== 32)) return undefined;
      out.push(line.slice(i + 1, close));
      i = close + 1;
      nextQuote = line.indexOf('"', i);
      continue;
    }
    let end = line.indexOf(' ', i);
    if (end < 0) end = n;
    // a quote inside a word (a"b c") is for the slow path
    if (nextQuote >= 0 && nextQuote < end) return undefined;
    out.push(line.slice(i, end));
    i = end;
  }
  return out;
}

function tokenizeSlow(line: string): Tokens {
  const tokens: string[] = [];
  let cur = '';
  let inToken = false;
  let quote: '"' | "'" | '' = '';
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quote === '"') {
      if (ch === '\\' && i + 1 < line.length && (line[i + 1] === '"' || line[i + 1] === '\\')) {
        cur += line[++i];
      } else if (ch === '"') {
        quote = '';
      } else {
        cur += ch;
      }
      continue;
    }
    if (quote === "'") {
      if (ch === "'") quote = '';
      else cur += ch;
      continue;
    }
    if (ch === ' ' || ch === '\t') {
      if (inToken) tokens.push(cur);
      cur = '';
      inToken = false;
      continue;
    }
    inToken = true;
    if (ch === '"' || ch === "'") quote = ch;
    else if (ch === '\\' && i + 1 < line.length) cur += line[++i];
    else cur += ch;
  }
  if (inToken) tokens.push(cur);
  return quote ? { tokens, error: `unterminated ${quote === '"' ? 'double' : 'single'} quote` } : { tokens };
}
