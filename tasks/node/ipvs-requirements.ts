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
 * IPVS modules for these settings: kube_proxy_ipvs_modules when set, else the default list. `ip_vs`
 * itself and the configured scheduler's module are always in it: without them kube-proxy cannot start in
 * IPVS mode (since 1.26 it exits instead of falling back), whatever the list says.
 */
export function ipvsModules(settings: NodeSettings): string[] {
  const list = [...(settings.ipvsModules ?? DEFAULT_IPVS_MODULES)];
  if (!list.includes('ip_vs')) list.unshift('ip_vs');
  const sched = `ip_vs_${settings.scheduler}`;
  if (!list.includes(sched)) list.push(sched);
  return list;
}

/** Every module the facts probe asks about: the IPVS list, conntrack, and the legacy conntrack module. */
export function modulesToProbe(settings: NodeSettings): string[] {
  return [...ipvsModules(settings), CONNTRACK_MODULE, LEGACY_CONNTRACK_MODULE];
}
