import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InventoryError } from '../../tasks/inventory/errors.ts';
import { loadInventory, parseInventoryText } from '../../tasks/inventory/load.ts';
import type { Host, Inventory } from '../../tasks/inventory/types.ts';

// group_vars/ and host_vars/ next to the inventory file: Ansible's lookup rules, its precedence, and
// the same validation as the inventory file itself, with problems naming the vars file and line.

const FIXTURE = path.join(import.meta.dirname, '../fixtures/inventory/kubespray-layout');
const HOME = os.homedir();

const PASSWORD_MSG =
  'passwords are never read from inventory files; remove this variable and use -K/--ask-become-pass ' +
  'or the environment variable KPM_BECOME_PASSWORD';
const TEMPLATE_MSG = 'templated values are not evaluated: write the value itself';
const VAULT_BODY = '$ANSIBLE_VAULT;1.1;AES256\n6332616237383330653566363262313436353339613339333137353962373366\n';
const VAULT_VALUE = '!vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6332616237383330653566363262313436353339613339333137353962373366\n';

function host(inv: Inventory, name: string): Host {
  const h = inv.hosts.find((x) => x.name === name);
  if (!h) throw new Error(`no host ${name}`);
  return h;
}

const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

/** A directory holding the given files (paths relative to it); returns its path. */
function layout(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kpm-vars-test-'));
  made.push(dir);
  for (const [rel, text] of Object.entries(files)) {
    const full = path.join(dir, rel);
    mkdirSync(path.dirname(full), { recursive: true });
    writeFileSync(full, text);
  }
  return dir;
}

async function loadLayout(files: Record<string, string>, inventory = 'inventory.ini'): Promise<{ dir: string; inv: Inventory }> {
  const dir = layout(files);
  return { dir, inv: await loadInventory(path.join(dir, inventory)) };
}

async function loadError(files: Record<string, string>, inventory = 'inventory.ini'): Promise<{ dir: string; err: InventoryError }> {
  const dir = layout(files);
  const err = await loadInventory(path.join(dir, inventory)).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(InventoryError);
  return { dir, err: err as InventoryError };
}

// A small kubespray-shaped inventory: node1 (control plane) and node2 (worker), both in k8s_cluster.
const INI = `[kube_control_plane]
node1 ansible_host=10.0.0.1
[kube_node]
node2 ansible_host=10.0.0.2
[k8s_cluster:children]
kube_control_plane
kube_node
`;

describe('the kubespray layout fixture (inventory.ini + group_vars/ + host_vars/)', () => {
  it('applies every level of Ansible precedence', async () => {
    const inv = await loadInventory(path.join(FIXTURE, 'inventory.ini'));
    const node1 = host(inv, 'node1');
    expect(node1.groups).toEqual(['all', 'etcd', 'k8s_cluster', 'kube_control_plane']);
    expect(node1.settings).toEqual({
      mode: 'ipvs', // group_vars/k8s_cluster/k8s-cluster.yml beats [all:vars] iptables
      scheduler: 'wrr', // group_vars/all/all.yml beats [k8s_cluster:vars] sh, a deeper group of the inventory file
      strictArp: true,
      excludeCidrs: ['10.10.1.200/29'],
      ipvsModules: null,
    });
    expect(node1.connection).toEqual({
      address: '10.10.1.11',
      port: 22,
      user: 'admin', // the inventory file's host variable beats group_vars/all's ubuntu
      privateKeyFile: path.join(HOME, '.ssh/mycluster_ed25519'),
      become: true,
      becomeUser: 'root',
    });
    expect(node1.run).toEqual({
      forks: 5, // group_vars/all
      connectTimeout: 5, // [all:vars], set nowhere else
      connectRetries: 4, // group_vars/etcd.yml (a file, not a directory)
      commandTimeout: 900, // [k8s_cluster:vars], set nowhere else
      packageLockTimeout: 120,
      knownHostsFile: path.join(HOME, '.ssh/known_hosts'),
    });

    expect(host(inv, 'node2').settings.scheduler).toBe('sed'); // inventory host variable beats group_vars/all

    const node3 = host(inv, 'node3');
    expect(node3.connection.address).toBe('10.10.2.13'); // host_vars/node3.yml beats the inventory file's host variable
    expect(node3.vars['ip']).toBe('10.10.2.13');
    expect(node3.settings.scheduler).toBe('lc'); // host_vars beats group_vars

    expect(host(inv, 'node4').run.connectRetries).toBe(2); // not in etcd: the default

    const bastion = host(inv, 'bastion');
    expect(bastion.groups).toEqual(['all', 'ungrouped']);
    expect(bastion.settings.mode).toBe('iptables'); // group_vars/k8s_cluster applies only to k8s_cluster's hosts
    expect(bastion.connection.user).toBe('jump');
    expect(bastion.run.commandTimeout).toBe(300);
  });

  it('keeps kubespray\'s templated values of variables it does not read, as written', async () => {
    const inv = await loadInventory(path.join(FIXTURE, 'inventory.ini'));
    const vars = host(inv, 'node1').vars;
    expect(vars).toMatchObject({
      kube_script_dir: '{{ bin_dir }}/kubernetes-scripts',
      dns_domain: '{{ cluster_name }}',
      metallb_speaker_enabled: '{{ metallb_enabled }}',
      kube_network_plugin: 'calico',
      etcd_deployment_type: 'host',
      metallb_config: { address_pools: { primary: { ip_range: ['10.10.1.200-10.10.1.207'], auto_assign: true } }, layer2: ['primary'] },
      upstream_dns_servers: ['10.10.0.2', '10.10.0.3'],
    });
    expect(vars['kube_proxy_nodeport_addresses']).toMatch(/^\{%- if kube_proxy_nodeport_addresses_cidr is defined -%\}/);
    expect(host(inv, 'bastion').vars).not.toHaveProperty('kube_script_dir');
  });

  it('skips the vault-encrypted group_vars/all/vault.yml with a warning naming it', async () => {
    const inv = await loadInventory(path.join(FIXTURE, 'inventory.ini'));
    expect(inv.warnings).toEqual([
      `${path.join(FIXTURE, 'group_vars/all/vault.yml')}: skipped: the file is vault-encrypted (Ansible Vault) and this tool ` +
        'cannot decrypt it; none of its variables are read',
    ]);
  });

  it('parseInventoryText reads no files: group_vars are used only through loadInventory', () => {
    const file = path.join(FIXTURE, 'inventory.ini');
    const inv = parseInventoryText(readFileSync(file, 'utf8'), file);
    expect(host(inv, 'node1').settings.mode).toBe('iptables');
    expect(inv.warnings).toBeUndefined();
  });
});

