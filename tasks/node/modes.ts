import type { NodeSettings, ProxyMode } from '../inventory/types.ts';
import { CONNTRACK_MODULE, ipvsModules, LEGACY_CONNTRACK_MODULE, MANAGED_FILES, type ManagedFile } from './ipvs-requirements.ts';

// Each kube-proxy mode's prerequisites, as data: what a node needs before kube-proxy may start in that
// mode, what the cluster must be, and how a node proves it runs the mode. The node plan, the cluster
// preflight and the per-node verification read this table; none of them branches on a mode's name
// for what is written here.

/** The tools a mode needs, by role; each OS family names the package (distros.ts). */
export type PackageRole = 'ipvsadm' | 'ipset' | 'conntrack' | 'iptables' | 'nftables';

export interface VersionGate {
  /** lowest kernel release, as numbers: [5, 13] */
  kernel?: number[];
  /** lowest `nft --version` */
  nft?: number[];
}

export interface ClusterGate {
  /** oldest Kubernetes minor (1.x) whose kube-proxy has the mode */
  sinceMinor?: number;
  /** feature gate kube-proxy needs for the mode below `gateUntilMinor` */
  featureGate?: { name: string; untilMinor: number; defaultOnFromMinor: number };
  /** from this minor on, the mode is deprecated upstream: preflight says so */
  deprecatedFromMinor?: number;
  deprecation?: string;
}

export interface ModeRequirements {
  mode: ProxyMode;
  /** package roles, in install order */
  packages: readonly PackageRole[];
  /** kernel modules loaded (and persisted for boot) before kube-proxy starts */
  loadModules: (settings: NodeSettings) => string[];
  /** loaded too where the node's modprobe finds them (nf_conntrack_ipv4 before 4.19) */
  optionalModules: readonly string[];
  /** must exist in the kernel (loaded, built in or loadable) but are left to the tools to load */
  kernelModules: readonly string[];
  /** files the tool manages for the mode */
  files: readonly ManagedFile[];
  gate: VersionGate;
  cluster: ClusterGate;
  /** the KubeProxyConfiguration section the mode reads (ipvs.*, iptables.*, nftables.*) */
  configSection: 'ipvs' | 'iptables' | 'nftables';
  /** what proves, on the node, that kube-proxy programs the mode: checked after /proxyMode */
  proof: 'ipvs-virtual-server' | 'nft-table' | 'iptables-chain';
}

export const IPVS_DEPRECATION =
  'IPVS mode is deprecated since Kubernetes 1.35 (KEP-5495: off by default planned for 1.40, removal for 1.43); ' +
  'nftables mode is GA since 1.33 and is where kube-proxy is going. Switching to IPVS still works on this cluster.';

export const MODES: Readonly<Record<ProxyMode, ModeRequirements>> = {
  ipvs: {
    mode: 'ipvs',
    packages: ['ipvsadm', 'ipset', 'conntrack'],
    loadModules: (s) => [...ipvsModules(s), CONNTRACK_MODULE],
    optionalModules: [LEGACY_CONNTRACK_MODULE],
    kernelModules: [],
    files: MANAGED_FILES,
    gate: {},
    cluster: { deprecatedFromMinor: 35, deprecation: IPVS_DEPRECATION },
    configSection: 'ipvs',
    proof: 'ipvs-virtual-server',
  },
  nftables: {
    mode: 'nftables',
    packages: ['nftables', 'conntrack'],
    loadModules: () => [],
    optionalModules: [],
    // nft loads nf_tables on demand; a kernel without it cannot run the mode at all
    kernelModules: ['nf_tables'],
    files: [],
    // kube-proxy's nftables proxier refuses older kernels and nft (KEP-3866)
    gate: { kernel: [5, 13], nft: [1, 0, 0] },
    cluster: { sinceMinor: 29, featureGate: { name: 'NFTablesProxyMode', untilMinor: 33, defaultOnFromMinor: 31 } },
    configSection: 'nftables',
    proof: 'nft-table',
  },
  iptables: {
    mode: 'iptables',
    packages: ['iptables', 'conntrack'],
    loadModules: () => [],
    optionalModules: [],
    kernelModules: [],
    files: [],
    gate: {},
    cluster: {},
    configSection: 'iptables',
    proof: 'iptables-chain',
  },
};

