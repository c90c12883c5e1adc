import './schemes.ts';
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { AuditLog } from './auth/audit.ts';
import { Authenticator } from './auth/authenticator.ts';
import { LoginGuard } from './auth/login-guard.ts';
import { createDirectory } from './auth/create-directory.ts';
import { TokenStore } from './auth/tokens.ts';
import { Permissions, rulesFromConfig, type DeploymentGrant } from './auth/permissions.ts';
import { auditDenials, authorizeReplyTo, authorizeSend, verbFor } from './auth/authorization.ts';
import { demoteReservedHeaders, requirePrincipal } from './core/pipeline.ts';
import { PermissionStore } from './auth/permission-store.ts';
import { PermissionAdmin } from './auth/permission-admin.ts';
import type { Config } from './config/schema.ts';
import { DedupStore } from './core/dedup.ts';
import { Metrics } from './core/metrics.ts';
import { Router } from './core/router.ts';
import { parsePattern } from './core/pattern.ts';
import { QueueEndpoint } from './endpoints/queue/queue-endpoint.ts';
import { TmpEndpoint } from './endpoints/tmp/tmp-endpoint.ts';
import { createLogger } from './log.ts';
import { Route } from './core/route.ts';
import { startEmbeddedRedis, type EmbeddedRedis } from './store/embedded-redis.ts';
import { MemoryGuard } from './store/memory-guard.ts';
import { describeRedis, openRedis, type RedisTarget } from './store/redis.ts';
import { createApp } from './web/app.ts';
import { FlowEndpoint } from './endpoints/flow/flow-endpoint.ts';
import { Inbox } from './people/inbox.ts';
import { EmailEndpoint } from './endpoints/email/email-endpoint.ts';
import { InboxEndpoint } from './endpoints/inbox/inbox-endpoint.ts';
import { loadFlows } from './flows/loader.ts';
import { FlowRuntime } from './flows/runtime.ts';
import { Broker } from './amqp/connection.ts';
import { AmqpServer } from './amqp-server/amqp-server.ts';
import { MqEndpoint } from './endpoints/mq/mq-endpoint.ts';
import { deliverReply } from './flows/broker-replies.ts';
import { WebhookEndpoint } from './endpoints/webhook/webhook-endpoint.ts';
import { NetworkMap } from './network/network-map.ts';
import { PeerEndpoint } from './endpoints/peer/peer-endpoint.ts';
import { PeerListener } from './amqp-server/peer-listener.ts';
import { loadSigningKey } from './network/identity.ts';
import { sessionSecret } from './web/sessions.ts';

export interface GatewayOptions {
  config: Config;
  log?: Logger;
}

/** A running gateway: config → Redis → endpoints → router → routes → HTTP door. */
export interface Gateway {
  /** Base URL of the HTTP door, e.g. http://127.0.0.1:3000 */
  readonly url: string;
  readonly redisUrl: string;
  /** Port of the embedded AMQP 1.0 endpoint, when enabled. */
  readonly amqpPort?: number;
  /** Port of the peer listener, when a network is configured. */
  readonly peerPort?: number;
  readonly router: Router;
  readonly log: Logger;
  /** Graceful stop: no new requests, routes hand back or finish in-flight messages, then Redis. */
  stop(): Promise<void>;
}

