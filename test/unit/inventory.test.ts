import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InventoryError } from '../../tasks/inventory/errors.ts';
import { expandHostRange, splitHostPort } from '../../tasks/inventory/host-range.ts';
import { detectFormat, loadInventory, parseInventoryText } from '../../tasks/inventory/load.ts';
import { selectTargets } from '../../tasks/inventory/resolve.ts';
import type { Host, Inventory } from '../../tasks/inventory/types.ts';

const ROOT = path.join(import.meta.dirname, '../..');
const GOOD = path.join(ROOT, 'test/fixtures/inventory/good');
const HOME = os.homedir();

/** Everything but where each host was declared (which differs between two files by nature). */
function comparable(inv: Inventory): unknown {
  return { hosts: inv.hosts.map(({ source: _source, ...h }) => h), groups: inv.groups };
}

function host(inv: Inventory, name: string): Host {
  const h = inv.hosts.find((x) => x.name === name);
  if (!h) throw new Error(`no host ${name}`);
  return h;
}

const yaml = (text: string): Inventory => parseInventoryText(text, '/inv/hosts.yaml');
const ini = (text: string): Inventory => parseInventoryText(text, '/inv/hosts.ini');

describe('kubespray-style inventory (YAML and INI)', () => {
  it('YAML and INI forms resolve to the same hosts and groups', async () => {
    const y = await loadInventory(path.join(GOOD, 'kubespray.yaml'));
    const i = await loadInventory(path.join(GOOD, 'kubespray.ini'));
    expect(comparable(i)).toEqual(comparable(y));
    expect(y.hosts.map((h) => h.name)).toEqual(['node1', 'node2', 'node3', 'node4', 'node5', 'node6', 'rr1', 'bastion']);
  });

  for (const file of ['kubespray.yaml', 'kubespray.ini']) {
    it(`${file}: groups, connection, settings and run settings with precedence applied`, async () => {
      const inv = await loadInventory(path.join(GOOD, file));
      expect(inv.groups).toEqual({
        all: ['node1', 'node2', 'node3', 'node4', 'node5', 'node6', 'rr1', 'bastion'],
        ungrouped: ['bastion'],
        kube_control_plane: ['node1', 'node2', 'node3'],
        etcd: ['node1', 'node2', 'node3'],
        kube_node: ['node4', 'node5', 'node6'],
        calico_rr: ['rr1'],
        k8s_cluster: ['node1', 'node2', 'node3', 'node4', 'node5', 'node6', 'rr1'],
      });

      const node1 = host(inv, 'node1');
      expect(node1.groups).toEqual(['all', 'etcd', 'k8s_cluster', 'kube_control_plane']);
      expect(node1.connection).toEqual({
        address: '95.54.0.12',
        port: 22,
        user: 'ubuntu',
        privateKeyFile: path.join(GOOD, 'keys/cluster.pem'), // relative to the inventory file
        become: true, // `yes`
        becomeUser: 'root',
      });
      expect(node1.settings).toEqual({
        mode: 'ipvs',
        scheduler: 'lc', // k8s_cluster (depth 1) beats all (depth 0)
        strictArp: true,
        excludeCidrs: ['10.3.0.0/24', 'fd00::/64'],
        ipvsModules: null,
      });
      expect(node1.run).toEqual({
        forks: 3,
        connectTimeout: 10,
        connectRetries: 2,
        commandTimeout: 600, // kube_control_plane's
        packageLockTimeout: 120,
        knownHostsFile: path.join(HOME, '.ssh/known_hosts'),
      });
      expect(node1.vars).toMatchObject({
        ip: '10.3.0.1',
        etcd_member_name: 'etcd1',
        ansible_ssh_common_args: '-o StrictHostKeyChecking=yes',
        kube_proxy_min_sync_period: '5s',
        kube_proxy_metrics_bind_address: '0.0.0.0:10249',
      });

      const node4 = host(inv, 'node4');
      expect(node4.settings.strictArp).toBe(false); // host var beats k8s_cluster's true
      expect(node4.connection.port).toBe(2222); // kube_node's ansible_port
      expect(node4.settings.ipvsModules).toEqual(['ip_vs', 'ip_vs_rr']);
      expect(node4.run.commandTimeout).toBe(300);

      expect(host(inv, 'node5').connection.address).toBe('95.54.0.16'); // legacy ansible_ssh_host
      expect(host(inv, 'node5').vars['ansible_host']).toBe('95.54.0.16');
      expect(host(inv, 'node6').connection.port).toBe(2200); // host-level ansible_ssh_port beats group ansible_port

      const bastion = host(inv, 'bastion');
      expect(bastion.groups).toEqual(['all', 'ungrouped']);
      expect(bastion.settings).toEqual({ mode: 'ipvs', scheduler: 'wrr', strictArp: false, excludeCidrs: [], ipvsModules: null });
      expect(bastion.source.line).toBeGreaterThan(1);
    });
  }

  it('records where each host was first declared', async () => {
    const inv = await loadInventory(path.join(GOOD, 'kubespray.ini'));
    expect(host(inv, 'node1').source).toEqual({ file: path.join(GOOD, 'kubespray.ini'), line: 3 });
    expect(host(inv, 'bastion').source.line).toBe(10);
  });
});

