import type { IptablesCounters, IptablesRule, Negatable, RecentMatch, SetMatch, StatisticMatch } from './iptables-save.ts';
import { tokenize } from './tokenize.ts';

// One iptables-save rule: its options read from its words, on first access (see IptablesRule).

const RECENT_FLAGS = new Set(['--set', '--rcheck', '--update', '--remove']);

const EMPTY: string[] = [];

// Common words, kept once instead of once per rule.
const INTERNED = new Map<string, string>();
function intern(word: string): string {
  if (word.length > 16) return word;
  const known = INTERNED.get(word);
  if (known !== undefined) return known;
  if (INTERNED.size < 4096) INTERNED.set(word, word);
  return word;
}

// Shared, frozen answers for the few values -p, --src-type and --dst-type take.
const NEGATABLES = new Map<string, Negatable>();
function sharedNegatable(v: Negatable | undefined): Negatable | undefined {
  if (v === undefined || v.value.length > 16) return v;
  const key = (v.negated ? '!' : '') + v.value;
  const known = NEGATABLES.get(key);
  if (known) return known;
  if (NEGATABLES.size >= 256) return v;
  const frozen = Object.freeze({ value: intern(v.value), negated: v.negated });
  NEGATABLES.set(key, frozen);
  return frozen;
}

/** What reading a rule's options gives; all fields set, in one order, so they share one object shape. */
class Fields {
  matches: string[] = [];
  target: string | undefined = undefined;
  goto: string | undefined = undefined;
  targetOptions: string[] = EMPTY;
  source: Negatable | undefined = undefined;
  destination: Negatable | undefined = undefined;
  protocol: Negatable | undefined = undefined;
  inInterface: Negatable | undefined = undefined;
  outInterface: Negatable | undefined = undefined;
  dport: Negatable | undefined = undefined;
  sport: Negatable | undefined = undefined;
  dports: { values: string[]; negated: boolean } | undefined = undefined;
  comment: string | undefined = undefined;
  statistic: StatisticMatch | undefined = undefined;
  toDestination: string | undefined = undefined;
  toSource: string | undefined = undefined;
  marks: Negatable[] | undefined = undefined;
  setMark: { op: string; value: string } | undefined = undefined;
  recent: RecentMatch | undefined = undefined;
  matchSets: SetMatch[] | undefined = undefined;
  srcType: Negatable | undefined = undefined;
  dstType: Negatable | undefined = undefined;
  other: string[] | undefined = undefined;
}

export class Rule implements IptablesRule {
  #fields: Fields | undefined;
  // the line is src[from, end), its `-A` at start: cut out only when asked for
  readonly #src: string;
  readonly #from: number;
  readonly #end: number;
  readonly #start: number;

  constructor(
    readonly table: string,
    readonly chain: string,
    readonly line: number,
    src: string,
    from: number,
    end: number,
    start: number,
    readonly counters: IptablesCounters | undefined,
  ) {
    this.#src = src;
    this.#from = from;
    this.#end = end;
    this.#start = start;
  }

  get raw(): string {
    return this.#from === 0 && this.#end === this.#src.length ? this.#src : this.#src.slice(this.#from, this.#end);
  }

