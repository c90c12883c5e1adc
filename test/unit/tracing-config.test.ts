import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { parseConfig } from '../../src/config/load.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { openTracing } from '../../src/tracing/otel-tracing.ts';
import { NO_TRACING } from '../../src/tracing/tracing.ts';

const FILE = '/etc/switchboard/test.yaml';
const SRC = join(import.meta.dirname, '..', '..', 'src');

function problems(text: string): string[] {
  try {
    parseConfig(text, FILE, {});
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  return assert.fail('expected a ConfigError');
}

describe('tracing config', () => {
  test('off by default: no otlp, service name switchboard', () => {
    assert.deepEqual(parseConfig('http: {}\n', FILE, {}).tracing, { serviceName: 'switchboard' });
  });

  test('an OTLP/HTTP receiver with headers and a timeout', () => {
    const c = parseConfig("http: {}\ntracing: { serviceName: bank-a, otlp: { url: 'http://127.0.0.1:4318/v1/traces', headers: { x-api-key: '${KEY}' }, timeout: 5s } }\n", FILE, { KEY: 'k1' });
    assert.deepEqual(c.tracing, { serviceName: 'bank-a', otlp: { url: 'http://127.0.0.1:4318/v1/traces', headers: { 'x-api-key': 'k1' }, timeout: 5000 } });
  });

  test('a bad URL, header name or duration, and unknown keys, are errors at their path saying what is expected', () => {
    for (const url of ['ftp://collector/v1/traces', 'not a url', '']) {
      const p = problems(`http: {}\ntracing: { otlp: { url: '${url}' } }\n`);
      assert.ok(p.some((x) => x.startsWith('tracing.otlp.url: ') && /http:\/\/ or https:\/\/ URL of an OTLP\/HTTP traces endpoint/.test(x)), `${url}: ${p.join('; ')}`);
    }
    const p = problems("http: {}\ntracing: { otlp: { url: 'http://x/v1/traces', headers: { 'bad header': v }, timeout: soon, grpc: true }, sampler: always }\n");
    assert.ok(p.some((x) => x.startsWith('tracing.otlp.headers') && /HTTP header name/.test(x)), p.join('; '));
    assert.ok(p.some((x) => x.startsWith('tracing.otlp.timeout: ') && /duration/.test(x)), p.join('; '));
    assert.ok(p.some((x) => /grpc/.test(x)), p.join('; '));
    assert.ok(p.some((x) => /sampler/.test(x)), p.join('; '));
  });
});

describe('tracing off costs nothing', () => {
  test('without otlp, openTracing gives the pass-through tracer and loads no SDK', async () => {
    assert.equal(await openTracing({ serviceName: 'x', log: pino({ level: 'silent' }) }), NO_TRACING);
  });

  test('OpenTelemetry is imported only dynamically, by src/tracing/otel-tracing.ts', () => {
    const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
    const staticImports = files(SRC).filter((f) => /^\s*import\s[^(]*from\s+'@opentelemetry\//m.test(readFileSync(f, 'utf8')));
    assert.deepEqual(staticImports, []);
    assert.match(readFileSync(join(SRC, 'tracing', 'otel-tracing.ts'), 'utf8'), /import\('@opentelemetry\/sdk-trace-base'\)/);
  });
});

describe('an unreachable receiver', () => {
  test('is logged as a warning each time spans cannot be exported, not only at the stop; sending goes on', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    // Port 9 (discard) on loopback: nothing listens, the export is refused at once.
    const tracing = await openTracing({ serviceName: 'x', otlp: { url: 'http://127.0.0.1:9/v1/traces', timeoutMs: 2000, flushEveryMs: 100 }, log });
    try {
      const span = tracing.startSpan('lost');
      assert.ok(span.context, 'the span still has a context to carry');
      span.end();
      const warned = () => lines.some((l) => /"level":40/.test(l) && /tracing: /.test(l));
      for (let i = 0; i < 100 && !warned(); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(warned(), `a warning while running: ${lines.join('')}`);
    } finally {
      await tracing.shutdown();
    }
  });
});
