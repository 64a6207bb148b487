import type { NodeSettings } from '../inventory/types.ts';

// What kube-proxy's IPVS mode needs on a node, as data: the files the tool manages and the kernel
// modules it loads. The plan compares these with a node's facts.

export const DEFAULT_IPVS_MODULES = ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh'];

/** Loaded after the IPVS modules: connection tracking is what kube-proxy's NAT rules stand on. */
export const CONNTRACK_MODULE = 'nf_conntrack';
/**
 * The pre-4.19 IPv4 conntrack module. Kernels from 4.19 on (and RHEL 8.3+ on 4.18, by backport) merged it
 * into nf_conntrack, so it is loaded only where the node's modprobe can find it; comparing kernel versions
 * gets RHEL wrong.
 */
export const LEGACY_CONNTRACK_MODULE = 'nf_conntrack_ipv4';

export interface ManagedFile {
  path: string;
  template: string;
  /** octal, as stat -c %a prints it */
  mode: string;
  owner: string;
  group: string;
}

/** The operators' long-standing script (RHEL convention); run by the tool, never at boot on systemd distros. */
export const MODULE_SCRIPT: ManagedFile = {
  path: '/etc/sysconfig/modules/ipvs.modules',
  template: 'ipvs.modules',
  mode: '755',
  owner: 'root',
  group: 'root',
};

/** What systemd-modules-load reads at boot: without it the modules are gone after a reboot. */
export const MODULES_LOAD_CONF: ManagedFile = {
  path: '/etc/modules-load.d/ipvs.conf',
  template: 'ipvs.conf',
  mode: '644',
  owner: 'root',
  group: 'root',
};

export const MANAGED_FILES = [MODULE_SCRIPT, MODULES_LOAD_CONF];

/**
 * IPVS modules for these settings: kube_proxy_ipvs_modules when set, else the default list plus the
 * configured scheduler's module. `ip_vs` itself is always in it. An explicit list is taken as written
 * otherwise: one that lacks the scheduler's module is refused (see schedulerProblem), not silently fixed.
 */
export function ipvsModules(settings: NodeSettings): string[] {
  const list = [...(settings.ipvsModules ?? DEFAULT_IPVS_MODULES)];
  if (!list.includes('ip_vs')) list.unshift('ip_vs');
  const sched = `ip_vs_${settings.scheduler}`;
  if (!settings.ipvsModules && !list.includes(sched)) list.push(sched);
  return list;
}

/** Why these settings cannot work: the scheduler's module is not among the modules loaded on nodes. */
export function schedulerProblem(settings: NodeSettings): string | undefined {
  const sched = `ip_vs_${settings.scheduler}`;
  if (ipvsModules(settings).includes(sched)) return undefined;
  return `kube_proxy_scheduler ${settings.scheduler} needs kernel module ${sched}, which kube_proxy_ipvs_modules does not list: kube-proxy would fail to start in IPVS mode; add ${sched} to the list`;
}

/** Every module the facts probe asks about: the IPVS list, conntrack, and the legacy conntrack module. */
export function modulesToProbe(settings: NodeSettings): string[] {
  return [...ipvsModules(settings), CONNTRACK_MODULE, LEGACY_CONNTRACK_MODULE];
}
