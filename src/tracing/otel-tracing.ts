import type { Logger } from 'pino';
import { formatTraceparent, parseTraceparent, type TraceContext } from './trace-context.ts';
import { NO_TRACING, type SpanKind, type TraceSpan, type Tracing } from './tracing.ts';

export interface OtlpOptions {
  /** The OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces (spans are sent as OTLP JSON). */
  url: string;
  /** Extra request headers (an API key of a hosted receiver). */
  headers?: Record<string, string>;
  /**
   * How long one export may take.
   * @defaultValue 10000
   */
  timeoutMs?: number;
  /**
   * How often buffered spans are sent.
   * @defaultValue 2000
   */
  flushEveryMs?: number;
}

export interface TracingOptions {
  /** Off when absent. */
  otlp?: OtlpOptions;
  /** `service.name` of the exported spans. */
  serviceName: string;
  log: Logger;
}

const KINDS: Record<SpanKind, number> = { internal: 0, server: 1, client: 2, producer: 3, consumer: 4 };

/**
 * Tracing as the config says: `NO_TRACING` without `otlp` — and then OpenTelemetry is never even
 * imported, so tracing off costs nothing — or OpenTelemetry's own SDK exporting over OTLP/HTTP.
 * The provider is not registered globally: each gateway in a process (tests, embedders) keeps its
 * own exporter, and nothing else in the process starts sending spans by accident.
 */
export async function openTracing(o: TracingOptions): Promise<Tracing> {
  if (!o.otlp) return NO_TRACING;
  const [api, sdk, otlp, resources] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]);
  const exporter = new otlp.OTLPTraceExporter({ url: o.otlp.url, headers: o.otlp.headers ?? {}, timeoutMillis: o.otlp.timeoutMs ?? 10_000 });
  const provider = new sdk.BasicTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': o.serviceName }),
    spanProcessors: [new sdk.BatchSpanProcessor(exporter, { scheduledDelayMillis: o.otlp.flushEveryMs ?? 2000 })],
  });
  // OpenTelemetry reports a receiver it cannot reach through its diagnostics logger, silent by
  // default: an operator should see that spans are lost. (The logger is process-wide: with several
  // gateways in one process, the log of the last one opened gets it.)
  api.diag.setLogger({
    error: (message: string, ...args: unknown[]) => o.log.warn({ detail: args.map(String).join(' ') || undefined }, `tracing: ${message}`),
    warn: (message: string, ...args: unknown[]) => o.log.warn({ detail: args.map(String).join(' ') || undefined }, `tracing: ${message}`),
    info: () => {},
    debug: () => {},
    verbose: () => {},
  }, { logLevel: api.DiagLogLevel.WARN, suppressOverrideMessage: true });
  const tracer = provider.getTracer('switchboard');
  o.log.info({ url: o.otlp.url }, 'tracing: spans are exported over OTLP/HTTP');

  // Callers hand in contexts they read with readTraceContext; one that does not parse is dropped
  // rather than exported with a made-up id.
  const valid = (c: TraceContext | undefined): c is TraceContext => parseTraceparent(c?.traceparent) !== undefined;
  const spanContext = (c: TraceContext) => {
    const t = parseTraceparent(c.traceparent)!;
    return { traceId: t.traceId, spanId: t.spanId, traceFlags: t.flags, isRemote: true, ...(c.tracestate ? { traceState: api.createTraceState(c.tracestate) } : {}) };
  };

  return {
    enabled: true,
    startSpan(name, options = {}): TraceSpan {
      const parent = options.parent ? api.trace.setSpanContext(api.ROOT_CONTEXT, spanContext(options.parent)) : api.ROOT_CONTEXT;
      const attributes = Object.fromEntries(Object.entries(options.attributes ?? {}).filter(([, v]) => v !== undefined)) as Record<string, string | number | boolean>;
      const span = tracer.startSpan(name, { kind: KINDS[options.kind ?? 'internal'], attributes, links: (options.links ?? []).filter(valid).map((l) => ({ context: spanContext(l) })) }, parent);
      const sc = span.spanContext();
      const state = sc.traceState?.serialize();
      const context: TraceContext = { traceparent: formatTraceparent({ traceId: sc.traceId, spanId: sc.spanId, flags: sc.traceFlags }), ...(state ? { tracestate: state } : {}) };
      return {
        context,
        setAttribute: (key, value) => {
          if (value !== undefined) span.setAttribute(key, value);
        },
        addLink: (other) => {
          if (valid(other)) span.addLink({ context: spanContext(other) });
        },
        fail: (err) => {
          const e = err as { code?: unknown; message?: unknown };
          span.setStatus({ code: api.SpanStatusCode.ERROR, message: typeof e?.message === 'string' ? e.message : String(err) });
          if (typeof e?.code === 'string') span.setAttribute('error.type', e.code);
        },
        end: () => span.end(),
      };
    },
    shutdown: async () => {
      await provider.shutdown().catch((err: Error) => o.log.warn({ err: err.message }, 'tracing: the last spans could not be exported'));
    },
  };
}
