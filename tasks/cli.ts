import { Command, InvalidArgumentError, Option } from 'commander';
import { EXIT, provision, TAGS } from './commands/provision.ts';
import { promptSecret } from './remote/prompt.ts';
import { watchInterrupts } from './run/interrupt.ts';

// Commands and flags only: each command builds its options and hands over.

export const BECOME_PASSWORD_ENV = 'KPM_BECOME_PASSWORD';

function positiveIntUpTo(name: string, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > max) throw new InvalidArgumentError(`${name} must be a whole number from 1 to ${max}`);
    return n;
  };
}

function positiveInt(name: string) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 1000) throw new InvalidArgumentError(`${name} must be a whole number from 1 to 1000`);
    return n;
  };
}

/** `npm run provision --dry-run -- …` hands --dry-run to npm, which exports npm_config_dry_run: honour it. */
export function dryRunRequested(flag: boolean | undefined): boolean {
  return !!flag || process.env.npm_config_dry_run === 'true';
}

/** Bad options found after commander's own checks: reported like them, with exit code 5. */
class UsageError extends Error {}

async function becomePassword(ask: boolean): Promise<string | undefined> {
  if (ask) return promptSecret('BECOME password: ');
  const env = process.env[BECOME_PASSWORD_ENV];
  // sudo -S reads the password up to the first line break: the rest would be silently dropped
  if (env && /[\r\n\0]/.test(env)) throw new UsageError(`${BECOME_PASSWORD_ENV} contains a line break or NUL: sudo reads a password only up to the first line break`);
  return env === undefined || env === '' ? undefined : env;
}

/** The flags that say which cluster and which kube-proxy objects: the same on every command that reads them. */
function withClusterFlags(cmd: Command): Command {
  return cmd
    .option('--kubeconfig <file>', 'kubeconfig (default: the inventory variable kubeconfig, KUBECONFIG, ~/.kube/config)')
    .option('--context <name>', 'kubeconfig context (default: kube_context, else the current context)')
    .option('--namespace <ns>', "kube-proxy's namespace", 'kube-system')
    .option('--configmap <name>', "kube-proxy's ConfigMap", 'kube-proxy')
    .option('--config-key <key>', 'the ConfigMap key holding the KubeProxyConfiguration', 'config.conf');
}

