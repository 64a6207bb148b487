import { InventoryError } from '../inventory/errors.ts';
import { loadInventory, selectTargets } from '../inventory/load.ts';
import type { Host, Inventory } from '../inventory/types.ts';
import type { KubeTarget } from '../cluster/kube.ts';
import { EXIT_CODES } from './exit-codes.ts';

// Every command starts the same way: the inventory, its warnings, the --limit'ed targets, and the
// --known-hosts override; a bad inventory or pattern is a message and an exit code, never a stack trace.

/** How the read-only commands reach the nodes and the cluster (the flags they share). */
export interface ReadAccess {
  becomePassword?: string;
  knownHosts?: string;
  kube?: KubeTarget;
  namespace?: string;
  configMap?: string;
  configKey?: string;
  out?: (line: string) => void;
  err?: (line: string) => void;
}

export type Loaded = { inv: Inventory; targets: Host[] } | { code: number };

export async function loadTargets(file: string, limit: string | undefined, err: (line: string) => void, knownHosts?: string): Promise<Loaded> {
  try {
    const inv = await loadInventory(file);
    for (const w of inv.warnings ?? []) err(`warning: ${w}`);
    const targets = selectTargets(inv, limit);
    if (knownHosts) for (const h of inv.hosts) h.run.knownHostsFile = knownHosts;
    return { inv, targets };
  } catch (e) {
    if (e instanceof InventoryError) {
      err(e.message);
      return { code: EXIT_CODES.inventory };
    }
    if ((e as Error).name === 'LimitError') {
      err((e as Error).message);
      return { code: EXIT_CODES.usage };
    }
    throw e;
  }
}
