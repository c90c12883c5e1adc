// Attachments through the DMZ float (issue 17 point 6; docs/attachments.md, "Through the DMZ
// float"): Bank A's gateway inside pushes pieces over the tunnel to its float before the message
// and pulls the pieces Bank B pushed to the float before the message that references them. Real
// processes (the float is `switchboard float`, killed with -9), three real Redis, real
// certificates from two CAs.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Gateway } from '../../src/gateway.ts';
import { freePort } from '../../src/store/embedded-redis.ts';
import { api, enc, startTestGateway, waitFor } from '../support/gateway.ts';
import { basic, hashDownload, randomContent, streamRequest } from '../support/attachments.ts';
import { spawnFloat, standaloneTunnel, type FloatProcess } from '../support/float.ts';
import { pieceMessage } from '../../src/network/attachment-transfer.ts';
import { networkConfig, testNetwork } from '../support/network.ts';
import { startTestRedis, type TestRedis } from '../support/servers.ts';

let redisA: TestRedis;
let redisB: TestRedis;
let redisF: TestRedis;
let float: FloatProcess;
let floatRedis: Redis;
let clientA: Redis;
let a: Gateway | undefined;
let b: Gateway;
let net: Awaited<ReturnType<typeof testNetwork>>;
let tun: Awaited<ReturnType<typeof testNetwork>>;
let tunnelPort: number;
const PREFIX_A = 'bank-a-inside';
const FLOAT_SUBJECT = 'CN=float.dmz,O=Bank A';
const GATEWAY_SUBJECT = 'CN=gateway,O=Bank A';
const PERMS = [{ group: 'ops', allow: [{ address: '**', verbs: ['send', 'consume', 'browse', 'admin'] }] }];
const MiB = 1024 * 1024;

function startA(): Promise<Gateway> {
  const { port: _listener, ...n } = networkConfig(net, 'bank-a', [{ alias: 'bank-b', allow: ['queue:from-b.**'] }], { eventHorizon: '1h' });
  return startTestGateway(redisA.url, {
    redis: { url: redisA.url, prefix: PREFIX_A },
    permissions: PERMS,
    network: { ...n, float: { url: `amqps://127.0.0.1:${tunnelPort}`, key: tun.nodes.gw!.key, cert: tun.nodes.gw!.cert, ca: tun.ca, floatSubject: FLOAT_SUBJECT, credit: 2 } },
  });
}

before(async () => {
  [redisA, redisB, redisF] = await Promise.all([startTestRedis(), startTestRedis(), startTestRedis()]);
  net = await testNetwork([
    { alias: 'bank-a', identity: 'O=Bank A,L=London,C=GB' },
    { alias: 'bank-b', identity: 'O=Bank B,L=Paris,C=FR' },
  ]);
  tun = await testNetwork([
    { alias: 'float', identity: FLOAT_SUBJECT },
    { alias: 'gw', identity: GATEWAY_SUBJECT },
  ]);
  tunnelPort = await freePort();
  const bNode = net.nodes['bank-b']!;
  float = await spawnFloat({
    redis: { url: redisF.url, prefix: 'float' },
    log: { level: 'info' },
    peers: { host: '127.0.0.1', port: net.nodes['bank-a']!.port },
    tunnel: { host: '127.0.0.1', port: tunnelPort, key: tun.nodes.float!.key, cert: tun.nodes.float!.cert, ca: tun.ca, gatewaySubject: GATEWAY_SUBJECT },
    network: { ca: net.ca, eventHorizon: '1h', peers: [{ alias: 'bank-b', identity: bNode.identity, host: '127.0.0.1', port: bNode.port, verifyKey: bNode.verifyKey }] },
  });
  floatRedis = new Redis(redisF.url);
  clientA = new Redis(redisA.url);
  b = await startTestGateway(redisB.url, { permissions: PERMS, network: networkConfig(net, 'bank-b', [{ alias: 'bank-a', allow: ['queue:inbound.**'] }], { eventHorizon: '1h' }) });
  a = await startA();
  await waitFor(async () => /peer key received from the gateway/.test(float.output()), 30_000, 'the gateway to hand over its key');
});

