// Raw tree (+ the group_vars/host_vars files next to it) -> the resolved Inventory (types.ts): every
// assignment checked against the schema where it is written, groups and membership worked out,
// variables merged with Ansible's precedence, defaults filled in.
//
// Precedence, lowest to highest. This is the inventory part of Ansible's documented order
// ("Variable precedence: Where should I put a variable?", docs.ansible.com, Using Variables:
// "inventory file or script group vars < inventory group_vars/all < inventory group_vars/* <
// inventory file or script host vars < inventory host_vars/*"), which VariableManager implements
// by merging all_inventory, groups_inventory, all_plugins_inventory, groups_plugins_inventory, then
// the host's inventory vars and its vars-plugin (host_vars) files:
//   1. inventory-file group vars, group by group in Ansible's group order (below), `all` first
//   2. group_vars/all
//   3. group_vars/<group>, in the same group order
//   4. inventory-file host vars; a host declared in several places merges them in file order
//   5. host_vars/<host>
// Group order: sorted by (depth, ansible_group_priority, name). depth = the longest path from `all`
// (all = 0; its children 1; their children 2 ...), so a child group beats its parent, and among
// groups at the same depth the one whose name sorts last wins (same priority). Only the inventory
// file's ansible_group_priority counts (Ansible sorts before it reads any vars file). Within one
// place (a group's vars, one vars file), later assignments win; a group_vars/<group>/ directory's
// files load in name order, later files winning.
// Legacy aliases (ansible_ssh_host/_port/_user) merge as their modern name, so a host-level
// ansible_ssh_port beats a group-level ansible_port.

import type { Connection, Host, Inventory, NodeSettings, ProxyMode, RunSettings } from './types.ts';
import { formatProblem, InventoryError, type Problem } from './errors.ts';
import type { RawChildRef, RawInventory, RawVar } from './raw.ts';
import { checkVar, defaultOf, expandPath, isDnsName, isIpAddress, localUser, type VarSite } from './schema.ts';
import type { VarsDirs } from './vars-dirs.ts';

export { selectTargets } from './limit.ts';

/**
 * Variable assignments all hosts get together, each host counting every variable of every group it
 * is in: a real cluster's 5,000 nodes with kubespray's few hundred group variables stay well below.
 */
export const MAX_RESOLVED_ASSIGNMENTS = 5_000_000;

export interface ResolveOptions {
  /** directory relative paths in the inventory are resolved against (the inventory file's) */
  baseDir: string;
  /** the group_vars/ and host_vars/ files read for this inventory (load.ts reads them) */
  varsDirs?: VarsDirs;
}

interface TypedVar {
  name: string;
  value: unknown;
  line: number;
  key: string;
  /** the name as written (to spot `ansible_port` and `ansible_ssh_port` both set in one place) */
  written: string;
}

interface GroupInfo {
  name: string;
  line: number;
  children: string[];
  parents: Set<string>;
  vars: TypedVar[];
}

interface HostInfo {
  name: string;
  line: number;
  key: string;
  vars: TypedVar[];
  direct: Set<string>;
}

const IPVS_TIMEOUTS = [
  ['kube_proxy_tcp_timeout', 'tcpTimeout'],
  ['kube_proxy_tcp_fin_timeout', 'tcpFinTimeout'],
  ['kube_proxy_udp_timeout', 'udpTimeout'],
] as const;