describe('variable precedence', () => {
  it('all < parent group < child group < host', () => {
    const inv = yaml(`
all:
  vars: {kube_proxy_scheduler: rr, kpm_connect_timeout: 1, kpm_connect_retries: 1, kpm_command_timeout: 1}
  children:
    k8s_cluster:
      vars: {kube_proxy_scheduler: wrr, kpm_connect_timeout: 2, kpm_connect_retries: 2}
      children:
        kube_node:
          vars: {kube_proxy_scheduler: lc, kpm_connect_timeout: 3}
          hosts:
            node1: {kube_proxy_scheduler: sh}
            node2:
`);
    expect(host(inv, 'node1').settings.scheduler).toBe('sh');
    expect(host(inv, 'node2').settings.scheduler).toBe('lc');
    expect(host(inv, 'node2').run).toMatchObject({ connectTimeout: 3, connectRetries: 2, commandTimeout: 1 });
  });

  it('sibling groups at the same depth: the name sorting last wins, whatever the declaration order', () => {
    const text = `
all:
  children:
    zeta:
      vars: {kube_proxy_scheduler: wrr}
      hosts: {node1: }
    alpha:
      vars: {kube_proxy_scheduler: lc, kube_proxy_strict_arp: true}
      hosts: {node1: }
`;
    const inv = yaml(text);
    expect(host(inv, 'node1').settings).toMatchObject({ scheduler: 'wrr', strictArp: true });
    expect(host(inv, 'node1').groups).toEqual(['all', 'alpha', 'zeta']);
  });

  it('the same in INI', () => {
    const inv = ini(`
[zeta]
node1
[alpha]
node1
[zeta:vars]
kube_proxy_scheduler=wrr
[alpha:vars]
kube_proxy_scheduler=lc
`);
    expect(host(inv, 'node1').settings.scheduler).toBe('wrr');
  });

  it('ansible_group_priority reorders siblings (higher wins)', () => {
    const inv = yaml(`
all:
  children:
    zeta:
      vars: {kube_proxy_scheduler: wrr}
      hosts: {node1: }
    alpha:
      vars: {kube_proxy_scheduler: lc, ansible_group_priority: 10}
      hosts: {node1: }
`);
    expect(host(inv, 'node1').settings.scheduler).toBe('lc');
    expect(host(inv, 'node1').vars).not.toHaveProperty('ansible_group_priority');
  });

  it('depth is the longest path from all', () => {
    // `deep` is both a direct child of all and a grandchild (via mid): depth 2, so it beats
    // `zzz` (depth 1) although zzz sorts later.
    const inv = yaml(`
all:
  children:
    deep:
      vars: {kube_proxy_scheduler: dh}
      hosts: {node1: }
    mid:
      children:
        deep:
    zzz:
      vars: {kube_proxy_scheduler: sh}
      hosts: {node1: }
`);
    expect(host(inv, 'node1').groups).toEqual(['all', 'mid', 'zzz', 'deep']);
    expect(host(inv, 'node1').settings.scheduler).toBe('dh');
  });

  it('a host or group declared in several places merges them in file order (later wins)', () => {
    const inv = yaml(`
all:
  children:
    kube_node:
      vars: {kube_proxy_scheduler: lc}
      hosts:
        node1: {ansible_port: 2201, ansible_user: first}
    etcd:
      hosts:
        node1: {ansible_port: 2202}
    k8s_cluster:
      children:
        kube_node:
          vars: {kube_proxy_scheduler: sed}
`);
    const n = host(inv, 'node1');
    expect(n.connection).toMatchObject({ port: 2202, user: 'first' });
    expect(n.settings.scheduler).toBe('sed');
    expect(n.groups).toEqual(['all', 'etcd', 'k8s_cluster', 'kube_node']);
    expect(inv.hosts).toHaveLength(1);
  });

  it('top-level groups besides all are children of all', () => {
    const inv = yaml(`
all:
  vars: {kube_proxy_scheduler: rr}
k8s_cluster:
  vars: {kube_proxy_scheduler: wlc}
  children:
    kube_node:
      hosts: {node1: }
`);
    expect(host(inv, 'node1').groups).toEqual(['all', 'k8s_cluster', 'kube_node']);
    expect(host(inv, 'node1').settings.scheduler).toBe('wlc');
    expect(inv.groups['k8s_cluster']).toEqual(['node1']);
  });

  it('a legacy alias merges as its modern name (host ansible_ssh_user beats group ansible_user)', () => {
    const inv = ini(`
[kube_node]
node1 ansible_ssh_user=admin ansible_ssh_port=2022
node2
[kube_node:vars]
ansible_user=ubuntu
ansible_port=22
`);
    expect(host(inv, 'node1').connection).toMatchObject({ user: 'admin', port: 2022 });
    expect(host(inv, 'node2').connection).toMatchObject({ user: 'ubuntu', port: 22 });
  });
});

