import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { AmqpServer } from '../amqp-server/amqp-server.ts';
import { RoutedPeerIntake } from '../amqp-server/peer-intake.ts';
import { PeerListener } from '../amqp-server/peer-listener.ts';
import { PermissionAdmin } from '../auth/permission-admin.ts';
import type { Materials } from '../config/materials.ts';
import type { Config } from '../config/schema.ts';
import type { FlowRuntime } from '../flows/runtime.ts';
import type { Inbox } from '../people/inbox.ts';
import { createApp } from '../web/app.ts';
import { sessionSecret } from '../web/sessions.ts';
import type { ConnectionState, ConsoleSources } from '../web/deps.ts';
import type { Cleanup } from './cleanup.ts';
import type { Access } from './directory.ts';
import type { FlowDefinitions } from './flows.ts';
import type { Transports } from './router-and-transports.ts';

export interface Doors {
  /** Base URL of the HTTP door. */
  url: string;
  amqpPort?: number;
  peerPort?: number;
}

/** What the doors hand work to: the results of the earlier steps. */
export interface DoorsInput {
  config: Config;
  materials: Materials;
  redis: Redis;
  access: Access;
  transports: Transports;
  inbox: Inbox;
  flows: FlowRuntime;
  flowDefs: FlowDefinitions;
  log: Logger;
}

/**
 * Step 8, last: the doors work comes in by — the embedded AMQP endpoint, the peer listener and,
 * last of all, the HTTP door. Opened only when everything behind them runs, and (by the reverse
 * order of the cleanup) closed first on stop, so no new work arrives while the rest drains.
 */
