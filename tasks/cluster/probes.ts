import type { V1Service } from '@kubernetes/client-node';
import { shQuote } from '../remote/quote.ts';
import type { KubeClient } from './kube.ts';

// Do Services still answer through this node? kube-proxy can start, answer /proxyMode and still not carry
// traffic (a missing module, a bad scheduler, stale rules in the way), so each node is probed from the
// node itself before and after its switch, with what real nodes have: curl, else bash's /dev/tcp.

export interface ProbeSpec {
  namespace: string;
  name: string;
  port?: number;
  /** HTTP path: the probe is a GET and checks the status code */
  path?: string;
  /** accepted HTTP status codes (default: any 2xx or 3xx) */
  codes?: number[];
}

export interface ProbeTarget {
  service: string;
  via: 'ClusterIP' | 'NodePort';
  ip: string;
  port: number;
  /** tcp: a connect; tls: connect + TLS handshake; http: a GET with a status check */
  kind: 'tcp' | 'tls' | 'http';
  path?: string;
  codes?: number[];
}

export interface ProbeOutcome {
  ok: boolean;
  ms: number;
  detail: string;
}

export interface ProbeRecord {
  target: ProbeTarget;
  before?: ProbeOutcome;
  after?: ProbeOutcome;
}

/** `namespace/name[:port][/path][=codes]`, as kube_proxy_probe_services lists them */
export function parseProbeSpec(s: string): ProbeSpec {
  const m = /^([a-z0-9-]+)\/([a-z0-9-]+)(?::(\d+))?(\/[^=]*)?(?:=([\d,]+))?$/.exec(s);
  if (!m) throw new Error(`not a probe spec (namespace/name[:port][/path][=codes]): ${s}`);
  return {
    namespace: m[1]!,
    name: m[2]!,
    ...(m[3] ? { port: Number(m[3]) } : {}),
    ...(m[4] ? { path: m[4] } : {}),
    ...(m[5] ? { codes: m[5].split(',').map(Number) } : {}),
  };
}

export const label = (t: ProbeTarget) => `${t.service} ${t.via} ${t.ip.includes(':') ? `[${t.ip}]` : t.ip}:${t.port}${t.path ?? ''}`;

/** Probe targets for one node: ClusterIP, and the node's own NodePort for NodePort/LoadBalancer Services. */
export function targetsFor(svc: V1Service, spec: ProbeSpec, nodeIP: string | undefined): { targets: ProbeTarget[]; problem?: string } {
  const id = `${spec.namespace}/${spec.name}`;
  const ports = svc.spec?.ports ?? [];
  const port = spec.port === undefined ? ports[0] : ports.find((p) => p.port === spec.port);
  if (!port) return { targets: [], problem: `${id} has no port ${spec.port ?? ''}`.trim() };
  if ((port.protocol ?? 'TCP') !== 'TCP') return { targets: [], problem: `${id}:${port.port} is ${port.protocol}: only TCP ports are probed` };
  const kind: ProbeTarget['kind'] = spec.path ? 'http' : port.port === 443 || port.name === 'https' ? 'tls' : 'tcp';
  const extra = { kind, ...(spec.path ? { path: spec.path } : {}), ...(spec.codes ? { codes: spec.codes } : {}) };
  const targets: ProbeTarget[] = [];
  const clusterIP = svc.spec?.clusterIP;
  if (clusterIP && clusterIP !== 'None') targets.push({ service: id, via: 'ClusterIP', ip: clusterIP, port: port.port, ...extra });
  if ((svc.spec?.type === 'NodePort' || svc.spec?.type === 'LoadBalancer') && port.nodePort && nodeIP) {
    targets.push({ service: id, via: 'NodePort', ip: nodeIP, port: port.nodePort, ...extra });
  }
  if (targets.length === 0) return { targets, problem: `${id} is headless: no ClusterIP to probe` };
  return { targets };
}

/** Resolve the probe list for a node: default/kubernetes:443 always, plus the inventory's Services. */
export async function resolveProbes(kube: KubeClient, specs: string[], nodeIP: string | undefined): Promise<{ targets: ProbeTarget[]; problems: string[] }> {
  const all = [{ namespace: 'default', name: 'kubernetes', port: 443 } as ProbeSpec, ...specs.map(parseProbeSpec)];
  const targets: ProbeTarget[] = [];
  const problems: string[] = [];
  for (const spec of all) {
    try {
      const svc = await kube.readService(spec.namespace, spec.name);
      const r = targetsFor(svc, spec, nodeIP);
      targets.push(...r.targets);
      if (r.problem) problems.push(r.problem);
    } catch (e) {
      problems.push(`${spec.namespace}/${spec.name}: ${(e as Error).message}`);
    }
  }
  return { targets, problems };
}

