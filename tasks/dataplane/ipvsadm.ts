import { joinHostPort, normalizeIp, splitHostPort } from './addresses.ts';
import type { UnknownLine } from './iptables-save.ts';

// `ipvsadm -Ln` (or -ln, -L without -n, --stats, --rate, --thresholds, --persistent-conn) and
// `ipvsadm -Sn` (save format), whole or cut: `grep -A 3` with its `--` separators, a shell loop's
// `>>> node` headers, the trailing blanks older ipvsadm prints after the last column. Nothing here
// throws; a line that is none of these lands in `unknown` with the reason.

export type IpvsFormat = 'list' | 'stats' | 'rate' | 'thresholds' | 'persistent-conn' | 'save';

export interface IpvsStats {
  conns: number;
  inPkts: number;
  outPkts: number;
  inBytes: number;
  outBytes: number;
}

export interface IpvsRate {
  cps: number;
  inPps: number;
  outPps: number;
  inBps: number;
  outBps: number;
}

export interface IpvsRealServer {
  /** "ip:port", IPv6 in brackets, as printed */
  address: string;
  ip: string;
  port?: number;
  /** the port's service name when ipvsadm resolved it (no -n) */
  portName?: string;
  /** Masq, Route, Tunnel, Local */
  forwarding?: string;
  weight?: number;
  activeConn?: number;
  inactiveConn?: number;
  persistConn?: number;
  upperThreshold?: number;
  lowerThreshold?: number;
  stats?: IpvsStats;
  rate?: IpvsRate;
  line: number;
}

export interface IpvsService {
  protocol: 'TCP' | 'UDP' | 'SCTP' | 'FWM';
  /** "TCP 10.96.0.1:443", "FWM 100": one string per virtual service */
  key: string;
  /** "ip:port" (brackets for IPv6); for FWM the mark */
  address: string;
  ip?: string;
  port?: number;
  portName?: string;
  fwmark?: number;
  family: 'ipv4' | 'ipv6';
  scheduler?: string;
  /** "(flag-1,flag-2)" → ["flag-1", "flag-2"]; save format -b */
  flags?: string[];
  /** persistence timeout in seconds (session affinity) */
  persistent?: number;
  /** persistence netmask */
  mask?: string;
  pe?: string;
  /** one-packet scheduling */
  ops?: boolean;
  stats?: IpvsStats;
  rate?: IpvsRate;
  realServers: IpvsRealServer[];
  /** the ">>> …" header of the section this service came in, when the text joins several nodes */
  section?: string;
  line: number;
}

export interface IpvsTable {
  /** "1.2.1" from "IP Virtual Server version 1.2.1 (size=4096)" */
  version?: string;
  size?: number;
  /** the columns of the last header seen (or guessed from the lines when there is no header) */
  format?: IpvsFormat;
  services: IpvsService[];
  /** the ">>> …" headers, in order */
  sections: string[];
  unknown: UnknownLine[];
  lines: number;
}

const FORWARDING = new Set(['Masq', 'Route', 'Tunnel', 'Local', 'Bypass']);
const SAVE_FORWARDING: Record<string, string> = { '-m': 'Masq', '--masquerading': 'Masq', '-g': 'Route', '--gatewaying': 'Route', '-i': 'Tunnel', '--ipip': 'Tunnel' };
const SAVE_PROTOCOL: Record<string, IpvsService['protocol']> = {
  '-t': 'TCP',
  '--tcp-service': 'TCP',
  '-u': 'UDP',
  '--udp-service': 'UDP',
  '--sctp-service': 'SCTP',
  '-f': 'FWM',
  '--fwmark-service': 'FWM',
};

function isDigits(text: string): boolean {
  if (text.length === 0) return false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return false;
  }
  return true;
}

/** "14209", "1234K", "56M" (ipvsadm abbreviates big counters unless given --exact). */
function count(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (isDigits(text)) return Number(text);
  const m = /^(\d+)([KMGT]?)$/.exec(text);
  if (!m) return undefined;
  const scale = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }[m[2] as '' | 'K' | 'M' | 'G' | 'T'];
  return Number(m[1]) * scale;
}