export async function openDoors(input: DoorsInput, cleanup: Cleanup): Promise<Doors> {
  const { config, materials, redis, access, transports, inbox, flows, flowDefs, log } = input;
  const { directory, permissions, permissionStore, audit, tokens, auth } = access;
  const { router, metrics, dedup, queues, network } = transports;
  const prefix = config.redis.prefix;
  const permissionAdmin = new PermissionAdmin(permissions, permissionStore, directory, () => network?.map.aliases ?? [], transports.events.journal);
  // The addresses the console suggests: flows, brokers, groups, queues that exist, peers.
  const knownAddresses = async () => [
    ...[...flowDefs.keys()].map((n) => `flow:${n}`),
    ...Object.keys(config.brokers).map((b) => `mq:${b}/`),
    ...(await directory.groups('', 200).catch(() => [])).map((g) => `group:${g}`),
    ...Object.keys(await queues.depths()),
    ...(network?.map.aliases ?? []).map((a) => `peer:${a}/`),
  ];
  const consoleSources: ConsoleSources = {
    queueAddresses: () => queues.addresses(),
    connections: async () => {
      const out: ConnectionState[] = [];
      for (const b of transports.brokers?.brokerStates() ?? []) {
        out.push({ kind: 'broker', name: b.name, address: `mq:${b.name}/**`, state: b.state, ok: b.state === 'open', ...(b.lastError ? { lastError: b.lastError } : {}) });
      }
      for (const p of network?.peers.states() ?? []) {
        const outbox = await network!.peers.outboxStatus(p.alias);
        out.push({ kind: 'peer', name: p.alias, address: `peer:${p.alias}/**`, state: p.state, ok: p.state === 'open' || (p.state === 'idle' && outbox.depth === 0), outbox, ...(p.lastError ? { lastError: p.lastError } : {}) });
      }
      for (const w of (await transports.webhooks?.states()) ?? []) {
        out.push({ kind: 'webhook', name: w.name, address: `webhook:${w.name}`, state: w.outbox.retrying > 0 ? 'retrying' : 'ok', ok: w.outbox.retrying === 0, outbox: w.outbox, ...(w.outbox.lastError ? { lastError: w.outbox.lastError.message } : {}) });
      }
      const d = await directory.health().catch((err: Error) => ({ ok: false, detail: err.message }));
      out.push({ kind: 'directory', name: config.directory.type, address: '**', state: d.ok ? 'ok' : 'down', ok: d.ok, ...(!d.ok && d.detail ? { lastError: d.detail } : {}) });
      return out;
    },
  };
  const app = createApp({
    console: consoleSources,
    topics: transports.topics,
    attachments: transports.attachments,
    dedup,
    hooks: Object.entries(config.webhooks).filter(([, w]) => w.inbound).map(([name, w]) => ({ name, secret: w.secret, to: w.inbound!.to })),
    permissionAdmin,
    knownAddresses,
    router,
    directory,
    auth,
    tokens,
    audit,
    prefix,
    session: { redis, prefix, secret: await sessionSecret(redis, prefix), ttlMs: config.http.sessionTtl, secure: (config.http.baseUrl ?? '').startsWith('https:'), inboxStreamsPerUser: config.http.inboxStreamsPerUser },
    permissions,
    flows,
    inbox,
    metrics,
    redis,
    log,
    bodyLimit: config.http.bodyLimit,
    tracing: transports.tracing,
    readiness: async () => ({ directory: await directory.health() }),
  });
  let amqp: AmqpServer | undefined;
  if (config.amqp) {
    const a = config.amqp;
    const server = new AmqpServer({ port: a.port, host: a.host, credit: a.credit, maxMessageBytes: a.maxMessageBytes, handshakeTimeoutMs: a.handshakeTimeout, maxConnectionsPerIp: a.maxConnectionsPerIp, preAuthMaxFrame: a.preAuthMaxFrame, auth, directory, router, temporaryQueues: transports.temporaryQueues, topics: transports.topics, metrics, log, ...(materials.amqpTls ? { tls: materials.amqpTls } : {}) });
    amqp = server;
    await server.start();
    cleanup.push(() => server.close());
    // A revoked right detaches the links that relied on it, within a second of the change.
    const off = permissions.onChange(() => server.recheck());
    cleanup.push(async () => off());
  }
  let peerListener: PeerListener | undefined;
  if (config.network && network?.tunnel) {
    // Peers come in through the float: the gateway pulls from it as fast as the inside takes.
    const tunnel = network.tunnel;
    // The float accepted each message already: a refusal here is told to the peer (tellRefusals).
    tunnel.start(new RoutedPeerIntake({ router, dedup, audit, eventHorizonMs: config.network.eventHorizon, maxMessageBytes: config.amqp?.maxMessageBytes ?? 1_048_576, notices: network.peers, tellRefusals: true }));
    cleanup.push(() => tunnel.close());
  } else if (config.network?.port !== undefined && network && materials.network) {
    const n = { ...config.network, port: config.network.port };
    const files = materials.network;
    const listener = new PeerListener({
      host: n.host, port: n.port, key: files.key, cert: files.cert, ca: files.ca, map: network.map, revocation: network.revocation, audit, log, credit: 50, attachments: transports.attachments, maxMessageBytes: config.amqp?.maxMessageBytes ?? 1_048_576,
      intake: new RoutedPeerIntake({ router, dedup, audit, eventHorizonMs: n.eventHorizon, maxMessageBytes: config.amqp?.maxMessageBytes ?? 1_048_576, notices: network.peers }),
    });
    peerListener = listener;
    await listener.start();
    cleanup.push(() => listener.close());
  }
  const server: Server = app.listen(config.http.port, config.http.host);
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err; })]);
  cleanup.push(() => closeServer(server));
  const { port } = server.address() as AddressInfo;
  const url = `http://${config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host}:${port}`;
  return { url, ...(amqp ? { amqpPort: amqp.port } : {}), ...(peerListener ? { peerPort: peerListener.port } : {}) };
}

/** Stops accepting connections, lets running requests finish for a few seconds, then cuts. */
async function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), 5000);
  await closed;
  clearTimeout(timer);
}
