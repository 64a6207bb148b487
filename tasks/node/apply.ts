import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { shQuote } from '../remote/quote.ts';
import { decodePayload } from './facts.ts';
import type { NodePlan } from './plan.ts';

// Turns a node plan into the one bash script that applies it, followed by a read-back of the node with
// the same facts script the plan was made from (so verify compares like with like).

const LIBRARY = readFileSync(fileURLToPath(new URL('./apply.sh', import.meta.url)), 'utf8');

export const READBACK_MARKER = '@@kpm:readback';

export interface StepLine {
  name: string;
  status: string;
  message: string;
}

export interface ApplyOutput {
  steps: StepLine[];
  /** the facts script's output after the changes */
  readback: string;
}

function step(name: string, body: string): string {
  return `if kpm_go ${shQuote(name)}; then\n${body}\nfi\n`;
}

export function applyScript(plan: NodePlan, factsScript: string): string {
  let s = LIBRARY + '\n';
  const pm = plan.packageManager!;
  if (plan.install.length > 0) {
    const install = pm.install(plan.install, plan.packageLockTimeoutS);
    // A package "not found" on a node whose package lists are empty or stale is the normal first-run case
    // on fresh cloud images: refresh the lists once and try again.
    const retry = pm.refresh ? ` || { ${pm.refresh} && ${install}; }` : '';
    s += step(
      'packages',
      `if { ${install}${retry}; } >>"$KPM_LOG" 2>&1; then kpm_report packages changed ${shQuote(`installed ${plan.install.join(' ')}`)}; ` +
        `else kpm_tail; kpm_fail packages "${pm.name} could not install ${plan.install.join(' ')}: $KPM_TAIL"; fi`,
    );
  }
  for (const f of plan.files) {
    if (f.action === 'none' && f.strays.length === 0) continue;
    const name = stepNameForFile(f.file.path);
    const owner = `${f.file.owner}:${f.file.group}`;
    const msg = [
      f.action === 'none' ? '' : f.action === 'attributes' ? `set ${f.attributeChanges.join(', ')}` : `${f.action === 'create' ? 'created' : 'updated'} ${f.file.path}`,
      f.strays.length ? `removed ${strayNote(f.strays)}` : '',
    ].filter(Boolean).join('; ');
    const write =
      f.action === 'none'
        ? []
        : f.action === 'attributes'
          ? [`kpm_attrs ${shQuote(f.file.path)} ${shQuote(f.file.mode)} ${shQuote(owner)}`]
          : [`kpm_put ${shQuote(f.file.path)} ${shQuote(f.file.mode)} ${shQuote(owner)} ${shQuote(f.content)}`];
    const cmd = [...(f.strays.length ? [`rm -f -- ${f.strays.map(shQuote).join(' ')}`] : []), ...write].join(' && ');
    s += step(
      name,
      `if ${cmd} >>"$KPM_LOG" 2>&1; then kpm_report ${shQuote(name)} changed ${shQuote(msg)}; ` +
        `else kpm_tail; kpm_fail ${shQuote(name)} "cannot write ${f.file.path}: $KPM_TAIL"; fi`,
    );
  }
  if (plan.load.length > 0) {
    const script = plan.files.find((f) => f.file.template === 'ipvs.modules')!.file.path;
    // Whether each module really loaded is judged from the read-back; the script's output carries
    // modprobe's own messages for the ones that did not.
    s += step('modules', `bash -- ${shQuote(script)} >>"$KPM_LOG" 2>&1; kpm_tail; kpm_report modules ran "$KPM_TAIL"`);
  }
  s += `printf '%s\\n' ${shQuote(READBACK_MARKER)}\n`;
  // a subshell of this bash, not a new one (no exec, no second parse of the library), in the state the
  // facts script expects of a fresh shell: its exit ends only the subshell
  s += `(\nset +u\n${factsScript}\n)\n`;
  return s;
}

/** "the temporary file(s) P of a write that was cut off" */
export function strayNote(strays: string[]): string {
  return `the temporary file${strays.length > 1 ? 's' : ''} ${strays.join(', ')} of a write that was cut off`;
}

export function stepNameForFile(path: string): string {
  return path.endsWith('.modules') ? 'ipvs.modules' : 'modules-load.d';
}

export function parseApplyOutput(stdout: string): ApplyOutput {
  const at = stdout.indexOf(READBACK_MARKER + '\n');
  const head = at >= 0 ? stdout.slice(0, at) : stdout;
  const steps: StepLine[] = [];
  for (const line of head.split('\n')) {
    const m = /^@@kpm:step (\S+) (\S+) (.*)$/.exec(line);
    if (m) steps.push({ name: m[1]!, status: m[2]!, message: decodeMessage(m[3]!) });
  }
  return { steps, readback: at >= 0 ? stdout.slice(at + READBACK_MARKER.length + 1) : '' };
}

function decodeMessage(value: string): string {
  try {
    return decodePayload(value, 'step message').toString('utf8');
  } catch {
    // a line cut short: what arrived says more than nothing
    return value;
  }
}