  get tokens(): string[] {
    return tokenize(this.#src.slice(this.#start, this.#end)).tokens;
  }

  private get f(): Fields {
    let f = this.#fields;
    if (f === undefined) {
      f = new Fields();
      const t = this.tokens;
      const insert = t[0] === '-I' || t[0] === '--insert';
      // `-I CHAIN 3 …` carries a position
      parseOptions(f, t, insert && /^\d+$/.test(t[2] ?? '') ? 3 : 2);
      this.#fields = f;
    }
    return f;
  }

  get matches() { return this.f.matches; }
  get target() { return this.f.target; }
  get goto() { return this.f.goto; }
  get targetOptions() { return this.f.targetOptions; }
  get source() { return this.f.source; }
  get destination() { return this.f.destination; }
  get protocol() { return this.f.protocol; }
  get inInterface() { return this.f.inInterface; }
  get outInterface() { return this.f.outInterface; }
  get dport() { return this.f.dport; }
  get sport() { return this.f.sport; }
  get dports() { return this.f.dports; }
  get comment() { return this.f.comment; }
  get statistic() { return this.f.statistic; }
  get toDestination() { return this.f.toDestination; }
  get toSource() { return this.f.toSource; }
  get marks() { return this.f.marks; }
  get setMark() { return this.f.setMark; }
  get recent() { return this.f.recent; }
  get matchSets() { return this.f.matchSets; }
  get srcType() { return this.f.srcType; }
  get dstType() { return this.f.dstType; }
  get other() { return this.f.other; }

  toJSON(): object {
    const out: Record<string, unknown> = { table: this.table, chain: this.chain, line: this.line, raw: this.raw };
    if (this.counters) out.counters = this.counters;
    out.tokens = this.tokens;
    for (const [k, v] of Object.entries(this.f)) if (v !== undefined) out[k] = v;
    return out;
  }
}

// the index of the last word an option consumed (parsing is synchronous, so one cursor is enough)
let cursor = 0;

/** The option's value at t[i + 1]; old iptables accepted `-s ! x`, so a "!" there is the negation. */
function take(t: string[], i: number, neg: boolean): Negatable | undefined {
  let v = t[i + 1];
  cursor = i + 1;
  if (v === '!') {
    neg = true;
    v = t[i + 2];
    cursor = i + 2;
  }
  return v === undefined ? undefined : { value: v, negated: neg };
}

/** Fills the rule from its words; answers a reason when the words are not a rule. */
function parseOptions(rule: Fields, t: string[], start: number): string | undefined {
  let neg = false;
  let module = '';
  for (let i = start; i < t.length; i++) {
    const tok = t[i]!;
    if (tok === '!') {
      neg = true;
      continue;
    }
    switch (tok) {
      case '-s':
      case '--source':
      case '--src':
        rule.source = take(t, i, neg);
        i = cursor;
        break;
      case '-d':
      case '--destination':
      case '--dst':
        rule.destination = take(t, i, neg);
        i = cursor;
        break;
      case '-p':
      case '--protocol':
        rule.protocol = sharedNegatable(take(t, i, neg));
        i = cursor;
        break;
      case '-i':
      case '--in-interface':
        rule.inInterface = take(t, i, neg);
        i = cursor;
        break;
      case '-o':
      case '--out-interface':
        rule.outInterface = take(t, i, neg);
        i = cursor;
        break;
      case '-m':
      case '--match': {
        const m = t[++i];
        if (m === undefined) return 'option -m without a module';
        module = intern(m);
        rule.matches.push(module);
        break;
      }
      case '-j':
      case '--jump':
      case '-g':
      case '--goto': {
        const target = t[i + 1];
        if (target === undefined) return `option ${tok} without a target`;
        if (tok === '-g' || tok === '--goto') rule.goto = intern(target);
        else rule.target = intern(target);
        // iptables-save prints the target last: every word after it is the target's
        if (i + 2 < t.length) {
          rule.targetOptions = t.slice(i + 2);
          targetOptions(rule, t, i + 2);
        }
        return undefined;
      }
      case '--comment':
        rule.comment = t[++i] ?? '';
        break;
      case '--dport':
      case '--destination-port':
        rule.dport = take(t, i, neg);
        i = cursor;
        break;
      case '--sport':
      case '--source-port':
        rule.sport = take(t, i, neg);
        i = cursor;
        break;
      case '--dports':
      case '--destination-ports': {
        const v = take(t, i, neg);
        i = cursor;
        if (v) rule.dports = { values: v.value.split(','), negated: v.negated };
        break;
      }
      case '--mode':
      case '--probability':
      case '--every':
      case '--packet': {
        if (module !== 'statistic') {
          i = otherOption(rule, t, i, neg);
          break;
        }
        const s = (rule.statistic ??= { mode: '', negated: false });
        const v = t[++i] ?? '';
        if (tok === '--mode') s.mode = intern(v);
        else if (tok === '--probability') s.probability = Number(v);
        else if (tok === '--every') s.every = Number(v);
        else s.packet = Number(v);
        if (neg) s.negated = true;
        break;
      }
      case '--mark':
        if (module === 'mark' || module === 'connmark') {
          const v = take(t, i, neg);
          i = cursor;
          if (v) (rule.marks ??= []).push(v);
        } else i = otherOption(rule, t, i, neg);
        break;
      case '--match-set': {
        const name = t[i + 1];
        if (name === undefined) return 'option --match-set without a set';
        (rule.matchSets ??= []).push({ name, flags: t[i + 2] ?? '', negated: neg });
        i += 2;
        break;
      }
      case '--src-type':
        rule.srcType = sharedNegatable(take(t, i, neg));
        i = cursor;
        break;
      case '--dst-type':
        rule.dstType = sharedNegatable(take(t, i, neg));
        i = cursor;
        break;
      default:
        if (module === 'recent') {
          const used = recentOption(rule, t, i, neg);
          if (used >= 0) {
            i += used;
            break;
          }
        }
        if (tok.startsWith('-')) i = otherOption(rule, t, i, neg);
        else (rule.other ??= []).push(tok);
    }
    neg = false;
  }
  return undefined;
}

function targetOptions(rule: Fields, t: string[], from: number): void {
  for (let i = from; i < t.length; i++) {
    const tok = t[i]!;
    switch (tok) {
      case '--to-destination':
        rule.toDestination = t[++i];
        break;
      case '--to-source':
        rule.toSource = t[++i];
        break;
      case '--set-xmark':
      case '--set-mark':
      case '--or-mark':
      case '--and-mark':
      case '--xor-mark': {
        const v = t[++i];
        if (v !== undefined) rule.setMark = { op: tok.slice(2), value: v };
        break;
      }
    }
  }
}

/** Words consumed by a `-m recent` option after its name, or -1 when it is not one. */
function recentOption(rule: Fields, t: string[], i: number, neg: boolean): number {
  const tok = t[i]!;
  const r = (rule.recent ??= { reap: false, negated: false });
  if (RECENT_FLAGS.has(tok)) {
    r.command = tok.slice(2) as RecentMatch['command'];
    if (neg) r.negated = true;
    return 0;
  }
  switch (tok) {
    case '--name':
      r.name = t[i + 1];
      return 1;
    case '--seconds':
      r.seconds = Number(t[i + 1]);
      return 1;
    case '--hitcount':
      r.hitcount = Number(t[i + 1]);
      return 1;
    case '--mask':
      r.mask = t[i + 1];
      return 1;
    case '--reap':
      r.reap = true;
      return 0;
    case '--rsource':
      r.side = 'rsource';
      return 0;
    case '--rdest':
      r.side = 'rdest';
      return 0;
  }
  return -1;
}

/** Keeps an option the rule has no field for; its values are the words up to the next option. */
function otherOption(rule: Fields, t: string[], i: number, neg: boolean): number {
  const out = (rule.other ??= []);
  if (neg) out.push('!');
  out.push(t[i]!);
  while (i + 1 < t.length) {
    const next = t[i + 1]!;
    if (next === '!' || (next.startsWith('-') && next.length > 1 && !/^-\d/.test(next))) break;
    out.push(next);
    i++;
  }
  return i;
}