function fiveCounts(words: string[], from: number): number[] | undefined {
  if (words.length !== from + 5) return undefined;
  const out: number[] = [];
  for (let i = from; i < from + 5; i++) {
    const v = count(words[i]);
    if (v === undefined) return undefined;
    out.push(v);
  }
  return out;
}

function addressParts(text: string): { address: string; ip: string; port?: number; portName?: string } | undefined {
  const { host, port } = splitHostPort(text);
  if (host === '' || port === '') return undefined;
  // IPv4 is printed in its one spelling already; IPv6 is brought to the canonical one
  const ip = host.includes(':') ? normalizeIp(host) : host;
  const out: { address: string; ip: string; port?: number; portName?: string } = { address: ip === host && !text.startsWith('[') ? text : joinHostPort(ip, port), ip };
  if (isDigits(port)) out.port = Number(port);
  else out.portName = port;
  return out;
}

const isBlank = (c: number) => c === 32 || c === 9 || c === 13;

/** The number written in line[start, end), or -1 when it is not all digits. */
function digitsAt(line: string, start: number, end: number): number {
  if (end <= start || end - start > 15) return -1;
  let v = 0;
  for (let i = start; i < end; i++) {
    const c = line.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    v = v * 10 + c;
  }
  return v;
}

/** One string per forwarding method, not one per line. */
function forwardingAt(line: string, start: number, end: number): string | undefined {
  for (const f of FORWARDING) if (end - start === f.length && line.startsWith(f, start)) return f;
  return undefined;
}

/** Words of a line (blanks of any length between them: ipvsadm pads its columns). */
function words(line: string): string[] {
  const out: string[] = [];
  const n = line.length;
  let i = 0;
  while (i < n) {
    while (i < n && isBlank(line.charCodeAt(i))) i++;
    if (i >= n) break;
    let e = i + 1;
    while (e < n && !isBlank(line.charCodeAt(e))) e++;
    out.push(line.slice(i, e));
    i = e;
  }
  return out;
}

class Parser {
  readonly table: IpvsTable = { services: [], sections: [], unknown: [], lines: 0 };
  private current: IpvsService | undefined;
  private section: string | undefined;
  /** services of the current section by key, for the save format's -a lines; made when first needed */
  private byKey: Map<string, IpvsService> | undefined;
  private sectionStart = 0;

  parse(text: string): IpvsTable {
    // line by line without an array of all lines: less for the garbage collector to move around
    let n = 0;
    let pos = 0;
    while (pos < text.length) {
      let nl = text.indexOf('\n', pos);
      if (nl < 0) nl = text.length;
      n++;
      // most lines are real servers: read those in place, without cutting the line out first
      if (this.current === undefined || this.table.format === 'stats' || this.table.format === 'rate' || !this.realServerFast(text, pos, nl, n)) {
        this.line(text.slice(pos, nl), n);
      }
      pos = nl + 1;
    }
    this.table.lines = n;
    return this.table;
  }

  private unknown(line: number, text: string, reason: string): void {
    this.table.unknown.push({ line, text: text.trim(), reason });
  }

  private line(raw: string, n: number): void {
    const w = words(raw);
    const first = w[0];
    if (first === undefined) return;
    switch (first) {
      case '->':
        if (w[1] === 'RemoteAddress:Port') return;
        return this.realServer(w, n, raw);
      case 'TCP':
      case 'UDP':
      case 'SCTP':
      case 'FWM':
        return this.service(w, n, raw);
      case '--':
        // grep's separator: what follows is not the same virtual service
        if (w.length === 1) {
          this.current = undefined;
          return;
        }
        break;
      case '-A':
      case '--add-service':
        return this.saveService(w, n, raw);
      case '-a':
      case '--add-server':
        return this.saveServer(w, n, raw);
      case 'Prot':
        if (w[1] === 'LocalAddress:Port') return this.header(w.slice(2).join(' '));
        break;
      case 'IP': {
        const version = /^IP Virtual Server version (\S+)(?: \(size=(\d+)\))?/.exec(w.join(' '));
        if (version) {
          this.table.version = version[1]!;
          if (version[2] !== undefined) this.table.size = Number(version[2]);
          return;
        }
        break;
      }
    }
    if (first.startsWith('>>>')) {
      this.section = raw.trim().slice(3).trim();
      this.table.sections.push(this.section);
      this.current = undefined;
      this.byKey = undefined;
      this.sectionStart = this.table.services.length;
      return;
    }
    this.unknown(n, raw, 'not an ipvsadm line');
  }

