// How much of a frontend's new connections each backend gets.
//
// iptables: the rules of a KUBE-SVC chain are tried in order; a rule with `-m statistic --mode random
// --probability p` takes p of what reaches it, the last one (no statistic) takes all the rest. With n
// endpoints kube-proxy writes 1/n, 1/(n-1), …, 1/2, rest, which gives each 1/n.
//
// IPVS: the scheduler decides. The weighted ones split by weight; rr and lc ignore weights except that
// weight 0 takes nothing (that is how a terminating endpoint is drained).

/**
 * Effective shares of consecutive rules: `probabilities[i]` is the rule's statistic probability, or
 * undefined for a rule that matches everything that reaches it. Rules after such a rule get 0.
 * The second value is what passes the last rule without matching (0 when a rule catches everything).
 */
export function chainShares(probabilities: readonly (number | undefined)[]): { shares: number[]; fallThrough: number } {
  let remaining = 1;
  const shares = probabilities.map((p) => {
    const q = p === undefined ? 1 : Math.min(1, Math.max(0, p));
    const share = remaining * q;
    remaining -= share;
    return share;
  });
  return { shares, fallThrough: remaining < 1e-12 ? 0 : remaining };
}

/**
 * The probability kube-proxy writes for the i-th of n remaining endpoints, as iptables-save prints it
 * back: kube-proxy formats 1/n with `digits` decimals (10 today, 5 in old releases), iptables stores it
 * as a 31-bit fraction and prints that with 11 decimals (hence 0.33333333349, 0.33332999982).
 */
export function iptablesProbability(n: number, digits = 10): string {
  const written = Number((1 / n).toFixed(digits));
  const stored = Math.round(written * 0x80000000);
  return (stored / 0x80000000).toFixed(11);
}

/** Schedulers that ignore weights (beyond weight 0 meaning "send nothing"). */
const UNWEIGHTED = new Set(['rr', 'lc']);

/**
 * Shares among an IPVS service's real servers. Unknown weights (a --stats or --rate listing has no
 * weight column) count as equal.
 */
export function ipvsShares(scheduler: string | undefined, weights: readonly (number | undefined)[]): number[] {
  if (weights.length === 0) return [];
  if (weights.every((w) => w === undefined)) return weights.map(() => 1 / weights.length);
  const w = weights.map((x) => (x === undefined ? 1 : Math.max(0, x)));
  if (scheduler !== undefined && UNWEIGHTED.has(scheduler)) {
    const live = w.filter((x) => x > 0).length;
    return w.map((x) => (x > 0 ? 1 / live : 0));
  }
  const total = w.reduce((a, b) => a + b, 0);
  return w.map((x) => (total > 0 ? x / total : 0));
}

/** "33.3 %" */
export function formatShare(share: number): string {
  return `${(share * 100).toFixed(1)} %`;
}
