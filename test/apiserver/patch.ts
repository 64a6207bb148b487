import { isDeepStrictEqual } from 'node:util';
import { errors } from './status.ts';

// The three JSON patch formats kube-apiserver takes. Strategic merge patch only differs from a merge patch
// on lists whose schema names a merge key; ConfigMaps and Leases have none, so it is applied as one here.

export const PATCH_TYPES = ['application/json-patch+json', 'application/merge-patch+json', 'application/strategic-merge-patch+json'] as const;

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const isObject = (v: unknown): v is Record<string, Json> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** RFC 7386 */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

interface Op {
  op: string;
  path: string;
  value?: unknown;
  from?: string;
}

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw errors.unprocessable(`JSON pointer must be empty or start with a "/": ${path}`);
  return path
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parentOf(doc: unknown, parts: string[], op: string, path: string): { container: Record<string, unknown> | unknown[]; key: string } {
  let cur: unknown = doc;
  for (const p of parts.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObject(cur)) cur = cur[p];
    else cur = undefined;
    if (cur === undefined) throw errors.unprocessable(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
  }
  if (!Array.isArray(cur) && !isObject(cur)) throw errors.unprocessable(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
  return { container: cur as Record<string, unknown> | unknown[], key: parts[parts.length - 1]! };
}

function getAt(doc: unknown, path: string, op: string): unknown {
  let cur: unknown = doc;
  for (const p of pointer(path)) {
    if (Array.isArray(cur)) cur = cur[Number(p)];
    else if (isObject(cur)) cur = Object.prototype.hasOwnProperty.call(cur, p) ? cur[p] : undefined;
    else cur = undefined;
    if (cur === undefined) throw errors.unprocessable(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
  }
  return cur;
}

function removeAt(doc: unknown, path: string, op: string): unknown {
  const { container, key } = parentOf(doc, pointer(path), op, path);
  if (Array.isArray(container)) {
    const i = Number(key);
    if (!Number.isInteger(i) || i < 0 || i >= container.length) throw errors.unprocessable(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
    return container.splice(i, 1)[0];
  }
  if (!Object.prototype.hasOwnProperty.call(container, key)) throw errors.unprocessable(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
  const v = container[key];
  delete container[key];
  return v;
}

function addAt(doc: unknown, path: string, value: unknown, op: string): unknown {
  if (path === '') return structuredClone(value);
  const { container, key } = parentOf(doc, pointer(path), op, path);
  if (Array.isArray(container)) {
    const i = key === '-' ? container.length : Number(key);
    if (!Number.isInteger(i) || i < 0 || i > container.length) throw errors.unprocessable(`${op} operation does not apply: doc is missing path: "${path}": missing value`);
    container.splice(i, 0, structuredClone(value));
  } else container[key] = structuredClone(value);
  return doc;
}

/** RFC 6902, with the error texts of the library kube-apiserver uses. */
export function jsonPatch(doc: unknown, patch: unknown): unknown {
  if (!Array.isArray(patch)) throw errors.badRequest(`json: cannot unmarshal ${isObject(patch) ? 'object' : typeof patch} into Go value of type jsonpatch.Patch`);
  let out = structuredClone(doc);
  for (const raw of patch as Op[]) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') throw errors.badRequest('json: cannot unmarshal into Go value of type jsonpatch.Operation');
    const { op, path } = raw;
    switch (op) {
      case 'add':
        out = addAt(out, path, raw.value, op);
        break;
      case 'remove':
        removeAt(out, path, op);
        break;
      case 'replace':
        if (path === '') out = structuredClone(raw.value);
        else {
          removeAt(out, path, op);
          out = addAt(out, path, raw.value, op);
        }
        break;
      case 'move': {
        const v = removeAt(out, String(raw.from), op);
        out = addAt(out, path, v, op);
        break;
      }
      case 'copy':
        out = addAt(out, path, getAt(out, String(raw.from), op), op);
        break;
      case 'test': {
        let actual: unknown;
        try {
          actual = getAt(out, path, op);
        } catch {
          actual = undefined;
        }
        if (!isDeepStrictEqual(actual, raw.value)) throw errors.unprocessable(`testing value ${path} failed: test failed`);
        break;
      }
      default:
        throw errors.unprocessable(`Unexpected kind: ${op}`);
    }
  }
  return out;
}