  private header(columns: string): void {
    if (columns.startsWith('Scheduler')) this.table.format = 'list';
    else if (columns.startsWith('Conns')) this.table.format = 'stats';
    else if (columns.startsWith('CPS')) this.table.format = 'rate';
    else if (columns.startsWith('Uthreshold')) this.table.format = 'thresholds';
    else if (columns.startsWith('Weight')) this.table.format = 'persistent-conn';
  }

  private keyed(): Map<string, IpvsService> {
    if (!this.byKey) {
      this.byKey = new Map();
      for (const s of this.table.services.slice(this.sectionStart)) this.byKey.set(s.key, s);
    }
    return this.byKey;
  }

  private add(service: IpvsService): IpvsService {
    if (this.section !== undefined) service.section = this.section;
    this.table.services.push(service);
    this.byKey?.set(service.key, service);
    this.current = service;
    return service;
  }

  private service(words: string[], n: number, line: string): void {
    const protocol = words[0] as IpvsService['protocol'];
    let i = 2;
    let service: IpvsService;
    if (protocol === 'FWM') {
      const mark = Number(words[1]);
      if (!Number.isInteger(mark)) return this.unknown(n, line, 'bad firewall mark');
      let family: IpvsService['family'] = 'ipv4';
      if (words[2] === 'IPv6') {
        family = 'ipv6';
        i = 3;
      }
      service = { protocol, key: `FWM ${mark}${family === 'ipv6' ? ' IPv6' : ''}`, address: String(mark), fwmark: mark, family, realServers: [], line: n };
    } else {
      const a = words[1] === undefined ? undefined : addressParts(words[1]);
      if (!a) return this.unknown(n, line, 'bad virtual service address');
      service = { protocol, key: `${protocol} ${a.address}`, address: a.address, ip: a.ip, family: a.ip.includes(':') ? 'ipv6' : 'ipv4', realServers: [], line: n };
      if (a.port !== undefined) service.port = a.port;
      if (a.portName !== undefined) service.portName = a.portName;
    }
    const counts = fiveCounts(words, i);
    if (counts && this.table.format !== 'list') {
      const [a, b, c, d, e] = counts as [number, number, number, number, number];
      if (this.table.format === 'rate') service.rate = { cps: a, inPps: b, outPps: c, inBps: d, outBps: e };
      else {
        this.table.format ??= 'stats';
        service.stats = { conns: a, inPkts: b, outPkts: c, inBytes: d, outBytes: e };
      }
      this.add(service);
      return;
    }
    if (i < words.length) service.scheduler = words[i++];
    for (; i < words.length; i++) {
      const w = words[i]!;
      if (w.startsWith('(') && w.endsWith(')')) service.flags = w.slice(1, -1).split(',').filter(Boolean);
      else if (w === 'persistent') {
        const t = Number(words[i + 1]);
        if (Number.isFinite(t)) {
          service.persistent = t;
          i++;
        }
      } else if (w === 'mask' && words[i + 1] !== undefined) service.mask = words[++i];
      else if (w === 'pe' && words[i + 1] !== undefined) service.pe = words[++i];
      else if (w === 'ops') service.ops = true;
      else {
        this.unknown(n, line, `unknown virtual service field "${w}"`);
        break;
      }
    }
    this.add(service);
  }

