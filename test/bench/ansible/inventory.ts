import { writeFileSync } from 'node:fs';

// The Ansible inventory for the benchmark's hosts: the same addresses, key and pinned host keys the
// tool's inventory uses, with OpenSSH told to check them as strictly as the tool does.

export interface BenchHost {
  name: string;
  address: string;
  port: number;
}

export interface AnsibleInventoryOptions {
  hosts: readonly BenchHost[];
  privateKey: string;
  knownHosts: string;
}

export function ansibleInventory(o: AnsibleInventoryOptions): string {
  const lines = [
    'all:',
    '  vars:',
    '    ansible_user: root',
    `    ansible_ssh_private_key_file: ${JSON.stringify(o.privateKey)}`,
    `    ansible_ssh_common_args: ${JSON.stringify(`-o UserKnownHostsFile=${o.knownHosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes`)}`,
    '    ansible_python_interpreter: /usr/bin/python3',
    '  hosts:',
    ...o.hosts.map((h) => `    ${h.name}: {ansible_host: ${h.address}, ansible_port: ${h.port}}`),
  ];
  return lines.join('\n') + '\n';
}

export function writeAnsibleInventory(file: string, o: AnsibleInventoryOptions): string {
  writeFileSync(file, ansibleInventory(o));
  return file;
}
