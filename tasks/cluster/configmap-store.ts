import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { KubeError, type KubeClient } from './kube.ts';

// Writing the kube-proxy ConfigMap safely: always with the resourceVersion that was read, so a change made
// meanwhile by someone else answers 409 instead of being overwritten; then re-read, re-apply the same edit
// on top of their change, and try again, a bounded number of times.

export const MAX_CONFLICT_RETRIES = 5;

export interface ConfigMapRef {
  namespace: string;
  name: string;
}

export type DataEdit = (data: Record<string, string>) => Record<string, string> | null;

export interface WriteOutcome {
  written: boolean;
  conflicts: number;
  /** the object as written (or as read, when nothing changed) */
  object: V1ConfigMap;
}

/** Apply `edit` to the ConfigMap's data; `null` from the edit means "already as wanted": no write. */
export async function updateConfigMap(kube: KubeClient, ref: ConfigMapRef, edit: DataEdit): Promise<WriteOutcome> {
  let conflicts = 0;
  for (;;) {
    const cm = await kube.readConfigMap(ref.namespace, ref.name);
    const next = edit({ ...(cm.data ?? {}) });
    if (next === null) return { written: false, conflicts, object: cm };
    cm.data = next;
    try {
      const written = await kube.replaceConfigMap(cm);
      return { written: true, conflicts, object: written };
    } catch (e) {
      if (e instanceof KubeError && e.code === 409 && conflicts < MAX_CONFLICT_RETRIES) {
        conflicts++;
        continue;
      }
      if (e instanceof KubeError && e.code === 409) {
        throw new KubeError(`ConfigMap ${ref.namespace}/${ref.name} kept changing under us (${conflicts + 1} conflicts in a row); nothing was written`, 409, 'Conflict');
      }
      throw e;
    }
  }
}

/** Save the ConfigMap as read, before the first write, so it can be restored by hand or by rollback. */
export function writeBackup(dir: string, cm: V1ConfigMap, now = new Date()): string {
  const stamp = now.toISOString().replace(/[:.]/g, '-');
  const path = join(dir, `${cm.metadata?.name ?? 'configmap'}-configmap-backup-${stamp}.yaml`);
  const { managedFields: _drop, ...metadata } = cm.metadata ?? {};
  const object = { apiVersion: 'v1', kind: 'ConfigMap', ...cm, metadata };
  const text = `# Backup of ConfigMap ${metadata.namespace}/${metadata.name} (resourceVersion ${metadata.resourceVersion}) taken by kube-proxy-mode before changing it.\n# Restore the data with: kubectl -n ${metadata.namespace} replace -f <this file> (after removing resourceVersion), or rerun with --mode <old mode>.\n${stringify(object)}`;
  // Created here, never reused: a file or link already at this name (in a shared directory) would keep
  // its own mode or send the backup elsewhere.
  try {
    writeFileSync(path, text, { mode: 0o600, flag: 'wx' });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`cannot write the ConfigMap backup ${path} (${code === 'EEXIST' ? 'something is already there' : (code ?? (e as Error).message)}); the ConfigMap was not changed`);
  }
  return path;
}