  /**
   * "  -> 10.244.1.5:8080   Masq    1      0          0", the line most of a listing is made of, read
   * in place; false (nothing done) for anything else.
   */
  private realServerFast(line: string, from: number, len: number, n: number): boolean {
    let i = from;
    while (i < len && line.charCodeAt(i) === 32) i++;
    if (line.charCodeAt(i) !== 45 || line.charCodeAt(i + 1) !== 62 || line.charCodeAt(i + 2) !== 32) return false;
    i += 3;
    while (i < len && line.charCodeAt(i) === 32) i++;
    const aStart = i;
    let colon = -1;
    while (i < len) {
      const c = line.charCodeAt(i);
      if (c === 32 || c === 13 || c === 9) break;
      // IPv4 with a numeric port only (one colon, no bracket); anything else takes the general path
      if (c === 58) {
        if (colon >= 0) return false;
        colon = i;
      } else if (c === 91) return false;
      i++;
    }
    const aEnd = i;
    if (colon <= aStart) return false;
    const port = digitsAt(line, colon + 1, aEnd);
    while (i < len && line.charCodeAt(i) === 32) i++;
    const fStart = i;
    while (i < len && line.charCodeAt(i) !== 32) i++;
    const forwarding = forwardingAt(line, fStart, i);
    let weight = -1;
    let active = -1;
    let inactive = -1;
    for (let k = 0; k < 4; k++) {
      while (i < len && isBlank(line.charCodeAt(i))) i++;
      if (i >= len) break;
      if (k === 3) return false;
      const s0 = i;
      while (i < len && !isBlank(line.charCodeAt(i))) i++;
      const v = digitsAt(line, s0, i);
      if (k === 0) weight = v;
      else if (k === 1) active = v;
      else inactive = v;
    }
    if (port < 0 || forwarding === undefined || weight < 0 || active < 0 || inactive < 0) return false;
    const rs: IpvsRealServer = {
      address: line.slice(aStart, aEnd),
      ip: line.slice(aStart, colon),
      port,
      forwarding,
      weight,
      activeConn: active,
      inactiveConn: inactive,
      line: n,
    };
    this.current!.realServers.push(rs);
    return true;
  }

  private realServer(words: string[], n: number, line: string): void {
    const service = this.current;
    if (!service) return this.unknown(n, line, 'real server without a virtual service before it');
    const a = words[1] === undefined ? undefined : addressParts(words[1]);
    if (!a) return this.unknown(n, line, 'bad real server address');
    const rs: IpvsRealServer = { address: a.address, ip: a.ip, line: n };
    if (a.port !== undefined) rs.port = a.port;
    if (a.portName !== undefined) rs.portName = a.portName;
    if (words.length > 2 && FORWARDING.has(words[2]!)) {
      rs.forwarding = words[2]!;
      const w = count(words[3]);
      const act = count(words[4]);
      const inact = count(words[5]);
      if (w !== undefined) rs.weight = w;
      if (act !== undefined) rs.activeConn = act;
      if (inact !== undefined) rs.inactiveConn = inact;
    } else if (words.length === 7 && fiveCounts(words, 2)) {
      const [x, y, z, u, v] = fiveCounts(words, 2) as [number, number, number, number, number];
      if (this.table.format === 'rate') rs.rate = { cps: x, inPps: y, outPps: z, inBps: u, outBps: v };
      else rs.stats = { conns: x, inPkts: y, outPkts: z, inBytes: u, outBytes: v };
    } else if (words.length === 6 && words.slice(2).every((r) => count(r) !== undefined)) {
      const [x, y, z, u] = words.slice(2).map((r) => count(r)!) as [number, number, number, number];
      if (this.table.format === 'persistent-conn') Object.assign(rs, { weight: x, persistConn: y, activeConn: z, inactiveConn: u });
      else Object.assign(rs, { upperThreshold: x, lowerThreshold: y, activeConn: z, inactiveConn: u });
    } else if (words.length > 2) {
      return this.unknown(n, line, 'unknown real server columns');
    }
    service.realServers.push(rs);
  }

