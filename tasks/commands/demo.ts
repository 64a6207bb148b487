import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labSupported, startLab, type Lab } from '../../test/lab/lab.ts';
import { EXIT, provision } from './provision.ts';

// `npm run demo`: the whole node phase on local test hosts (real sshd in network namespaces, each with its
// own root filesystem and an offline package repository). Their kernel is this machine's, which has no
// IPVS: module loading there goes through a labelled test fixture that logs every modprobe call.

export function demoInventory(lab: Lab): string {
  const hosts = lab.hosts
    .map((h) => `            ${h.name}:\n              ansible_host: ${h.address}\n              ansible_port: ${h.port}`)
    .join('\n');
  return `# Demo inventory for the local test hosts (Ansible's YAML inventory format).
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: ${lab.key}
    kpm_known_hosts_file: ${lab.knownHosts}
    kpm_forks: 10
  children:
    k8s_cluster:
      vars:
        kube_proxy_mode: ipvs
        kube_proxy_scheduler: rr
      children:
        kube_node:
          hosts:
${hosts}
`;
}

export async function demo(opts: { hosts: number; keep: boolean }): Promise<number> {
  const out = (l: string) => process.stdout.write(l + '\n');
  const support = labSupported();
  if (!support.ok) {
    out(`demo: cannot start the local test hosts here: ${support.reason}`);
    return EXIT.error;
  }
  out(`demo: starting ${opts.hosts} local test hosts (the first start on a machine builds their root filesystem, about a minute)`);
  const lab = await startLab({ hosts: opts.hosts, kmodShim: true, id: 'demo' });
  const dir = mkdtempSync(join(tmpdir(), 'kpm-demo-'));
  const inventory = join(dir, 'demo.yaml');
  writeFileSync(inventory, demoInventory(lab));
  let runs = 0;
  const run = async (title: string, dryRun: boolean) => {
    out(`\n=== ${title} ===`);
    const report = join(dir, `run-${++runs}.json`);
    const code = await provision({
      inventory,
      dryRun,
      acceptNewHostKeys: false,
      showDiffs: false,
      report,
      retryFile: join(dir, 'demo.retry'),
      plain: true,
    });
    const summary = (JSON.parse(readFileSync(report, 'utf8')) as { summary: Record<string, number> }).summary;
    return { code, summary };
  };
  let ok = false;
  try {
    const dry = await run('1/3 dry run: what would change', true);
    const real = await run('2/3 real run: prepare the nodes', false);
    const again = await run('3/3 rerun: a converged node changes nothing', false);
    const first = lab.hosts[0]!.name;
    const proof = await lab.exec(
      first,
      'echo "--- lsmod (test fixture)"; lsmod; echo "--- /etc/modules-load.d/ipvs.conf"; cat /etc/modules-load.d/ipvs.conf; ' +
        'echo "--- modprobe calls that loaded something (fixture log)"; tail -n 8 /var/log/kpm-lab-kmod.log',
    );
    out(`\n=== evidence on ${first} ===\n${proof.stdout.trimEnd()}`);
    ok =
      dry.code === 0 &&
      dry.summary.changed === opts.hosts &&
      real.code === 0 &&
      real.summary.changed === opts.hosts &&
      again.code === 0 &&
      again.summary.changed === 0 &&
      again.summary.ok === opts.hosts;
    out(
      `\ndemo: ${ok ? 'OK' : 'UNEXPECTED RESULT'}: dry run would change ${dry.summary.changed}, ` +
        `real run changed ${real.summary.changed}, rerun changed ${again.summary.changed} of ${opts.hosts} hosts`,
    );
  } finally {
    if (opts.keep) {
      out(`demo: test hosts left running (state in ${lab.stateDir}); inventory: ${inventory}`);
    } else {
      await lab.down();
      rmSync(dir, { recursive: true, force: true });
      out('demo: test hosts torn down');
    }
  }
  return ok ? EXIT.ok : EXIT.error;
}