describe('precedence, level by level', () => {
  // kube_proxy_scheduler at every level for node2 (kube_node < k8s_cluster < all); each step removes
  // the highest level, so the next one must show through.
  const levels: Array<[string, Record<string, string>, string]> = [
    ['host_vars/<host>', { 'host_vars/node2.yml': 'kube_proxy_scheduler: dh\n' }, 'dh'],
    ['inventory-file host vars', {}, 'lblcr'],
    ['group_vars/<child group>', { 'group_vars/kube_node.yml': 'kube_proxy_scheduler: lblc\n' }, 'lblc'],
    ['group_vars/<parent group>', { 'group_vars/k8s_cluster.yml': 'kube_proxy_scheduler: wlc\n' }, 'wlc'],
    ['group_vars/all', { 'group_vars/all.yml': 'kube_proxy_scheduler: lc\n' }, 'lc'],
    ['inventory-file vars of the child group', {}, 'wrr'],
    ['inventory-file vars of all', {}, 'sh'],
  ];
  const inventory = (upTo: number): string => {
    // upTo: index in `levels` of the highest level present
    const hostVar = upTo <= 1 ? ' kube_proxy_scheduler=lblcr' : '';
    const childVars = upTo <= 5 ? '[kube_node:vars]\nkube_proxy_scheduler=wrr\n' : '';
    return `[kube_node]\nnode2 ansible_host=10.0.0.2${hostVar}\n[k8s_cluster:children]\nkube_node\n${childVars}[all:vars]\nkube_proxy_scheduler=sh\n`;
  };
  levels.forEach(([name, , expected], i) => {
    it(`${name} wins over every level below it`, async () => {
      const files: Record<string, string> = { 'inventory.ini': inventory(i) };
      for (const [, f] of levels.slice(i)) Object.assign(files, f);
      const { inv } = await loadLayout(files);
      expect(host(inv, 'node2').settings.scheduler).toBe(expected);
    });
  });

  it('group_vars files follow the inventory\'s group order: depth, then ansible_group_priority, then name', async () => {
    const { inv } = await loadLayout({
      'inventory.yaml': `all:
  children:
    zeta:
      hosts: {node1: , node2: }
    alpha:
      hosts: {node1: , node2: }
    k8s_cluster:
      children:
        kube_node:
          hosts: {node1: , node2: }
    prio:
      vars: {ansible_group_priority: 10}
      hosts: {node2: }
`,
      'group_vars/zeta.yml': 'kube_proxy_scheduler: wrr\nkpm_connect_retries: 5\n',
      'group_vars/alpha.yml': 'kube_proxy_scheduler: lc\nkpm_connect_retries: 1\nkpm_command_timeout: 42\n',
      'group_vars/k8s_cluster.yml': 'kube_proxy_strict_arp: false\n',
      'group_vars/kube_node.yml': 'kube_proxy_strict_arp: true\n',
      'group_vars/prio.yml': 'kube_proxy_scheduler: sh\n',
    }, 'inventory.yaml');
    const node1 = host(inv, 'node1');
    expect(node1.settings.scheduler).toBe('wrr'); // zeta sorts after alpha (same depth, same priority)
    expect(node1.run.connectRetries).toBe(5);
    expect(node1.run.commandTimeout).toBe(42); // alpha's, where zeta says nothing
    expect(node1.settings.strictArp).toBe(true); // kube_node (depth 2) beats k8s_cluster (depth 1)
    expect(host(inv, 'node2').settings.scheduler).toBe('sh'); // priority 10 (from the inventory file) beats the names
  });

  it('ansible_group_priority in group_vars orders nothing (as in Ansible) and says so', async () => {
    const { dir, inv } = await loadLayout({
      'inventory.ini': '[zeta]\nnode1\n[alpha]\nnode1\n',
      'group_vars/alpha.yml': '---\nansible_group_priority: 10\nkube_proxy_scheduler: lc\n',
      'group_vars/zeta.yml': 'kube_proxy_scheduler: wrr\n',
    });
    expect(host(inv, 'node1').settings.scheduler).toBe('wrr');
    expect(host(inv, 'node1').vars).not.toHaveProperty('ansible_group_priority');
    expect(inv.warnings).toEqual([
      `${dir}/group_vars/alpha.yml:2: ansible_group_priority: ignored: Ansible reads ansible_group_priority only from the ` +
        'inventory file, not from group_vars; set it there',
    ]);
  });

  it('group_vars/ungrouped applies to hosts in no other group', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': 'solo ansible_host=10.0.0.9\n[k8s_cluster]\nnode1\n',
      'group_vars/ungrouped.yml': 'kube_proxy_mode: iptables\n',
    });
    expect(host(inv, 'solo').settings.mode).toBe('iptables');
    expect(host(inv, 'node1').settings.mode).toBe('ipvs');
  });

  it('relative paths in vars files resolve against the inventory file\'s directory', async () => {
    const { dir, inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/all/ssh.yml': 'ansible_ssh_private_key_file: keys/cluster.pem\nkpm_known_hosts_file: ../known_hosts\n',
    });
    expect(host(inv, 'node1').connection.privateKeyFile).toBe(path.join(dir, 'keys/cluster.pem'));
    expect(host(inv, 'node1').run.knownHostsFile).toBe(path.join(path.dirname(dir), 'known_hosts'));
  });
});