describe('defaults', () => {
  it('fill in everything a minimal inventory leaves out', () => {
    const inv = yaml('all:\n  hosts:\n    node1.example.com:\n');
    expect(inv.hosts).toEqual([
      {
        name: 'node1.example.com',
        groups: ['all', 'ungrouped'],
        connection: { address: 'node1.example.com', port: 22, user: os.userInfo().username, become: false, becomeUser: 'root' },
        settings: { mode: 'ipvs', scheduler: 'rr', strictArp: false, excludeCidrs: [], ipvsModules: null },
        run: { forks: 10, connectTimeout: 10, connectRetries: 2, commandTimeout: 300, packageLockTimeout: 120, knownHostsFile: path.join(HOME, '.ssh/known_hosts') },
        vars: {},
        source: { file: '/inv/hosts.yaml', line: 3 },
      },
    ]);
    expect(inv.groups).toEqual({ all: ['node1.example.com'], ungrouped: ['node1.example.com'] });
  });
});

describe('paths', () => {
  it('expand ~ and resolve relative paths against the inventory directory', () => {
    const inv = parseInventoryText(
      `all:
  vars:
    kpm_known_hosts_file: ../known_hosts
  hosts:
    node1: {ansible_ssh_private_key_file: ~/.ssh/id_ed25519}
    node2: {ansible_ssh_private_key_file: /etc/keys/k.pem, kpm_known_hosts_file: "~"}
    node3: {ansible_ssh_private_key_file: keys/k.pem}
`,
      '/srv/clusters/prod/hosts.yaml',
    );
    expect(host(inv, 'node1').connection.privateKeyFile).toBe(path.join(HOME, '.ssh/id_ed25519'));
    expect(host(inv, 'node1').run.knownHostsFile).toBe('/srv/clusters/known_hosts');
    expect(host(inv, 'node2').connection.privateKeyFile).toBe('/etc/keys/k.pem');
    expect(host(inv, 'node2').run.knownHostsFile).toBe(HOME);
    expect(host(inv, 'node3').connection.privateKeyFile).toBe('/srv/clusters/prod/keys/k.pem');
    expect(host(inv, 'node3').vars['ansible_ssh_private_key_file']).toBe('keys/k.pem'); // vars keep what was written
  });
});