export function buildCli(): Command {
  const program = new Command('kube-proxy-mode')
    .description("Move a live cluster's kube-proxy between modes (ipvs, nftables, iptables) safely, node by node: prepare the nodes over SSH, flip the ConfigMap, recycle kube-proxy one node at a time with proof")
    .showHelpAfterError()
    .exitOverride();

  program
    .command('provision')
    .description('node phase (packages, module files, modules, verify) on every target node, then cluster phase (ConfigMap, serial kube-proxy recycle with proof, rollback on failure); --dry-run shows it all first')
    .requiredOption('-i, --inventory <file>', 'Ansible inventory (YAML or INI)')
    .option('-C, --dry-run', 'show per node what would change, change nothing (also: --check)')
    .addOption(new Option('--check').hideHelp())
    .option('-l, --limit <pattern>', 'narrow the targets: host or group names, globs, !exclude, &intersect, @retry-file')
    .option('-t, --tags <tags>', `run only these phases (${TAGS.join(', ')}); comma separated`, (v: string, prev: string[] = []) => [...prev, v])
    .option('-f, --forks <n>', 'nodes worked on at once (default: kpm_forks, else 10)', positiveInt('--forks'))
    .option('-K, --ask-become-pass', `prompt for the sudo password (or set ${BECOME_PASSWORD_ENV})`)
    .option('--accept-new-host-keys', 'trust and record the host key of a node not yet in known_hosts (a changed key is still refused)')
    .option('--known-hosts <file>', 'known_hosts file (default: kpm_known_hosts_file, else ~/.ssh/known_hosts)')
    .option('-D, --diff', 'show file diffs on a real run too (a dry run always shows them)')
    .option('--report <file>', 'write a JSON report: per host status, steps with timings, SSH execs')
    .option('--retry-file <file>', 'where to list failed and unreachable hosts (default: <inventory name>.retry)')
    .addOption(
      new Option('--mode <mode>', 'target mode for every host (default: kube_proxy_mode, else ipvs): each mode\'s prerequisites are prepared and proven per node').choices(['ipvs', 'nftables', 'iptables']),
    )
    .option('--cleanup-old-mode', "after each node is verified in its new mode, remove the other modes' leftovers from it (kube-proxy removes none between iptables and ipvs); a dry run lists them")
    .option('--kubeconfig <file>', 'kubeconfig (default: the inventory variable kubeconfig, KUBECONFIG, ~/.kube/config)')
    .option('--context <name>', 'kubeconfig context (default: kube_context, else the current context)')
    .option('--canary <node>', 'recycle this node first')
    .option('--pod-timeout <seconds>', 'how long a new kube-proxy pod may take to become Ready', positiveInt('--pod-timeout'), 180)
    .option('--no-rollback', 'on a failed node, stop but leave the ConfigMap and the switched nodes as they are')
    .option('--backup-dir <dir>', 'where the ConfigMap backup is written before the change', '.')
    .option('--namespace <ns>', "kube-proxy's namespace", 'kube-system')
    .option('--configmap <name>', "kube-proxy's ConfigMap", 'kube-proxy')
    .option('--config-key <key>', 'the ConfigMap key holding the KubeProxyConfiguration', 'config.conf')
    .option('--daemonset <name>', "kube-proxy's DaemonSet", 'kube-proxy')
    .action(async (o) => {
      const interrupt = watchInterrupts((l) => process.stderr.write(`\n${l}\n`));
      const code = await provision({
        interrupt,
        inventory: o.inventory,
        dryRun: dryRunRequested(o.dryRun || o.check),
        limit: o.limit,
        tags: o.tags,
        forks: o.forks,
        becomePassword: await becomePassword(!!o.askBecomePass),
        acceptNewHostKeys: !!o.acceptNewHostKeys,
        knownHosts: o.knownHosts,
        report: o.report,
        retryFile: o.retryFile,
        showDiffs: !!o.diff,
        ...(o.mode ? { mode: o.mode } : {}),
        cluster: {
          cleanupOldMode: !!o.cleanupOldMode,
          kubeconfig: o.kubeconfig,
          context: o.context,
          canary: o.canary,
          podTimeoutS: o.podTimeout,
          rollback: o.rollback !== false,
          backupDir: o.backupDir,
          namespace: o.namespace,
          configMap: o.configmap,
          configKey: o.configKey,
          daemonSet: o.daemonset,
        },
      });
      interrupt.dispose();
      process.exitCode = code;
    });

  withClusterFlags(program.command('status'))
    .description("which mode runs where, really: the ConfigMap's mode, each node's kube-proxy (/proxyMode, its log), drift (restart pending), IPVS prerequisites, dataplane and the other modes' leftovers; read-only. Exit 0 consistent, 2 not, 3 some node could not be read")
    .requiredOption('-i, --inventory <file>', 'Ansible inventory (YAML or INI)')
    .option('-l, --limit <pattern>', 'read only these nodes over SSH (host or group names, globs, !exclude, &intersect, @retry-file)')
    .option('--json', 'print the whole status as JSON')
    .option('-f, --forks <n>', 'nodes read at once (default: kpm_forks, else 10)', positiveInt('--forks'))
    .option('-K, --ask-become-pass', `prompt for the sudo password (or set ${BECOME_PASSWORD_ENV})`)
    .option('--known-hosts <file>', 'known_hosts file (default: kpm_known_hosts_file, else ~/.ssh/known_hosts)')
    .option('--daemonset <name>', "kube-proxy's DaemonSet", 'kube-proxy')
    .action(async (o) => {
      const { status } = await import('./commands/status.ts');
      process.exitCode = await status({
        inventory: o.inventory,
        limit: o.limit,
        json: !!o.json,
        forks: o.forks,
        becomePassword: await becomePassword(!!o.askBecomePass),
        knownHosts: o.knownHosts,
        kube: { ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}), ...(o.context ? { context: o.context } : {}) },
        namespace: o.namespace,
        configMap: o.configmap,
        configKey: o.configKey,
        daemonSet: o.daemonset,
      });
    });

  withClusterFlags(program.command('trace'))
    .description("where a Service's traffic goes on a node, really: the Service and its EndpointSlices from the API, the node's iptables (KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP, with each endpoint's share), IPVS table or nftables kube-proxy table (service-ips -> service- -> endpoint- chains, shares from numgen) over SSH, compared; offline with --dump. Exit 0 in line with the EndpointSlices, 2 with warnings, 3 not in the dataplane")
    .argument('<service>', 'NAMESPACE/SERVICE[:PORT] (a port name or number)')
    .option('-i, --inventory <file>', 'Ansible inventory (YAML or INI): live trace through one of its nodes')
    .option('--node <name>', 'the node to read (node or inventory host name; default: the first kube-proxy node in the inventory)')
    .option('--port <port>', 'only this Service port (name or number)')
    .option('--json', 'print the trace as JSON: {service, mode, frontends: [{kind, address, protocol, backends: [{address, share, weight?}]}], warnings}')
    .option('--dump <file>', 'offline: analyse a saved iptables-save, ipvsadm -Ln or nft list table ip kube-proxy (or nft list ruleset) output (no cluster, no SSH)')
    .option('--cluster-ip <ip>', 'offline, ipvsadm dumps: the Service ClusterIP (IPVS has no Service names)')
    .option('--node-port <port>', 'offline, ipvsadm dumps: the Service NodePort', positiveIntUpTo('--node-port', 65535))
    .option('--protocol <protocol>', 'TCP (default), UDP or SCTP')
    .option('-K, --ask-become-pass', `prompt for the sudo password (or set ${BECOME_PASSWORD_ENV})`)
    .option('--known-hosts <file>', 'known_hosts file (default: kpm_known_hosts_file, else ~/.ssh/known_hosts)')
    .action(async (service: string, o) => {
      const { trace } = await import('./commands/trace.ts');
      process.exitCode = await trace({
        service,
        json: !!o.json,
        port: o.port,
        inventory: o.inventory,
        node: o.node,
        dump: o.dump,
        clusterIP: o.clusterIp,
        nodePort: o.nodePort,
        protocol: o.protocol,
        ...(o.dump ? {} : { becomePassword: await becomePassword(!!o.askBecomePass) }),
        knownHosts: o.knownHosts,
        kube: { ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}), ...(o.context ? { context: o.context } : {}) },
        namespace: o.namespace,
        configMap: o.configmap,
        configKey: o.configKey,
      });
    });

  program
    .command('demo')
    .description('bring up 3 local test hosts (root, Linux) and the built-in test API server, run provision: dry run, real run, rerun; tear down')
    .option('--hosts <n>', 'number of test hosts', positiveInt('--hosts'), 3)
    .option('--keep', 'leave the test hosts running at the end (tear down later with test/lab/hostlab/down.sh)')
    .action(async (o) => {
      const { demo } = await import('./commands/demo.ts');
      process.exitCode = await demo({ hosts: o.hosts, keep: !!o.keep });
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildCli();
  try {
    await program.parseAsync(argv);
  } catch (e) {
    const err = e as { code?: string; exitCode?: number; message?: string };
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
      process.exitCode = 0;
      return;
    }
    if (err.code?.startsWith('commander.')) {
      process.exitCode = EXIT.usage;
      return;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`kube-proxy-mode: ${e.message}\n`);
      process.exitCode = EXIT.usage;
      return;
    }
    process.stderr.write(`kube-proxy-mode: ${err.message ?? String(e)}\n`);
    process.exitCode = EXIT.error;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await main(process.argv);
}