describe('finding vars files (Ansible\'s rules)', () => {
  it('a group_vars file may be <name>.yml, <name>.yaml, <name>.json or <name> without extension', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': '[a]\nn1\n[b]\nn2\n[c]\nn3\n[d]\nn4\n',
      'group_vars/a.yml': 'kube_proxy_scheduler: wrr\n',
      'group_vars/b.yaml': 'kube_proxy_scheduler: lc\n',
      'group_vars/c.json': '{"kube_proxy_scheduler": "sh", "kpm_connect_retries": 7}\n',
      'group_vars/d': 'kube_proxy_scheduler: dh\n',
    });
    expect(inv.hosts.map((h) => h.settings.scheduler)).toEqual(['wrr', 'lc', 'sh', 'dh']);
    expect(host(inv, 'n3').run.connectRetries).toBe(7);
    expect(inv.warnings).toBeUndefined();
  });

  it('a directory: files in name order (later win), subdirectories descended, hidden files, backups and other extensions skipped', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/k8s_cluster/10-base.yml': 'kube_proxy_scheduler: wrr\nkpm_connect_retries: 1\nkpm_command_timeout: 11\n',
      'group_vars/k8s_cluster/20-site.yaml': 'kube_proxy_scheduler: lc\n',
      'group_vars/k8s_cluster/30-more/a.yml': 'kpm_connect_retries: 3\n',
      'group_vars/k8s_cluster/30-more/b': 'kpm_command_timeout: 33\n',
      'group_vars/k8s_cluster/40-last.json': '{"kube_proxy_strict_arp": true}',
      'group_vars/k8s_cluster/.hidden.yml': 'kube_proxy_scheduler: {broken\n',
      'group_vars/k8s_cluster/50-edit.yml~': 'kube_proxy_scheduler: sh\n',
      'group_vars/k8s_cluster/60-notes.md': 'not: [yaml\n',
      'group_vars/k8s_cluster/all.yml.template': 'kube_proxy_mode: nftables\n',
      'group_vars/k8s_cluster/old.d/x.yml': 'kube_proxy_mode: nftables\n',
    });
    const n = host(inv, 'node2');
    expect(n.settings).toMatchObject({ scheduler: 'lc', strictArp: true, mode: 'ipvs' });
    expect(n.run).toMatchObject({ connectRetries: 3, commandTimeout: 33 });
    expect(inv.warnings).toBeUndefined();
  });

  it('sorts directory entries by code point, as Python does (uppercase before lowercase, "10" before "9")', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/all/b.yml': 'kube_proxy_scheduler: wrr\n',
      'group_vars/all/B.yml': 'kube_proxy_scheduler: lc\n',
      'group_vars/all/9.yml': 'kpm_connect_retries: 9\n',
      'group_vars/all/10.yml': 'kpm_connect_retries: 10\n',
    });
    expect(host(inv, 'node1').settings.scheduler).toBe('wrr');
    expect(host(inv, 'node1').run.connectRetries).toBe(9);
  });

  it('when both a directory and files exist, only the first of <name>, <name>.yml, <name>.yaml, <name>.json is read (with a warning)', async () => {
    const { dir, inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/all/main.yml': 'kube_proxy_scheduler: wrr\n',
      'group_vars/all.yml': 'kube_proxy_scheduler: lc\nkpm_connect_retries: 5\n',
      'host_vars/node1.yml': 'kube_proxy_scheduler: sh\n',
      'host_vars/node1.yaml': 'kube_proxy_scheduler: dh\n',
    });
    expect(host(inv, 'node2').settings.scheduler).toBe('wrr');
    expect(host(inv, 'node2').run.connectRetries).toBe(2);
    expect(host(inv, 'node1').settings.scheduler).toBe('sh');
    expect(inv.warnings).toEqual([
      `${dir}/group_vars/all.yml: not read: ${dir}/group_vars/all/ takes its place (Ansible reads only the first of all, all.yml, all.yaml, all.json)`,
      `${dir}/host_vars/node1.yaml: not read: ${dir}/host_vars/node1.yml takes its place (Ansible reads only the first of node1, node1.yml, node1.yaml, node1.json)`,
    ]);
  });

  it('host_vars as a file or a directory', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': INI,
      'host_vars/node1.yml': 'ansible_host: 192.168.0.1\nansible_port: 2201\n',
      'host_vars/node2/connection.yml': 'ansible_host: 192.168.0.2\n',
      'host_vars/node2/kube-proxy.yml': 'kube_proxy_strict_arp: yes\n',
    });
    expect(host(inv, 'node1').connection).toMatchObject({ address: '192.168.0.1', port: 2201 });
    expect(host(inv, 'node2').connection.address).toBe('192.168.0.2');
    expect(host(inv, 'node2').settings.strictArp).toBe(true);
  });

  it('does not read entries for groups or hosts the inventory does not have, and warns about each', async () => {
    const { dir, inv } = await loadLayout({
      'inventory.ini': INI,
      // kubespray's old group name: a renamed group silently loses its settings in Ansible
      'group_vars/k8s-cluster/k8s-cluster.yml': 'kube_proxy_mode: {broken\n',
      'group_vars/calico_rr.yml': 'kube_proxy_mode: nftables\n',
      'group_vars/README.md': '# notes\n',
      'host_vars/node9.yml': 'kube_proxy_mode: nftables\n',
    });
    expect(inv.hosts.map((h) => h.settings.mode)).toEqual(['ipvs', 'ipvs']);
    expect(inv.warnings).toEqual([
      `${dir}/group_vars/calico_rr.yml: not read: the inventory has no group "calico_rr" (Ansible ignores it too)`,
      `${dir}/group_vars/k8s-cluster/: not read: the inventory has no group "k8s-cluster" (Ansible ignores it too)`,
      `${dir}/host_vars/node9.yml: not read: the inventory has no host "node9" (Ansible ignores it too)`,
    ]);
  });

  it('empty files and files with only comments set nothing', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/all/empty.yml': '',
      'group_vars/all/comments.yml': '---\n# kube_proxy_mode: nftables\n',
    });
    expect(host(inv, 'node1').settings.mode).toBe('ipvs');
  });

  it('reads a directory linked back into itself once', async () => {
    const dir = layout({ 'inventory.ini': INI, 'group_vars/all/a/x.yml': 'kpm_connect_retries: 4\n' });
    symlinkSync(path.join(dir, 'group_vars/all'), path.join(dir, 'group_vars/all/a/loop'));
    const inv = await loadInventory(path.join(dir, 'inventory.ini'));
    expect(host(inv, 'node1').run.connectRetries).toBe(4);
  });

  it('names vars files under the inventory path as the user gave it', async () => {
    const dir = layout({
      'inventory/prod/inventory.ini': INI,
      'inventory/prod/group_vars/k8s_cluster/k8s-cluster.yml': `${'# line\n'.repeat(13)}kube_proxy_mode: ipvss\n`,
    });
    const rel = path.relative(process.cwd(), path.join(dir, 'inventory/prod/inventory.ini'));
    const err = await loadInventory(rel).then(
      () => undefined,
      (e: unknown) => e as InventoryError,
    );
    expect(err?.message).toBe(
      `${path.dirname(rel)}/group_vars/k8s_cluster/k8s-cluster.yml:14: kube_proxy_mode: expected one of ipvs, iptables, nftables, got "ipvss"`,
    );
  });
});

