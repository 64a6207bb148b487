// The `-m comment` texts kube-proxy writes, which are the only place a dump names Services. Since 1.2
// they start with the service port name — "ns/name:port", "ns/name" for an unnamed port in current
// releases, "ns/name:" (trailing colon) for one in old ones — followed by what the rule is for.

export type CommentRole =
  | 'cluster-ip'
  | 'external-ip'
  | 'loadbalancer-ip'
  /** the name alone: KUBE-NODEPORTS, KUBE-SVC and KUBE-SEP rules */
  | 'plain'
  | 'no-endpoints'
  | 'no-local-endpoints'
  | 'health-check'
  /** "ns/name:port -> 10.0.0.5:80" on a KUBE-SVC rule (1.25+) */
  | 'endpoint'
  | 'other';

export interface ServiceComment {
  /** "ns/name" */
  service: string;
  /** "" for an unnamed port */
  portName: string;
  role: CommentRole;
  /** for role "endpoint": the address after "->" */
  endpoint?: string;
}

const HEAD = /^([a-z0-9][-a-z0-9.]*)\/([a-z0-9][-a-z0-9.]*)(?::([^\s]*))?$/i;

export function parseServiceComment(comment: string): ServiceComment | undefined {
  const space = comment.indexOf(' ');
  const head = space < 0 ? comment : comment.slice(0, space);
  const m = HEAD.exec(head);
  if (!m) return undefined;
  const service = `${m[1]}/${m[2]}`;
  const portName = m[3] ?? '';
  const rest = space < 0 ? '' : comment.slice(space + 1).trim();
  switch (rest) {
    case '':
      return { service, portName, role: 'plain' };
    case 'cluster IP':
      return { service, portName, role: 'cluster-ip' };
    case 'external IP':
      return { service, portName, role: 'external-ip' };
    case 'loadbalancer IP':
      return { service, portName, role: 'loadbalancer-ip' };
    case 'has no endpoints':
      return { service, portName, role: 'no-endpoints' };
    case 'has no local endpoints':
      return { service, portName, role: 'no-local-endpoints' };
    case 'health check node port':
      return { service, portName, role: 'health-check' };
  }
  if (rest.startsWith('-> ')) return { service, portName, role: 'endpoint', endpoint: rest.slice(3).trim() };
  return { service, portName, role: 'other' };
}

/**
 * The service port a phrase-style comment is about ("masquerade traffic for ns/name:port external
 * destinations", "Balancing rule 0 for ns/name:port", …), or one of the forms above.
 */
export function commentServicePort(comment: string): { service: string; portName: string } | undefined {
  const direct = parseServiceComment(comment);
  if (direct) return { service: direct.service, portName: direct.portName };
  const m = /(?:^| )(?:for|to) ([a-z0-9][-a-z0-9.]*)\/([a-z0-9][-a-z0-9.]*)(?::([^\s]*))?(?: |$)/i.exec(comment);
  return m ? { service: `${m[1]}/${m[2]}`, portName: m[3] ?? '' } : undefined;
}
