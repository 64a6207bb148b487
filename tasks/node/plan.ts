import type { Host } from '../inventory/types.ts';
import { unifiedDiff } from '../run/diff.ts';
import { familyOf, OS_FAMILIES, PACKAGE_MANAGERS, type OsFamily, type PackageManager } from './distros.ts';
import type { Facts } from './facts.ts';
import { schedulerProblem, type ManagedFile } from './ipvs-requirements.ts';
import { gateProblem, MODES, type ModeRequirements } from './modes.ts';
import { readTemplate, renderModuleTemplate } from './templates.ts';

// The node plan: a pure comparison of what the host's target mode needs (modes.ts) with what the node's
// facts say it has. Dry-run prints it; apply executes exactly it; nothing else decides what changes on a node.

export interface FilePlan {
  file: ManagedFile;
  content: string;
  /** create: absent; update: content differs; attributes: only mode/owner differ */
  action: 'none' | 'create' | 'update' | 'attributes';
  diff: string;
  /** e.g. "mode 644 -> 755" */
  attributeChanges: string[];
  /** temporary files of an earlier write that was cut off, removed by this one */
  strays: string[];
}

export interface NodePlan {
  host: string;
  /** the target mode whose prerequisites this plan puts in place */
  mode: ModeRequirements['mode'];
  /** false when the host's target mode needs none of this (the node phase is skipped for it) */
  applicable: boolean;
  skipReason?: string;
  /** the node cannot be prepared; set before anything is changed on it */
  error?: string;
  family?: OsFamily;
  packageManager?: PackageManager;
  /** kpm_package_lock_timeout of the host */
  packageLockTimeoutS?: number;
  /** every package the mode needs, in this family's names (the installed one where the family has several) */
  packages: string[];
  /** per package in `packages`: every name the family gives it (verify accepts any installed one) */
  packageNames?: Record<string, readonly string[]>;
  install: string[];
  /** module load order, as written to both files */
  modules: string[];
  /** modules neither loaded nor built in */
  load: string[];
  files: FilePlan[];
}

/** Package names to ask every node about before its family is known: the union over families. */
export function packagesToProbe(): string[] {
  const names = OS_FAMILIES.flatMap((f) => Object.values(f.packages).flat());
  return [...new Set(names)];
}

function emptyPlan(host: Host): NodePlan {
  return { host: host.name, mode: host.settings.mode, applicable: true, packages: [], install: [], modules: [], load: [], files: [] };
}