describe('values', () => {
  it('accept Ansible booleans and numeric strings', () => {
    const inv = yaml(`
all:
  hosts:
    a: {ansible_become: "yes", ansible_port: "2222", kpm_connect_timeout: "2.5"}
    b: {ansible_become: on, kube_proxy_strict_arp: 1}
    c: {ansible_become: "False", kube_proxy_strict_arp: "OFF"}
    d: {ansible_become: 0}
`);
    expect(host(inv, 'a').connection).toMatchObject({ become: true, port: 2222 });
    expect(host(inv, 'a').run.connectTimeout).toBe(2.5);
    expect(host(inv, 'b').connection.become).toBe(true);
    expect(host(inv, 'b').settings.strictArp).toBe(true);
    expect(host(inv, 'c').connection.become).toBe(false);
    expect(host(inv, 'c').settings.strictArp).toBe(false);
    expect(host(inv, 'd').connection.become).toBe(false);
  });

  it('accept IPv4, IPv6 and DNS names as ansible_host', () => {
    const inv = yaml(`
all:
  hosts:
    a: {ansible_host: 192.168.1.10}
    b: {ansible_host: "fd00::10"}
    c: {ansible_host: node-3.prod.example.com}
    d: {ansible_host: node4.example.com.}
    e: {ansible_host: "fe80::1%eth0"}
`);
    expect(inv.hosts.map((h) => h.connection.address)).toEqual([
      '192.168.1.10',
      'fd00::10',
      'node-3.prod.example.com',
      'node4.example.com.',
      'fe80::1%eth0',
    ]);
  });

  it('lists: YAML lists, INI Python literals and comma-separated strings; None for the default modules', () => {
    const y = yaml(`
all:
  hosts:
    a: {kube_proxy_exclude_cidrs: [10.0.0.0/8, "fd00::/8"], kube_proxy_ipvs_modules: [ip_vs, nf_conntrack]}
    b: {kube_proxy_exclude_cidrs: "10.0.0.0/8, 192.168.0.0/16", kube_proxy_ipvs_modules: []}
    c: {kube_proxy_exclude_cidrs: , kube_proxy_ipvs_modules: }
`);
    expect(host(y, 'a').settings).toMatchObject({ excludeCidrs: ['10.0.0.0/8', 'fd00::/8'], ipvsModules: ['ip_vs', 'nf_conntrack'] });
    expect(host(y, 'b').settings).toMatchObject({ excludeCidrs: ['10.0.0.0/8', '192.168.0.0/16'], ipvsModules: [] });
    expect(host(y, 'c').settings).toMatchObject({ excludeCidrs: [], ipvsModules: null });

    const i = ini(`
a kube_proxy_exclude_cidrs="['10.0.0.0/8', 'fd00::/8']" kube_proxy_ipvs_modules=ip_vs,nf_conntrack
b kube_proxy_exclude_cidrs=[] kube_proxy_ipvs_modules=None
[all:vars]
kube_proxy_exclude_cidrs = [ "172.16.0.0/12" , '192.168.0.0/16', ]
`);
    expect(host(i, 'a').settings).toMatchObject({ excludeCidrs: ['10.0.0.0/8', 'fd00::/8'], ipvsModules: ['ip_vs', 'nf_conntrack'] });
    expect(host(i, 'b').settings).toMatchObject({ excludeCidrs: [], ipvsModules: null });
  });

  it('IPVS timeouts: Go durations as written, unset unless the inventory sets them', () => {
    const y = yaml(`
all:
  vars:
    kube_proxy_tcp_timeout: 900s
    kube_proxy_udp_timeout: 0s
  hosts:
    a: {kube_proxy_tcp_fin_timeout: 2m30s, kube_proxy_udp_timeout: 1.5m}
    b: {kube_proxy_tcp_timeout: 0, kube_proxy_udp_timeout: }
  children:
    plain:
      hosts:
        c:
`);
    expect(host(y, 'a').settings).toMatchObject({ tcpTimeout: '900s', tcpFinTimeout: '2m30s', udpTimeout: '1.5m' });
    // a host's null overrides the group's value with "unset": the ConfigMap's value is kept
    expect(host(y, 'b').settings).toMatchObject({ tcpTimeout: '0' });
    expect(host(y, 'b').settings).not.toHaveProperty('udpTimeout');
    expect(host(y, 'b').settings).not.toHaveProperty('tcpFinTimeout');
    expect(host(y, 'c').settings).toMatchObject({ tcpTimeout: '900s', udpTimeout: '0s' });

    const i = ini(`
a kube_proxy_tcp_timeout=15m0s kube_proxy_udp_timeout=None
b
[all:vars]
kube_proxy_udp_timeout=30s
kube_proxy_tcp_fin_timeout=0
`);
    expect(host(i, 'a').settings).toMatchObject({ tcpTimeout: '15m0s', tcpFinTimeout: '0' });
    expect(host(i, 'a').settings).not.toHaveProperty('udpTimeout');
    expect(host(i, 'b').settings).toMatchObject({ tcpFinTimeout: '0', udpTimeout: '30s' });
    expect(host(i, 'b').vars).toMatchObject({ kube_proxy_udp_timeout: '30s', kube_proxy_tcp_fin_timeout: '0' });

    const none = yaml('all:\n  hosts:\n    node1:\n');
    expect(Object.keys(none.hosts[0]!.settings)).toEqual(['mode', 'scheduler', 'strictArp', 'excludeCidrs', 'ipvsModules']);
  });

  it('INI: values of variables the tool does not know stay strings', () => {
    const inv = ini("node1 kube_proxy_nodeport_addresses=\"['10.3.0.0/24']\" count=3 flag=True\n");
    expect(inv.hosts[0]!.vars).toEqual({ kube_proxy_nodeport_addresses: "['10.3.0.0/24']", count: '3', flag: 'True' });
  });

  it('keep other ansible_* and unrelated variables, and kubespray kube_proxy_* settings, as read', () => {
    const inv = yaml(`
all:
  vars:
    ansible_python_interpreter: /usr/bin/python3
    ansible_ssh_common_args: "-o ProxyJump=bastion"
    kube_proxy_masquerade_all: true
    kube_proxy_conntrack_max_per_core: 0
    kube_version: v1.31.3
    kubeconfig: ~/.kube/prod
    kube_context: prod-admin
    my_settings: {a: [1, 2]}
  hosts:
    node1:
`);
    expect(inv.hosts[0]!.vars).toEqual({
      ansible_python_interpreter: '/usr/bin/python3',
      ansible_ssh_common_args: '-o ProxyJump=bastion',
      kube_proxy_masquerade_all: true,
      kube_proxy_conntrack_max_per_core: 0,
      kube_version: 'v1.31.3',
      kubeconfig: '~/.kube/prod',
      kube_context: 'prod-admin',
      my_settings: { a: [1, 2] },
    });
  });
});