describe('problems in vars files name that file and line', () => {
  it('type errors, unknown kpm_/kube_proxy_ names with suggestions, list items, scope, several files at once', async () => {
    const { dir, err } = await loadError({
      'inventory.ini': INI,
      'group_vars/all/all.yml': '---\nbin_dir: /usr/local/bin\nkpm_conect_timeout: 5\n',
      'group_vars/k8s_cluster/k8s-cluster.yml': [
        '---',
        'kube_proxy_mode: ipvss',
        'kube_proxy_strict_arpp: true',
        'kube_proxy_exclude_cidrs:',
        '  - 10.0.0.0/8',
        '  - 10.0.0.0/33',
        'kpm_forks: 20',
        '',
      ].join('\n'),
      'host_vars/node2.yml': 'ansible_port: 70000\nansible_group_priority: 3\n',
    });
    expect(err.message.split('\n')).toEqual([
      `${dir}/group_vars/all/all.yml:3: kpm_conect_timeout: unknown tool variable; did you mean kpm_connect_timeout?`,
      `${dir}/group_vars/k8s_cluster/k8s-cluster.yml:2: kube_proxy_mode: expected one of ipvs, iptables, nftables, got "ipvss"`,
      `${dir}/group_vars/k8s_cluster/k8s-cluster.yml:3: kube_proxy_strict_arpp: unknown kube-proxy variable (neither this tool's nor kubespray's); did you mean kube_proxy_strict_arp?`,
      `${dir}/group_vars/k8s_cluster/k8s-cluster.yml:6: kube_proxy_exclude_cidrs[1]: expected an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8), got "10.0.0.0/33"`,
      `${dir}/group_vars/k8s_cluster/k8s-cluster.yml:7: kpm_forks: kpm_forks applies to the whole run: set it in group_vars/all or in the vars of group all`,
      `${dir}/host_vars/node2.yml:1: ansible_port: expected an integer port 1-65535, got "70000"`,
      `${dir}/host_vars/node2.yml:2: ansible_group_priority: ansible_group_priority only applies to groups: set it in a group's vars in the inventory file`,
    ]);
    expect(err.problems[0]).toEqual({
      file: `${dir}/group_vars/all/all.yml`,
      line: 3,
      key: 'kpm_conect_timeout',
      message: 'unknown tool variable; did you mean kpm_connect_timeout?',
    });
  });

  it('the inventory file\'s problems come first, then each vars file\'s in line order', async () => {
    const { dir, err } = await loadError({
      'inventory.ini': '[kube_node]\nnode1 ansible_port=0\nnode2 kube_proxy_mode=x\n',
      'group_vars/kube_node.yml': 'kube_proxy_scheduler: bogus\nkpm_connect_retries: 99\n',
    });
    expect(err.message.split('\n')).toEqual([
      `${dir}/inventory.ini:2: [kube_node] node1 ansible_port: expected an integer port 1-65535, got "0"`,
      `${dir}/inventory.ini:3: [kube_node] node2 kube_proxy_mode: expected one of ipvs, iptables, nftables, got "x"`,
      `${dir}/group_vars/kube_node.yml:1: kube_proxy_scheduler: expected an IPVS scheduler (one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh), got "bogus"`,
      `${dir}/group_vars/kube_node.yml:2: kpm_connect_retries: expected an integer 0-10, got "99"`,
    ]);
  });

  it('YAML problems: syntax, a top level that is no map, duplicate keys, aliases', async () => {
    const { dir, err } = await loadError({
      'inventory.ini': INI,
      'group_vars/all/a-syntax.yml': 'bin_dir: /usr/local/bin\nkube_proxy_mode: {ipvs\nx: 1\n',
      'group_vars/all/b-list.yml': '- kube_proxy_mode: ipvs\n',
      'group_vars/all/c-dup.yml': 'kube_proxy_mode: ipvs\nkube_proxy_mode: iptables\n',
      'group_vars/all/d-alias.yml': 'a: *nothing\n',
    });
    const lines = err.message.split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(new RegExp(`^${escape(dir)}/group_vars/all/a-syntax\\.yml:\\d+: YAML syntax error: `));
    expect(lines.slice(1)).toEqual([
      `${dir}/group_vars/all/b-list.yml:1: expected a map of variables (name: value) at the top level, got a list`,
      `${dir}/group_vars/all/c-dup.yml:2: kube_proxy_mode: duplicate key "kube_proxy_mode" (first on line 1)`,
      `${dir}/group_vars/all/d-alias.yml:1: YAML error: unknown alias *nothing (the anchor must be defined before it is used)`,
    ]);
  });

  it('a vars file over 10 MiB is a problem, not skipped', async () => {
    const dir = layout({ 'inventory.ini': INI, 'group_vars/all/big.yml': '' });
    truncateSync(path.join(dir, 'group_vars/all/big.yml'), 10 * 1024 * 1024 + 1);
    await expect(loadInventory(path.join(dir, 'inventory.ini'))).rejects.toThrow(
      `${dir}/group_vars/all/big.yml: expected a vars file of at most 10 MiB; this one is larger`,
    );
  });

  it('a dangling symlink does not exist, as for Ansible: the next name is tried', async () => {
    const dir = layout({ 'inventory.ini': INI, 'group_vars/all.yml': 'kube_proxy_scheduler: wrr\n' });
    symlinkSync(path.join(dir, 'nowhere'), path.join(dir, 'group_vars/all'));
    const inv = await loadInventory(path.join(dir, 'inventory.ini'));
    expect(host(inv, 'node1').settings.scheduler).toBe('wrr');
    expect(inv.warnings).toBeUndefined();
  });

  it('passwords are refused there too, without echoing them', async () => {
    const { dir, err } = await loadError({
      'inventory.ini': INI,
      'group_vars/all/vars.yml': 'ansible_become_password: Vars-File-Secret-1\n',
      'host_vars/node1.yml': 'ansible_ssh_private_key_passphrase: Vars-File-Secret-2\n',
    });
    expect(err.message.split('\n')).toEqual([
      `${dir}/group_vars/all/vars.yml:1: ansible_become_password: ${PASSWORD_MSG}`,
      `${dir}/host_vars/node1.yml:1: ansible_ssh_private_key_passphrase: private key passphrases are never read from inventory ` +
        'files; remove this variable, load the key into ssh-agent (ssh-add) and leave ansible_ssh_private_key_file unset so the agent is used',
    ]);
    expect(err.message + JSON.stringify(err.problems)).not.toMatch(/Vars-File-Secret/);
  });
});

