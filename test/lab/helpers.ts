import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { provision, type ProvisionOptions } from '../../tasks/commands/provision.ts';
import type { Lab } from './lab.ts';

// Shared by the lab tests: inventories for a running lab, and provision runs with their output captured.

const temps: string[] = [];
/** A temporary directory removed when the test file ends. */
export function tempDir(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  temps.push(d);
  return d;
}
afterAll(() => {
  for (const d of temps.splice(0)) rmSync(d, { recursive: true, force: true });
});

export interface InventoryOptions {
  /** extra `all.vars` lines, YAML */
  vars?: Record<string, unknown>;
  /** per-host extra vars */
  hostVars?: Record<string, Record<string, unknown>>;
  /** only these hosts (default: all of the lab) */
  hosts?: string[];
  knownHosts?: string;
}

export function writeLabInventory(lab: Lab, opts: InventoryOptions = {}): string {
  const dir = tempDir('kpm-inv-');
  const file = join(dir, 'inventory.yaml');
  const hosts: Record<string, Record<string, unknown>> = {};
  for (const h of lab.hosts) {
    if (opts.hosts && !opts.hosts.includes(h.name)) continue;
    hosts[h.name] = { ansible_host: h.address, ansible_port: h.port, ...(opts.hostVars?.[h.name] ?? {}) };
  }
  const inv = {
    all: {
      vars: {
        ansible_user: 'root',
        ansible_ssh_private_key_file: lab.key,
        kpm_known_hosts_file: opts.knownHosts ?? lab.knownHosts,
        kpm_connect_timeout: 5,
        kpm_connect_retries: 0,
        ...(opts.vars ?? {}),
      },
      children: { k8s_cluster: { children: { kube_node: { hosts } } } },
    },
  };
  // JSON is valid YAML: no YAML writer needed to produce a well-formed inventory.
  writeFileSync(file, JSON.stringify(inv, null, 2));
  return file;
}

export interface RunOutput {
  code: number;
  out: string;
  err: string;
  report: Report;
  reportFile: string;
  retryFile: string;
}

export interface Report {
  hosts: Record<string, { status: string; reason?: string; steps: { name: string; status: string; message: string; ms: number; diff?: string }[]; sshExecs: number; sshRoundTrips: number }>;
  summary: Record<string, number | string | boolean>;
}

export async function runProvision(inventory: string, opts: Partial<ProvisionOptions> = {}): Promise<RunOutput> {
  const dir = tempDir('kpm-run-');
  const reportFile = join(dir, 'report.json');
  const retryFile = join(dir, 'hosts.retry');
  const out: string[] = [];
  const err: string[] = [];
  const code = await provision({
    inventory,
    dryRun: false,
    acceptNewHostKeys: false,
    showDiffs: false,
    plain: true,
    report: reportFile,
    retryFile,
    // the node phase only, unless a test asks for the cluster phase
    tags: ['node'],
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    ...opts,
  });
  let report: Report = { hosts: {}, summary: {} };
  try {
    report = JSON.parse(readFileSync(reportFile, 'utf8')) as Report;
  } catch {
    /* no report: the run stopped before any host (bad inventory) */
  }
  return { code, out: out.join('\n'), err: err.join('\n'), report, reportFile, retryFile };
}

/** A command on a lab host that must succeed: its stdout, or an error naming host, command and stderr. */
export async function mustExec(lab: Lab, host: string, cmd: string): Promise<string> {
  const r = await lab.exec(host, cmd);
  if (r.code !== 0) throw new Error(`${host}: ${cmd}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

export function stepOf(r: RunOutput, host: string, step: string) {
  return r.report.hosts[host]?.steps.find((s) => s.name === step);
}
