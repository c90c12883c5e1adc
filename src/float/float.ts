import { X509Certificate, createPrivateKey } from 'node:crypto';
import type { Logger } from 'pino';
import { AuditLog, type AuditEntry } from '../auth/audit.ts';
import type { FloatConfig } from '../config/float-schema.ts';
import type { FloatMaterials } from '../config/float-load.ts';
import { SwitchboardError } from '../core/errors.ts';
import { decodeMessage, encodeMessage, type Message } from '../core/message.ts';
import { Metrics } from '../core/metrics.ts';
import { PeerEndpoint } from '../endpoints/peer/peer-endpoint.ts';
import { PeerListener } from '../amqp-server/peer-listener.ts';
import { Cleanup } from '../gateway/cleanup.ts';
import { openConfiguredRedis } from '../gateway/open-stores.ts';
import type { FloatNotice, IdentityHandover, OutboundEnvelope } from '../network/float-tunnel.ts';
import { certificateIdentity } from '../network/identity.ts';
import { NetworkMap } from '../network/network-map.ts';
import { RevocationList } from '../network/revocation.ts';
import { MemoryGuard } from '../store/memory-guard.ts';
import { FloatInbox } from './float-inbox.ts';
import { FloatIntake } from './float-intake.ts';
import { TunnelServer } from './tunnel-server.ts';
import { FloatAttachments } from './float-attachments.ts';
import { AttachmentStore } from '../attachments/attachment-store.ts';
import { ATTACHMENTS_HEADER, parseAttachmentRefs } from '../attachments/reference.ts';
import { DependencyUnavailable } from '../core/errors.ts';
import { FloatHttp } from './float-http.ts';
import { FloatMetrics } from './float-metrics.ts';
import type { Redis } from 'ioredis';

/** The peer key the gateway handed over does not fit (not a key for its certificate, not from the network CA). */
export class BadHandover extends SwitchboardError {
  constructor(reason: string) {
    super('bad_handover', `the gateway's peer key was not taken: ${reason}`, 400);
  }
}

export interface Float {
  /** Port of the tunnel listener (for the gateway). */
  tunnelPort: number;
  /** Port peers connect to; the listener opens only once the gateway handed over its key. */
  peerPort: number;
  /** The operations port (`http` in float.yaml), when configured. */
  httpPort?: number;
  stop(): Promise<void>;
}

/**
 * `switchboard float`: the DMZ relay (DESIGN §10, docs/float.md). Its own Redis, the tunnel
 * listener for its one gateway, and — once that gateway has handed over its peer TLS key, kept in
 * memory only — the peer listener and the per-peer outboxes. No directory, flows, signing key or
 * permission rules: envelopes are signed and verified inside.
 */