describe('IPVS timeouts in vars files', () => {
  it('follow the same precedence, and a bad one names the vars file, line and key', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': `${INI}[k8s_cluster:vars]\nkube_proxy_tcp_timeout=1h\n`,
      'group_vars/k8s_cluster/k8s-cluster.yml': '---\nkube_proxy_tcp_timeout: 900s\nkube_proxy_tcp_fin_timeout: 120s\n',
      'host_vars/node2.yml': 'kube_proxy_tcp_fin_timeout: 30s\nkube_proxy_udp_timeout: 300s\n',
    });
    expect(host(inv, 'node1').settings).toMatchObject({ tcpTimeout: '900s', tcpFinTimeout: '120s' });
    expect(host(inv, 'node1').settings).not.toHaveProperty('udpTimeout');
    expect(host(inv, 'node2').settings).toMatchObject({ tcpTimeout: '900s', tcpFinTimeout: '30s', udpTimeout: '300s' });

    const { dir, err } = await loadError({
      'inventory.ini': INI,
      'group_vars/k8s_cluster/k8s-cluster.yml': '---\nkube_proxy_mode: ipvs\nkube_proxy_udp_timeout: 300\n',
    });
    expect(err.message).toBe(
      `${dir}/group_vars/k8s_cluster/k8s-cluster.yml:3: kube_proxy_udp_timeout: expected a Go duration with a unit (like 900s, 15m0s or 0s), got "300"`,
    );
  });
});