  /** -A -t 10.0.0.1:443 -s rr [-p 10800] [-M mask] [-b flags] [--pe name] [-o] */
  private saveService(words: string[], n: number, line: string): void {
    this.table.format = 'save';
    const parsed = this.saveKey(words);
    if (!parsed) return this.unknown(n, line, 'bad virtual service');
    const { service } = parsed;
    service.line = n;
    for (let i = parsed.next; i < words.length; i++) {
      const w = words[i]!;
      const v = words[i + 1];
      if ((w === '-s' || w === '--scheduler') && v !== undefined) {
        service.scheduler = v;
        i++;
      } else if (w === '-p' || w === '--persistent') {
        const t = v === undefined ? NaN : Number(v);
        // ipvsadm's default persistence timeout
        service.persistent = Number.isFinite(t) ? t : 300;
        if (Number.isFinite(t)) i++;
      } else if ((w === '-M' || w === '--netmask') && v !== undefined) {
        service.mask = v;
        i++;
      } else if ((w === '-b' || w === '--sched-flags') && v !== undefined) {
        service.flags = v.split(',');
        i++;
      } else if (w === '--pe' && v !== undefined) {
        service.pe = v;
        i++;
      } else if (w === '-o' || w === '--ops') service.ops = true;
      else return this.unknown(n, line, `unknown virtual service option "${w}"`);
    }
    if (!this.keyed().has(service.key)) this.add(service);
  }

  /** -a -t 10.0.0.1:443 -r 10.244.0.5:6443 -m -w 1 [-x u] [-y l] */
  private saveServer(words: string[], n: number, line: string): void {
    this.table.format = 'save';
    const parsed = this.saveKey(words);
    if (!parsed) return this.unknown(n, line, 'bad real server');
    // the -A line normally comes first; an excerpt may have lost it
    const service = this.keyed().get(parsed.service.key) ?? this.add({ ...parsed.service, line: n });
    let rs: IpvsRealServer | undefined;
    const extra: Partial<IpvsRealServer> = {};
    for (let i = parsed.next; i < words.length; i++) {
      const w = words[i]!;
      const v = words[i + 1];
      if ((w === '-r' || w === '--real-server') && v !== undefined) {
        const a = addressParts(v) ?? { address: v, ip: normalizeIp(v) };
        rs = { address: a.address, ip: a.ip, line: n };
        if (a.port !== undefined) rs.port = a.port;
        i++;
      } else if (SAVE_FORWARDING[w]) extra.forwarding = SAVE_FORWARDING[w];
      else if ((w === '-w' || w === '--weight') && v !== undefined) {
        extra.weight = Number(v);
        i++;
      } else if ((w === '-x' || w === '--u-threshold') && v !== undefined) {
        extra.upperThreshold = Number(v);
        i++;
      } else if ((w === '-y' || w === '--l-threshold') && v !== undefined) {
        extra.lowerThreshold = Number(v);
        i++;
      } else if (w.startsWith('--tun-') && v !== undefined) i++;
      else if (w === '--tun-nocsum' || w === '--tun-csum' || w === '--tun-remcsum') continue;
      else return this.unknown(n, line, `unknown real server option "${w}"`);
    }
    if (!rs) return this.unknown(n, line, 'real server without -r');
    service.realServers.push(Object.assign(rs, extra));
    this.current = service;
  }

  private saveKey(words: string[]): { service: IpvsService; next: number } | undefined {
    const protocol = SAVE_PROTOCOL[words[1] ?? ''];
    const value = words[2];
    if (!protocol || value === undefined) return undefined;
    if (protocol === 'FWM') {
      const mark = Number(value);
      if (!Number.isInteger(mark)) return undefined;
      return { service: { protocol, key: `FWM ${mark}`, address: String(mark), fwmark: mark, family: 'ipv4', realServers: [], line: 0 }, next: 3 };
    }
    const a = addressParts(value);
    if (!a) return undefined;
    const service: IpvsService = { protocol, key: `${protocol} ${a.address}`, address: a.address, ip: a.ip, family: a.ip.includes(':') ? 'ipv6' : 'ipv4', realServers: [], line: 0 };
    if (a.port !== undefined) service.port = a.port;
    if (a.portName !== undefined) service.portName = a.portName;
    return { service, next: 3 };
  }
}

/** Parses ipvsadm's listing or save output. Never throws. */
export function parseIpvsadm(text: string): IpvsTable {
  return new Parser().parse(text);
}

/** The key a virtual service has in IpvsService.key: "TCP 10.96.0.1:443". */
export function ipvsServiceKey(protocol: string, ip: string, port: number): string {
  return `${protocol.toUpperCase()} ${joinHostPort(normalizeIp(ip), port)}`;
}
