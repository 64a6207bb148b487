import { STATUS_CODES } from 'node:http';

// Failures travel as metav1.Status objects, with the reasons and message texts kube-apiserver uses:
// callers match on `reason` and sometimes on the message, so both have to be the real ones.

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: { reason?: string; message?: string; field?: string }[];
  retryAfterSeconds?: number;
}

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: StatusDetails;
  code: number;
}

const REASONS: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'NotFound',
  405: 'MethodNotAllowed',
  406: 'NotAcceptable',
  409: 'Conflict',
  410: 'Gone',
  413: 'RequestEntityTooLarge',
  415: 'UnsupportedMediaType',
  422: 'Invalid',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
  504: 'Timeout',
};

export function reasonFor(code: number): string {
  return REASONS[code] ?? (STATUS_CODES[code] ?? 'Unknown').replace(/\s+/g, '');
}

export function failure(code: number, message: string, reason = reasonFor(code), details?: StatusDetails): Status {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** A request that ends in a Status: thrown anywhere below the HTTP layer, turned into the response there. */
export class ApiError extends Error {
  readonly status: Status;
  /** extra response headers (Retry-After) */
  readonly headers: Record<string, string>;
  constructor(status: Status, headers: Record<string, string> = {}) {
    super(status.message ?? status.reason ?? String(status.code));
    this.status = status;
    this.headers = headers;
  }
}

/** "configmaps", "daemonsets.apps": how kube-apiserver names a resource in messages. */
export interface GroupResource {
  group: string;
  plural: string;
}

const qualified = (gr: GroupResource) => (gr.group ? `${gr.plural}.${gr.group}` : gr.plural);
const detailsOf = (gr: GroupResource, name: string): StatusDetails => ({ name, ...(gr.group ? { group: gr.group } : {}), kind: gr.plural });

export const errors = {
  notFound: (gr: GroupResource, name: string) => new ApiError(failure(404, `${qualified(gr)} "${name}" not found`, 'NotFound', detailsOf(gr, name))),
  alreadyExists: (gr: GroupResource, name: string) =>
    new ApiError(failure(409, `${qualified(gr)} "${name}" already exists`, 'AlreadyExists', detailsOf(gr, name))),
  conflict: (gr: GroupResource, name: string, why = 'the object has been modified; please apply your changes to the latest version and try again') =>
    new ApiError(failure(409, `Operation cannot be fulfilled on ${qualified(gr)} "${name}": ${why}`, 'Conflict', detailsOf(gr, name))),
  badRequest: (message: string) => new ApiError(failure(400, message, 'BadRequest')),
  invalid: (kind: string, gr: GroupResource, name: string, field: string, message: string) =>
    new ApiError(
      failure(422, `${kind}${gr.group ? `.${gr.group}` : ''} "${name}" is invalid: ${field}: ${message}`, 'Invalid', {
        ...detailsOf(gr, name),
        kind,
        causes: [{ reason: 'FieldValueInvalid', message, field }],
      }),
    ),
  unprocessable: (message: string) => new ApiError(failure(422, message, 'Invalid')),
  /** kube-apiserver's answer to a path it does not serve */
  noRoute: () => new ApiError(failure(404, 'the server could not find the requested resource', 'NotFound', {})),
  methodNotAllowed: () => new ApiError(failure(405, 'the server does not allow this method on the requested resource', 'MethodNotAllowed', {})),
  unsupportedMediaType: (accepted: string[]) =>
    new ApiError(
      failure(415, `the body of the request was in an unknown format - accepted media types include: ${accepted.join(', ')}`, 'UnsupportedMediaType', {}),
    ),
  unauthorized: () => new ApiError(failure(401, 'Unauthorized', 'Unauthorized')),
  expired: (requested: number, oldest: number) => failure(410, `too old resource version: ${requested} (${oldest})`, 'Expired'),
};
