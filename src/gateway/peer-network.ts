import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Permissions } from '../auth/permissions.ts';
import type { NetworkMaterials } from '../config/materials.ts';
import type { Config } from '../config/schema.ts';
import type { RecordLifecycle, ReportLifecycle } from '../core/lifecycle.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Router } from '../core/router.ts';
import { PeerEndpoint } from '../endpoints/peer/peer-endpoint.ts';
import { FloatTunnelClient } from '../network/float-tunnel-client.ts';
import { NetworkMap } from '../network/network-map.ts';
import { RevocationList } from '../network/revocation.ts';
import type { Cleanup } from './cleanup.ts';
import type { AttachmentStore } from '../attachments/attachment-store.ts';
import type { AuditLog } from '../auth/audit.ts';

export interface PeerNetwork {
  map: NetworkMap;
  /** The peer: transport: a durable outbox and a mutual-TLS bridge per peer. */
  peers: PeerEndpoint;
  /** The CRL check on peer certificates (network.crl), for both sides of the network. */
  revocation: RevocationList;
  /** network.float: the tunnel to the float (peers come in there; outbound goes through it). */
  tunnel?: FloatTunnelClient;
}

/**
 * The network map (config peers plus the map file, watched) and the peer: transport. The peer
 * listener, the door peers come in by, is opened with the other doors.
 */
export async function openPeerNetwork(
  n: NonNullable<Config['network']>,
  files: NetworkMaterials,
  o: { redis: Redis; prefix: string; shards: number; router: Router; permissions: Permissions; metrics: Metrics; lifecycle?: ReportLifecycle; deadLetterEvents?: RecordLifecycle; log: Logger; attachments?: AttachmentStore; audit?: AuditLog; lockMs?: number; stalledCheckMs?: number },
  cleanup: Cleanup,
): Promise<PeerNetwork> {
  const map = new NetworkMap({ peers: files.peers, ...(files.mapFile ? { source: files.mapFile } : {}), log: o.log });
  map.start();
  // A peer may send where its entry in the network map allows, as the map is now.
  o.permissions.addGrantSource((p) => (p.kind === 'peer' ? (map.get(p.alias ?? p.name)?.allow ?? []).map((pattern) => ({ pattern, verbs: ['send'] as const, reason: `the network map's allow list of ${p.alias ?? p.name}` })) : []));
  cleanup.push(async () => map.stop());
  const revocation = new RevocationList({ mode: n.crl?.mode ?? 'off', ca: files.ca, refreshMs: n.crl?.refresh ?? 300_000, log: o.log, ...(files.crl ? { source: files.crl } : {}) });
  await revocation.start();
  cleanup.push(async () => revocation.stop());
  const tunnel = n.float && files.float ? new FloatTunnelClient({
    url: n.float.url, ...files.float, floatSubject: n.float.floatSubject, credit: n.float.credit, leaseTtlMs: n.float.lease, peerKey: files.key, peerCert: files.cert,
    map, redis: o.redis, prefix: o.prefix, log: o.log, onNotice: (m, reason) => peers.notice(m, reason),
    ...(o.attachments ? { attachments: o.attachments } : {}), ...(o.audit ? { audit: o.audit } : {}),
  }) : undefined;
  const peers: PeerEndpoint = new PeerEndpoint({ revocation, ...(tunnel ? { relay: tunnel } : {}),
    redis: o.redis, prefix: o.prefix, shards: o.shards, map, identity: n.identity, key: files.key, cert: files.cert, ca: files.ca,
    signingKey: files.signingKey, ...(o.deadLetterEvents ? { deadLetterEvents: o.deadLetterEvents } : {}), eventHorizonMs: n.eventHorizon, router: o.router, ...(o.attachments ? { attachments: o.attachments } : {}), ...(o.audit ? { audit: o.audit } : {}), ...(o.lockMs ? { lockMs: o.lockMs } : {}), ...(o.stalledCheckMs ? { stalledCheckMs: o.stalledCheckMs } : {}), metrics: o.metrics, log: o.log, ...(n.noticesTo ? { noticesTo: n.noticesTo } : {}), ...(n.proxy ? { proxy: n.proxy } : {}),
  });
  o.router.register(peers);
  await peers.start();
  // Up and down as this process sees its bridges (only the process holding a peer's bridge sees it open).
  // Best effort on purpose (README "Lifecycle events"): a connection state seen by one process is an
  // observation, not a stored change, so there is no change to journal the event with; a process
  // killed -9 reports neither its last transition nor its own "down", and the next bridge holder
  // reports "up" again. What a peer being down costs — messages waiting, then undeliverable — is
  // stored and has its own never-lost events (switchboard.peer.undeliverable, message.dead-lettered).
  const wasOpen = new Map<string, boolean>();
  const timer = setInterval(() => {
    for (const s of peers.states()) {
      const open = s.state === 'open' || s.state === 'via float: open';
      o.metrics.connected.set({ kind: 'peer', name: s.alias }, open ? 1 : 0);
      if (open !== (wasOpen.get(s.alias) ?? false)) {
        const key = `${s.alias}\0${Date.now()}`;
        o.lifecycle?.(open
          ? { type: 'switchboard.peer.up', subject: `peer:${s.alias}`, key, data: { alias: s.alias } }
          : { type: 'switchboard.peer.down', subject: `peer:${s.alias}`, key, data: { alias: s.alias, state: s.state, ...(s.lastError ? { lastError: s.lastError } : {}) } });
      }
      wasOpen.set(s.alias, open);
    }
  }, 1000);
  timer.unref();
  cleanup.push(async () => clearInterval(timer));
  return { map, peers, revocation, ...(tunnel ? { tunnel } : {}) };
}
