import type { Host, NodeSettings } from '../inventory/types.ts';
import type { RemoteSession, RemoteShell } from '../remote/ssh.ts';
import type { Interrupt } from '../run/interrupt.ts';
import { stepRecorder, type StepResult, type StepStatus } from '../run/results.ts';
import { applyScript, parseApplyOutput, stepNameForFile, strayNote, type StepLine } from './apply.ts';
import { factsScript, parseFacts, type ExpectedContents, type Facts } from './facts.ts';
import { filesToProbe, MODES, modulesToProbe } from './modes.ts';
import { modeFileContents, packagesToProbe, planIsNoop, planNode, possibleModuleLists, type NodePlan } from './plan.ts';

// The node phase for one host: facts -> plan -> apply + read-back (only when something differs) ->
// verify. Both scripts run in one bash kept on the node for the phase (one exec): a converged node costs
// one round trip, a changed one two.

export const NODE_STEPS = ['facts', 'preflight', 'packages', 'ipvs.modules', 'modules-load.d', 'modules', 'verify'] as const;
/** the steps that change the node */
const CHANGE_STEPS = ['packages', 'ipvs.modules', 'modules-load.d', 'modules'] as const;

export interface NodePhaseOptions {
  dryRun: boolean;
  emit: (r: StepResult) => void;
  /** SIGINT/SIGTERM: a node whose facts are read but not yet applied is left as it is */
  interrupt?: Interrupt;
}

export interface NodePhaseOutcome {
  steps: StepResult[];
  plan?: NodePlan;
  facts?: Facts;
}

function tail(text: string, n = 15): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

export async function runNodePhase(host: Host, session: RemoteSession, opts: NodePhaseOptions): Promise<NodePhaseOutcome> {
  const shell = session.shell();
  try {
    return await nodePhase(host, shell, opts);
  } finally {
    shell.close();
  }
}