describe('YAML details', () => {
  it('supports anchors and merge keys (<<) with explicit keys winning', () => {
    const inv = yaml(`
all:
  vars:
    defaults: &node {ansible_user: ubuntu, ansible_port: 2222}
  hosts:
    node1:
      <<: *node
      ansible_port: 22
    node2: *node
`);
    expect(host(inv, 'node1').connection).toMatchObject({ user: 'ubuntu', port: 22 });
    expect(host(inv, 'node2').connection).toMatchObject({ user: 'ubuntu', port: 2222 });
  });

  it('reads JSON (YAML 1.2 is a superset)', () => {
    const inv = parseInventoryText(
      JSON.stringify({ all: { children: { k8s_cluster: { hosts: { node1: { ansible_host: '10.0.0.1', ansible_port: 22 } } } } } }),
      '/inv/hosts.json',
    );
    expect(inv.hosts[0]!.connection.address).toBe('10.0.0.1');
  });

  it('a host in several groups is not a duplicate; empty groups and empty maps are fine', () => {
    const inv = yaml(`
all:
  children:
    kube_control_plane: {hosts: {node1: }}
    etcd: {hosts: {node1: }}
    calico_rr: {hosts: {}}
    kube_node:
    k8s_cluster:
      children: {kube_control_plane: , kube_node: , calico_rr: }
`);
    expect(inv.hosts.map((h) => h.name)).toEqual(['node1']);
    expect(inv.groups).toMatchObject({ calico_rr: [], kube_node: [], k8s_cluster: ['node1'] });
  });

  it('keeps file order for hosts, whatever the nesting', () => {
    const inv = yaml(`
all:
  children:
    b:
      hosts: {node2: , node3: }
  hosts:
    node4:
    node1:
`);
    expect(inv.hosts.map((h) => h.name)).toEqual(['node2', 'node3', 'node4', 'node1']);
  });
});

