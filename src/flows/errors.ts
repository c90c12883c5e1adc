import { SwitchboardError } from '../core/errors.ts';

/** Thrown into a flow when a request, receive or ask waited longer than its timeout. Catchable. */
export class FlowTimeout extends SwitchboardError {
  constructor(readonly step: number, readonly waitingFor: string) {
    super('flow_timeout', `step ${step}: no ${waitingFor} arrived before the timeout`, 504);
  }
}

/** The code asked for something other than what the journal recorded at this step. */
export class NonDeterministicChange extends SwitchboardError {
  constructor(readonly step: number, recorded: string, requested: string) {
    super('non_deterministic', `non-deterministic change at step ${step}: the journal has ${recorded}, the code now asks for ${requested}`, 500);
  }
}

/** A flow definition that cannot be loaded; names the file. */
export class FlowLoadError extends SwitchboardError {
  constructor(readonly file: string, reason: string) {
    super('bad_flow', `${file}: ${reason}`, 500);
  }
}

/**
 * Internal: unwinds a run that must stop here (waiting, cancelled, lost its lock). Never seen by
 * users; a flow that catches every error still cannot swallow it for long, as the next ctx call
 * throws it again.
 */
export class Suspend extends Error {
  /** 'evicted': a flow parked in memory was dropped from the runtime's sticky cache (replay takes over). */
  constructor(readonly reason: 'waiting' | 'cancelled' | 'lock-lost' | 'failed' | 'evicted') {
    super(`flow run suspended (${reason})`);
  }
}

/**
 * A message that presents itself as the answer to a step (by correlation id or task) but is not
 * that step's answer: a wrong or guessed token, the wrong responder, a decision on another task,
 * Refused (403, audited); the step keeps waiting.
 */
export class ReplyRefused extends SwitchboardError {
  constructor(readonly address: string, messageId: string, sender: string) {
    super('reply_refused', `message ${messageId} from ${sender} claims to answer a step of ${address}, but no waiting step of that instance takes it (wrong token, responder or task); the step keeps waiting for its own answer`, 403);
  }
}
