import { z } from 'zod';
import { crlSchema, duration, peerSchema, port, proxySchema, redisSchema } from './schema.ts';

/**
 * `switchboard float --config float.yaml` (docs/float.md): the DMZ relay's own file. It names no
 * directory, flows, signing key or permission rule — the float has none — and no key for the peer
 * network either: the gateway hands that over the tunnel at connect.
 */
export const floatConfigSchema = z.strictObject({
  /** The float's own Redis (or a private redis-server in redis.dataDir), never the gateway's. */
  redis: redisSchema.prefault({ prefix: 'float', dataDir: 'data/float-redis' }),
  /** Where peers connect (mutual TLS, network CA): the address the peers' maps give for this gateway. */
  peers: z.strictObject({
    host: z.string().default('0.0.0.0'),
    port,
    /** Messages a peer may have in flight on one link. */
    credit: z.number().int().min(1).max(10_000).default(50),
    /** Largest accepted message body. */
    maxMessageBytes: z.number().int().min(1).default(1_048_576),
    /** Largest attachment that may pass through (either way); the float's Redis must hold what waits. @defaultValue 10 GiB */
    maxAttachmentBytes: z.number().int().min(0).default(10 * 1024 ** 3),
  }),
  /** Where the gateway's tunnel connects (from inside the firewall). */
  tunnel: z.strictObject({
    host: z.string().default('0.0.0.0'),
    port,
    /** The float's tunnel key and certificate (PEM files). */
    key: z.string(),
    cert: z.string(),
    /** The CA that signed the gateway's tunnel certificate (PEM file). */
    ca: z.string(),
    /** The subject the gateway's tunnel certificate must have, e.g. 'CN=gateway,O=Bank A'. */
    gatewaySubject: z.string().regex(/^\s*[A-Za-z]+=/, "expected an X.500 name like 'CN=gateway,O=Bank A'"),
  }),
  network: z.strictObject({
    /** The network's root CA (PEM file): peers' certificates chain to it. */
    ca: z.string(),
    /** Outbound messages not delivered within this long are dead-lettered on the float and the gateway is told. */
    eventHorizon: duration.default(7 * 86_400_000),
    /** The peers (as in the gateway's map; `allow` is not used here: the gateway decides). */
    peers: z.array(peerSchema).default([]),
    mapFile: z.string().optional(),
    crl: crlSchema.optional(),
    proxy: proxySchema.optional(),
  }),
  /**
   * The float's own HTTP port for operations: `/healthz`, `/readyz` and `/metrics` (Prometheus),
   * nothing else. Off unless given: a DMZ host opens no port nobody asked for. The host defaults to
   * loopback; bind it to the management interface, never to the one peers reach.
   */
  http: z.strictObject({
    host: z.string().default('127.0.0.1'),
    port,
  }).optional(),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).default({ level: 'info' }),
});

export type FloatConfig = z.infer<typeof floatConfigSchema>;