export async function startGateway({ config, log = createLogger(config.log.level) }: GatewayOptions): Promise<Gateway> {
  const cleanup: (() => Promise<unknown>)[] = [];
  const undo = async () => {
    for (const fn of cleanup.reverse()) await fn().catch((err) => log.error({ err: (err as Error).message }, 'error while stopping'));
  };
  try {
    // Flow files first: a broken one stops the start before anything else is touched.
    const flowDefs = await loadFlows(config.flows.dir);
    const { redis, redisUrl } = await openConfiguredRedis(config.redis, log, cleanup);
    // DESIGN §9: refuses an evicting Redis now, and new inbound work while memory is nearly full.
    const memoryGuard = new MemoryGuard({ redis, limit: config.redis.memoryLimit, log });
    await memoryGuard.start();
    cleanup.push(async () => memoryGuard.stop());

    let queues: QueueEndpoint | undefined;
    let outboxes: PeerEndpoint | undefined;
    const metrics = new Metrics(async () => ({
      ...(queues ? await queues.depths() : {}),
      // A peer's outbox depth, labelled with its address pattern.
      ...Object.fromEntries(Object.entries(outboxes ? await outboxes.depths() : {}).map(([alias, n]) => [`peer:${alias}/**`, n])),
    }));
    const dedup = new DedupStore(redis, config.redis.prefix, config.queues.dedupTtl);
    const configRules = rulesFromConfig(config.permissions);
    const permissions = new Permissions(configRules, deploymentGrants(config));
    const audit = new AuditLog(redis, config.redis.prefix, log);
    // Every message that enters the router passes this chain, in this order (DESIGN §5).
    const router = new Router(dedup, metrics, log, [
      auditDenials(audit),
      requirePrincipal,
      demoteReservedHeaders,
      authorizeSend(permissions),
      authorizeReplyTo(permissions),
      memoryGuard, // Redis nearly full: new inbound work from client doors is refused (503), never dropped
    ]);
    queues = new QueueEndpoint({
      redis,
      prefix: config.redis.prefix,
      maxAttempts: config.queues.maxAttempts,
      backoffMs: config.queues.backoff,
      dedupTtlMs: config.queues.dedupTtl,
      lockMs: config.queues.lockTimeout,
      stalledCheckMs: config.queues.stalledCheck,
      limits: config.queues.limits.map((l) => ({ pattern: parsePattern(l.address), maxDepth: l.maxDepth })),
      metrics,
      log,
    });
    router.register(queues);
    router.register(new TmpEndpoint({ redis, prefix: config.redis.prefix, metrics, log }));
    cleanup.push(() => router.close());

    const permissionStore = new PermissionStore(redis, config.redis.prefix, permissions, configRules, log);
    await permissionStore.start();
    cleanup.push(() => permissionStore.stop());
    const directory = createDirectory(config.directory, log);
    const tokens = new TokenStore(redis, config.redis.prefix);
    const guard = new LoginGuard(redis, config.redis.prefix, { perUser: config.http.loginLimits.perUser, perIp: config.http.loginLimits.perIp, windowMs: config.http.loginLimits.window });
    const auth = new Authenticator(directory, tokens, audit, guard);

    if (config.email) {
      router.register(new EmailEndpoint({ redis, prefix: config.redis.prefix, smtp: config.email.smtp, from: config.email.from, maxAttempts: config.email.maxAttempts, backoffMs: config.email.backoff, dedupTtlMs: config.queues.dedupTtl, metrics, log }));
    }
    const outbound = Object.entries(config.webhooks).filter(([, w]) => w.url);
    if (outbound.length > 0) {
      router.register(new WebhookEndpoint({
        redis, prefix: config.redis.prefix, dedupTtlMs: config.queues.dedupTtl, metrics, log,
        maxAttempts: Math.max(...outbound.map(([, w]) => w.maxAttempts)), backoffMs: Math.min(...outbound.map(([, w]) => w.backoff)),
        targets: outbound.map(([name, w]) => ({ name, url: w.url!, secret: w.secret, timeoutMs: w.timeout })),
      }));
    }
    let peers: PeerEndpoint | undefined;
    let networkMap: NetworkMap | undefined;
    if (config.network) {
      const n = config.network;
      networkMap = new NetworkMap({ peers: n.peers, ...(n.mapFile ? { mapFile: n.mapFile } : {}), log });
      networkMap.start();
      const map = networkMap;
      // A peer may send where its entry in the network map allows, as the map is now.
      permissions.addGrantSource((p) => (p.kind === 'peer' ? (map.get(p.name)?.allow ?? []).map((pattern) => ({ pattern, verbs: ['send'] as const, reason: `the network map's allow list of ${p.name}` })) : []));
      cleanup.push(async () => networkMap!.stop());
      peers = new PeerEndpoint({
        redis, prefix: config.redis.prefix, map: networkMap, identity: n.identity, key: n.key, cert: n.cert, ca: n.ca,
        signingKey: loadSigningKey(n.signingKey), eventHorizonMs: n.eventHorizon, router, metrics, log, ...(n.noticesTo ? { noticesTo: n.noticesTo } : {}),
      });
      router.register(peers);
      await peers.start();
      outboxes = peers;
    }
    const baseUrl = config.http.baseUrl ?? `http://localhost:${config.http.port}`;
    const inbox = new Inbox({ redis, prefix: config.redis.prefix, router, permissions, directory, baseUrl, email: config.email !== undefined, remindersMs: config.people.reminders, log });
    router.register(new InboxEndpoint('person', inbox));
    router.register(new InboxEndpoint('group', inbox));
    await inbox.start();
    cleanup.push(() => inbox.stop());
    const flows = new FlowRuntime({
      redis,
      prefix: config.redis.prefix,
      router,
      flows: flowDefs,
      concurrency: config.flows.concurrency,
      lockMs: config.flows.lockTimeout,
      stalledCheckMs: config.flows.stalledCheck,
      retentionMs: config.flows.retention,
      log,
    });
    router.register(new FlowEndpoint(flows));
    flows.start();
    if (flowDefs.size > 0) log.info({ flows: [...flowDefs.keys()], dir: config.flows.dir }, 'flows loaded');

    const brokerNames = Object.keys(config.brokers);
    if (brokerNames.length > 0) {
      const brokers = Object.entries(config.brokers).map(([name, b]) => new Broker({
        name, url: b.url, sasl: b.sasl ?? (b.username || new URL(b.url).username ? 'PLAIN' : 'ANONYMOUS'), addressFormat: b.addressFormat, sendTimeoutMs: b.sendTimeout,
        ...(b.username !== undefined ? { username: b.username } : {}), ...(b.password !== undefined ? { password: b.password } : {}),
        ...(b.tls ? { tls: b.tls } : {}), ...(b.containerId ? { containerId: b.containerId } : {}),
      }, log));
      brokers.forEach((b) => b.start());
      const mq = new MqEndpoint({
        brokers, redis, prefix: config.redis.prefix, maxAttempts: Math.min(...Object.values(config.brokers).map((b) => b.maxAttempts)), backoffMs: config.queues.backoff,
        replyQueues: new Map(Object.entries(config.brokers).filter(([, b]) => b.replyQueue).map(([n, b]) => [n, b.replyQueue!])), metrics, log,
      });
      router.register(mq);
      metrics.connected.reset();
      const collect = () => { for (const s of mq.brokerStates()) metrics.connected.set({ kind: 'broker', name: s.name }, s.state === 'open' ? 1 : 0); };
      const timer = setInterval(collect, 1000);
      timer.unref();
      cleanup.push(async () => clearInterval(timer));
      // Replies from legacy systems come back on each broker's reply queue and go to the waiting flow.
      for (const [name, b] of Object.entries(config.brokers)) {
        if (!b.replyQueue) continue;
        const sub = await router.consume(`mq:${name}/${b.replyQueue}`, (m) => deliverReply(m, router, flows, name), { maxInFlight: 50 });
        cleanup.push(() => sub.close());
      }
    }

    const routes = config.routes.map((def) => new Route(def, router, log));
    routes.forEach((r) => r.validate());
    cleanup.push(() => Promise.all(routes.map((r) => r.stop())));
    for (const r of routes) await r.start();

    const permissionAdmin = new PermissionAdmin(permissions, permissionStore, directory, () => networkMap?.aliases ?? []);
    const knownAddresses = async () => [
      ...[...flowDefs.keys()].map((n) => `flow:${n}`),
      ...Object.keys(config.brokers).map((b) => `mq:${b}/`),
      ...(await directory.groups('', 200).catch(() => [])).map((g) => `group:${g}`),
      ...Object.keys(await queues!.depths()),
      ...(networkMap?.aliases ?? []).map((a) => `peer:${a}/`),
    ];
    const app = createApp({
      dedup,
      hooks: Object.entries(config.webhooks).filter(([, w]) => w.inbound).map(([name, w]) => ({ name, secret: w.secret, to: w.inbound!.to })),
      permissionAdmin,
      knownAddresses,
      router,
      directory,
      auth,
      tokens,
      audit,
      prefix: config.redis.prefix,
      session: { redis, prefix: config.redis.prefix, secret: await sessionSecret(redis, config.redis.prefix), ttlMs: config.http.sessionTtl, secure: (config.http.baseUrl ?? '').startsWith('https:') },
      permissions,
      flows,
      inbox,
      metrics,
      redis,
      log,
      bodyLimit: config.http.bodyLimit,
      readiness: async () => ({ directory: await directory.health() }),
    });
    let amqp: AmqpServer | undefined;
    if (config.amqp) {
      amqp = new AmqpServer({ port: config.amqp.port, host: config.amqp.host, credit: config.amqp.credit, maxMessageBytes: config.amqp.maxMessageBytes, auth, directory, permissions, router, metrics, log, ...(config.amqp.tls ? { tls: config.amqp.tls } : {}) });
      await amqp.start();
      cleanup.push(() => amqp!.close());
      // A revoked right detaches the links that relied on it, within a second of the change.
      const off = permissions.onChange(() => amqp!.recheck());
      cleanup.push(async () => off());
    }
    let peerListener: PeerListener | undefined;
    if (config.network && networkMap) {
      const n = config.network;
      peerListener = new PeerListener({ host: n.host, port: n.port, key: n.key, cert: n.cert, ca: n.ca, map: networkMap, permissions, router, dedup, eventHorizonMs: n.eventHorizon, credit: 50, maxMessageBytes: config.amqp?.maxMessageBytes ?? 1_048_576, audit, log });
      await peerListener.start();
      cleanup.push(() => peerListener!.close());
      const timer = setInterval(() => {
        for (const s of peers!.states()) metrics.connected.set({ kind: 'peer', name: s.alias }, s.state === 'open' ? 1 : 0);
      }, 1000);
      timer.unref();
      cleanup.push(async () => clearInterval(timer));
    }
    const server: Server = app.listen(config.http.port, config.http.host);
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => { throw err; })]);
    cleanup.push(() => closeServer(server));
    const { port } = server.address() as AddressInfo;
    const url = `http://${config.http.host.includes(':') ? `[${config.http.host}]` : config.http.host}:${port}`;
    log.info({ url, routes: routes.length }, 'switchboard is ready');

    let stopped: Promise<void> | undefined;
    return { url, redisUrl, router, log, ...(amqp ? { amqpPort: amqp.port } : {}), ...(peerListener ? { peerPort: peerListener.port } : {}), stop: () => (stopped ??= undo()) };
  } catch (err) {
    await undo();
    throw err;
  }
}