describe('templated values', () => {
  it('are refused for every variable the tool reads', async () => {
    const { dir, err } = await loadError({
      'inventory.ini': INI,
      'group_vars/k8s_cluster.yml': [
        'kube_proxy_mode: "{{ proxy_mode }}"',
        'kube_proxy_strict_arp: "{{ metallb_enabled }}"',
        'kube_proxy_exclude_cidrs:',
        '  - 10.0.0.0/8',
        '  - "{{ metallb_pool }}"',
        'kube_proxy_scheduler: "{% if x %}lc{% else %}rr{% endif %}"',
        'kpm_connect_timeout: "{{ 5 * 2 }}"',
        'ansible_user: "{{ lookup(\'env\', \'USER\') }}"',
        'ansible_become: "{{ true }}"',
        '',
      ].join('\n'),
      'host_vars/node1.yml': 'ansible_host: "{{ ip }}"\n',
    });
    expect(err.message.split('\n')).toEqual([
      `${dir}/group_vars/k8s_cluster.yml:1: kube_proxy_mode: ${TEMPLATE_MSG}, not "{{ proxy_mode }}"`,
      `${dir}/group_vars/k8s_cluster.yml:2: kube_proxy_strict_arp: ${TEMPLATE_MSG}, not "{{ metallb_enabled }}"`,
      `${dir}/group_vars/k8s_cluster.yml:5: kube_proxy_exclude_cidrs[1]: ${TEMPLATE_MSG}, not "{{ metallb_pool }}"`,
      `${dir}/group_vars/k8s_cluster.yml:6: kube_proxy_scheduler: ${TEMPLATE_MSG}, not "{% if x %}lc{% else %}rr{% endif %}"`,
      `${dir}/group_vars/k8s_cluster.yml:7: kpm_connect_timeout: ${TEMPLATE_MSG}, not "{{ 5 * 2 }}"`,
      `${dir}/group_vars/k8s_cluster.yml:8: ansible_user: ${TEMPLATE_MSG}, not "{{ lookup('env', 'USER') }}"`,
      `${dir}/group_vars/k8s_cluster.yml:9: ansible_become: ${TEMPLATE_MSG}, not "{{ true }}"`,
      `${dir}/host_vars/node1.yml:1: ansible_host: ${TEMPLATE_MSG}, not "{{ ip }}"`,
    ]);
  });

  it('are refused in the inventory file too (YAML and INI)', () => {
    expect(() => parseInventoryText('all:\n  hosts:\n    node1:\n      ansible_host: "{{ ip }}"\n', 'inv.yaml')).toThrow(
      `inv.yaml:4: all.hosts.node1.ansible_host: ${TEMPLATE_MSG}, not "{{ ip }}"`,
    );
    expect(() => parseInventoryText('[k8s_cluster:vars]\nkube_proxy_mode={{ mode }}\n[k8s_cluster]\nnode1\n', 'inv.ini')).toThrow(
      `inv.ini:2: [k8s_cluster:vars] kube_proxy_mode: ${TEMPLATE_MSG}, not "{{ mode }}"`,
    );
  });

  it('are kept as written for every other variable, including kubespray\'s own kube_proxy_* settings', async () => {
    const { inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/k8s_cluster.yml': [
        'kube_proxy_nodeport_addresses: "{{ kube_proxy_nodeport_addresses_cidr | default([]) }}"',
        'kube_apiserver_ip: "{{ kube_service_addresses | ansible.utils.ipaddr(1) }}"',
        'ansible_python_interpreter: "{{ ansible_playbook_python }}"',
        '',
      ].join('\n'),
    });
    expect(host(inv, 'node1').vars).toMatchObject({
      kube_proxy_nodeport_addresses: '{{ kube_proxy_nodeport_addresses_cidr | default([]) }}',
      kube_apiserver_ip: '{{ kube_service_addresses | ansible.utils.ipaddr(1) }}',
      ansible_python_interpreter: '{{ ansible_playbook_python }}',
    });
    expect(inv.warnings).toBeUndefined();
  });

  it('!unsafe values are plain text to Ansible, so they are checked as values', async () => {
    const { dir, err } = await loadError({
      'inventory.ini': INI,
      'group_vars/all.yml': 'kube_context: !unsafe "{{ literally }}"\nkube_proxy_mode: !unsafe "{{ x }}"\n',
    });
    expect(err.message).toBe(`${dir}/group_vars/all.yml:2: kube_proxy_mode: expected one of ipvs, iptables, nftables, got "{{ x }}"`);
  });
});

