import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, type RunOutput } from '../lab/helpers.ts';
import type { VmCluster } from './vm.ts';

// Shared by the VM tests: an inventory for running guests, and what the guests say about themselves.

/** the modules the tool loads by default for the rr scheduler, nf_conntrack included */
export const DEFAULT_MODULES = ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'nf_conntrack'];

export interface VmInventoryOptions {
  /** extra `all.vars` */
  vars?: Record<string, unknown>;
  /** only these guests (default: all) */
  hosts?: string[];
}

/**
 * An Ansible YAML inventory for the guests: 127.0.0.1 with each guest's forwarded SSH port, root with
 * the image's key, and the known_hosts file written from the guests' host keys (verification stays on).
 */
export function writeVmInventory(vms: VmCluster, opts: VmInventoryOptions = {}): string {
  const file = join(tempDir('kpm-vm-inv-'), 'inventory.yaml');
  const hosts: Record<string, Record<string, unknown>> = {};
  for (const v of vms.vms) {
    if (opts.hosts && !opts.hosts.includes(v.name)) continue;
    hosts[v.name] = { ansible_host: '127.0.0.1', ansible_port: v.port };
  }
  const inv = {
    all: {
      vars: {
        ansible_user: 'root',
        ansible_ssh_private_key_file: vms.key,
        kpm_known_hosts_file: vms.knownHosts,
        // a guest under TCG answers an SSH handshake in a second or two, more on a busy machine
        kpm_connect_timeout: 30,
        kpm_connect_retries: 2,
        kpm_command_timeout: 600,
        ...(opts.vars ?? {}),
      },
      children: { k8s_cluster: { children: { kube_node: { hosts } } } },
    },
  };
  writeFileSync(file, JSON.stringify(inv, null, 2));
  return file;
}

/** Module names `lsmod` lists in the guest. */
export async function lsmod(vms: VmCluster, name: string): Promise<Set<string>> {
  const out = await vms.run(name, 'lsmod');
  return new Set(out.split('\n').slice(1).map((l) => l.split(/\s+/)[0]!).filter((m) => m !== ''));
}

/** Which of `pkgs` dpkg has installed in the guest. */
export async function installed(vms: VmCluster, name: string, pkgs: string[]): Promise<string[]> {
  const out = await vms.run(name, `for p in ${pkgs.join(' ')}; do [ "$(dpkg-query -W -f='\${Status}' "$p" 2>/dev/null)" = 'install ok installed' ] && echo "$p"; done; true`);
  return out.split('\n').filter((l) => l !== '');
}

/** `ipvsadm -Ln --stats` connection count of one virtual server (real IPVS counters in the guest). */
export async function ipvsConns(vms: VmCluster, name: string, vs: string): Promise<number> {
  const out = await vms.run(name, `ipvsadm -Ln --stats -t ${vs}`);
  const line = out.split('\n').find((l) => l.trim().startsWith(`TCP  ${vs}`));
  if (!line) throw new Error(`${name}: ipvsadm lists no virtual server ${vs}:\n${out}`);
  return Number(line.trim().split(/\s+/)[2]);
}

/**
 * Keep a run's output in test-results/vm/<label>.txt: the guests are gone when a failure is read,
 * and what the tool printed on a real kernel is what one wants to see then.
 */
export function keepRun(label: string, r: RunOutput): RunOutput {
  mkdirSync('test-results/vm', { recursive: true });
  writeFileSync(`test-results/vm/${label}.txt`, `exit ${r.code}\n${r.out}\n${r.err ? `--- stderr\n${r.err}\n` : ''}`);
  return r;
}