async function nodePhase(host: Host, shell: RemoteShell, opts: NodePhaseOptions): Promise<NodePhaseOutcome> {
  const recorder = stepRecorder(opts.emit);
  const steps = recorder.steps;
  const record = (name: string, status: StepStatus, message: string, diff?: string): StepResult =>
    recorder.record(host.name, name, status, message, diff ? { diff } : {});
  const skipRest = (from: number, why: string) => {
    for (const name of NODE_STEPS.slice(from)) record(name, 'skipped', why);
  };

  const probe = {
    packages: packagesToProbe(),
    modules: modulesToProbe(host.settings),
    files: filesToProbe(),
    expected: convergedContents(host.settings),
    nftVersion: MODES[host.settings.mode].gate.nft !== undefined,
  };
  const script = factsScript(probe);

  // 1. facts
  let facts: Facts;
  try {
    const res = await shell.run(script);
    if (res.code !== 0) {
      record('facts', 'failed', `facts script exited ${res.code ?? res.signal}: ${tail(res.stderr || res.stdout)}`);
      skipRest(1, 'not run: facts failed');
      return { steps };
    }
    facts = parseFacts(res.stdout, probe.expected);
  } catch (e) {
    record('facts', 'failed', (e as Error).message);
    skipRest(1, 'not run: facts failed');
    return { steps };
  }
  record('facts', 'ok', describeNode(facts));

  // 2. plan
  const plan = planNode(host, facts);
  if (!plan.applicable) {
    skipRest(1, plan.skipReason!);
    return { steps, plan, facts };
  }
  if (plan.error) {
    record('preflight', 'failed', plan.error);
    skipRest(2, 'not run: the node cannot be prepared (nothing was changed)');
    return { steps, plan, facts };
  }
  record('preflight', 'ok', `${plan.family!.name} family, ${plan.packageManager!.name}; ${preflightNote(plan, facts)}`);

  if (opts.dryRun) {
    reportPlan(plan, record, true);
    record('verify', 'skipped', 'dry run: nothing was changed');
    return { steps, plan, facts };
  }
  if (planIsNoop(plan)) {
    reportPlan(plan, record, false);
    record(
      'verify',
      'ok',
      `all in place for ${plan.mode} mode: ${plan.packages.join(', ')} installed` +
        (plan.modules.length ? `, ${plan.modules.length} modules loaded or built in` : '') +
        (plan.files.length ? ', files match' : ''),
    );
    return { steps, plan, facts };
  }

  if (opts.interrupt?.requested) {
    for (const name of NODE_STEPS.slice(NODE_STEPS.indexOf('packages'))) record(name, 'skipped', `${opts.interrupt.signal}: stopped before changing this node (nothing was changed)`);
    return { steps, plan, facts };
  }

  // 3. apply, with the read-back in the same exec
  // A cut-off apply (connection lost, node powered off, script killed): the steps the node reported
  // before the cut stand as reported; the first change it did not report is where it stopped.
  const cutOff = (reported: StepLine[], why: string) => {
    const seen = new Map(reported.filter((l) => l.status !== 'ran').map((l) => [l.name, l]));
    let failed = false;
    for (const name of CHANGE_STEPS) {
      const line = seen.get(name);
      const planned = plannedStep(plan, name, false);
      if (failed) record(name, 'skipped', 'not run: an earlier step failed');
      else if (line) record(name, line.status as StepStatus, line.message, line.status === 'changed' ? fileDiff(plan, name) : undefined);
      else if (planned.status !== 'changed') record(name, planned.status, planned.message);
      else {
        record(name, 'failed', `${why} (the node may be partly changed; a rerun converges it)`);
        failed = true;
      }
    }
    record('verify', failed ? 'skipped' : 'failed', failed ? 'not run: an earlier step failed' : `${why} before the node was read back`);
  };
  // The read-back expects exactly what the plan writes, and asks only what verify compares: whether the
  // plan's modules are loaded (modprobe's own messages for any that did not load come from the apply).
  const readback = {
    ...probe,
    modules: plan.modules,
    nftVersion: false,
    probeModules: false,
    expected: Object.fromEntries(plan.files.map((f) => [f.file.path, [f.content]])),
  };
  let out;
  try {
    const res = await shell.run(applyScript(plan, factsScript(readback)));
    out = parseApplyOutput(res.stdout);
    if (out.readback === '' && res.code !== 0) {
      const why =
        res.code === null && !res.signal
          ? 'the connection to the node was lost'
          : `the apply script ended with ${res.code !== null ? `exit ${res.code}` : `signal ${res.signal}`}${res.stderr.trim() ? `: ${tail(res.stderr)}` : ''}`;
      cutOff(out.steps, why);
      return { steps, plan, facts };
    }
  } catch (e) {
    cutOff([], (e as Error).message);
    return { steps, plan, facts };
  }
  const reported = new Map(out.steps.map((s) => [s.name, s]));
  let after: Facts | undefined;
  let readbackError = '';
  try {
    after = parseFacts(out.readback, readback.expected);
  } catch (e) {
    readbackError = (e as Error).message;
  }

  for (const name of CHANGE_STEPS) {
    const line = reported.get(name);
    if (!line) {
      const planned = plannedStep(plan, name, false);
      record(name, planned.status === 'changed' ? 'failed' : planned.status, planned.status === 'changed' ? 'not reported by the node' : planned.message);
      continue;
    }
    if (name === 'modules' && line.status === 'ran') {
      const notLoaded = plan.modules.filter((m) => !(after?.modules[m]?.loaded || after?.modules[m]?.builtin));
      if (!after) record(name, 'failed', `cannot read back the modules: ${readbackError}`);
      else if (notLoaded.length > 0)
        record(name, 'failed', notLoaded.map((m) => `${m} not loaded: ${messageFor(m, line.message, after!)}`).join('; '));
      else record(name, 'changed', `loaded ${plan.load.join(', ')}`);
      continue;
    }
    record(name, line.status as StepStatus, line.message, line.status === 'changed' ? fileDiff(plan, name) : undefined);
  }
  if (steps.some((s) => s.status === 'failed')) {
    record('verify', 'skipped', 'not run: an earlier step failed');
  } else if (!after) {
    record('verify', 'failed', `cannot read the node back: ${readbackError}`);
  } else {
    const problems = verify(plan, after);
    record('verify', problems.length ? 'failed' : 'ok', problems.length ? problems.join('; ') : 'read back: packages, files and modules are in place');
  }
  return { steps, plan, facts: after ?? facts };
}

/** What the preflight found that the mode depends on, from the modes table's row. */
function preflightNote(plan: NodePlan, facts: Facts): string {
  const req = MODES[plan.mode];
  const notes: string[] = [];
  if (plan.modules.length) {
    const absent = req.optionalModules.filter((m) => !plan.modules.includes(m));
    notes.push(`modules available: ${plan.modules.join(', ')}` + (absent.length ? ` (no ${absent.join(', ')} in this kernel: not needed)` : ''));
  }
  if (req.kernelModules.length) notes.push(`${req.kernelModules.join(', ')} in the kernel`);
  if (req.gate.kernel) notes.push(`kernel ${facts.kernel}`);
  if (req.gate.nft) notes.push(facts.nftVersion ?? 'nft not installed yet');
  return notes.length
    ? `${notes.join(', ')}: ${plan.mode} mode can run here`
    : `${plan.mode} mode needs no kernel module or file from this tool`;
}

/**
 * What the mode's files hold on a node these settings converged, for every answer of the node to the
 * optional modules (planNode lists one where modprobe finds it), so that the facts of a converged node
 * confirm the files instead of carrying them. Only a guess: a file matching none is carried in full.
 */
