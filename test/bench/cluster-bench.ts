// `npx tsx test/bench/cluster-bench.ts [--nodes 5] [--reps 3]`: what the cluster phase's serial recycle
// costs per node on top of the cluster's own time to replace a kube-proxy pod.
//
// Lab hosts (test/lab/hostlab) stand for the nodes and the in-repo test API server (test/apiserver) for the
// cluster; its simulated kubelet starts the lab's fixture kube-proxy on the host of each node, so a pod's
// delete -> Ready time includes a real start on that host. Two measurements, alternating:
//   bare   delete a node's kube-proxy pod and wait for its replacement to be Ready, node after node, with the
//          same Kubernetes client the tool uses (list + watch): the floor of any serial recycle;
//   tool   `provision --tags cluster` as its own process, switching every node (ipvs, then back to iptables,
//          and so on); per node its `kube-proxy` step time, which holds the checks before the delete, the
//          wait for the replacement and the verification on the node (over SSH).
// Prints per node the medians, the overhead (tool - bare), and the SSH execs per node of the cluster phase.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KubeClient, loadKubeConfig } from '../../tasks/cluster/kube.ts';
import { startTestApiServer } from '../apiserver/server.ts';
import { labKubeProxyRuntime } from '../lab/kube-proxy-fixture.ts';
import { labSupported, startLab, type Lab } from '../lab/lab.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const NS = 'kube-system';
const SELECTOR = 'k8s-app=kube-proxy';

function args(): { nodes: number; reps: number; labId: string } {
  const o = { nodes: 5, reps: 3, labId: 'j' };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--nodes') o.nodes = Number(a[++i]);
    else if (a[i] === '--reps') o.reps = Number(a[++i]);
    else if (a[i] === '--lab-id') o.labId = a[++i]!;
    else {
      process.stderr.write('usage: npx tsx test/bench/cluster-bench.ts [--nodes N] [--reps N] [--lab-id ID]\n');
      process.exit(5);
    }
  }
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 100 || !Number.isInteger(o.reps) || o.reps < 1) {
    process.stderr.write('cluster-bench: --nodes 1-100, --reps >= 1\n');
    process.exit(5);
  }
  return o;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The CLI as its own process; peak RSS by GNU time, as node-bench.ts measures it. */
function runTool(argv: string[], timeFile: string): Promise<{ code: number; out: string; ms: number; rssMiB: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const env: NodeJS.ProcessEnv = { ...process.env, CI: '1' };
    delete env.NODE_OPTIONS;
    const child = spawn('/usr/bin/time', ['-f', '%M', '-o', timeFile, process.execPath, '--import', 'tsx', 'tasks/cli.ts', 'provision', ...argv], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => out.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const kb = Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop());
      resolve({ code: code ?? 128, out: Buffer.concat(out).toString(), ms: performance.now() - t0, rssMiB: kb / 1024 });
    });
  });
}

/** Delete each node's kube-proxy pod in turn and wait for its replacement to be Ready: ms per node. */
async function bareRecycle(kube: KubeClient, nodes: string[]): Promise<number[]> {
  const times: number[] = [];
  for (const node of nodes) {
    const fieldSelector = `spec.nodeName=${node}`;
    const { items } = await kube.listPods(NS, SELECTOR, fieldSelector);
    const pod = items.find((p) => !p.metadata?.deletionTimestamp);
    if (!pod) throw new Error(`no kube-proxy pod on ${node}`);
    const t0 = performance.now();
    await kube.deletePod(NS, pod.metadata!.name!);
    await kube.waitForPods(
      NS,
      { labelSelector: SELECTOR, fieldSelector },
      (pods) =>
        pods.find(
          (p) =>
            p.metadata?.uid !== pod.metadata!.uid &&
            !p.metadata?.deletionTimestamp &&
            p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
        ),
      60_000,
      `kube-proxy on ${node}`,
    );
    times.push(performance.now() - t0);
  }
  return times;
}

interface ToolRun {
  perNode: number[];
  execs: number[];
  wallS: number;
  rssMiB: number;
}