describe('INI details', () => {
  it('reads kubespray sample inventory.ini (commented-out hosts, etcd:children)', () => {
    const inv = ini(`# This inventory describe a HA typology with stacked etcd (== same nodes as control plane)
# and 3 worker nodes
# See https://docs.ansible.com/ansible/latest/inventory_guide/intro_inventory.html
# for tips on building your # inventory

# Configure 'ip' variable to bind kubernetes services on a different ip than the default iface
# We should set etcd_member_name for etcd cluster. The node that are not etcd members do not need to set the value,
# or can set the empty string value.
[kube_control_plane]
# node1 ansible_host=95.54.0.12  # ip=10.3.0.1 etcd_member_name=etcd1
node2 ansible_host=95.54.0.13  # ip=10.3.0.2 etcd_member_name=etcd2
# node3 ansible_host=95.54.0.14  # ip=10.3.0.3 etcd_member_name=etcd3

[etcd:children]
kube_control_plane

[kube_node]
# node4 ansible_host=95.54.0.15  # ip=10.3.0.4
node5 ansible_host=95.54.0.16  # ip=10.3.0.5
`);
    expect(inv.hosts.map((h) => [h.name, h.connection.address, h.vars])).toEqual([
      ['node2', '95.54.0.13', { ansible_host: '95.54.0.13' }],
      ['node5', '95.54.0.16', { ansible_host: '95.54.0.16' }],
    ]);
    expect(inv.groups['etcd']).toEqual(['node2']);
    expect(inv.groups).not.toHaveProperty('k8s_cluster');
  });

  it('reads the older kubespray style with [all], [k8s_cluster:children] and calico_rr', () => {
    const inv = ini(`[all]
node1 ansible_host=95.54.0.12 ip=10.3.0.1 etcd_member_name=etcd1
node2 ansible_host=95.54.0.13 ip=10.3.0.2

[kube_control_plane]
node1

[etcd]
node1

[kube_node]
node2

[calico_rr]

[k8s_cluster:children]
kube_control_plane
kube_node
calico_rr
`);
    expect(inv.groups['k8s_cluster']).toEqual(['node1', 'node2']);
    expect(host(inv, 'node1').vars).toEqual({ ansible_host: '95.54.0.12', ip: '10.3.0.1', etcd_member_name: 'etcd1' });
  });

  it('handles quoting, comments, ungrouped hosts and CRLF', () => {
    const inv = ini(
      [
        '; a comment',
        'solo ansible_host=10.0.0.9 note="two words" other=\'single quoted\' esc=a\\ b',
        '[kube_node]   # trailing comment',
        'node1 ansible_user="ubuntu" tag=x#not-a-value',
        '[kube_node:vars]',
        'greeting = "hello world"  # comment',
        'raw=a b c',
        'ansible_become=True',
      ].join('\r\n'),
    );
    expect(host(inv, 'solo').groups).toEqual(['all', 'ungrouped']);
    expect(host(inv, 'solo').vars).toEqual({ ansible_host: '10.0.0.9', note: 'two words', other: 'single quoted', esc: 'a b' });
    expect(host(inv, 'node1').vars).toEqual({
      ansible_user: 'ubuntu',
      tag: 'x',
      greeting: 'hello world',
      raw: 'a b c',
      ansible_become: true,
    });
  });
});

