// What a trace of one Service through a node's dataplane says. The JSON form of ServiceTrace is what
// `trace --json` prints and users script against: keep the required fields and their meaning stable,
// add optional ones only.

export type FrontendKind = 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalIP';

export interface TraceBackend {
  /** "ip:port" (IPv6 in brackets), "?" when the dump does not say */
  address: string;
  /** share of the frontend's new connections, 0..1 */
  share: number;
  /** IPVS weight */
  weight?: number;
  /** iptables: the KUBE-SEP chain; nftables: the endpoint- chain (or the chain whose rule DNATs) */
  chain?: string;
  /**
   * false when the endpoint chain is not in the dump: iptables takes the address from the rule's
   * comment, nftables from the chain's name ("?" when neither says)
   */
  resolved?: boolean;
  /** IPVS forwarding method: Masq, Route, Tunnel, Local */
  forwarding?: string;
  activeConn?: number;
  inactiveConn?: number;
  /** IPVS --stats / --rate columns */
  stats?: Record<string, number>;
}

export interface MasqueradeMark {
  chain: string;
  /** the rule's conditions besides the frontend's own address/port/protocol: "! -s 10.244.0.0/16", "always" */
  condition: string;
  line: number;
}

/** A path only some clients take (pods, the node itself), next to the main one. */
export interface TraceAlternative {
  condition: string;
  /** the chain it jumps to */
  chain: string;
  backends: TraceBackend[];
}

export interface TraceDrop {
  /** where the verdict is; nftables: a map ("@no-endpoint-services") for the Services without endpoints */
  chain: string;
  /**
   * KUBE-MARK-DROP, DROP, REJECT; ACCEPT, MASQUERADE, SNAT or REDIRECT (ends the walk without a DNAT);
   * nftables: drop, reject, accept, masquerade; or a chain the dump does not have (reason "chain not
   * in the dump")
   */
  target: string;
  share: number;
  /** the rule's comment */
  reason?: string;
  line?: number;
}

export interface TraceFrontend {
  kind: FrontendKind;
  /** "ip:port"; a NodePort on an unknown node address is "*:port" */
  address: string;
  /** TCP, UDP, SCTP */
  protocol: string;
  backends: TraceBackend[];
  /** iptables, nftables: the service port's name ("" when unnamed) */
  portName?: string;
  /** iptables, nftables: chains on the main path, entry first (nftables: the map, "@service-ips") */
  path?: string[];
  /** iptables: jumps to KUBE-MARK-MASQ met on the way; nftables: to mark-for-masquerade */
  masquerade?: MasqueradeMark[];
  /** session affinity (ClientIP): iptables -m recent, IPVS persistent, nftables affinity sets */
  affinity?: { timeoutSeconds?: number };
  /** Local when the main path goes through KUBE-SVL / KUBE-XLB (iptables) or a local- chain (nftables) */
  policy?: 'Cluster' | 'Local';
  drops?: TraceDrop[];
  /** iptables, nftables: share of the traffic that passes every rule without being DNATed or dropped */
  fallThrough?: number;
  alternatives?: TraceAlternative[];
  /** loadBalancerSourceRanges seen in a KUBE-FW chain (iptables) or a firewall- chain (nftables) */
  sourceRanges?: string[];
  /** IPVS */
  scheduler?: string;
  flags?: string[];
  persistent?: number;
  /** IPVS: the ">>> node" section of a multi-node listing */
  node?: string;
  /** the line of the frontend's first rule or virtual-service line */
  line?: number;
}

/** A per-Service chain of the Service found in the dump that no frontend rule leads to (an excerpt). */
export interface DetachedChain {
  chain: string;
  portName?: string;
  backends: TraceBackend[];
  fallThrough?: number;
}

export interface ServiceTrace {
  /** "ns/name" */
  service: string;
  mode: 'iptables' | 'ipvs' | 'nftables';
  frontends: TraceFrontend[];
  warnings: string[];
  detached?: DetachedChain[];
}
