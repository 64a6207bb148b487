// Addresses as dataplane dumps print them: "10.0.0.1:80", "[fd00::1]:80", "10.0.0.1/32", "fd00::1/128".
// Comparing a dump with the API's EndpointSlices needs one spelling per address, so IPv6 is brought to
// the RFC 5952 form (lower case, longest zero run compressed) before any comparison.

export interface HostPort {
  host: string;
  /** the port as printed; a name when the tool resolved it (ipvsadm without -n) */
  port: string;
}

/** "[v6]:p", "v4:p", "name:p"; a bare address (no port) gives port "". */
export function splitHostPort(text: string): HostPort {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return { host: text.slice(1), port: '' };
    const rest = text.slice(close + 1);
    return { host: text.slice(1, close), port: rest.startsWith(':') ? rest.slice(1) : '' };
  }
  const colon = text.lastIndexOf(':');
  // more than one colon without brackets is an IPv6 address with no port
  if (colon < 0 || text.indexOf(':') !== colon) return { host: text, port: '' };
  return { host: text.slice(0, colon), port: text.slice(colon + 1) };
}

export function joinHostPort(host: string, port: string | number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export const isIPv6 = (ip: string): boolean => ip.includes(':');

/** "10.0.0.1/32" → "10.0.0.1", "fd00::1/128" → "fd00::1"; any other prefix is kept. */
export function stripHostPrefix(cidr: string): string {
  const slash = cidr.indexOf('/');
  if (slash < 0) return cidr;
  const bits = cidr.slice(slash + 1);
  const host = cidr.slice(0, slash);
  if ((bits === '32' && !host.includes(':')) || bits === '128') return host;
  return cidr;
}

function expandIPv6(ip: string): number[] | undefined {
  let text = ip.toLowerCase();
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const v4 = text.slice(lastColon + 1).split('.').map(Number);
    if (v4.length !== 4 || v4.some((n) => !Number.isInteger(n) || n < 0 || n > 255)) return undefined;
    tail = [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => (/^[0-9a-f]{1,4}$/.test(g) ? parseInt(g, 16) : NaN)));
  const head = parse(halves[0]!);
  const back = halves.length === 2 ? parse(halves[1]!) : [];
  if ([...head, ...back].some(Number.isNaN)) return undefined;
  const fill = 8 - head.length - back.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return undefined;
  const groups = [...head, ...new Array<number>(fill).fill(0), ...back];
  if (tail.length) groups.splice(6, 2, ...tail);
  return groups;
}

/** The canonical text of an IP address; text that is not an address comes back lower-cased. */
export function normalizeIp(ip: string): string {
  if (!ip.includes(':')) return ip;
  const groups = expandIPv6(ip);
  if (!groups) return ip.toLowerCase();
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** "ip:port" in one spelling: IPv6 in brackets and canonical; a bare IP stays bare. */
export function normalizeEndpoint(text: string): string {
  const { host, port } = splitHostPort(text.trim());
  const ip = normalizeIp(host);
  return port === '' ? ip : joinHostPort(ip, port);
}

function ipv4ToInt(ip: string): number | undefined {
  const parts = ip.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    const v = Number(p);
    if (p === '' || !Number.isInteger(v) || v < 0 || v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

/**
 * Whether `ip` is inside `cidr` (a bare address counts as a host route). Unparseable input answers
 * undefined, so that callers can treat the match as unknown instead of as false.
 */
export function cidrContains(cidr: string, ip: string): boolean | undefined {
  const slash = cidr.indexOf('/');
  const base = slash < 0 ? cidr : cidr.slice(0, slash);
  if (isIPv6(base) !== isIPv6(ip)) return false;
  if (isIPv6(base)) {
    const a = expandIPv6(base);
    const b = expandIPv6(ip);
    if (!a || !b) return undefined;
    let bits = slash < 0 ? 128 : Number(cidr.slice(slash + 1));
    if (!Number.isInteger(bits) || bits < 0 || bits > 128) return undefined;
    for (let i = 0; i < 8 && bits > 0; i++, bits -= 16) {
      const mask = bits >= 16 ? 0xffff : (0xffff << (16 - bits)) & 0xffff;
      if ((a[i]! & mask) !== (b[i]! & mask)) return false;
    }
    return true;
  }
  const a = ipv4ToInt(base);
  const b = ipv4ToInt(ip);
  if (a === undefined || b === undefined) return undefined;
  const bits = slash < 0 ? 32 : Number(cidr.slice(slash + 1));
  if (!Number.isInteger(bits) || bits < 0 || bits > 32) return undefined;
  if (bits === 0) return true;
  const size = 2 ** (32 - bits);
  return Math.floor(a / size) === Math.floor(b / size);
}
