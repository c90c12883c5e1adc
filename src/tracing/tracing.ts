import type { TraceContext } from './trace-context.ts';

/** OpenTelemetry's span kinds, by name. */
export type SpanKind = 'internal' | 'server' | 'client' | 'producer' | 'consumer';

export type SpanAttributes = Record<string, string | number | boolean | undefined>;

export interface SpanOptions {
  /** The caller's context; none starts a new trace. */
  parent?: TraceContext;
  /** @defaultValue 'internal' */
  kind?: SpanKind;
  attributes?: SpanAttributes;
  /** Other traces this work relates to without being their child (e.g. the request that decided a task). */
  links?: TraceContext[];
}

/** One unit of work. End it exactly once. */
export interface TraceSpan {
  /**
   * What the next hop carries: this span's own context when tracing is on; the parent handed
   * in when it is off (pass-through, W3C's "forward what you got"); undefined without either.
   */
  readonly context: TraceContext | undefined;
  setAttribute(key: string, value: string | number | boolean | undefined): void;
  /**
   * Relates this span to another trace learnt after it started (the task an HTTP request
   * decided), without making either the other's child. An invalid context is ignored.
   */
  addLink(context: TraceContext | undefined): void;
  /** Marks the span failed with the error's code and message. */
  fail(err: unknown): void;
  end(): void;
}

/**
 * The one small API doors, transports and applications call. Off (`NO_TRACING`), nothing of
 * OpenTelemetry is loaded and a span is an object that hands the parent on; on (`tracing.otlp`
 * in the config, see `openTracing`), spans go to an OTLP/HTTP receiver.
 */
export interface Tracing {
  readonly enabled: boolean;
  startSpan(name: string, options?: SpanOptions): TraceSpan;
  /** Sends what is buffered and stops the exporter. */
  shutdown(): Promise<void>;
}

/** A span of tracing off: carries its parent's context on, records nothing. Methods on the prototype, made once. */
class PassThroughSpan implements TraceSpan {
  constructor(readonly context: TraceContext | undefined) {}
  setAttribute(): void {}
  addLink(): void {}
  fail(): void {}
  end(): void {}
}

const NO_PARENT_SPAN = new PassThroughSpan(undefined);

/** The span tracing off gives for work under `parent`. */
export function passThrough(parent: TraceContext | undefined): TraceSpan {
  return parent ? new PassThroughSpan(parent) : NO_PARENT_SPAN;
}

/** Tracing off: no spans, trace contexts pass through unchanged. */
export const NO_TRACING: Tracing = {
  enabled: false,
  startSpan: (_name, options) => passThrough(options?.parent),
  shutdown: async () => {},
};

/** Runs `work` in a span that ends when it settles and is marked failed when it throws. */
export async function inSpan<T>(tracing: Tracing, name: string, options: SpanOptions, work: (span: TraceSpan) => Promise<T>): Promise<T> {
  const span = tracing.startSpan(name, options);
  try {
    return await work(span);
  } catch (err) {
    span.fail(err);
    throw err;
  } finally {
    span.end();
  }
}