export function resolveInventory(raw: RawInventory, opts: ResolveOptions): Inventory {
  const file = raw.file;
  const problems: Problem[] = [...raw.problems];
  const add = (line: number, key: string, message: string): void => {
    problems.push({ file, line, key, message });
  };
  if (raw.fatal) throw new InventoryError(problems);
  const ini = raw.format === 'ini';
  const varsDirs = opts.varsDirs;
  // Problems in group_vars/host_vars files come after the inventory file's, file by file.
  const fileProblems: Problem[] = [...(varsDirs?.problems ?? [])];
  const warnings: string[] = [...(varsDirs?.warnings ?? [])];
  const allProblems = (): Problem[] => [...problems, ...fileProblems];

  // 1. Check every assignment where it is written.
  const checkBlock = (vars: RawVar[], site: VarSite, where?: { file: string; problems: Problem[] }): TypedVar[] => {
    const report = (line: number, key: string, message: string): void => {
      if (where) where.problems.push({ file: where.file, line, key, message });
      else add(line, key, message);
    };
    const out: TypedVar[] = [];
    const seen = new Map<string, TypedVar>();
    for (const v of vars) {
      const r = checkVar(v, site, where ? false : ini);
      if (r.ok === 'ignored') {
        if (r.warning) warnings.push(formatProblem({ file: where?.file ?? file, ...r.warning }));
        continue;
      }
      if (!r.ok) {
        for (const p of r.problems) report(p.line, p.key, p.message);
        continue;
      }
      const prev = seen.get(r.name);
      if (prev && prev.written !== v.name) {
        report(v.line, v.key, `${v.name} and ${prev.written} (line ${prev.line}) are the same variable; set only ${r.name}`);
        continue;
      }
      const t: TypedVar = { name: r.name, value: r.value, line: v.line, key: v.key, written: v.name };
      seen.set(r.name, t);
      out.push(t);
    }
    return out;
  };

  // 2. Groups, merged over their declarations.
  const groups = new Map<string, GroupInfo>();
  const ensureGroup = (name: string, line: number): GroupInfo => {
    let g = groups.get(name);
    if (!g) {
      g = { name, line, children: [], parents: new Set(), vars: [] };
      groups.set(name, g);
    }
    return g;
  };
  ensureGroup('all', 0);
  ensureGroup('ungrouped', 0);
  const childRefs = new Map<string, RawChildRef>(); // "parent>child" -> first declaration

  interface HostDecl {
    name: string;
    line: number;
    key: string;
    vars: TypedVar[];
    group: string;
    seq: number;
  }
  const hostDecls: HostDecl[] = [];
  let seq = 0;

  for (const decl of raw.groups) {
    const g = ensureGroup(decl.name, decl.line);
    if (g.line === 0) g.line = decl.line;
    for (const v of checkBlock(decl.vars, { kind: 'group', group: decl.name })) g.vars.push(v);
    for (const ref of decl.children) {
      if (ref.name === 'all') {
        add(ref.line, ref.key, 'group all contains every group; it cannot be the child of another group');
        continue;
      }
      const child = ensureGroup(ref.name, ref.line);
      if (!g.children.includes(ref.name)) {
        g.children.push(ref.name);
        childRefs.set(`${decl.name}>${ref.name}`, ref);
      }
      child.parents.add(decl.name);
    }
    const firstInDecl = new Map<string, number>();
    for (const h of decl.hosts) {
      const vars = checkBlock(h.vars, { kind: 'host' });
      for (const name of h.names) {
        const first = firstInDecl.get(name);
        if (first !== undefined) {
          add(h.line, h.key, `host ${JSON.stringify(name)} is declared twice in this group (first on line ${first})`);
          continue;
        }
        firstInDecl.set(name, h.line);
        hostDecls.push({ name, line: h.line, key: h.key, vars, group: decl.name, seq: seq++ });
      }
    }
  }

  // 3. Hosts, in file order (a host in several groups is one host; its variables merge in file order).
  hostDecls.sort((a, b) => a.line - b.line || a.seq - b.seq);
  const hosts = new Map<string, HostInfo>();
  for (const d of hostDecls) {
    let h = hosts.get(d.name);
    if (!h) {
      h = { name: d.name, line: d.line, key: d.key, vars: [], direct: new Set() };
      hosts.set(d.name, h);
    }
    for (const v of d.vars) h.vars.push(v);
    h.direct.add(d.group);
  }
  for (const h of hosts.values()) {
    if (groups.has(h.name)) {
      add(h.line, h.key, `${JSON.stringify(h.name)} is both a host and a group; rename one (a --limit pattern could not tell them apart)`);
    }
  }

  // 3b. group_vars/ and host_vars/ files of the groups and hosts this inventory has, each checked once.
  const groupFileVars = new Map<string, TypedVar[]>();
  const hostFileVars = new Map<string, TypedVar[]>();
  const checkFiles = (
    files: VarsDirs['groups'],
    known: (name: string) => boolean,
    site: (name: string) => VarSite,
    into: Map<string, TypedVar[]>,
  ): void => {
    for (const [name, list] of files) {
      if (!known(name)) continue;
      const typed: TypedVar[] = [];
      for (const f of list) {
        const where = { file: f.file, problems: [...f.problems] };
        for (const v of checkBlock(f.vars, site(name), where)) typed.push(v);
        for (const p of where.problems) fileProblems.push(p);
      }
      into.set(name, typed);
    }
  };
  if (varsDirs) {
    checkFiles(varsDirs.groups, (g) => groups.has(g), (g) => ({ kind: 'group', group: g, varsFile: true }), groupFileVars);
    checkFiles(varsDirs.hosts, (h) => hosts.has(h), () => ({ kind: 'host', varsFile: true }), hostFileVars);
  }

  // 4. Cycles in children.
  const cycles = findCycles(groups);
  for (const cycle of cycles) {
    const parent = cycle[cycle.length - 2]!;
    const child = cycle[cycle.length - 1]!;
    const ref = childRefs.get(`${parent}>${child}`);
    add(ref?.line ?? 0, ref?.key ?? child, `group ${JSON.stringify(child)} contains itself: ${cycle.join(' -> ')}`);
  }

  if (hosts.size === 0 && problems.length === 0) {
    add(raw.groups[0]?.line ?? 1, '', 'expected at least one host; this inventory declares none');
  }
  // With a cycle there is no precedence order; otherwise go on, to find the problems that only show
  // once variables are merged (a host name that is no address and no ansible_host anywhere).
  if (problems.length > 0 && (cycles.length > 0 || hosts.size === 0)) throw new InventoryError(allProblems());

  // 5. Groups without a parent are children of all (Ansible: top-level groups, INI sections).
  const all = groups.get('all')!;
  for (const g of groups.values()) {
    if (g.name !== 'all' && g.parents.size === 0) {
      g.parents.add('all');
      all.children.push(g.name);
    }
  }

  // 6. Depth (longest path from all) and priority, for the precedence order.
  const depthMemo = new Map<string, number>();
  const depth = (name: string): number => {
    if (name === 'all') return 0;
    const known = depthMemo.get(name);
    if (known !== undefined) return known;
    let d = 0;
    for (const p of groups.get(name)!.parents) d = Math.max(d, depth(p) + 1);
    depthMemo.set(name, d);
    return d;
  };
  const priorities = new Map<string, number>();
  for (const g of groups.values()) {
    let p = 1;
    for (const v of g.vars) if (v.name === 'ansible_group_priority') p = v.value as number;
    priorities.set(g.name, p);
  }
  const priority = (name: string): number => priorities.get(name)!;
  const precedence = (a: string, b: string): number =>
    depth(a) - depth(b) || priority(a) - priority(b) || (a < b ? -1 : a > b ? 1 : 0);

  // 7. Membership: direct groups and their ancestors; hosts in no group but all are in ungrouped.
  const ancestorsMemo = new Map<string, Set<string>>();
  const ancestors = (name: string): Set<string> => {
    let s = ancestorsMemo.get(name);
    if (!s) {
      s = new Set([name]);
      for (const p of groups.get(name)!.parents) for (const a of ancestors(p)) s.add(a);
      ancestorsMemo.set(name, s);
    }
    return s;
  };
  const membership = new Map<string, Set<string>>();
  for (const h of hosts.values()) {
    const m = new Set<string>(['all']);
    for (const g of h.direct) for (const a of ancestors(g)) m.add(a);
    const onlyAll = [...m].every((g) => g === 'all' || g === 'ungrouped');
    if (onlyAll) m.add('ungrouped');
    else m.delete('ungrouped');
    membership.set(h.name, m);
  }

  // 7b. Every host gets its own copy of the variables of each of its groups: a few lines can multiply
  // into more than any real inventory holds (10,000 hosts in a group with 5,000 variables).
  const groupVarCount = new Map<string, number>();
  for (const g of groups.values()) groupVarCount.set(g.name, g.vars.length + (groupFileVars.get(g.name)?.length ?? 0));
  let assignments = 0;
  for (const h of hosts.values()) {
    assignments += h.vars.length + (hostFileVars.get(h.name)?.length ?? 0);
    for (const g of membership.get(h.name)!) assignments += 1 + groupVarCount.get(g)!;
  }
  if (assignments > MAX_RESOLVED_ASSIGNMENTS) {
    const n = (x: number) => x.toLocaleString('en-US');
    add(
      0,
      '',
      `expected at most ${n(MAX_RESOLVED_ASSIGNMENTS)} variable assignments over all hosts (a host counts each variable of ` +
        `each of its groups); this inventory's ${n(hosts.size)} hosts get ${n(assignments)} (is it the right file?)`,
    );
    throw new InventoryError(allProblems());
  }

  // 8. Hosts. Hosts in the same groups share the merge of those groups' variables.
  const baseDir = opts.baseDir;
  let user: string | undefined;
  const resolved: Host[] = [];
  const groupLayers = new Map<string, { order: string[]; vars: Map<string, unknown> }>();
  for (const h of hosts.values()) {
    const memberOf = [...membership.get(h.name)!];
    const layerKey = memberOf.join('\n');
    let layer = groupLayers.get(layerKey);
    if (!layer) {
      const order = memberOf.sort(precedence);
      const vars = new Map<string, unknown>();
      for (const g of order) {
        for (const v of groups.get(g)!.vars) if (v.name !== 'ansible_group_priority') vars.set(v.name, v.value);
      }
      for (const g of order) for (const v of groupFileVars.get(g) ?? []) vars.set(v.name, v.value);
      layer = { order, vars };
      groupLayers.set(layerKey, layer);
    }
    const hostGroups = [...layer.order];
    const merged = new Map(layer.vars);
    for (const v of h.vars) merged.set(v.name, v.value);
    for (const v of hostFileVars.get(h.name) ?? []) merged.set(v.name, v.value);
    const get = <T>(name: string): T => (merged.has(name) ? merged.get(name) : defaultOf(name)) as T;

    if (!merged.has('ansible_host') && !isIpAddress(h.name) && !isDnsName(h.name)) {
      add(h.line, h.key, `host name ${JSON.stringify(h.name)} is not an IP address or DNS host name to connect to; set ansible_host`);
    }
    const loginUser = merged.has('ansible_user') ? (merged.get('ansible_user') as string) : (user ??= localUser());
    const becomeUser = get<string>('ansible_become_user');
    const connection: Connection = {
      address: merged.has('ansible_host') ? (merged.get('ansible_host') as string) : h.name,
      port: get<number>('ansible_port'),
      user: loginUser,
      // Every step of this tool needs root. kubespray's playbooks set `become: true` themselves, so its
      // inventories rarely say ansible_become: unset, it follows from logging in as someone else.
      become: merged.has('ansible_become') ? get<boolean>('ansible_become') : loginUser !== becomeUser,
      becomeUser,
    };
    const keyFile = merged.get('ansible_ssh_private_key_file');
    if (typeof keyFile === 'string') connection.privateKeyFile = expandPath(keyFile, baseDir);

    const settings: NodeSettings = {
      mode: get<ProxyMode>('kube_proxy_mode'),
      scheduler: get<string>('kube_proxy_scheduler'),
      strictArp: get<boolean>('kube_proxy_strict_arp'),
      excludeCidrs: [...get<string[]>('kube_proxy_exclude_cidrs')],
      ipvsModules: get<string[] | null>('kube_proxy_ipvs_modules'),
    };
    if (settings.ipvsModules) settings.ipvsModules = [...settings.ipvsModules];
    const probes = get<string[]>('kube_proxy_probe_services');
    if (probes.length) settings.probeServices = [...probes];
    // Unset stays absent (not 0s): the cluster phase then leaves the ConfigMap's value alone.
    for (const [name, field] of IPVS_TIMEOUTS) {
      const value = get<string | null | undefined>(name);
      if (typeof value === 'string') settings[field] = value;
    }

    const run: RunSettings = {
      forks: get<number>('kpm_forks'),
      connectTimeout: get<number>('kpm_connect_timeout'),
      connectRetries: get<number>('kpm_connect_retries'),
      commandTimeout: get<number>('kpm_command_timeout'),
      packageLockTimeout: get<number>('kpm_package_lock_timeout'),
      knownHostsFile: expandPath(get<string>('kpm_known_hosts_file'), baseDir),
    };

    resolved.push({
      name: h.name,
      groups: hostGroups,
      connection,
      settings,
      run,
      vars: Object.fromEntries(merged),
      source: { file, line: h.line },
    });
  }

  if (problems.length > 0 || fileProblems.length > 0) throw new InventoryError(allProblems());

  // 9. Group -> hosts (transitively), in inventory order.
  const groupHosts = new Map<string, string[]>();
  for (const g of groups.keys()) groupHosts.set(g, []);
  for (const h of resolved) for (const g of membership.get(h.name)!) groupHosts.get(g)!.push(h.name);
  const inv: Inventory = { file, hosts: resolved, groups: Object.fromEntries(groupHosts) };
  if (warnings.length > 0) inv.warnings = warnings;
  return inv;
}

/** Each cycle in the children graph once, as a path that starts and ends with the same group. */
function findCycles(groups: Map<string, GroupInfo>): string[][] {
  const cycles: string[][] = [];
  const state = new Map<string, 'active' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string): void => {
    state.set(name, 'active');
    stack.push(name);
    for (const c of groups.get(name)?.children ?? []) {
      const s = state.get(c);
      if (s === 'active') cycles.push([...stack.slice(stack.indexOf(c)), c]);
      else if (s === undefined) visit(c);
    }
    stack.pop();
    state.set(name, 'done');
  };
  for (const name of groups.keys()) if (!state.has(name)) visit(name);
  return cycles;
}
