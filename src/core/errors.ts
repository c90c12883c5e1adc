/**
 * Typed errors. Every error a user can see is a SwitchboardError with a stable `code`, the HTTP
 * status a door should answer with, and a message that says what was wrong, where, and what was
 * expected. Doors map these in one place (web/middleware/error-handler.ts); anything else is a
 * bug and is reported as `internal` without details.
 */
export class SwitchboardError extends Error {
  readonly code: string;
  readonly status: number;
  /** True when trying again later may succeed (a dependency is down, not the input is wrong). */
  readonly retryable: boolean;
  /** Set once the refusal is in the audit trail, so the door that answers does not write it twice. */
  audited = false;
  constructor(code: string, message: string, status = 400, retryable = false) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.retryable = retryable;
  }
}

export class AddressError extends SwitchboardError {
  constructor(readonly address: string, reason: string) {
    super('bad_address', `invalid address '${address}': ${reason}`, 400);
  }
}

export class ValidationError extends SwitchboardError {
  constructor(message: string, code = 'bad_request') {
    super(code, message, 400);
  }
}

export class ConfigError extends SwitchboardError {
  constructor(readonly file: string, readonly problems: string[]) {
    super('bad_config', `${file}: ${problems.length} problem(s) in the configuration:\n${problems.map((p) => `${file}: ${p}`).join('\n')}`, 500);
  }
}

export class Unauthenticated extends SwitchboardError {
  constructor(message = 'authentication required: send HTTP Basic credentials of a directory user or a bearer token') {
    super('unauthenticated', message, 401);
  }
}

export class PermissionDenied extends SwitchboardError {
  constructor(readonly principal: string, readonly verb: string, readonly address: string) {
    super('forbidden', `${principal} may not ${verb} on ${address}: no permission rule allows it`, 403);
  }
}

export class NotFound extends SwitchboardError {
  constructor(message: string) {
    super('not_found', message, 404);
  }
}

export class Conflict extends SwitchboardError {
  constructor(message: string) {
    super('conflict', message, 409);
  }
}

/** A message that was to be discarded is being delivered right now: a consumer holds it. */
export class MessageInFlight extends SwitchboardError {
  constructor(readonly address: string, readonly messageId: string) {
    super('in_flight', `message '${messageId}' of ${address} is being delivered right now (a consumer holds it), so it was not discarded; if the delivery fails it comes back to the queue and can be discarded then`, 409);
  }
}

export class PayloadTooLarge extends SwitchboardError {
  constructor(limit: string) {
    super('payload_too_large', `request body is larger than the limit of ${limit}`, 413);
  }
}

/** No endpoint serves this scheme in this gateway (e.g. `mq:` without brokers configured). */
export class UnknownScheme extends SwitchboardError {
  constructor(readonly scheme: string, known: string[]) {
    super('unknown_scheme', `no endpoint serves the scheme '${scheme}:' in this gateway (available: ${known.join(', ')})`, 400);
  }
}

/**
 * The scheme is served, but the transport has no such target (a webhook, broker or peer that is
 * not in the config), e.g. `no webhook named 'crm' in the config (configured: …)`.
 */
export class UnknownTarget extends SwitchboardError {
  constructor(readonly address: string, what: string, known: string[]) {
    super('unknown_target', `${address}: no ${what} in the config (configured: ${known.length > 0 ? known.join(', ') : 'none'})`, 400);
  }
}

/** The destination cannot accept now; the caller keeps the message and tries later. */
export class DestinationUnavailable extends SwitchboardError {
  constructor(readonly address: string, reason: string) {
    super('destination_unavailable', `${address} cannot accept messages now: ${reason}`, 503, true);
  }
}

/** A dependency (Redis, the directory) is down; the door answers 503 with Retry-After. */
export class DependencyUnavailable extends SwitchboardError {
  constructor(readonly dependency: string, reason: string) {
    super('unavailable', `${dependency} is unavailable: ${reason}`, 503, true);
  }
}

export function isRetryable(err: unknown): boolean {
  return err instanceof SwitchboardError ? err.retryable : false;
}
