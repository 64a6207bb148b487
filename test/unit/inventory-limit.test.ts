import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { InventoryError, LimitError } from '../../tasks/inventory/errors.ts';
import { loadInventory, parseInventoryText } from '../../tasks/inventory/load.ts';
import { fnmatchRegExp, splitPatterns } from '../../tasks/inventory/limit.ts';
import { selectTargets } from '../../tasks/inventory/resolve.ts';
import type { Inventory } from '../../tasks/inventory/types.ts';

const GOOD = path.join(import.meta.dirname, '../fixtures/inventory/good');

// kubespray.yaml: node1-3 control plane (+ etcd), node4-6 workers, rr1 in calico_rr (all three in
// k8s_cluster), bastion outside k8s_cluster.
let inv: Inventory;
beforeAll(async () => {
  inv = await loadInventory(path.join(GOOD, 'kubespray.yaml'));
});

const names = (limit?: string, opts?: Parameters<typeof selectTargets>[2]): string[] =>
  selectTargets(inv, limit, opts).map((h) => h.name);

function limitError(limit: string, opts?: Parameters<typeof selectTargets>[2]): LimitError {
  try {
    selectTargets(inv, limit, opts);
  } catch (e) {
    expect(e).toBeInstanceOf(LimitError);
    expect(e).not.toBeInstanceOf(InventoryError); // a usage error, not a broken inventory
    return e as LimitError;
  }
  throw new Error(`--limit ${limit} did not fail`);
}

describe('default targets', () => {
  it('are the hosts of k8s_cluster when that group exists', () => {
    expect(names()).toEqual(['node1', 'node2', 'node3', 'node4', 'node5', 'node6', 'rr1']);
    expect(names('')).toEqual(names());
  });

  it('are every host otherwise', () => {
    const plain = parseInventoryText('[web]\nw1\n[db]\nd1\n', '/inv/hosts.ini');
    expect(selectTargets(plain).map((h) => h.name)).toEqual(['w1', 'd1']);
  });

  it('an empty k8s_cluster is an error, not a silent no-op', () => {
    const empty = parseInventoryText('[k8s_cluster]\n[other]\nnode1\n', '/inv/hosts.ini');
    expect(() => selectTargets(empty)).toThrow('group k8s_cluster has no hosts, so there is nothing to work on');
  });
});

describe('--limit', () => {
  it('a host name', () => {
    expect(names('node2')).toEqual(['node2']);
  });

  it('a group name', () => {
    expect(names('kube_node')).toEqual(['node4', 'node5', 'node6']);
    expect(names('etcd')).toEqual(['node1', 'node2', 'node3']);
  });

  it('several patterns (comma or colon), result in inventory order', () => {
    expect(names('node5,node1')).toEqual(['node1', 'node5']);
    expect(names('node5:node1')).toEqual(['node1', 'node5']);
    expect(names(' calico_rr , node3 ')).toEqual(['node3', 'rr1']);
  });

  it('globs over host and group names', () => {
    expect(names('node*')).toEqual(['node1', 'node2', 'node3', 'node4', 'node5', 'node6']);
    expect(names('node[1-3]')).toEqual(['node1', 'node2', 'node3']);
    expect(names('node[!1-4]')).toEqual(['node5', 'node6']);
    expect(names('kube_*')).toEqual(['node1', 'node2', 'node3', 'node4', 'node5', 'node6']);
    expect(names('?r1')).toEqual(['rr1']);
  });

  it('a regular expression with ~', () => {
    expect(names('~node[45]')).toEqual(['node4', 'node5']);
  });

  it('exclusion with !', () => {
    expect(names('kube_node:!node5')).toEqual(['node4', 'node6']);
    expect(names('!kube_control_plane')).toEqual(['node4', 'node5', 'node6', 'rr1']); // start from all
    expect(names('all,!node*')).toEqual(['rr1']);
  });

  it('intersection with &', () => {
    expect(names('etcd:&kube_control_plane')).toEqual(['node1', 'node2', 'node3']);
    expect(names('node*,&kube_node,!node6')).toEqual(['node4', 'node5']);
  });

  it('applies plain patterns, then &, then ! whatever the order written', () => {
    expect(names('!node1,&etcd,all')).toEqual(['node2', 'node3']);
  });

  it('@file: one pattern per line, blank lines and comments ignored, relative to cwd', () => {
    expect(names('@limit-list.txt', { cwd: GOOD })).toEqual(['node2', 'node5']);
    expect(names('@limit-list.txt,node1', { cwd: GOOD })).toEqual(['node1', 'node2', 'node5']);
  });

  it('@file: an Ansible .retry file', () => {
    const files: Record<string, string> = { '/work/site.retry': 'node3\nnode6\n' };
    const readFile = (p: string): string => {
      const text = files[p];
      if (text === undefined) throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
      return text;
    };
    expect(names('@site.retry', { cwd: '/work', readFile })).toEqual(['node3', 'node6']);
    expect(limitError('@missing.retry', { cwd: '/work', readFile }).message).toBe("--limit: cannot read '@missing.retry' (no such file)");
  });

  it('a pattern that matches nothing is an error naming it', () => {
    expect(limitError('nodeX').message).toBe("--limit: no host or group matches 'nodeX'");
    expect(limitError('node1,!nodeY').message).toBe("--limit: no host or group matches 'nodeY'");
    expect(limitError('zz*').message).toBe("--limit: no host or group matches 'zz*'");
  });

  it('collects every bad pattern', () => {
    const e = limitError('nodeX,node1,nodeY');
    expect(e.message).toBe("--limit: no host or group matches 'nodeX'\n--limit: no host or group matches 'nodeY'");
    expect(e.problems.map((p) => p.message)).toHaveLength(2);
  });

  it('a host outside k8s_cluster is not a target', () => {
    expect(limitError('bastion').message).toBe("--limit: host 'bastion' is not a target (targets are the hosts of group k8s_cluster)");
    expect(limitError('ungrouped').message).toBe("--limit: 'ungrouped' matches no target host (targets are the hosts of group k8s_cluster)");
    // a pattern that also matches targets just narrows
    expect(names('all')).toEqual(names());
  });

  it('an empty group, a result with nothing left, and a bad regex are errors', () => {
    const withEmpty = parseInventoryText('[k8s_cluster]\nnode1\n[calico_rr]\n', '/inv/hosts.ini');
    expect(() => selectTargets(withEmpty, 'calico_rr')).toThrow("--limit: group 'calico_rr' has no hosts");
    expect(limitError('node1,!node1').message).toBe("--limit: 'node1,!node1' leaves no hosts to work on");
    expect(limitError('~node[').message).toBe("--limit: '~node[' is not a valid regular expression");
    expect(limitError('node1,!').message).toBe('--limit: empty pattern after "!" or "&"');
  });
});

describe('pattern helpers', () => {
  it('split like Ansible', () => {
    expect(splitPatterns('a,b:c')).toEqual(['a', 'b:c']);
    expect(splitPatterns('a:b:!c')).toEqual(['a', 'b', '!c']);
    expect(splitPatterns('node[1:3]:x')).toEqual(['node[1:3]', 'x']);
  });

  it('fnmatch', () => {
    expect(fnmatchRegExp('a.b*').test('a.bcd')).toBe(true);
    expect(fnmatchRegExp('a.b*').test('axbcd')).toBe(false);
    expect(fnmatchRegExp('n[!0-4]').test('n5')).toBe(true);
    expect(fnmatchRegExp('n[!0-4]').test('n3')).toBe(false);
    expect(fnmatchRegExp('n[').test('n[')).toBe(true);
  });
});
