import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestApiServer } from '../../test/apiserver/server.ts';
import { labKubeProxyRuntime, labServiceObjects, startBackend, startSeededKubeProxies } from '../../test/lab/kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from '../../test/lab/lab.ts';
import { EXIT, provision } from './provision.ts';
import { status } from './status.ts';
import { trace } from './trace.ts';

// `npm run demo`: the whole flow on local test hosts (real sshd in network namespaces, each with its own
// root filesystem and an offline package repository) and the built-in test API server (the real
// Kubernetes REST API, with a simulated DaemonSet controller and kubelet). The hosts' kernel is this
// machine's, which has no IPVS: module loading, kube-proxy and ipvsadm's table there are labelled test
// fixtures.

export function demoInventory(lab: Lab, kubeconfig: string): string {
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
    kubeconfig: ${kubeconfig}
  children:
    k8s_cluster:
      vars:
        kube_proxy_mode: ipvs
        kube_proxy_scheduler: rr
        kube_proxy_probe_services: [default/web]
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
  // A Service that carries real traffic: its backend is a small server on the last host.
  const backend = lab.hosts[lab.hosts.length - 1]!;
  await startBackend(lab, backend.name, 8080, 'hello from web\n');
  const web = { name: 'web', namespace: 'default', clusterIP: '10.96.100.10', port: 80, portName: 'http', backends: [{ ip: backend.address, port: 8080 }] };
  const api = await startTestApiServer({
    nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })),
    runtime: labKubeProxyRuntime(lab, (n) => n, { services: [web] }),
  });
  const objects = labServiceObjects(web);
  api.store.create('services', objects.service as never);
  api.store.create('endpointslices', objects.slice as never);
  await startSeededKubeProxies(api, lab.hosts.map((h) => h.name));
  out(`demo: test API server at ${api.url} (kubeconfig ${api.kubeconfigPath}), ${lab.hosts.length} nodes running kube-proxy in iptables mode, Service default/web`);
  const dir = mkdtempSync(join(tmpdir(), 'kpm-demo-'));
  const inventory = join(dir, 'demo.yaml');
  writeFileSync(inventory, demoInventory(lab, api.kubeconfigPath));
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
      cluster: { backupDir: dir, podTimeoutS: 60 },
    });
    const summary = (JSON.parse(readFileSync(report, 'utf8')) as { summary: Record<string, number> }).summary;
    return { code, summary };
  };
  const look = async (title: string) => {
    out(`\n=== ${title} ===`);
    out('$ npm run status -- --inventory demo.yaml');
    const code = await status({ inventory, json: false, out });
    out(`\n$ npm run trace -- --inventory demo.yaml default/web`);
    await trace({ service: 'default/web', inventory, json: false, out });
    return code;
  };
  let ok = false;
  try {
    const before = await look('before: which mode runs where, and how default/web is routed');
    const dry = await run('1/3 dry run: what would change', true);
    const real = await run('2/3 real run: prepare the nodes, flip the ConfigMap, recycle kube-proxy node by node', false);
    const again = await run('3/3 rerun: a converged node changes nothing', false);
    const after = await look('after: status and trace again');
    const first = lab.hosts[0]!.name;
    const proof = await lab.exec(
      first,
      'echo "--- lsmod (test fixture)"; lsmod; echo "--- /etc/modules-load.d/ipvs.conf"; cat /etc/modules-load.d/ipvs.conf; ' +
        'echo "--- modprobe calls that loaded something (fixture log)"; tail -n 8 /var/log/kpm-lab-kmod.log; ' +
        'echo "--- curl 127.0.0.1:10249/proxyMode (fixture kube-proxy)"; curl -s 127.0.0.1:10249/proxyMode; echo; ' +
        'echo "--- ipvsadm -Ln (fixture table)"; ipvsadm -Ln',
    );
    out(`\n=== evidence on ${first} ===\n${proof.stdout.trimEnd()}`);
    const deletes = api.requests.filter((r) => r.method === 'DELETE' && r.path.includes('/pods/')).length;
    const maxUnavailable = Math.max(0, ...api.unavailableTimeline().map((p) => p.unavailable));
    out(`\n=== API server record ===\n${deletes} pod DELETEs (one per node), at most ${maxUnavailable} kube-proxy unavailable at any instant`);
    // the `cluster` row counts as a host in the summaries
    ok =
      before === 0 &&
      after === 0 &&
      dry.code === 0 &&
      dry.summary.changed === opts.hosts + 1 &&
      real.code === 0 &&
      real.summary.changed === opts.hosts + 1 &&
      again.code === 0 &&
      again.summary.changed === 0 &&
      deletes === opts.hosts &&
      maxUnavailable <= 1;
    out(
      `\ndemo: ${ok ? 'OK' : 'UNEXPECTED RESULT'}: dry run would change ${dry.summary.changed}, ` +
        `real run changed ${real.summary.changed}, rerun changed ${again.summary.changed} of ${opts.hosts} hosts`,
    );
  } finally {
    if (opts.keep) {
      out(`demo: test hosts left running (state in ${lab.stateDir}); inventory: ${inventory}; the API server stops with this process`);
    } else {
      await api.close();
      await lab.down();
      rmSync(dir, { recursive: true, force: true });
      out('demo: test hosts torn down');
    }
  }
  return ok ? EXIT.ok : EXIT.error;
}