after(async () => {
  await a?.stop();
  await b?.stop();
  floatRedis?.disconnect();
  clientA?.disconnect();
  await float?.dispose();
  await Promise.all([redisA, redisB, redisF].map((r) => r?.dispose()));
  for (const n of [net, tun]) if (n) rmSync(n.dir, { recursive: true, force: true });
});

async function upload(gw: Gateway, to: string, size: number, name: string) {
  const content = randomContent(size, 300_001);
  const up = await streamRequest(`${gw.url}/api/attachments?to=${enc(to)}&name=${name}`, 'POST', { authorization: basic('ops'), 'content-type': 'application/octet-stream' }, content.stream);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.equal(up.body.sha256, content.sha256());
  return { id: up.body.id as string, sha256: up.body.sha256 as string, size, name, contentType: 'application/octet-stream' };
}

async function send(gw: Gateway, to: string, id: string, ref: object): Promise<void> {
  const sent = await api(gw.url, 'POST', '/api/messages', { user: 'ops', body: { to, id, body: { call: id }, headers: { attachments: JSON.stringify([ref]) } } });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
}

const arrived = (gw: Gateway, queue: string, id: string) => waitFor(async () => (await api(gw.url, 'GET', `/api/queues/${enc(queue)}`, { user: 'ops' })).body.messages?.find((x: { id: string }) => x.id === id), 240_000, `message ${id} at ${queue}`);
const onFloat = async (id: string) => floatRedis.exists(`float:{att:${id}}:meta`, `float:{att:${id}}:chunks`);
/** What A has had acknowledged by the float for one message (the resume point through the float). */
const pushedToFloat = async (id: string, msgId: string) => Number((await clientA.hget(`${PREFIX_A}:{att:${id}}:sent`, `float:bank-b/${msgId}`)) ?? 0);

test('A → float → B: a 64 MB attachment is pushed over the tunnel before its message, forwarded by the float before the message, hash-checked at B, then deleted from the float', async () => {
  const ref = await upload(a!, 'peer:bank-b/inbound.calls', 64 * MiB, 'call-out.wav');
  await send(a!, 'peer:bank-b/inbound.calls', 'out-1', ref);
  const m = await arrived(b, 'queue:inbound.calls', 'out-1');
  assert.deepEqual(JSON.parse(m.headers.attachments), [ref]);
  const down = await hashDownload(`${b.url}/api/attachments/${ref.id}`, { authorization: basic('ops') });
  assert.equal(down.status, 200);
  assert.equal(down.size, ref.size);
  assert.equal(down.sha256, ref.sha256);
  assert.equal(await pushedToFloat(ref.id, 'out-1'), ref.size, 'every byte acknowledged by the float');
  await waitFor(async () => (await onFloat(ref.id)) === 0, 30_000, 'the float to delete its copy once the message was delivered');
});

test('B → float → A: a 64 MB attachment B pushed to the float is pulled by A before the message, hash-checked inside, then deleted from the float', async () => {
  const ref = await upload(b, 'peer:bank-a/from-b.calls', 64 * MiB, 'call-in.wav');
  await send(b, 'peer:bank-a/from-b.calls', 'in-1', ref);
  const m = await arrived(a!, 'queue:from-b.calls', 'in-1');
  assert.deepEqual(JSON.parse(m.headers.attachments), [ref]);
  // Inside, it belongs to the peer that sent it, as over a direct link.
  assert.equal(await clientA.hget(`${PREFIX_A}:{att:${ref.id}}:meta`, 'owner'), 'peer:O=Bank B,L=Paris,C=FR');
  const down = await hashDownload(`${a!.url}/api/attachments/${ref.id}`, { authorization: basic('ops') });
  assert.equal(down.status, 200);
  assert.equal(down.size, ref.size);
  assert.equal(down.sha256, ref.sha256);
  await waitFor(async () => (await onFloat(ref.id)) === 0, 30_000, 'the float to delete its copy once A took the message');
});