async function toolRecycle(lab: Lab, inventory: string, kubeconfig: string, work: string, mode: 'ipvs' | 'iptables', n: number): Promise<ToolRun> {
  const report = path.join(work, `cluster-${mode}-${n}.json`);
  const r = await runTool(['-i', inventory, '--tags', 'cluster', '--mode', mode, '--kubeconfig', kubeconfig, '--pod-timeout', '60',
    '--backup-dir', work, '--report', report, '--retry-file', path.join(work, 'x.retry')], path.join(work, `cluster-${mode}-${n}.time`));
  writeFileSync(path.join(work, `cluster-${mode}-${n}.log`), r.out);
  if (r.code !== 0) throw new Error(`provision --tags cluster --mode ${mode} exited ${r.code}:\n${r.out.split('\n').slice(-15).join('\n')}`);
  const rep = JSON.parse(readFileSync(report, 'utf8')) as { hosts: Record<string, { sshExecs: number; steps: { name: string; status: string; ms: number }[] }> };
  const perNode: number[] = [];
  const execs: number[] = [];
  for (const h of lab.hosts) {
    const step = rep.hosts[h.name]?.steps.find((s) => s.name === 'kube-proxy');
    if (step?.status !== 'changed') throw new Error(`${h.name}: kube-proxy step ${step?.status ?? 'missing'}`);
    perNode.push(step.ms);
    execs.push(rep.hosts[h.name]!.sshExecs);
  }
  return { perNode, execs, wallS: r.ms / 1000, rssMiB: r.rssMiB };
}

async function main(): Promise<void> {
  const o = args();
  const support = labSupported();
  if (!support.ok) throw new Error(support.reason);
  const work = mkdtempSync(path.join(tmpdir(), 'kpm-cluster-bench-'));
  const lab = await startLab({ hosts: o.nodes, kmodShim: true, id: o.labId });
  const api = await startTestApiServer({
    nodes: lab.hosts.map((h) => ({ name: h.name, internalIP: h.address })),
    runtime: labKubeProxyRuntime(lab),
  });
  try {
    const inventory = path.join(work, 'inventory.yaml');
    writeFileSync(
      inventory,
      JSON.stringify({
        all: {
          vars: { ansible_user: 'root', ansible_ssh_private_key_file: lab.key, kpm_known_hosts_file: lab.knownHosts },
          hosts: Object.fromEntries(lab.hosts.map((h) => [h.name, { ansible_host: h.address, ansible_port: h.port }])),
        },
      }),
    );
    const prep = await runTool(['-i', inventory, '--tags', 'node', '--retry-file', path.join(work, 'x.retry')], path.join(work, 'node.time'));
    if (prep.code !== 0) throw new Error(`node phase failed:\n${prep.out}`);
    const kube = new KubeClient(loadKubeConfig({ kubeconfig: api.kubeconfigPath }));
    const nodes = lab.hosts.map((h) => h.name);
    const bare: number[] = [];
    const tool: number[] = [];
    const execs: number[] = [];
    const walls: number[] = [];
    const rss: number[] = [];
    let mode: 'ipvs' | 'iptables' = 'ipvs';
    for (let rep = 1; rep <= o.reps; rep++) {
      const b = await bareRecycle(kube, nodes);
      bare.push(...b);
      const t = await toolRecycle(lab, inventory, api.kubeconfigPath, work, mode, rep);
      tool.push(...t.perNode);
      execs.push(...t.execs);
      walls.push(t.wallS);
      rss.push(t.rssMiB);
      process.stdout.write(
        `rep ${rep}: bare delete -> Ready ${b.map((x) => x.toFixed(0)).join(', ')} ms; tool (${mode}) per node ${t.perNode.join(', ')} ms, ` +
          `run ${t.wallS.toFixed(1)} s, peak RSS ${t.rssMiB.toFixed(0)} MiB, SSH execs per node ${[...new Set(t.execs)].join('/')}; load ${loadavg()[0]!.toFixed(1)}\n`,
      );
      mode = mode === 'ipvs' ? 'iptables' : 'ipvs';
    }
    const mb = median(bare);
    const mt = median(tool);
    process.stdout.write(
      `\ncluster phase, ${o.nodes} nodes, ${o.reps} switches (medians per node; ${new Date().toISOString().slice(0, 10)}, ${cpus().length} cores)\n\n` +
        '| bare delete -> Ready | tool: recycle step per node | overhead per node | tool run (whole process) | tool peak RSS | SSH execs per node (cluster phase) |\n' +
        '|---:|---:|---:|---:|---:|---:|\n' +
        `| ${mb.toFixed(0)} ms | ${mt.toFixed(0)} ms | ${(mt - mb).toFixed(0)} ms (${(mt / mb).toFixed(2)}x) | ${median(walls).toFixed(1)} s | ${Math.max(...rss).toFixed(0)} MiB ` +
        `| ${Math.min(...execs)}-${Math.max(...execs)} |\n`,
    );
  } finally {
    await api.close();
    await lab.down();
  }
}

await main();
