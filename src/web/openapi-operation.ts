import type { Request } from 'express';
import * as z from 'zod';
import { SwitchboardError, ValidationError } from '../core/errors.ts';

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

/**
 * One `/api` route as the OpenAPI document describes it, declared next to its handler in the
 * route file. The handler registers itself at `path` and validates with the same schemas, so the
 * document cannot describe a request the route would parse differently.
 */
export interface ApiOperation {
  method: HttpMethod;
  /** Express style, e.g. `/api/tasks/:id`; the document writes `/api/tasks/{id}`. */
  path: string;
  /** Becomes the operationId: what a generated client calls it. */
  id: string;
  tag: string;
  summary: string;
  description?: string;
  /** Readable without credentials (the description itself). */
  public?: boolean;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** The body's media type when it is not JSON (an upload). */
  bodyType?: string;
  /** The success answer (`type`: its media type when it is not JSON, e.g. a download). */
  ok: { status: number; description: string; schema: z.ZodType; type?: string };
  /**
   * Refusals this route can answer beyond those every authenticated route may (401, 429, 503,
   * and 400/413 for a body): 400, 403, 404, 409.
   */
  errors: number[];
}

/** Keeps the literal types of an operation (and checks it against ApiOperation). */
export function operation<const T extends ApiOperation>(op: T): T {
  return op;
}

/** The first problem only, naming where it is, as every other 400 does; never a zod dump. */
function problemOf(error: z.ZodError, where: string): SwitchboardError {
  const issue = error.issues[0]!;
  // A check that delegated to the core (an address) carries the core's own error and code.
  const core = (issue as { params?: { error?: unknown } }).params?.error;
  if (core instanceof SwitchboardError) return core;
  if (issue.path.length === 0) return new ValidationError(issue.message.startsWith('Invalid input') ? `the request ${where === 'path' ? 'path' : where === 'query' ? 'query string' : 'body'} must be a JSON object` : issue.message);
  const name = issue.path.map(String).join('.');
  // Schemas give their own messages naming the field; zod's defaults get the field put first.
  if (issue.path.some((k) => issue.message.includes(`'${String(k)}'`))) return new ValidationError(issue.message);
  return new ValidationError(`${where === 'query' ? 'query parameter ' : ''}'${name}': ${issue.message}`);
}

/** Parses `value` with `schema`, or throws the 400 a client sees (never a zod dump). */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'query' | 'path'): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw problemOf(r.error, where);
  return r.data;
}

/** The request parts an operation declares, parsed by its own schemas. */
export const requestOf = {
  params: <S extends z.ZodType>(op: { params?: S }, req: Request): z.output<S> => parseWith(op.params!, req.params, 'path'),
  query: <S extends z.ZodType>(op: { query?: S }, req: Request): z.output<S> => parseWith(op.query!, req.query, 'query'),
  // A missing body is `{}`: express.json leaves req.body undefined when nothing was sent.
  body: <S extends z.ZodType>(op: { body?: S }, req: Request): z.output<S> => parseWith(op.body!, req.body ?? {}, 'body'),
};

/**
 * A field checked by the core's own validator (addresses, patterns): the schema documents it as
 * a string, and a refusal keeps the core's code and message (`bad_address`, …).
 */
export function coreChecked<T>(check: (v: unknown) => T, meta: { description: string; example?: string }) {
  // meta before check: a check makes a copy that would not carry it.
  return z.custom<string>().meta({ override: { type: 'string', ...meta } }).check((ctx) => {
    try {
      check(ctx.value);
    } catch (err) {
      if (!(err instanceof SwitchboardError)) throw err;
      ctx.issues.push({ code: 'custom', message: err.message, input: ctx.value, params: { error: err } });
    }
  });
}

/**
 * An optional integer in a range (a query string's "20" counts; `true` or `[1]` do not), with
 * its default when absent: `'max' must be an integer from 1 to 1000, got "ten"`.
 */
export function integerIn(name: string, min: number, max: number, fallback: number) {
  return z.custom<unknown>().meta({ override: { type: 'integer', minimum: min, maximum: max, default: fallback } }).optional().transform((v, ctx) => {
    if (v === undefined || v === null || v === '') return fallback;
    const n = typeof v === 'string' ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      ctx.issues.push({ code: 'custom', message: `'${name}' must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`, input: v });
      return z.NEVER;
    }
    return n;
  });
}

/** A lenient count (`limit`): absent or not a number → the default; outside the range → clamped. */
export function clampedInt(min: number, max: number, fallback: number) {
  return z.custom<unknown>().meta({ override: { type: 'integer', minimum: min, maximum: max, default: fallback, description: `default ${fallback}; values outside ${min}…${max} are clamped` } }).optional()
    .transform((v) => Math.min(Math.max(Number(v) || fallback, min), max));
}
