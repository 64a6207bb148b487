import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Templates are files under templates/ so that what lands on a node can be read and reviewed as it is.

const TEMPLATE_DIR = fileURLToPath(new URL('../../templates/', import.meta.url));
const MODULE_NAME = /^[a-z0-9_]+$/;

// A plan renders the same templates for every host and every module list it weighs; they do not change
// while the tool runs, so each is read from disk once.
const cache = new Map<string, string>();

export function readTemplate(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = readFileSync(TEMPLATE_DIR + name, 'utf8');
    cache.set(name, text);
  }
  return text;
}

/** Render a module-list template: each line holding `{{module}}` is repeated for every module. */
export function renderModuleTemplate(template: string, modules: string[]): string {
  for (const m of modules) {
    if (!MODULE_NAME.test(m)) throw new Error(`invalid kernel module name ${JSON.stringify(m)}`);
  }
  const out: string[] = [];
  for (const line of template.split('\n')) {
    if (line.includes('{{module}}')) {
      for (const m of modules) out.push(line.replaceAll('{{module}}', m));
    } else {
      out.push(line);
    }
  }
  return out.join('\n');
}