/**
 * The configured Redis (url, cluster or sentinel), or a private redis-server in redis.dataDir. The
 * start log says which one and where the setting came from. A private server that ends while the
 * gateway runs (killed from outside, crashed) is started again on its port and data, so neither
 * running nor draining waits on a Redis that is gone; it is stopped after everything else.
 */
async function openConfiguredRedis(c: Config['redis'], log: Logger, cleanup: (() => Promise<unknown>)[]): Promise<{ redis: Redis; redisUrl: string }> {
  const auth = { ...(c.username ? { username: c.username } : {}), ...(c.password ? { password: c.password } : {}), ...(c.tls ? { tls: c.tls } : {}) };
  const target: RedisTarget | undefined = c.url ? { url: c.url, ...auth } : c.cluster ? { cluster: c.cluster, ...auth } : c.sentinel ? { sentinel: c.sentinel, ...auth } : undefined;
  if (target) {
    const redis = await openRedis(target);
    cleanup.push(() => quitRedis(redis));
    log.info({ redis: describeRedis(target), source: c.source === 'file' ? 'config file' : c.source }, 'using redis');
    return { redis, redisUrl: 'url' in target ? target.url : 'cluster' in target ? target.cluster.nodes[0]! : target.sentinel.sentinels[0]! };
  }
  let embedded: EmbeddedRedis = await startEmbeddedRedis(c.dataDir);
  let stopping = false;
  let restarts = 0;
  const watch = (e: EmbeddedRedis) => e.onUnexpectedExit(() => {
    if (stopping) return;
    if (++restarts > 5) return log.error({ dataDir: c.dataDir }, 'the private redis-server keeps ending: not starting it again; the gateway answers 503 until it is stopped');
    log.error({ pid: e.pid, dataDir: c.dataDir }, 'the private redis-server ended: starting it again on the same port and data');
    startEmbeddedRedis(c.dataDir, { port: e.port }).then((next) => { embedded = next; watch(next); }, (err: Error) => log.error({ err: err.message }, 'could not start the private redis-server again'));
  });
  watch(embedded);
  cleanup.push(async () => { stopping = true; await embedded.stop(); });
  const redis = await openRedis(embedded.url);
  cleanup.push(() => quitRedis(redis));
  log.info({ redis: describeRedis(embedded.url), source: 'embedded', dataDir: c.dataDir, pid: embedded.pid, adopted: embedded.adopted }, embedded.adopted ? 'using the private redis-server left running by an earlier gateway (no redis.url, cluster or sentinel configured)' : 'started a private redis-server (no redis.url, cluster or sentinel configured)');
  return { redis, redisUrl: embedded.url };
}

