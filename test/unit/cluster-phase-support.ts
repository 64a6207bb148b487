import type { ClusterPhaseOptions } from '../../tasks/cluster/phase.ts';
import type { Host } from '../../tasks/inventory/types.ts';
import type { SessionPool } from '../../tasks/remote/sessions.ts';
import type { RemoteSession } from '../../tasks/remote/ssh.ts';

// The cluster phase without lab hosts: nodes as it sees them over SSH (the node check script is answered
// from the mode each node's simulated kube-proxy runs, and its probes from `answers`; the execs each node
// was asked to run are counted, since the phase promises few of them), and its usual options.

export type ProbeAnswer = (node: string, mode: string | null, ip: string, port: number) => boolean;

export interface FakeNodes {
  sessions: SessionPool;
  /** SSH execs per node so far */
  execs: Map<string, number>;
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

export function fakeNodeSessions(modeOf: (node: string) => string | null, answers?: ProbeAnswer): FakeNodes {
  const execs = new Map<string, number>();
  const session = (host: Host) =>
    ({
      async run(script: string) {
        execs.set(host.name, (execs.get(host.name) ?? 0) + 1);
        const mode = modeOf(host.name);
        let out = mode ? `@@kpm:mode 0 ${b64(mode)}\n` : `@@kpm:mode 7 ${b64('curl: (7) Failed to connect')}\n`;
        if (script.includes('ipvsadm -Ln')) {
          const table = mode === 'ipvs' ? 'IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\nTCP  10.96.0.1:443 rr\n' : '';
          out += `@@kpm:ipvs 0 ${b64(table)}\n`;
        }
        // each mode's own proof, as a node programmed by a kube-proxy in that mode shows it
        if (script.includes('nft list tables') && mode === 'nftables') out += `@@kpm:proof 0 ${b64('table ip kube-proxy\ntable ip6 kube-proxy\n')}\n`;
        if (script.includes('-S KUBE-SERVICES') && mode === 'iptables') out += `@@kpm:proof 0 ${b64('-N KUBE-SERVICES\n')}\n`;
        // the probes ride in the same exec as the mode read
        for (const [, i, ip, port] of script.matchAll(/^probe (\d+) \w+ '?([^' ]+)'? (\d+)/gm)) {
          const ok = answers ? answers(host.name, mode, ip!, Number(port)) : true;
          out += `@@kpm:probe ${i} ${ok ? 0 : 7} 3 ${b64(ok ? 'TLS ok, HTTP 403' : 'curl: (28) Connection timed out')}\n`;
        }
        return { stdout: out, stderr: '', code: 0, signal: null, ms: 1 };
      },
    }) as unknown as RemoteSession;
  const sessions = { get: async (h: Host) => session(h), execs: async () => 0, closeAll: async () => {} } as unknown as SessionPool;
  return { sessions, execs };
}

/** The options of a run against the test API server's kube-system/kube-proxy, every node ready. */
export function phaseOptions(o: { kubeconfig: string; hosts: Host[]; backupDir: string; sessions: SessionPool }): ClusterPhaseOptions {
  return {
    targetMode: 'ipvs',
    dryRun: false,
    kube: { kubeconfig: o.kubeconfig },
    namespace: 'kube-system',
    configMap: 'kube-proxy',
    configKey: 'config.conf',
    daemonSet: 'kube-proxy',
    labelSelector: 'k8s-app=kube-proxy',
    podTimeoutMs: 10_000,
    rollback: true,
    backupDir: o.backupDir,
    inventoryHosts: o.hosts,
    targets: o.hosts,
    readiness: async () => ({ ready: true }),
    sessions: o.sessions,
    emit: () => {},
    out: () => {},
  };
}
