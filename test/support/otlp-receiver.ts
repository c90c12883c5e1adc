import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One span as an OTLP receiver sees it, ids as lowercase hex. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** Undefined for a root span. */
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, string | number | boolean>;
  links: { traceId: string; spanId: string }[];
  /** `service.name` of the resource that sent it. */
  service: string;
  /** Status code: 0 unset, 1 ok, 2 error. */
  status: number;
}

export interface OtlpReceiver {
  /** The traces endpoint to configure: http://127.0.0.1:<port>/v1/traces */
  readonly url: string;
  readonly spans: ReceivedSpan[];
  /** Requests that were not a decodable OTLP JSON export (answered 400). */
  readonly refused: string[];
  /** Waits until a span matching `pred` arrived (polling the received spans). */
  waitFor(pred: (s: ReceivedSpan) => boolean, what: string, timeoutMs?: number): Promise<ReceivedSpan>;
  close(): Promise<void>;
}

/** OTLP/JSON writes ids as hex (the spec); protobuf-JSON mappings write base64: accept both. */
function hexId(v: unknown): string | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  if (/^[0-9a-fA-F]+$/.test(v) && (v.length === 32 || v.length === 16)) return v.toLowerCase();
  return Buffer.from(v, 'base64').toString('hex');
}

function value(v: Record<string, unknown>): string | number | boolean {
  if ('stringValue' in v) return String(v.stringValue);
  if ('boolValue' in v) return Boolean(v.boolValue);
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  return JSON.stringify(v);
}

const attrs = (list: unknown): Record<string, string | number | boolean> =>
  Object.fromEntries(((list ?? []) as { key: string; value: Record<string, unknown> }[]).map((a) => [a.key, value(a.value ?? {})]));

/**
 * A real OTLP/HTTP traces receiver in this process: POST /v1/traces with an OTLP JSON
 * ExportTraceServiceRequest (what @opentelemetry/exporter-trace-otlp-http sends), decoded into
 * spans a test can look at. Listens on 127.0.0.1, a free port.
 */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const refused: string[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      try {
        if (req.method !== 'POST' || req.url !== '/v1/traces') throw new Error(`${req.method} ${req.url}`);
        if (!String(req.headers['content-type']).startsWith('application/json')) throw new Error(`content-type ${req.headers['content-type']}`);
        const doc = JSON.parse(body) as { resourceSpans?: { resource?: { attributes?: unknown }; scopeSpans?: { spans?: Record<string, unknown>[] }[] }[] };
        for (const rs of doc.resourceSpans ?? []) {
          const service = String(attrs(rs.resource?.attributes)['service.name'] ?? '');
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              const parent = hexId(s.parentSpanId);
              spans.push({
                traceId: hexId(s.traceId)!,
                spanId: hexId(s.spanId)!,
                ...(parent ? { parentSpanId: parent } : {}),
                name: String(s.name),
                kind: Number(s.kind ?? 0),
                attributes: attrs(s.attributes),
                links: ((s.links ?? []) as { traceId: string; spanId: string }[]).map((l) => ({ traceId: hexId(l.traceId)!, spanId: hexId(l.spanId)! })),
                service,
                status: Number((s.status as { code?: number } | undefined)?.code ?? 0),
              });
            }
          }
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      } catch (err) {
        refused.push(`${(err as Error).message}: ${body.slice(0, 200)}`);
        res.writeHead(400, { 'content-type': 'application/json' }).end('{}');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    refused,
    async waitFor(pred, what, timeoutMs = 60_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const found = spans.find(pred);
        if (found) return found;
        if (Date.now() > until) throw new Error(`no span ${what} within ${timeoutMs} ms; received: ${spans.map((s) => s.name).join(', ') || 'none'}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