export async function startFloat({ config, materials, log }: { config: FloatConfig; materials: FloatMaterials; log: Logger }): Promise<Float> {
  const cleanup = new Cleanup(log);
  try {
    const { redis } = await openConfiguredRedis(config.redis, log, cleanup);
    const prefix = config.redis.prefix;
    const memoryGuard = new MemoryGuard({ redis, limit: config.redis.memoryLimit, log });
    await memoryGuard.start();
    cleanup.push(async () => memoryGuard.stop());
    // Every audit entry on the float is a refusal: counted for /metrics as it is written.
    let refused = (_action: string) => {};
    const audit = new FloatAudit(redis, prefix, log, (action) => refused(action));
    const n = config.network;
    const inbox = new FloatInbox(redis, prefix, n.eventHorizon);
    const recovered = await inbox.recover();
    if (recovered > 0) log.info({ entries: recovered }, 'entries that were out with the gateway when the float stopped are offered again');
    const map = new NetworkMap({ peers: materials.peers, ...(materials.mapFile ? { source: materials.mapFile } : {}), log });
    map.start();
    cleanup.push(async () => map.stop());
    const revocation = new RevocationList({ mode: n.crl?.mode ?? 'off', ca: materials.ca, refreshMs: n.crl?.refresh ?? 300_000, log, ...(materials.crl ? { source: materials.crl } : {}) });
    await revocation.start();
    cleanup.push(async () => revocation.stop());

    let peers: PeerEndpoint | undefined;
    let listener: PeerListener | undefined;
    let handed: IdentityHandover | undefined;
    let tunnel: TunnelServer | undefined;
    const metrics = new Metrics(async () => ({ ...(peers ? Object.fromEntries(Object.entries(await peers.depths()).map(([a, d]) => [`peer:${a}/**`, d])) : {}), 'float:inbound': (await inbox.depth()).ready }));
    const floatMetrics = new FloatMetrics(metrics.registry, {
      outboxDepths: async () => (peers ? peers.depths() : {}),
      inbound: () => inbox.depth(),
      tunnelConnected: () => tunnel?.gatewayConnected ?? false,
      peersConnected: () => ({ in: listener?.connectionCount ?? 0, out: peers ? peers.states().filter((st) => st.state === 'open').length : 0 }),
    });
    refused = (action) => floatMetrics.refusals.inc({ action });
    inbox.on('refused', () => floatMetrics.refusals.inc({ action: 'gateway.refused' }));
    // Attachments pass through in the float's Redis, by the same rules as messages: nothing new while nearly full, gone after the event horizon.
    const attachmentStore = new AttachmentStore({
      redis, prefix, maxSize: config.peers.maxAttachmentBytes, retentionMs: n.eventHorizon, stagingTtlMs: n.eventHorizon,
      admit: () => { if (memoryGuard.refusing) throw new DependencyUnavailable('float storage', 'its Redis is nearly full: attachments wait where they are'); },
    });
    const attachments = new FloatAttachments({ store: attachmentStore, redis, prefix, log });
    const releaseAttachments = (alias: string, m: Message) => attachments.release(map.get(alias)?.identity ?? alias, m.id, parseAttachmentRefs(m.headers[ATTACHMENTS_HEADER]));
    const notify = async (m: Message, reason: string) => {
      const alias = m.to.slice('peer:'.length).split('/')[0]!;
      await releaseAttachments(alias, m).catch((err) => log.warn({ err: (err as Error).message, msgId: m.id }, 'attachments of a dead-lettered message not released (they expire instead)'));
      const notice: FloatNotice = { message: encodeMessage(m), reason };
      await inbox.store(FloatInbox.entryId(['notice', m.to, m.id]), { kind: 'notice', notice: JSON.stringify(notice), at: new Date().toISOString() });
    };
    const intake = new FloatIntake({ inbox, memoryGuard, maxMessageBytes: config.peers.maxMessageBytes, audit });

    /** The gateway's peer key and certificate: checked, then the peer side runs with them (memory only). */
    const adopt = async (h: IdentityHandover): Promise<void> => {
      if (handed && handed.key === h.key && handed.cert === h.cert) return;
      let identity: string;
      try {
        const cert = new X509Certificate(h.cert);
        if (!cert.checkPrivateKey(createPrivateKey(h.key))) throw new Error('the key does not belong to the certificate');
        if (!cert.verify(new X509Certificate(materials.ca).publicKey)) throw new Error('the certificate is not signed by the network CA');
        identity = certificateIdentity(h.cert);
      } catch (err) {
        throw new BadHandover((err as Error).message);
      }
      handed = h;
      if (!peers) {
        peers = new PeerEndpoint({
          redis, prefix, map, identity, key: h.key, cert: h.cert, ca: materials.ca, revocation, eventHorizonMs: n.eventHorizon,
          metrics, log, notify, audit, ...(n.proxy ? { proxy: n.proxy } : {}), attachments: attachmentStore, delivered: releaseAttachments,
        });
        await peers.start();
        const p = peers;
        cleanup.push(() => p.close());
      } else {
        await peers.setTls(h.key, h.cert);
      }
      // A new key means a new listener: the old one's TLS context holds the old key.
      if (listener) await listener.close();
      listener = new PeerListener({ host: config.peers.host, port: config.peers.port, key: h.key, cert: h.cert, ca: materials.ca, map, revocation, intake, credit: config.peers.credit, audit, log, attachments: attachmentStore, maxMessageBytes: config.peers.maxMessageBytes });
      await listener.start();
      log.info({ identity, port: listener.port }, 'peer key received from the gateway (held in memory only): peer listener open');
    };

    const outbound = async (e: OutboundEnvelope): Promise<void> => {
      const peer = map.byIdentity(e.peer);
      if (!peer) throw new SwitchboardError('unknown_peer', `'${e.peer}' is not a peer in the float's network map`, 404);
      if (!peers) throw new SwitchboardError('no_identity', 'no peer key yet', 409);
      if (memoryGuard.refusing) throw new SwitchboardError('unavailable', 'float storage is nearly full', 503, true);
      const stored = decodeMessage(e.message);
      const m: Message = { ...stored, to: `peer:${peer.alias}/${e.remote}` };
      await peers.sendSigned(peer.alias, m, { remote: e.remote, signature: e.signature, origin: e.origin });
    };

    tunnel = new TunnelServer({ host: config.tunnel.host, port: config.tunnel.port, ...materials.tunnel, gatewaySubject: config.tunnel.gatewaySubject, inbox, onIdentity: adopt, onOutbound: outbound, attachments, audit, log });
    const t = tunnel;
    await t.start();
    cleanup.push(() => t.close());
    cleanup.push(async () => { await listener?.close(); });
    let http: FloatHttp | undefined;
    if (config.http) {
      const h = new FloatHttp({
        host: config.http.host, port: config.http.port, redis, registry: metrics.registry, log,
        tunnelListening: () => t.listening, tunnelHeld: () => t.gatewayConnected, peerListenerOpen: () => listener !== undefined,
      });
      await h.start();
      http = h;
      cleanup.push(() => h.close());
    }
    log.info({ tunnel: t.port, peers: config.peers.port, ...(http ? { http: http.port } : {}) }, 'float started: the peer listener opens once the gateway has connected and handed over its peer key');
    return { tunnelPort: t.port, peerPort: config.peers.port, ...(http ? { httpPort: http.port } : {}), stop: () => cleanup.run() };
  } catch (err) {
    await cleanup.run();
    throw err;
  }
}

/** The float's audit trail: every entry written on the float is a refusal, told to `counted` as well. */
class FloatAudit extends AuditLog {
  constructor(redis: Redis, prefix: string, log: Logger, private readonly counted: (action: string) => void) {
    super(redis, prefix, log);
  }

  override async record(entry: AuditEntry): Promise<void> {
    this.counted(entry.action);
    await super.record(entry);
  }
}
