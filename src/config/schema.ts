import { z } from 'zod';
import '../schemes.ts';
import { isAddress } from '../core/address.ts';
import { parseDuration } from '../core/duration.ts';
import { parsePattern } from '../core/pattern.ts';
import { isPasswordHash } from '../auth/password.ts';
import { VERBS } from '../auth/permissions.ts';
import { parseTypePattern } from '../events/event-types.ts';

/** A size as written in config ('512kb', '1mb', '10gb', or bytes) → bytes. */
const byteSize = z.union([z.string(), z.number()]).transform((v, ctx) => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return v;
  const m = typeof v === 'string' ? /^(\d+)\s*(b|kb|mb|gb|tb)?$/i.exec(v.trim()) : null;
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `expected a size like 512kb, 1mb or 10gb, or a number of bytes, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return Number(m[1]) * 1024 ** ['b', 'kb', 'mb', 'gb', 'tb'].indexOf((m[2] ?? 'b').toLowerCase());
});

/** A duration as written in config ('30s', '4h', or ms) → milliseconds. */
export const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  try {
    return parseDuration(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: `expected a duration like 500ms, 30s, 10m, 4h, 7d or a number of ms, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
});

const address = z.string().refine(isAddress, { error: (i) => `expected an address like queue:orders (scheme:path), got ${JSON.stringify(i.input)}` });

const pattern = z.string().superRefine((v, ctx) => {
  try {
    parsePattern(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

export const port = z.number().int().min(0).max(65535);

/** A lifecycle event type or pattern (`switchboard.flow.*`); one that matches no type is refused. */
const eventTypePattern = z.string().superRefine((v, ctx) => {
  try {
    parseTypePattern(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
  }
});

/** Lifecycle events (CloudEvents 1.0) of these types go to this address (DESIGN §11). */
const eventMapping = z.strictObject({
  types: z.array(eventTypePattern).min(1, "expected at least one event type or pattern, e.g. ['switchboard.flow.*']"),
  to: address,
  /** structured: the whole event as JSON; binary: data as the body, attributes as `cloudEvents:*` properties. Default: binary for mq:, structured elsewhere. */
  mode: z.enum(['structured', 'binary']).optional(),
});

export const peerSchema = z.strictObject({
  alias: z.string().regex(/^[A-Za-z0-9_-]+$/, 'expected letters, digits, _ and -'),
  /** X.500 name in the peer's certificate, e.g. 'O=Bank B,L=Paris,C=FR'. */
  identity: z.string().regex(/^\s*[A-Za-z]+=/, "expected an X.500 name like 'O=Bank B,L=Paris,C=FR'"),
  host: z.string().min(1),
  port: z.number().int().min(1).max(65535),
  /** The peer's Ed25519 public key (PEM file). */
  verifyKey: z.string().min(1),
  /** Local addresses this peer may send to (patterns; no scheme means queue:). */
  allow: z.array(z.string()).default([]),
});
export type PeerConfig = z.infer<typeof peerSchema>;

const fileUser = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]*$/, 'expected a user name of letters, digits, . _ @ -'),
  passwordHash: z.string().refine(isPasswordHash, 'expected a hash made by `switchboard hash-password` (scrypt$…)'),
  groups: z.array(z.string().min(1)).default([]),
  email: z.email().optional(),
});

const ldapDirectory = z.strictObject({
  type: z.literal('ldap'),
  url: z.string().regex(/^ldaps?:\/\//, 'expected an ldap:// or ldaps:// URL'),
  bindDN: z.string().min(1),
  bindPassword: z.string().min(1, 'expected the service account password (use ${LDAP_BIND_PASSWORD})'),
  userBase: z.string().min(1),
  userFilter: z.string().includes('{username}', { message: 'expected a filter containing {username}, e.g. (uid={username})' }).default('(uid={username})'),
  usernameAttribute: z.string().min(1).default('uid'),
  groupBase: z.string().min(1).optional(),
  groupFilter: z.string().includes('{dn}', { message: 'expected a filter containing {dn}, e.g. (member={dn})' }).default('(|(member={dn})(uniqueMember={dn}))'),
  memberOfAttribute: z.string().min(1).optional(),
  /** Attribute with the user's e-mail address (task notices). */
  mailAttribute: z.string().min(1).default('mail'),
  nestedGroups: z.boolean().default(false),
  cacheTtl: duration.default(60_000),
  timeout: duration.default(5000),
  tls: z.strictObject({ caFile: z.string().optional(), startTls: z.boolean().default(false), rejectUnauthorized: z.boolean().default(true) }).optional(),
});

const directory = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('file'), users: z.array(fileUser).default([]) }),
  ldapDirectory,
]);