test('a float that alters a piece: the gateway refuses it (hash against the signed reference), audits it, keeps nothing, and the message is refused, not delivered', async () => {
  // A away: what B sends waits on the float, where the float (compromised) changes a byte.
  await a!.stop();
  a = undefined;
  const ref = await upload(b, 'peer:bank-a/from-b.calls', 3 * MiB + 5, 'tampered.wav');
  await send(b, 'peer:bank-a/from-b.calls', 'in-tampered', ref);
  await waitFor(async () => (await floatRedis.llen('float:{float-in}:ready')) >= 1, 60_000, 'the message waiting on the float');
  assert.equal(await floatRedis.hget(`float:{att:${ref.id}}:meta`, 'state'), 'complete');
  const key = `float:{att:${ref.id}}:chunks`;
  const chunk = (await floatRedis.hgetBuffer(key, '2'))!;
  chunk[100] = chunk[100]! ^ 0xff;
  await floatRedis.hset(key, '2', chunk);
  a = await startA();
  const refused = await waitFor(async () => { const r = await floatRedis.hgetall('float:{float-in}:refused'); return Object.values(r).find((v) => v.includes('in-tampered') || v.includes('SHA-256')); }, 60_000, 'A to refuse the message');
  assert.match(String(refused), /SHA-256/);
  const audit = (await clientA.xrange(`${PREFIX_A}:audit`, '-', '+')).map(([, f]) => f.join(' ')).join('\n');
  assert.match(audit, new RegExp(`float\\.attachment-refused.*${ref.id}`));
  assert.equal(await clientA.exists(`${PREFIX_A}:{att:${ref.id}}:meta`, `${PREFIX_A}:{att:${ref.id}}:chunks`), 0, 'nothing of it kept inside');
  const q = (await api(a.url, 'GET', `/api/queues/${enc('queue:from-b.calls')}`, { user: 'ops' })).body;
  assert.ok(!q.messages?.some((x: { id: string }) => x.id === 'in-tampered'), 'the message was not delivered');
  await waitFor(async () => (await onFloat(ref.id)) === 0, 30_000, 'the float copy dropped once refused inside');
});

test('the tunnel dropping mid-transfer (float killed -9): outbound resumes at the first piece the float had not acknowledged, inbound at the first byte not stored inside; both hashes check', async () => {
  const out = await upload(a!, 'peer:bank-b/inbound.calls', 40 * MiB, 'resume-out.wav');
  await send(a!, 'peer:bank-b/inbound.calls', 'out-resume', out);
  await waitFor(async () => (await pushedToFloat(out.id, 'out-resume')) >= 4 * MiB, 120_000, 'a few pieces acknowledged by the float');
  await float.kill('SIGKILL');
  const acknowledged = await pushedToFloat(out.id, 'out-resume');
  assert.ok(acknowledged < out.size, `killed before the end (${acknowledged} of ${out.size})`);
  // What the float acknowledged, it had stored.
  const storedOnFloat = Number(await floatRedis.hget(`float:{att:${out.id}}:meta`, 'received'));
  assert.ok(storedOnFloat >= acknowledged, `the float stored ${storedOnFloat}, A had ${acknowledged} acknowledged`);
  await float.start();
  const seen: number[] = [];
  await waitFor(async () => { const s = await pushedToFloat(out.id, 'out-resume'); seen.push(s); return s === out.size; }, 180_000, 'the push to the float to finish');
  assert.ok(seen.every((s, i) => s >= acknowledged && (i === 0 || s >= seen[i - 1]!)), `offsets after the restart (resumed, not restarted): ${seen.join(', ')}`);
  await arrived(b, 'queue:inbound.calls', 'out-resume');
  const downB = await hashDownload(`${b.url}/api/attachments/${out.id}`, { authorization: basic('ops') });
  assert.equal(downB.sha256, out.sha256);

  // Inbound: A pulls; the float goes away part-way through the pull.
  const inRef = await upload(b, 'peer:bank-a/from-b.calls', 40 * MiB, 'resume-in.wav');
  const receivedInside = async () => Number((await clientA.hget(`${PREFIX_A}:{att:${inRef.id}}:meta`, 'received')) ?? 0);
  await a!.stop();
  a = undefined;
  await send(b, 'peer:bank-a/from-b.calls', 'in-resume', inRef);
  await waitFor(async () => (await floatRedis.llen('float:{float-in}:ready')) >= 1, 120_000, 'the message waiting on the float');
  a = await startA();
  await waitFor(async () => (await receivedInside()) >= 4 * MiB, 120_000, 'part of the attachment pulled inside');
  await float.kill('SIGKILL');
  const pulled = await receivedInside();
  assert.ok(pulled < inRef.size, `killed before the end of the pull (${pulled} of ${inRef.size})`);
  await float.start();
  const seenIn: number[] = [];
  await waitFor(async () => { const s = (await clientA.hget(`${PREFIX_A}:{att:${inRef.id}}:meta`, 'state')) === 'complete' ? inRef.size : await receivedInside(); seenIn.push(s); return s === inRef.size; }, 180_000, 'the pull to finish');
  assert.ok(seenIn.every((s, i) => s >= pulled && (i === 0 || s >= seenIn[i - 1]!)), `stored offsets inside after the restart (resumed, not restarted): ${seenIn.join(', ')}`);
  await arrived(a!, 'queue:from-b.calls', 'in-resume');
  const downA = await hashDownload(`${a!.url}/api/attachments/${inRef.id}`, { authorization: basic('ops') });
  assert.equal(downA.sha256, inRef.sha256);
  assert.equal(downA.size, inRef.size);
});

