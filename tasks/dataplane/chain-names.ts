import { createHash } from 'node:crypto';

// kube-proxy names its per-Service chains after a hash, so a dump printed without `-m comment` (or cut
// down to a few chains) can still be tied to a Service port: hash its name the same way and look for
// the chain. Same scheme in every release since 1.2: sha256 of servicePortName + lower-case protocol
// (+ "ip:port" for an endpoint), base32 (RFC 4648 alphabet), first 16 characters.

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = ((value << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

function hash16(text: string): string {
  return base32(createHash('sha256').update(text).digest()).slice(0, 16);
}

/** "ns/name:port", or "ns/name" for an unnamed port (kube-proxy's ServicePortName.String()). */
export function servicePortName(namespace: string, name: string, port: string): string {
  return port === '' ? `${namespace}/${name}` : `${namespace}/${name}:${port}`;
}

export type ChainPrefix = 'KUBE-SVC-' | 'KUBE-SVL-' | 'KUBE-EXT-' | 'KUBE-FW-' | 'KUBE-XLB-';

/** kube-proxy's servicePortChainName (and the SVL/EXT/FW/XLB chains built from the same hash). */
export function servicePortChainName(portName: string, protocol: string, prefix: ChainPrefix = 'KUBE-SVC-'): string {
  return prefix + hash16(portName + protocol.toLowerCase());
}

/** kube-proxy's servicePortEndpointChainName; `endpoint` is "ip:port", IPv6 in brackets. */
export function servicePortEndpointChainName(portName: string, protocol: string, endpoint: string): string {
  return 'KUBE-SEP-' + hash16(portName + protocol.toLowerCase() + endpoint);
}

/** The hash part of a per-Service chain, which the SVC/SVL/EXT/FW/XLB chains of one port share. */
export function chainHash(chain: string): string | undefined {
  const m = /^KUBE-(?:SVC|SVL|EXT|FW|XLB)-([A-Z2-7]{16})$/.exec(chain);
  return m?.[1];
}
