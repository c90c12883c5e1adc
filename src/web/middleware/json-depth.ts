import type { RequestHandler } from 'express';
import { ValidationError } from '../../core/errors.ts';

/**
 * Refuses JSON nested deeper than `max`. JSON.parse copes with any depth, but everything after it
 * (canonical signing, journaling, templates) walks bodies recursively, and a 100,000-deep array
 * would end as a stack overflow — a 500 from a user's mistake, or an attacker's lever.
 */
export function jsonDepthLimit(max = 32): RequestHandler {
  return (req, _res, next) => {
    const depth = depthOf(req.body, max);
    if (depth > max) return next(new ValidationError(`the JSON body is nested more than ${max} levels deep; flatten it`, 'too_deep'));
    next();
  };
}

/** Depth of a parsed JSON value, walking iteratively and stopping once past `stopAt`. */
export function depthOf(value: unknown, stopAt = Infinity): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    const level = d + 1;
    if (level > deepest) deepest = level;
    if (deepest > stopAt) return deepest;
    for (const child of Array.isArray(v) ? v : Object.values(v as Record<string, unknown>)) {
      if (child !== null && typeof child === 'object') stack.push([child, level]);
    }
  }
  return deepest;
}
