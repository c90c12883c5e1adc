/**
 * `switchboard broker check <name>` (issue 14 point 9) as an operator runs it, against a private
 * RabbitMQ 3.10 and Qpid Proton's example broker: the table rows and the exit code; a wrong
 * password is exit 1 with the broker's own words.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { startTestProtonBroker, type TestProtonBroker } from '../support/proton-broker.ts';
import { startTestRabbit, type TestRabbit } from '../support/rabbitmq.ts';

let rabbit: TestRabbit | undefined;
let proton: TestProtonBroker | undefined;
const dir = mkdtempSync(join(tmpdir(), 'sb-check-'));

before(async () => {
  proton = await startTestProtonBroker();
  rabbit = await startTestRabbit();
  writeFileSync(join(dir, 'sb.yaml'), stringify({
    http: { port: 0 },
    brokers: {
      rabbit: { url: `amqp://127.0.0.1:${rabbit.port}`, username: 'guest', password: 'guest', addressFormat: 'rabbitmq' },
      wrongpw: { url: `amqp://127.0.0.1:${rabbit.port}`, username: 'guest', password: 'not-the-password', addressFormat: 'rabbitmq' },
      proton: { url: proton.url, sasl: 'ANONYMOUS' },
    },
  }));
});

after(async () => {
  await proton?.dispose().catch(() => {});
  await rabbit?.dispose().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

function check(name: string): Promise<{ code: number; out: string; err: string; rows: Map<string, string> }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'switchboard.mjs'), 'broker', 'check', name, '--config', join(dir, 'sb.yaml')], { timeout: 120_000 }, (err, out, stderr) => {
      const rows = new Map<string, string>();
      for (const line of out.split('\n').slice(1)) {
        const m = /^(.+?)\s{2,}(pass|fail|not supported)\s/.exec(line);
        if (m) rows.set(m[1]!.trim(), m[2]!);
      }
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out, err: stderr, rows });
    });
  });
}

const MUST = ['connect and SASL', 'durable send and settle', 'receive and accept', 'ids and typed properties both ways', 'reply_to honoured', 'reconnect after a dropped connection'];

test('RabbitMQ 3.10 passes every must-have row (exit 0)', { timeout: 180_000 }, async (t) => {
  const r = await check('rabbit');
  t.diagnostic(r.out);
  assert.equal(r.code, 0, r.out + r.err);
  for (const row of MUST) assert.equal(r.rows.get(row), 'pass', `${row}\n${r.out}`);
  assert.equal(r.rows.size, 11);
  assert.equal(r.rows.get('largest message round trip'), 'pass', r.out);
});

test('Qpid Proton example broker: must-haves pass; reject/DLQ, temporary queues and anonymous relay not supported (exit 0)', { timeout: 180_000 }, async (t) => {
  const r = await check('proton');
  t.diagnostic(r.out);
  assert.equal(r.code, 0, r.out + r.err);
  for (const row of MUST) assert.equal(r.rows.get(row), 'pass', `${row}\n${r.out}`);
  assert.equal(r.rows.get('reject → dead-letter queue'), 'not supported');
  assert.equal(r.rows.get('temporary queues (dynamic receiver)'), 'not supported');
  assert.equal(r.rows.get('anonymous relay'), 'not supported');
  assert.equal(r.rows.get('credit respected'), 'pass');
  assert.equal(r.rows.get('largest message round trip'), 'pass', r.out);
  assert.ok(proton!.pid, 'the broker is still running after the check');
});

test('a wrong password: exit 1 with the broker\'s words', { timeout: 180_000 }, async () => {
  const r = await check('wrongpw');
  assert.equal(r.code, 1, r.out + r.err);
  assert.equal(r.rows.get('connect and SASL'), 'fail');
  assert.match(r.out + r.err, /auth|SASL|credentials|PLAIN/i, r.out + r.err);
});