const permission = z
  .strictObject({
    group: z.string().min(1).optional(),
    user: z.string().min(1).optional(),
    peer: z.string().min(1).optional(),
    allow: z.array(z.strictObject({ address: pattern, verbs: z.array(z.enum(VERBS)).min(1) })).min(1),
  })
  .refine((p) => [p.group, p.user, p.peer].filter((x) => x !== undefined).length === 1, 'expected exactly one of group, user or peer');

const route = z.strictObject({
  from: address,
  to: address,
  /** Messages in flight at once on this route (its credit). */
  concurrency: z.number().int().min(1).max(1000).default(20),
});

const broker = z
  .strictObject({
    url: z.string().regex(/^amqps?:\/\//, 'expected an amqp:// or amqps:// URL'),
    username: z.string().optional(),
    password: z.string().optional(),
    /** PLAIN (username/password), ANONYMOUS, or EXTERNAL (client certificate). */
    sasl: z.enum(['PLAIN', 'ANONYMOUS', 'EXTERNAL']).optional(),
    tls: z.strictObject({ ca: z.string().optional(), cert: z.string().optional(), key: z.string().optional(), rejectUnauthorized: z.boolean().default(true), servername: z.string().optional() }).optional(),
    containerId: z.string().optional(),
    /** rabbitmq: mq:b/x is the queue x (/queue/x, durable); plain: the path is the AMQP address (Artemis, Qpid, Azure Service Bus, Solace). */
    addressFormat: z.enum(['plain', 'rabbitmq']).default('plain'),
    /** Address on this broker where replies to flows come back (needed for ctx.request('mq:…')). */
    replyQueue: z.string().min(1).optional(),
    /** How long a send waits for the broker to confirm. */
    sendTimeout: duration.default(10_000),
    /** Deliveries of a consumed message that fail before it is rejected to the broker's dead-letter queue. */
    maxAttempts: z.number().int().min(1).max(100).default(5),
  });

const amqpServer = z.strictObject({
  port: port.default(5672),
  host: z.string().default('127.0.0.1'),
  /** TLS for the embedded endpoint: PEM files. */
  tls: z.strictObject({ key: z.string(), cert: z.string(), ca: z.string().optional() }).optional(),
  /** Messages a client may have in flight on one link (its credit). */
  credit: z.number().int().min(1).max(10_000).default(100),
  /** Largest accepted message body; a delivery is refused while it arrives once it is clearly over. */
  maxMessageBytes: z.number().int().min(1).default(1_048_576),
  /** Time a client has from connecting to a logged-in AMQP open (SASL included); then it is closed and audited. */
  handshakeTimeout: duration.default(10_000),
  /** Connections open at once from one client IP (IPv6: per /56); one more is closed at accept and audited. */
  maxConnectionsPerIp: z.number().int().min(1).default(50),
  /** Largest frame a client may send before SASL succeeds; a larger one closes the connection before it is read. */
  preAuthMaxFrame: z.number().int().min(512).max(65_536).default(4096),
});

export const crlSchema = z.strictObject({
  /** off; soft-fail: a CRL that cannot be had is logged and peers are allowed; hard-fail: no valid CRL, no peer connection. @defaultValue 'off' */
  mode: z.enum(['off', 'soft-fail', 'hard-fail']).default('off'),
  /** The CRL (PEM or DER), read again every `refresh`. */
  file: z.string().optional(),
  /** Or where to fetch it (http/https), every `refresh`. */
  url: z.string().regex(/^https?:\/\//, 'expected an http:// or https:// URL').optional(),
  /** How often the CRL is read again; a peer revoked meanwhile is cut off within this long. @defaultValue 5m */
  refresh: duration.default(300_000),
}).refine((c) => c.mode === 'off' || (c.file === undefined) !== (c.url === undefined), { message: "give network.crl exactly one of 'file' or 'url' (or mode: off)" });

export const proxySchema = z.strictObject({
  /** `http://proxy.corp:3128` (HTTP CONNECT) or `socks5://proxy.corp:1080` (SOCKS5). */
  url: z.string().regex(/^(http|socks5):\/\/[^/?#]+\/?$/, "expected http://host:port or socks5://host:port, e.g. 'http://proxy.corp:3128'"),
  /** Proxy user (HTTP Basic Proxy-Authorization, or SOCKS5 username/password). */
  username: z.string().min(1).optional(),
  /** The proxy user's password; write `password: ${PROXY_PASSWORD}` to keep it out of the file. */
  password: z.string().optional(),
});

/** network.float: the tunnel the gateway opens to its float in the DMZ (docs/float.md). */
export const floatLinkSchema = z.strictObject({
  /** Where the float's tunnel listens: amqps://float.dmz.example:7443. */
  url: z.string().regex(/^amqps:\/\/[^/?#]+:\d+\/?$/, "expected amqps://host:port, e.g. 'amqps://float.dmz.example:7443'"),
  /** The gateway's tunnel key and certificate (PEM files), not its peer-network ones. */
  key: z.string(),
  cert: z.string(),
  /** The CA that signed the float's tunnel certificate (PEM file). */
  ca: z.string(),
  /** The subject the float's tunnel certificate must have, e.g. 'CN=float.dmz,O=Bank A'. */
  floatSubject: z.string().regex(/^\s*[A-Za-z]+=/, "expected an X.500 name like 'CN=float.dmz,O=Bank A'"),
  /** Messages the gateway lets the float hand over before it acknowledged the first (its credit). */
  credit: z.number().int().min(1).max(1000).default(20),
  /**
   * The tunnel is held by one process of the gateway fleet under a lease of this length: when the
   * holder dies (kill -9, host lost) another takes the tunnel over within about this long plus a
   * second. Shorter moves faster, but a process stalled longer than two thirds of it gives the
   * tunnel up. @defaultValue 6s
   */
  lease: duration.default(6000).refine((ms) => ms >= 1000, 'expected at least 1s'),
});

export const networkSchema = z.strictObject({
  /** This gateway's legal identity, as in its certificate: 'O=Bank A,L=London,C=GB'. */
  identity: z.string().regex(/^\s*[A-Za-z]+=/, "expected an X.500 name like 'O=Bank A,L=London,C=GB'"),
  host: z.string().default('127.0.0.1'),
  /** Port of the peer listener (mutual TLS); not opened when peers come in through a float. */
  port: port.optional(),
  /** Peers connect to this float in the DMZ instead (docs/float.md); the gateway dials out to it. */
  float: floatLinkSchema.optional(),
  key: z.string(),
  cert: z.string(),
  /** The network's root CA (PEM). */
  ca: z.string(),
  /** This gateway's Ed25519 signing key (PEM). */
  signingKey: z.string(),
  /** Messages not delivered to a peer within this long are dead-lettered with a notice. */
  eventHorizon: duration.default(7 * 86_400_000),
  /** Where notices of undeliverable messages go when the sender was not a flow, e.g. group:network-admins. */
  noticesTo: address.optional(),
  peers: z.array(peerSchema).default([]),
  /** A YAML file with more peers (a list, or {peers: [...]}), read again whenever it changes. */
  mapFile: z.string().optional(),
  /** Peer certificates checked against the network CA's CRL, on both sides (DESIGN §10). */
  crl: crlSchema.optional(),
  /** Outbound peer connections go through this proxy (DESIGN §10), as corporate networks require. */
  proxy: proxySchema.optional(),
}).refine((n) => n.port !== undefined || n.float !== undefined, { message: 'give network.port (the peer listener) or network.float (peers come in through a float)', path: ['port'] });

const redisUrl = z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL, e.g. redis://10.0.0.1:6379');

/** TLS towards Redis (rediss:// URLs, cluster nodes, sentinels): PEM file paths. */
const redisTls = z.strictObject({
  /** CA that signed the Redis server certificates (PEM file). */
  ca: z.string().optional(),
  /** Client certificate and key, when Redis asks for one (tls-auth-clients). */
  cert: z.string().optional(),
  key: z.string().optional(),
  servername: z.string().optional(),
  rejectUnauthorized: z.boolean().default(true),
});

/** Where the Redis connection settings came from: set by the loader, never written in the file. */
export type RedisSource = 'file' | 'SWITCHBOARD_REDIS_URL';

export const redisSchema = z
  .strictObject({
    /** One Redis (or a primary behind a proxy). Omit url, cluster and sentinel for a private redis-server. */
    url: redisUrl.optional(),
    /** A Redis Cluster: some of its nodes (the rest are discovered). */
    cluster: z.strictObject({ nodes: z.array(redisUrl).min(1, 'expected at least one node, e.g. [redis://10.0.0.1:6379]') }).optional(),
    /** A primary watched by Redis Sentinel. */
    sentinel: z
      .strictObject({
        sentinels: z.array(redisUrl).min(1, 'expected at least one sentinel, e.g. [redis://10.0.0.5:26379]'),
        /** The master name the sentinels monitor (`sentinel monitor <name> …`). */
        name: z.string().min(1),
        /** Password of the sentinels themselves (requirepass in sentinel.conf), when they have one. */
        password: z.string().min(1).optional(),
      })
      .optional(),
    /** ACL user for the Redis nodes (url, cluster or sentinel-managed primary); a URL's own user wins. */
    username: z.string().min(1).optional(),
    /** Password for the Redis nodes; write `password: ${REDIS_PASSWORD}` to keep it out of the file. A URL's own password wins. */
    password: z.string().min(1).optional(),
    tls: redisTls.optional(),
    prefix: z.string().regex(/^[A-Za-z0-9_-]+$/, 'expected letters, digits, _ or -').default('sb'),
    /** Where the private redis-server keeps its data when no url, cluster or sentinel is given. */
    dataDir: z.string().default('data/redis'),
    /**
     * New inbound work is refused (HTTP 503 + Retry-After, AMQP: no credit) while Redis uses more
     * than this fraction of its maxmemory, and accepted again once it drops below.
     */
    memoryLimit: z.number().gt(0).max(1).default(0.9),
    /**
     * Hash tags that tasks, people follow-ups and outboxes are spread over, so a Redis Cluster
     * puts their work on every master (one task's or one message's keys stay in one slot).
     * Absent: 12 on a cluster (4/4/4-ish over 3 masters), 1 on a single Redis or Sentinel (the
     * unsharded key layout). Fixed for the life of the data: changing it needs an empty Redis.
     */
    shards: z.number().int().min(1).max(64).optional(),
    /**
     * Acknowledge a message (HTTP 202, AMQP settle) only after Redis WAIT confirms this many
     * replicas have it, so a failover loses nothing acknowledged. Absent or 0: acknowledge once the primary has it.
     */
    waitReplicas: z.number().int().min(0).max(10).optional(),
    /** How long an acknowledgement waits for waitReplicas before the send fails as retryable (503). Absent: 2 s. */
    waitTimeout: duration.optional(),
  })
  .superRefine((r, ctx) => {
    const forms = (['url', 'cluster', 'sentinel'] as const).filter((k) => r[k] !== undefined);
    if (forms.length > 1) ctx.addIssue({ code: 'custom', message: `expected one of url, cluster or sentinel, got ${forms.join(' and ')}` });
  })
  .transform((r) => ({ ...r, source: 'file' as RedisSource }));

export const configSchema = z.strictObject({
  http: z.strictObject({
    port: port.default(3000),
    host: z.string().default('127.0.0.1'),
    baseUrl: z.url().optional(),
    /** Largest accepted request body. */
    bodyLimit: z.string().regex(/^\d+(b|kb|mb)$/i, 'expected a size like 256kb or 1mb').default('1mb'),
    /** A web session ends after this long without a request. */
    sessionTtl: duration.default(8 * 3_600_000),
    /** Failed logins allowed per user name and per client IP within the window. */
    loginLimits: z
      .strictObject({ perUser: z.number().int().min(1).default(10), perIp: z.number().int().min(1).default(100), window: duration.default(900_000) })
      .default({ perUser: 10, perIp: 100, window: 900_000 }),
    /** Live inbox streams (server-sent events) one user may hold open in one process; one more is refused (429). */
    inboxStreamsPerUser: z.number().int().min(1).max(100).default(5),
  }),
  redis: redisSchema.prefault({}),
  queues: z
    .strictObject({
      maxAttempts: z.number().int().min(1).max(100).default(5),
      backoff: duration.default(1000),
      /** How long a message id is remembered on an address with no `dedup` rule (a reused id within it is acknowledged and dropped). */
      dedupTtl: duration.default(86_400_000),
      /** Deduplication windows per address pattern (first match wins; window 0 turns deduplication off there). */
      dedup: z.array(z.strictObject({ address: pattern, window: duration })).default([]),
      lockTimeout: duration.default(30_000),
      stalledCheck: duration.default(15_000),
      /** Bounded queues (first matching pattern wins): senders get 503 and routes hold back when full. */
      limits: z.array(z.strictObject({ address: pattern, maxDepth: z.number().int().min(1) })).default([]),
      /** A queue nobody has used for this long is closed in this process (reopened on the next use). */
      idleClose: duration.default(60_000),
      /** Queues kept open at most; the least recently used idle ones are closed first. */
      maxOpen: z.number().int().min(1).default(1000),
      /** switchboard_queue_depth series for the most recently active queues (besides routes' and limits'); the rest are summed as address="(other)". */
      depthSeries: z.number().int().min(0).default(100),
    })
    .default({ maxAttempts: 5, backoff: 1000, dedupTtl: 86_400_000, dedup: [], lockTimeout: 30_000, stalledCheck: 15_000, limits: [], idleClose: 60_000, maxOpen: 1000, depthSeries: 100 }),
  directory: directory.default({ type: 'file', users: [] }),
  permissions: z.array(permission).default([]),
  routes: z.array(route).default([]),
  flows: z
    .strictObject({
      /** Folder of flow files (.ts/.js), loaded at start. */
      dir: z.string().default('workflows'),
      /** Instances replayed at once by one process. */
      concurrency: z.number().int().min(1).max(500).default(20),
      /** Lock on an instance while one process replays it; a crashed process's lock expires after this. */
      lockTimeout: duration.default(30_000),
      /** How often runs lost in a crash are looked for. */
      stalledCheck: duration.default(15_000),
      /** How long a finished (completed, failed, cancelled) instance stays visible. */
      retention: duration.default(30 * 86_400_000),
      /**
       * Waiting instances one process keeps in memory, so their next wake there continues instead
       * of replaying from the first step; 0 always replays. Replay stays the fallback after a
       * crash or on another process.
       */
      stickyInstances: z.number().int().min(0).max(1_000_000).default(1000),
      /**
       * A new instance runs in the process that received its start, without a run job; false
       * sends every start through the run queue. A crashed process's started instances are run
       * elsewhere once its lease (lockTimeout) has expired.
       */
      eagerStart: z.boolean().default(true),
    })
    .default({ dir: 'workflows', concurrency: 20, lockTimeout: 30_000, stalledCheck: 15_000, retention: 30 * 86_400_000, stickyInstances: 1000, eagerStart: true }),
  webhooks: z
    .record(
      z.string().regex(/^[A-Za-z0-9_-]+$/, 'webhook names are letters, digits, _ and -'),
      z.strictObject({
        /** Where webhook:<name> POSTs; omit for an inbound-only hook. */
        url: z.url().optional(),
        /** Shared secret for the HMAC-SHA256 signatures, both ways (use ${VAR}). */
        secret: z.string().min(16, 'expected a secret of at least 16 characters'),
        timeout: duration.default(10_000),
        maxAttempts: z.number().int().min(1).max(100).default(8),
        backoff: duration.default(2000),
        /** POST /hooks/<name> routes verified requests to this address. */
        inbound: z.strictObject({ to: address }).optional(),
      }),
    )
    .default({}),
  brokers: z.record(z.string().regex(/^[A-Za-z0-9_-]+$/, 'broker names are letters, digits, _ and -'), broker).default({}),
  amqp: amqpServer.optional(),
  network: networkSchema.optional(),
  email: z
    .strictObject({
      smtp: z.string().regex(/^smtps?:\/\//, 'expected an smtp:// or smtps:// URL, e.g. smtp://user:pass@mail.example.com:587'),
      from: z.string().min(3),
      /** Tries per e-mail while the relay is down, then the e-mail is dead-lettered. */
      maxAttempts: z.number().int().min(1).max(100).default(10),
      backoff: duration.default(5000),
    })
    .optional(),
  people: z
    .strictObject({
      /** Reminder e-mails this long before a task is due, e.g. [1h, 15m]. */
      reminders: z.array(duration).default([]),
    })
    .default({ reminders: [] }),
  audit: z
    .strictObject({
      /** Audit entries older than this are dropped; a flood cannot push younger ones out. */
      retention: duration.default(90 * 86_400_000),
      /** Entries per minute of one unauthenticated action (failed login, refused webhook) from one IP; the rest become one "N more suppressed" entry. */
      unauthenticatedPerMinute: z.number().int().min(1).default(20),
    })
    .default({ retention: 90 * 86_400_000, unauthenticatedPerMinute: 20 }),
  /** Spans over OTLP/HTTP (DESIGN §11); off without `otlp`. Trace contexts are carried either way. */
  tracing: z
    .strictObject({
      otlp: z
        .strictObject({
          /** The OTLP/HTTP traces endpoint, path included (OpenTelemetry's OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). */
          url: z.url({ protocol: /^https?$/, error: 'expected the http:// or https:// URL of an OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces' }),
          /** Request headers for the receiver, e.g. an API key (use ${VAR}). */
          headers: z
            .record(z.string(), z.string())
            .superRefine((h, ctx) => {
              for (const k of Object.keys(h)) if (!/^[A-Za-z0-9-]+$/.test(k)) ctx.addIssue({ code: 'custom', path: [k], message: `expected an HTTP header name (letters, digits and -), got ${JSON.stringify(k)}` });
            })
            .default({}),
          /** How long one export may take. */
          timeout: duration.default(10_000),
        })
        .optional(),
      /** `service.name` of this gateway's spans. */
      serviceName: z.string().min(1).max(200).default('switchboard'),
    })
    .default({ serviceName: 'switchboard' }),
  /** Lifecycle events to addresses: `[{types: ['switchboard.flow.*'], to: 'topic:ops.events'}]`. */
  events: z.array(eventMapping).default([]),
  /** Attachments (claim check, docs/attachments.md): chunked in Redis, streamed over HTTP and peers. */
  attachments: z
    .strictObject({
      /** Largest attachment, e.g. 10gb. Redis must have room for it (its maxmemory, the memory guard's limit). */
      maxSize: byteSize.default(10 * 1024 ** 3),
      /** Bytes per chunk in Redis and per stream step, e.g. 1mb; a process holds about one chunk per stream. */
      chunkSize: byteSize.refine((n) => n >= 16 * 1024 && n <= 64 * 1024 ** 2, 'expected a chunk size from 16kb to 64mb').default(1024 ** 2),
      /** A complete attachment is deleted this long after its upload or the latest message that references it (or its expiresAt, if later). */
      retention: duration.default(30 * 86_400_000),
      /** An unfinished (resumable) upload is deleted after this long without a new byte. */
      uploadTimeout: duration.default(86_400_000),
    })
    .default({ maxSize: 10 * 1024 ** 3, chunkSize: 1024 ** 2, retention: 30 * 86_400_000, uploadTimeout: 86_400_000 }),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).default({ level: 'info' }),
});

export type Config = z.infer<typeof configSchema>;
export type RouteConfig = z.infer<typeof route>;