describe('Ansible Vault', () => {
  it('a vault-encrypted vars file is skipped with a warning; the rest of the directory is read', async () => {
    const { dir, inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/all/main.yml': 'kube_proxy_scheduler: wrr\n',
      'group_vars/all/vault.yml': VAULT_BODY,
      'host_vars/node1': VAULT_BODY,
    });
    expect(host(inv, 'node1').settings.scheduler).toBe('wrr');
    expect(inv.warnings).toEqual([
      `${dir}/group_vars/all/vault.yml: skipped: the file is vault-encrypted (Ansible Vault) and this tool cannot decrypt it; none of its variables are read`,
      `${dir}/host_vars/node1: skipped: the file is vault-encrypted (Ansible Vault) and this tool cannot decrypt it; none of its variables are read`,
    ]);
  });

  it('a !vault value is refused for a variable the tool reads, and dropped for any other', async () => {
    const { dir, err } = await loadError({
      'inventory.ini': INI,
      'group_vars/all.yml': `kube_proxy_mode: ${VAULT_VALUE}registry_password: ${VAULT_VALUE}`,
    });
    expect(err.message).toBe(`${dir}/group_vars/all.yml:1: kube_proxy_mode: vault-encrypted values are not supported for kube_proxy_mode; write the value itself`);

    const { inv } = await loadLayout({ 'inventory.ini': INI, 'group_vars/all.yml': `cloud_secret: ${VAULT_VALUE}bin_dir: /usr/local/bin\n` });
    expect(host(inv, 'node1').vars).toEqual({ ansible_host: '10.0.0.1', bin_dir: '/usr/local/bin' });
    expect(inv.warnings).toBeUndefined();
  });

  it('a vaulted or templated password is not a password in the file: ignored, with a warning', async () => {
    const { dir, inv } = await loadLayout({
      'inventory.ini': INI,
      'group_vars/all/vars.yml': [
        `ansible_become_password: "{{ vault_become_password }}"`,
        `ansible_ssh_private_key_passphrase: ${VAULT_VALUE}`,
      ].join('\n'),
    });
    expect(host(inv, 'node1').vars).not.toHaveProperty('ansible_become_password');
    expect(host(inv, 'node1').vars).not.toHaveProperty('ansible_ssh_private_key_passphrase');
    expect(inv.warnings).toEqual([
      `${dir}/group_vars/all/vars.yml:1: ansible_become_password: ignored: its value is a template, and passwords come only ` +
        'from -K/--ask-become-pass or KPM_BECOME_PASSWORD',
      `${dir}/group_vars/all/vars.yml:2: ansible_ssh_private_key_passphrase: ignored: its value is vault-encrypted, and key ` +
        'passphrases are never read from inventory files (load the key into ssh-agent)',
    ]);
  });

  it('a password that is only partly templated is still refused', async () => {
    const { err } = await loadError({ 'inventory.ini': INI, 'group_vars/all.yml': 'ansible_password: "Partly-{{ secret }}"\n' });
    expect(err.message).toMatch(/ansible_password: passwords are never read from inventory files/);
    expect(err.message).not.toContain('Partly');
  });

  it('a vault-encrypted inventory file is refused with what to do', () => {
    expect(() => parseInventoryText(VAULT_BODY, 'hosts.yaml')).toThrow(
      'hosts.yaml: the inventory file is vault-encrypted (Ansible Vault) and this tool cannot decrypt it; decrypt a copy ' +
        'into the same directory (ansible-vault decrypt --output FILE) and pass that',
    );
  });
});