describe('host ranges', () => {
  it('expands numeric ranges with zero padding, strides and letters', () => {
    expect(expandHostRange('node[01:03]')).toEqual({ ok: true, names: ['node01', 'node02', 'node03'] });
    expect(expandHostRange('node[1:10:4]')).toEqual({ ok: true, names: ['node1', 'node5', 'node9'] });
    expect(expandHostRange('node[8:10]')).toEqual({ ok: true, names: ['node8', 'node9', 'node10'] });
    expect(expandHostRange('node[:2]')).toEqual({ ok: true, names: ['node0', 'node1', 'node2'] });
    expect(expandHostRange('r[a:b]-n[1:2].dc')).toEqual({ ok: true, names: ['ra-n1.dc', 'ra-n2.dc', 'rb-n1.dc', 'rb-n2.dc'] });
    expect(expandHostRange('plain')).toEqual({ ok: true, names: ['plain'] });
    expect(expandHostRange('node[1:100000]')).toMatchObject({ ok: false });
    expect(expandHostRange('node[1:3')).toMatchObject({ ok: false });
    expect(expandHostRange('node[x1:3]')).toMatchObject({ ok: false });
  });

  it('splits host:port but not a colon inside a range', () => {
    expect(splitHostPort('node1:2222')).toEqual({ host: 'node1', port: 2222 });
    expect(splitHostPort('node[1:3]')).toEqual({ host: 'node[1:3]' });
    expect(splitHostPort('node[1:3]:2200')).toEqual({ host: 'node[1:3]', port: 2200 });
  });

  it('declare one host per name, sharing the entry\'s variables (YAML and INI)', () => {
    const y = yaml(`
all:
  children:
    kube_node:
      hosts:
        worker[01:03].example.com: {ansible_user: core}
        "edge1:2200":
`);
    expect(y.hosts.map((h) => [h.name, h.connection.address, h.connection.user, h.connection.port])).toEqual([
      ['worker01.example.com', 'worker01.example.com', 'core', 22],
      ['worker02.example.com', 'worker02.example.com', 'core', 22],
      ['worker03.example.com', 'worker03.example.com', 'core', 22],
      ['edge1', 'edge1', expect.any(String), 2200],
    ]);
    const i = ini('[kube_node]\nworker[01:03].example.com ansible_user=core\nedge1:2200\n');
    expect(comparable(i)).toEqual(comparable(y));
  });
});

describe('format detection', () => {
  it('by extension, else by the first meaningful line', () => {
    expect(detectFormat('[all]\n', 'x.yaml')).toBe('yaml');
    expect(detectFormat('all:\n', 'x.ini')).toBe('ini');
    expect(detectFormat('all:\n', 'x.cfg')).toBe('ini');
    expect(detectFormat('{}', 'x.json')).toBe('yaml');
    expect(detectFormat('# c\n; c\n\n[kube_node]\nnode1\n', 'hosts')).toBe('ini');
    expect(detectFormat('node1 ansible_host=10.0.0.1\n', 'hosts')).toBe('ini');
    expect(detectFormat('# c\nall:\n  hosts:\n', 'hosts')).toBe('yaml');
    expect(detectFormat('---\nall:\n', 'inventory')).toBe('yaml');
    expect(detectFormat('', 'inventory')).toBe('yaml');
  });

  it('parses an extension-less file of either kind', () => {
    expect(parseInventoryText('[k8s_cluster]\nnode1\n', '/inv/hosts').hosts[0]!.groups).toEqual(['all', 'k8s_cluster']);
    expect(parseInventoryText('all:\n  hosts:\n    node1:\n', '/inv/hosts').hosts[0]!.name).toBe('node1');
  });

  it('ignores a UTF-8 byte order mark', () => {
    expect(parseInventoryText('\uFEFF[all]\nnode1\n', '/inv/hosts.ini').hosts).toHaveLength(1);
  });
});