export function planNode(host: Host, facts: Facts): NodePlan {
  const plan = emptyPlan(host);
  const req = MODES[host.settings.mode];

  const family = facts.family ? OS_FAMILIES.find((f) => f.name === facts.family) : familyOf(facts.os);
  if (!family) {
    return {
      ...plan,
      error:
        `unsupported distribution ${facts.os.prettyName || facts.os.id || 'unknown'} (ID=${facts.os.id || '?'}` +
        `${facts.os.idLike.length ? `, ID_LIKE=${facts.os.idLike.join(' ')}` : ''}); supported: ` +
        OS_FAMILIES.map((f) => `${f.name} (${f.packageManagers.join('/')})`).join(', '),
    };
  }
  plan.family = family;
  const pmName = family.packageManagers.find((pm) => facts.packageManagers.includes(pm));
  if (!pmName) {
    return {
      ...plan,
      error: `no package manager found on this ${family.name}-family node (looked for ${family.packageManagers.join(', ')})`,
    };
  }
  plan.packageManager = PACKAGE_MANAGERS[pmName];
  plan.packageLockTimeoutS = host.run.packageLockTimeout;

  if (facts.user !== 'root') {
    return {
      ...plan,
      error:
        `connected as ${facts.user} without root: installing packages and writing /etc need root; ` +
        `set ansible_become: true (sudo) or connect as root`,
    };
  }

  if (req.mode === 'ipvs') {
    const sched = schedulerProblem(host.settings);
    if (sched) return { ...plan, error: sched };
  }
  const gate = gateProblem(req, facts.kernel, facts.nftVersion);
  if (gate) return { ...plan, error: gate };

  // Modules: every module the mode loads or relies on must exist in this kernel; an optional one (the
  // legacy IPv4 conntrack module) is added only where modprobe finds it.
  const required = req.loadModules(host.settings);
  const missing = [...required, ...req.kernelModules].filter((m) => !facts.modules[m]?.available);
  if (missing.length > 0) {
    const detail = missing
      .map((m) => `${m}${facts.modules[m]?.message ? ` (${facts.modules[m]!.message})` : ''}`)
      .join('; ');
    const noIpvs = missing.includes('ip_vs');
    const noNft = missing.includes('nf_tables');
    return {
      ...plan,
      error:
        (noIpvs
          ? `kernel ${facts.kernel} has no ip_vs module: IPVS mode cannot run on this node`
          : noNft
            ? `kernel ${facts.kernel} has no nf_tables module: nftables mode cannot run on this node`
            : `kernel ${facts.kernel} lacks module${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`) +
        `: ${detail}`,
    };
  }
  plan.modules = [...required, ...req.optionalModules.filter((m) => facts.modules[m]?.available)];
  plan.load = plan.modules.filter((m) => !facts.modules[m]!.loaded && !facts.modules[m]!.builtin);

  const names = req.packages.map((role) => family.packages[role]);
  plan.packages = names.map((alts) => alts.find((p) => facts.packages[p]) ?? alts[0]!);
  plan.packageNames = Object.fromEntries(plan.packages.map((p, i) => [p, names[i]!]));
  plan.install = plan.packages.filter((p) => !facts.packages[p]);

  plan.files = modeFileContents(req, plan.modules).map(({ file, content }) => planFile(file, content, facts));
  return plan;
}

/** What each of the mode's managed files holds on a node that loads `modules` (their templates rendered). */
export function modeFileContents(req: ModeRequirements, modules: string[]): { file: ManagedFile; content: string }[] {
  return req.files.map((file) => ({ file, content: renderModuleTemplate(readTemplate(file.template), modules) }));
}

/**
 * The lists of modules a node converged for `req` may load: the required ones, plus each combination of
 * the optional ones (planNode adds an optional module only where the node's modprobe finds it).
 */
export function possibleModuleLists(req: ModeRequirements, settings: Host['settings']): string[][] {
  return req.optionalModules.reduce<string[][]>((acc, m) => acc.flatMap((l) => [l, [...l, m]]), [req.loadModules(settings)]);
}

function planFile(file: ManagedFile, content: string, facts: Facts): FilePlan {
  const cur = facts.files[file.path];
  const strays = cur?.strays ?? [];
  if (!cur || !cur.exists) {
    return { file, content, action: 'create', diff: unifiedDiff(file.path, null, content), attributeChanges: [], strays };
  }
  const attributeChanges: string[] = [];
  if (cur.mode !== file.mode) attributeChanges.push(`mode ${cur.mode ?? '?'} -> ${file.mode}`);
  if (cur.owner !== file.owner || cur.group !== file.group)
    attributeChanges.push(`owner ${cur.owner ?? '?'}:${cur.group ?? '?'} -> ${file.owner}:${file.group}`);
  const same = !cur.tooLarge && cur.content === content;
  if (same) {
    return { file, content, action: attributeChanges.length ? 'attributes' : 'none', diff: '', attributeChanges, strays };
  }
  const diff = cur.tooLarge
    ? `--- ${file.path}\n+++ ${file.path}\n@@ current file is too large to show; it is replaced @@\n`
    : unifiedDiff(file.path, cur.content ?? '', content);
  return { file, content, action: 'update', diff, attributeChanges, strays };
}

/** Nothing to change on the node: the rerun that says so without a second exec. */
export function planIsNoop(plan: NodePlan): boolean {
  return (
    !plan.error &&
    (!plan.applicable || (plan.install.length === 0 && plan.load.length === 0 && plan.files.every((f) => f.action === 'none' && f.strays.length === 0)))
  );
}
