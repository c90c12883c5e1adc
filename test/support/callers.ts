import type { Caller } from '../../src/core/pipeline.ts';

/**
 * The gateway's own code as a caller: the router lets internal doors act without a rule. Tests
 * read and act as it where the test is about the act, not about who may do it.
 */
export const SYSTEM_CALLER: Caller = { principal: { kind: 'system', name: 'test' }, door: 'system' };