describe('ansible_become_method and key passphrases', () => {
  it('ansible_become_method: absent or sudo', () => {
    const inv = parseInventoryText('[k8s_cluster]\nnode1 ansible_become_method=sudo\nnode2\n', 'inv.ini');
    expect(inv.hosts.map((h) => h.vars['ansible_become_method'] ?? null)).toEqual(['sudo', null]);
  });

  it('ansible_become_method: anything else is refused', () => {
    for (const method of ['su', 'pbrun', 'doas', 'runas']) {
      expect(() => parseInventoryText(`all:\n  vars:\n    ansible_become_method: ${method}\n  hosts: {node1: }\n`, 'inv.yaml')).toThrow(
        `inv.yaml:3: all.vars.ansible_become_method: expected sudo (this tool becomes root only through sudo), got "${method}"`,
      );
    }
  });

  it('private key passphrases are refused under both names, never echoed', () => {
    for (const name of ['ansible_ssh_private_key_passphrase', 'ansible_private_key_passphrase']) {
      for (const [text, file] of [
        [`[k8s_cluster]\nnode1 ${name}=Key-Phrase-Secret\n`, 'inv.ini'],
        [`all:\n  hosts:\n    node1: {${name}: Key-Phrase-Secret}\n`, 'inv.yaml'],
      ] as const) {
        let e: unknown;
        try {
          parseInventoryText(text, file);
        } catch (x) {
          e = x;
        }
        expect(e).toBeInstanceOf(InventoryError);
        const err = e as InventoryError;
        expect(err.problems).toHaveLength(1);
        expect(err.problems[0]!.message).toMatch(/^private key passphrases are never read from inventory files; .*ssh-agent/);
        expect(err.message + JSON.stringify(err.problems)).not.toContain('Key-Phrase-Secret');
      }
    }
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