test('hostile pieces on the tunnel (a client holding the gateway\'s tunnel certificate): each refused with its reason and audited on the float, nothing stored', async () => {
  // The real gateway away, so the hostile client's tunnel is the current one.
  await a?.stop();
  a = undefined;
  const { client, close } = standaloneTunnel({
    url: `amqps://127.0.0.1:${tunnelPort}`, key: tun.nodes.gw!.key, cert: tun.nodes.gw!.cert, ca: tun.ca, floatSubject: FLOAT_SUBJECT,
    peerKey: net.nodes['bank-a']!.key, peerCert: net.nodes['bank-a']!.cert,
  }, redisA.url);
  try {
    await waitFor(async () => client.status.state === 'open', 30_000, 'the hostile tunnel to open');
    const before = (await floatRedis.keys('float:{att:*}:meta')).length;
    const ref = { id: 'hostile-0001', sha256: 'b'.repeat(64), size: 4 * MiB, name: 'x.bin', contentType: 'application/octet-stream' };
    const refusal = async (peer: string, msg: string, piece: Record<string, unknown>) => {
      try {
        await client.pushPiece(peer, msg, piece);
      } catch (err) {
        return (err as Error).message;
      }
      return 'accepted';
    };
    // No message named: the float would not know when to drop it.
    assert.match(await refusal('', '', pieceMessage(ref, 0, Buffer.alloc(10))), /names its message in float-hold/);
    // No reference on the piece.
    assert.match(await refusal('O=Bank B,L=Paris,C=FR', 'm-1', { body: pieceMessage(ref, 0, Buffer.alloc(10)).body, application_properties: {} }), /needs the property switchboard-attachment/);
    // Larger than a piece may be.
    assert.match(await refusal('O=Bank B,L=Paris,C=FR', 'm-1', pieceMessage(ref, 0, Buffer.alloc(2 * MiB))), /over the limit/);
    // Part-way into an attachment the float does not have: asked to start from byte 0.
    assert.match(await refusal('O=Bank B,L=Paris,C=FR', 'm-1', pieceMessage(ref, 512 * 1024, Buffer.alloc(10))), /attachment-restart/);
    assert.equal((await floatRedis.keys('float:{att:*}:meta')).length, before, 'nothing stored');
    const audit = (await floatRedis.xrange('float:audit', '-', '+')).map(([, f]) => f.join(' ')).join('\n');
    assert.match(audit, /float\.piece-refused.*float-hold/);
    assert.match(audit, /float\.piece-refused.*over the limit/);
  } finally {
    await close();
  }
});
