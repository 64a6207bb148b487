import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// Templates are files under templates/ so that what lands on a node can be read and reviewed as it is.

const TEMPLATE_DIR = fileURLToPath(new URL('../../templates/', import.meta.url));
const MODULE_NAME = /^[a-z0-9_]+$/;

export function readTemplate(name: string): string {
  return readFileSync(TEMPLATE_DIR + name, 'utf8');
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