export function convergedContents(settings: NodeSettings): ExpectedContents {
  const req = MODES[settings.mode];
  try {
    const contents: Record<string, string[]> = {};
    for (const mods of possibleModuleLists(req, settings)) {
      for (const { file, content } of modeFileContents(req, mods)) (contents[file.path] ??= []).push(content);
    }
    return contents;
  } catch {
    // module names the template refuses: the plan reports them; the facts only lose the shortcut
    return {};
  }
}

function describeNode(f: Facts): string {
  const pm = f.packageManagers[0] ?? 'no package manager';
  return `${f.os.prettyName || f.os.id}, kernel ${f.kernel}, ${pm}${f.systemd ? ', systemd' : ''}`;
}

function fileDiff(plan: NodePlan, step: string): string | undefined {
  const f = plan.files.find((x) => stepNameForFile(x.file.path) === step);
  return f?.diff || undefined;
}

/** The step results a plan implies without applying it: what a dry run shows, and what a no-op rerun reports. */
function plannedStep(plan: NodePlan, name: string, dryRun: boolean): { status: StepStatus; message: string; diff?: string } {
  const would = dryRun ? 'would ' : '';
  switch (name) {
    case 'packages':
      return plan.install.length
        ? { status: 'changed', message: `${would}install ${plan.install.join(' ')} (${plan.packageManager!.name})` }
        : { status: 'ok', message: `${plan.packages.join(', ')} already installed` };
    case 'ipvs.modules':
    case 'modules-load.d': {
      const f = plan.files.find((x) => stepNameForFile(x.file.path) === name);
      if (!f) return { status: 'skipped', message: `${plan.mode} mode needs no module file` };
      const strays = f.strays.length ? `remove ${strayNote(f.strays)}` : '';
      if (f.action === 'none') {
        return strays ? { status: 'changed', message: `${would}${strays}; ${f.file.path} is up to date` } : { status: 'ok', message: `${f.file.path} is up to date` };
      }
      const verb = { create: 'create', update: 'update', attributes: 'set' }[f.action];
      const what = f.action === 'attributes' ? `${f.attributeChanges.join(', ')} on ${f.file.path}` : f.file.path;
      return {
        status: 'changed',
        message:
          `${would}${verb} ${what}${f.action === 'update' && f.attributeChanges.length ? ` (and ${f.attributeChanges.join(', ')})` : ''}` +
          (strays ? `, and ${strays}` : ''),
        ...(f.diff ? { diff: f.diff } : {}),
      };
    }
    case 'modules':
      if (plan.modules.length === 0) return { status: 'skipped', message: `${plan.mode} mode needs no module loaded ahead (its tools load their own)` };
      return plan.load.length
        ? { status: 'changed', message: `${would}load ${plan.load.join(', ')}` }
        : { status: 'ok', message: `${plan.modules.join(', ')} loaded or built in` };
  }
  return { status: 'ok', message: '' };
}

function reportPlan(plan: NodePlan, record: (n: string, s: StepStatus, m: string, d?: string) => void, dryRun: boolean): void {
  for (const name of CHANGE_STEPS) {
    const p = plannedStep(plan, name, dryRun);
    record(name, p.status, p.message, p.diff);
  }
}

function messageFor(module: string, scriptOutput: string, after: Facts): string {
  const line = scriptOutput.split('\n').find((l) => new RegExp(`\\b${module}\\b`).test(l));
  return line?.trim() || after.modules[module]?.message || 'modprobe gave no reason';
}

/** Compare the node as read back with the plan's target state. */
export function verify(plan: NodePlan, after: Facts): string[] {
  const problems: string[] = [];
  const notInstalled = plan.packages.filter((p) => !(plan.packageNames?.[p] ?? [p]).some((n) => after.packages[n]));
  if (notInstalled.length) problems.push(`not installed: ${notInstalled.join(', ')}`);
  for (const f of plan.files) {
    const cur = after.files[f.file.path];
    if (cur?.strays?.length) problems.push(`left behind: ${cur.strays.join(', ')}`);
    if (!cur?.exists) problems.push(`${f.file.path} is missing`);
    else if (cur.content !== f.content) problems.push(`${f.file.path} content differs from the template`);
    else if (cur.mode !== f.file.mode || cur.owner !== f.file.owner || cur.group !== f.file.group)
      problems.push(`${f.file.path} has mode ${cur.mode} ${cur.owner}:${cur.group}, expected ${f.file.mode} ${f.file.owner}:${f.file.group}`);
  }
  const notLoaded = plan.modules.filter((m) => !(after.modules[m]?.loaded || after.modules[m]?.builtin));
  if (notLoaded.length) problems.push(`not loaded: ${notLoaded.join(', ')}`);
  return problems;
}