describe('inventory/example.yaml and inventory/example.ini', () => {
  it('load, and describe the same hosts and settings', async () => {
    const y = await loadInventory(path.join(ROOT, 'inventory/example.yaml'));
    const i = await loadInventory(path.join(ROOT, 'inventory/example.ini'));
    expect(comparable(i)).toEqual(comparable(y));

    expect(y.hosts.map((h) => h.name)).toEqual(['node1', 'node2', 'node3', 'node4']);
    expect(y.groups['kube_control_plane']).toEqual(['node1']);
    expect(y.groups['kube_node']).toEqual(['node2', 'node3', 'node4']);
    expect(selectTargets(y).map((h) => h.name)).toEqual(['node1', 'node2', 'node3', 'node4']);

    const node4 = host(y, 'node4');
    expect(node4.connection).toEqual({
      address: '10.0.0.14',
      port: 2222,
      user: 'ubuntu',
      privateKeyFile: path.join(HOME, '.ssh/id_ed25519'),
      become: true,
      becomeUser: 'root',
    });
    expect(node4.settings).toEqual({
      mode: 'ipvs',
      scheduler: 'rr',
      strictArp: true,
      excludeCidrs: ['10.0.0.0/24'],
      ipvsModules: ['ip_vs', 'ip_vs_rr', 'ip_vs_wrr', 'ip_vs_sh', 'nf_conntrack'],
      probeServices: ['kube-system/kube-dns:53', 'default/web:80/healthz=200'],
    });
    expect(node4.run).toEqual({
      forks: 10,
      connectTimeout: 10,
      connectRetries: 2,
      commandTimeout: 300,
      packageLockTimeout: 120,
      knownHostsFile: path.join(HOME, '.ssh/known_hosts'),
    });
    expect(host(y, 'node1').settings.ipvsModules).toBeNull();
    expect(host(y, 'node1').vars).toMatchObject({ kubeconfig: '~/.kube/config', kube_context: 'prod', etcd_member_name: 'etcd1' });
  });

  it('set every variable the tool reads', async () => {
    const { VARIABLES } = await import('../../tasks/inventory/schema.ts');
    const y = await loadInventory(path.join(ROOT, 'inventory/example.yaml'));
    const set = new Set(y.hosts.flatMap((h) => Object.keys(h.vars)));
    // The IPVS timeouts are best left unset (the ConfigMap keeps its values), so the example leaves them out.
    const unsetByChoice = ['kube_proxy_tcp_timeout', 'kube_proxy_tcp_fin_timeout', 'kube_proxy_udp_timeout'];
    const readable = VARIABLES.filter((v) => !v.name.includes('pass') && v.name !== 'ansible_group_priority' && !unsetByChoice.includes(v.name)).map(
      (v) => v.name,
    );
    expect(readable.filter((n) => !set.has(n))).toEqual([]);
  });
});

describe('errors are InventoryError', () => {
  it('with all problems of the file', () => {
    expect(() => yaml('all:\n  hosts:\n    a: {ansible_port: 0}\n    b: {ansible_port: 0}\n')).toThrow(InventoryError);
    try {
      yaml('all:\n  hosts:\n    a: {ansible_port: 0}\n    b: {ansible_port: 0}\n');
    } catch (e) {
      expect((e as InventoryError).problems.map((p) => p.line)).toEqual([3, 4]);
    }
  });
});
