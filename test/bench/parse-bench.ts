// How long the dataplane parsers take on a big cluster's dumps: 10,000 Services with 3 endpoints each
// (kube-proxy 1.28 iptables rules, and the IPVS listing of the same Services), against a baseline
// measured on the same text in the same run — splitting it into lines and into words with a trivial
// regex — so that the figures mean something on a busy machine too.
//
//   npx tsx test/bench/parse-bench.ts [runs]
//
// Medians over the runs, wall-clock and process CPU (which includes the garbage collector's threads).
// The heap is collected before each case, so that a case does not pay for the garbage of the one
// before it, and one run is made before the measured ones; what a run leaves to collect, the next
// runs pay for, as they would in a program.

import { loadavg } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parseIptablesSave } from '../../tasks/dataplane/iptables-save.ts';
import { parseIpvsadm } from '../../tasks/dataplane/ipvsadm.ts';
import { listIptablesServices, traceIptables, traceIpvs } from '../../tasks/dataplane/trace.ts';
import { kubeProxyIptablesSave, kubeProxyIpvsadm, manyServices } from '../dataplane-dumps.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const SERVICES = 10_000;
const RUNS = Math.max(3, Number(process.argv[2] ?? 9) || 9);
const LIMIT_MS = 300;

interface Sample {
  wall: number;
  cpu: number;
}

function measure(fn: () => unknown): Sample {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { wall, cpu: (cpu.user + cpu.system) / 1000 };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function baseline(text: string): number {
  let words = 0;
  for (const line of text.split('\n')) words += line.match(/\S+/g)?.length ?? 0;
  return words;
}

// the Service descriptions are dropped once the texts are made: only what a program tracing a dump
// would hold stays on the heap
const { probe, iptText, ipvsText } = (() => {
  const services = manyServices(SERVICES, 3);
  return {
    probe: services[Math.floor(SERVICES * 0.7)]!,
    iptText: kubeProxyIptablesSave(services, { style: '1.28', family: 'ipv4', clusterCIDR: '10.244.0.0/16' }),
    ipvsText: kubeProxyIpvsadm(services, { nodeAddresses: ['192.168.1.10', '10.0.2.15'] }),
  };
})();
const probeName = `${probe.namespace}/${probe.name}`;

const rows: { name: string; samples: Sample[] }[] = [];
const row = (name: string, runs: number, fn: () => unknown) => {
  gc();
  fn();
  const samples: Sample[] = [];
  for (let i = 0; i < runs; i++) samples.push(measure(fn));
  rows.push({ name, samples });
  return samples;
};

const iptBase = row('iptables: baseline (split + regex words)', RUNS, () => baseline(iptText));
const iptParse = row('iptables: parse', RUNS, () => parseIptablesSave(iptText));
row('iptables: parse + trace one Service', RUNS, () => traceIptables(parseIptablesSave(iptText), probeName));
let warm: ReturnType<typeof parseIptablesSave> | undefined = parseIptablesSave(iptText);
traceIptables(warm, probeName);
row('iptables: trace again (same dump)', RUNS, () => traceIptables(warm!, probeName));
warm = undefined;
const ipvsBase = row('ipvsadm: baseline (split + regex words)', RUNS, () => baseline(ipvsText));
const ipvsParse = row('ipvsadm: parse', RUNS, () => parseIpvsadm(ipvsText));
let table: ReturnType<typeof parseIpvsadm> | undefined = parseIpvsadm(ipvsText);
row('ipvsadm: trace one Service', RUNS, () =>
  traceIpvs(table!, { service: probeName, clusterIP: probe.clusterIP, port: 80, nodePort: probe.ports[0]!.nodePort }),
);
table = undefined;
row('iptables: parse + list every Service', 2, () => listIptablesServices(parseIptablesSave(iptText)));

// a check that the work was done, not skipped
const check = traceIptables(parseIptablesSave(iptText), probeName);
const backends = check.frontends[0]?.backends.length ?? 0;

const mb = (s: string) => (s.length / 1e6).toFixed(1);
console.log(`dataplane parse bench: ${SERVICES} Services x 3 endpoints, ${RUNS} runs, node ${process.version}, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`  iptables-save: ${mb(iptText)} MB, ${iptText.split('\n').length - 1} lines; ipvsadm -Ln: ${mb(ipvsText)} MB, ${ipvsText.split('\n').length - 1} lines`);
console.log(`  trace of ${probeName}: ${check.frontends.length} frontends, ${backends} backends on the first`);
console.log('');
const w = Math.max(...rows.map((r) => r.name.length));
console.log(`${'case'.padEnd(w)}  ${'median ms'.padStart(10)}  ${'cpu ms'.padStart(8)}  ${'min ms'.padStart(8)}`);
for (const r of rows) {
  const wall = median(r.samples.map((s) => s.wall));
  const cpu = median(r.samples.map((s) => s.cpu));
  const min = Math.min(...r.samples.map((s) => s.wall));
  console.log(`${r.name.padEnd(w)}  ${wall.toFixed(1).padStart(10)}  ${cpu.toFixed(1).padStart(8)}  ${min.toFixed(1).padStart(8)}`);
}
console.log('');
const ratio = (a: Sample[], b: Sample[], k: keyof Sample) => (median(a.map((s) => s[k])) / median(b.map((s) => s[k]))).toFixed(2);
console.log(`iptables parse / baseline: ${ratio(iptParse, iptBase, 'wall')} (wall), ${ratio(iptParse, iptBase, 'cpu')} (cpu)`);
console.log(`ipvsadm parse / baseline:  ${ratio(ipvsParse, ipvsBase, 'wall')} (wall), ${ratio(ipvsParse, ipvsBase, 'cpu')} (cpu)`);
for (const [name, samples] of [['iptables', iptParse], ['ipvsadm', ipvsParse]] as const) {
  const wall = median(samples.map((s) => s.wall));
  const cpu = median(samples.map((s) => s.cpu));
  // on a shared machine the wall clock also counts the time other processes had the CPU
  console.log(`median ${name} parse under ${LIMIT_MS} ms: ${wall < LIMIT_MS ? 'yes' : 'no'} (${wall.toFixed(1)} ms wall, ${cpu.toFixed(1)} ms CPU)`);
}
