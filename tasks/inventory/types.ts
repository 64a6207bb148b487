// The resolved inventory: what every other module reads. Produced only by tasks/inventory/load.ts,
// after validation, so consumers never see a half-valid host.

export type ProxyMode = 'ipvs' | 'iptables' | 'nftables';

/** How to reach a host (Ansible's connection variables, resolved). */
export interface Connection {
  /** ansible_host, else the inventory host name */
  address: string;
  /** ansible_port, default 22 */
  port: number;
  /** ansible_user, default: the local user running the tool */
  user: string;
  /** ansible_ssh_private_key_file (with ~ expanded), if any */
  privateKeyFile?: string;
  /** ansible_become (default false; forced true is never implied) */
  become: boolean;
  /** ansible_become_user, default root */
  becomeUser: string;
}

/** kube-proxy settings, named as kubespray names them. */
export interface NodeSettings {
  /** kube_proxy_mode, default 'ipvs' */
  mode: ProxyMode;
  /** kube_proxy_scheduler, default 'rr' */
  scheduler: string;
  /** kube_proxy_strict_arp, default false */
  strictArp: boolean;
  /** kube_proxy_exclude_cidrs, default [] */
  excludeCidrs: string[];
  /** kube_proxy_ipvs_modules: IPVS kernel modules to load; null = the tool's default list */
  ipvsModules: string[] | null;
  /** kube_proxy_tcp_timeout: IPVS idle TCP session timeout, a Go duration (`900s`); unset = keep the ConfigMap's */
  /** kube_proxy_probe_services: `namespace/name[:port][/path][=codes]`, probed around each node's switch */
  probeServices?: string[];
  tcpTimeout?: string;
  /** kube_proxy_tcp_fin_timeout: IPVS TCP timeout after a FIN, a Go duration; unset = keep the ConfigMap's */
  tcpFinTimeout?: string;
  /** kube_proxy_udp_timeout: IPVS UDP timeout, a Go duration; unset = keep the ConfigMap's */
  udpTimeout?: string;
}

/** The tool's own settings (inventory variables prefixed kpm_), resolved per host. */
export interface RunSettings {
  /** kpm_forks, default 10: hosts worked on at once (read from the `all` level) */
  forks: number;
  /** kpm_connect_timeout, seconds, default 10 */
  connectTimeout: number;
  /** kpm_connect_retries, default 2 (so at most 3 attempts) */
  connectRetries: number;
  /** kpm_command_timeout, seconds, default 300 (package installs can be slow) */
  commandTimeout: number;
  /** kpm_package_lock_timeout, seconds, default 120: the wait for another package manager run's lock */
  packageLockTimeout: number;
  /** kpm_known_hosts_file, default ~/.ssh/known_hosts (with ~ expanded) */
  knownHostsFile: string;
}

export interface Host {
  name: string;
  /** every group the host belongs to, directly or through children, `all` included */
  groups: string[];
  connection: Connection;
  settings: NodeSettings;
  run: RunSettings;
  /** all merged variables, as read (for later phases: kubeconfig, kube_context, ...) */
  vars: Record<string, unknown>;
  /** where the host was first declared */
  source: { file: string; line: number };
}

export interface Inventory {
  file: string;
  /** in declaration order */
  hosts: Host[];
  /** group name -> names of its hosts, children included (transitively) */
  groups: Record<string, string[]>;
  /**
   * What was read differently from how Ansible users might expect, one line each, naming the file:
   * a skipped vault-encrypted vars file, a group_vars entry for a group the inventory does not have,
   * an ignored variable. Absent when there is nothing to say.
   */
  warnings?: string[];
}