/** QUIT, or cut the connection if Redis does not answer within 2 s (it may be gone already). */
async function quitRedis(redis: Redis): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([redis.quit().catch(() => undefined), new Promise((r) => { timer = setTimeout(r, 2000); })]);
  clearTimeout(timer);
  redis.disconnect();
}

/** Stops accepting connections, lets running requests finish for a few seconds, then cuts. */
async function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), 5000);
  await closed;
  clearTimeout(timer);
}

/**
 * Rights that follow from the config itself: a route may send to its destination, an inbound
 * webhook to its address, a broker's reply queue to the flow instances that wait on it.
 */
function deploymentGrants(config: Config): DeploymentGrant[] {
  const grants: DeploymentGrant[] = [];
  for (const r of config.routes) grants.push({ principal: `route:${Route.principalName(r)}`, address: r.to, verbs: [verbFor(r.to)], reason: `the route ${Route.principalName(r)} in the config` });
  for (const [name, w] of Object.entries(config.webhooks)) {
    if (w.inbound) grants.push({ principal: `webhook:${name}`, address: w.inbound.to, verbs: [verbFor(w.inbound.to)], reason: `the inbound webhook ${name} in the config` });
  }
  for (const [name, b] of Object.entries(config.brokers)) {
    if (b.replyQueue) grants.push({ principal: `broker:${name}`, address: 'flow:*/*', verbs: ['send'], reason: `the reply queue of broker ${name}` });
  }
  return grants;
}
