import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Permissions } from '../auth/permissions.ts';
import type { NetworkMaterials } from '../config/materials.ts';
import type { Config } from '../config/schema.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Router } from '../core/router.ts';
import { PeerEndpoint } from '../endpoints/peer/peer-endpoint.ts';
import { NetworkMap } from '../network/network-map.ts';
import { RevocationList } from '../network/revocation.ts';
import type { Cleanup } from './cleanup.ts';
import type { AttachmentStore } from '../attachments/attachment-store.ts';

export interface PeerNetwork {
  map: NetworkMap;
  /** The peer: transport: a durable outbox and a mutual-TLS bridge per peer. */
  peers: PeerEndpoint;
  /** The CRL check on peer certificates (network.crl), for both sides of the network. */
  revocation: RevocationList;
}

/**
 * The network map (config peers plus the map file, watched) and the peer: transport. The peer
 * listener, the door peers come in by, is opened with the other doors.
 */
export async function openPeerNetwork(
  n: NonNullable<Config['network']>,
  files: NetworkMaterials,
  o: { redis: Redis; prefix: string; shards: number; router: Router; permissions: Permissions; metrics: Metrics; log: Logger; attachments?: AttachmentStore },
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
  const peers = new PeerEndpoint({ revocation,
    redis: o.redis, prefix: o.prefix, shards: o.shards, map, identity: n.identity, key: files.key, cert: files.cert, ca: files.ca,
    signingKey: files.signingKey, eventHorizonMs: n.eventHorizon, router: o.router, ...(o.attachments ? { attachments: o.attachments } : {}), metrics: o.metrics, log: o.log, ...(n.noticesTo ? { noticesTo: n.noticesTo } : {}), ...(n.proxy ? { proxy: n.proxy } : {}),
  });
  o.router.register(peers);
  await peers.start();
  const timer = setInterval(() => {
    for (const s of peers.states()) o.metrics.connected.set({ kind: 'peer', name: s.alias }, s.state === 'open' ? 1 : 0);
  }, 1000);
  timer.unref();
  cleanup.push(async () => clearInterval(timer));
  return { map, peers, revocation };
}