/** The modules the facts ask about for the host's target mode (each a probe, and on a fresh node a modprobe -n). */
export function modulesToProbe(settings: NodeSettings): string[] {
  const m = MODES[settings.mode];
  return [...new Set([...m.loadModules(settings), ...m.optionalModules, ...m.kernelModules])];
}

/** Every file any mode manages. */
export function filesToProbe(): string[] {
  return [...new Set(Object.values(MODES).flatMap((m) => m.files.map((f) => f.path)))];
}

/** "5.13.0-1-amd64", "nftables v1.0.6 (Lester Gooch #5)" -> [5, 13, 0] / [1, 0, 6]; undefined when none */
export function versionNumbers(text: string): number[] | undefined {
  const m = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2]), ...(m[3] !== undefined ? [Number(m[3])] : [])];
}

/** a < b, comparing missing parts as 0 */
export function versionBelow(a: number[], b: number[]): boolean {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? 0;
    const y = b[i] ?? 0;
    if (x !== y) return x < y;
  }
  return false;
}

export const formatVersion = (v: number[]) => v.join('.');

/**
 * Why a node with this kernel and nft cannot run the mode (one line naming the versions), or undefined.
 * nft is judged only where it is installed: a node without it gets the family's package first.
 */
export function gateProblem(req: ModeRequirements, kernel: string, nftVersion: string | undefined): string | undefined {
  const problems: string[] = [];
  if (req.gate.kernel) {
    const k = versionNumbers(kernel);
    if (!k) problems.push(`kernel ${kernel || '(unknown)'} has no readable version; ${req.mode} mode needs ${formatVersion(req.gate.kernel)} or newer`);
    else if (versionBelow(k, req.gate.kernel)) problems.push(`kernel ${kernel} is older than ${formatVersion(req.gate.kernel)}`);
  }
  if (req.gate.nft && nftVersion) {
    const n = versionNumbers(nftVersion);
    if (!n) problems.push(`nft reports no readable version (${JSON.stringify(nftVersion.slice(0, 60))})`);
    else if (versionBelow(n, req.gate.nft)) problems.push(`nft ${formatVersion(n)} is older than ${formatVersion(req.gate.nft)}`);
  }
  if (problems.length === 0) return undefined;
  return `${problems.join(' and ')}: kube-proxy's ${req.mode} mode cannot run on this node`;
}

/** What the cluster's version says about switching to `mode`: errors refuse the switch, warnings are printed. */
export function clusterGateProblems(
  req: ModeRequirements,
  version: { major: number; minor: number; gitVersion: string },
  featureGates: Readonly<Record<string, boolean>>,
): { errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  const c = req.cluster;
  const minor = version.major > 1 ? Number.MAX_SAFE_INTEGER : version.major === 1 ? version.minor : -1;
  const known = version.major > 0;
  if (known && c.sinceMinor !== undefined && minor < c.sinceMinor) {
    errors.push(`server is ${version.gitVersion}: kube-proxy has ${req.mode} mode only from 1.${c.sinceMinor} on; upgrade the cluster first`);
  } else if (known && c.featureGate && minor < c.featureGate.untilMinor) {
    const g = c.featureGate;
    const set = featureGates[g.name];
    if (minor < g.defaultOnFromMinor && set !== true) {
      errors.push(
        `server is ${version.gitVersion}: ${req.mode} mode is alpha before 1.${g.defaultOnFromMinor} and needs the feature gate ${g.name}; ` +
          `set featureGates: {${g.name}: true} in the kube-proxy configuration first (or upgrade to 1.${g.untilMinor}, where it is GA)`,
      );
    } else if (set === false) {
      errors.push(`server is ${version.gitVersion}: the kube-proxy configuration sets featureGates ${g.name}: false, which turns ${req.mode} mode off`);
    } else {
      warnings.push(`server is ${version.gitVersion}: ${req.mode} mode is beta before 1.${g.untilMinor} (feature gate ${g.name}, on by default)`);
    }
  }
  if (known && c.deprecatedFromMinor !== undefined && minor >= c.deprecatedFromMinor && c.deprecation) {
    warnings.push(`server is ${version.gitVersion}: ${c.deprecation}`);
  }
  return { errors, warnings };
}