/** One exec probes them all; each gets a few tries with a connect timeout, and its latency is measured. */
export function probeScript(targets: ProbeTarget[], timeoutS = 3, tries = 3): string {
  const lines = [
    'export LC_ALL=C',
    'have_curl=0; command -v curl >/dev/null 2>&1 && have_curl=1',
    'now() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }',
    `probe() { # i kind host port path codes
  local i=$1 kind=$2 h=$3 p=$4 path=$5 codes=$6 n out rc t0 t1 hp
  hp=$h; [[ $h == *:* ]] && hp="[$h]"
  for ((n = 1; n <= ${tries}; n++)); do
    t0=$(now)
    # curl prints its -w text even when it fails: on failure only its error message (-S) is kept (the
    # marker does not start the format: curl reads a format that starts with @ from a file)
    if [ "$kind" = http ] && [ $have_curl = 1 ]; then
      out=$(curl -sS -o /dev/null -w '=@@=%{http_code}' --max-time ${timeoutS} "http://$hp:$p$path" 2>&1); rc=$?
      if [ $rc = 0 ]; then
        out=\${out##*=@@=}
        if [ -n "$codes" ]; then [[ ",$codes," == *",$out,"* ]] || rc=22; else [[ $out =~ ^[23] ]] || rc=22; fi
        out="HTTP $out"
      else
        out=\${out%=@@=*}
      fi
    elif [ "$kind" = tls ] && [ $have_curl = 1 ]; then
      out=$(curl -sSk -o /dev/null -w '=@@=TLS ok, HTTP %{http_code}' --max-time ${timeoutS} "https://$hp:$p/" 2>&1); rc=$?
      if [ $rc = 0 ]; then out=\${out##*=@@=}; else out=\${out%=@@=*}; fi
    else
      out=$(timeout ${timeoutS} bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$h" "$p" 2>&1); rc=$?
      [ $rc = 0 ] && out='TCP connect ok'
    fi
    t1=$(now)
    [ $rc = 0 ] && break
    sleep 0.5
  done
  printf '@@kpm:probe %s %s %s %s\\n' "$i" "$rc" "$((t1 - t0))" "$(printf '%s' "$out" | base64 -w0)"
}`,
  ];
  targets.forEach((t, i) => {
    lines.push(`probe ${i} ${t.kind} ${shQuote(t.ip)} ${t.port} ${shQuote(t.path ?? '')} ${shQuote((t.codes ?? []).join(','))}`);
  });
  return lines.join('\n') + '\n';
}

export function parseProbeOutput(stdout: string, count: number): ProbeOutcome[] {
  const out: ProbeOutcome[] = Array.from({ length: count }, () => ({ ok: false, ms: 0, detail: 'no answer from the probe script' }));
  for (const line of stdout.split('\n')) {
    const m = /^@@kpm:probe (\d+) (\d+) (-?\d+) ?(\S*)$/.exec(line);
    if (!m) continue;
    const i = Number(m[1]);
    if (i >= count) continue;
    const text = Buffer.from(m[4] ?? '', 'base64').toString('utf8').trim();
    const rc = Number(m[2]);
    out[i] = { ok: rc === 0, ms: Math.max(0, Number(m[3])), detail: text || (rc === 124 ? 'timed out' : `exit ${rc}`) };
  }
  return out;
}

/** A probe that answered before and fails after is the switch's fault; one that failed before is not. */
export function regressions(records: ProbeRecord[]): ProbeRecord[] {
  return records.filter((r) => r.before?.ok && r.after && !r.after.ok);
}

export function describeProbes(records: ProbeRecord[]): string {
  const fmt = (o?: ProbeOutcome) => (o ? `${o.ok ? 'ok' : 'FAILED'} ${o.ms}ms${o.ok ? '' : ` (${o.detail})`}` : '-');
  return records.map((r) => `${label(r.target)}: before ${fmt(r.before)}, after ${fmt(r.after)}`).join('; ');
}
