import { EventEmitter } from 'node:events';
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { parsePattern, type AddressPattern } from '../core/pattern.ts';
import { identityKey } from './identity.ts';

/** A peer as the config or the map file describes it, its verify key already loaded (at the config edge). */
export interface PeerEntry {
  alias: string;
  /** X.500 name in the peer's certificate, e.g. 'O=Bank B,L=Paris,C=FR'. */
  identity: string;
  host: string;
  port: number;
  /** The peer's Ed25519 public key. */
  verifyKey: KeyObject;
  /** Local addresses this peer may send to (patterns; no scheme means queue:). */
  allow: string[];
}

/**
 * Peers from outside the config (the network map file, src/config/network-map-file.ts), read at
 * start and again whenever they may have changed.
 */
export interface NetworkMapSource {
  /** Where the peers come from, for the log (the file's path). */
  readonly name: string;
  /** The peers as they are now; throws when the source is not valid. */
  read(): PeerEntry[];
  /** Calls `changed` when the source may have changed; returns what stops watching. */
  watch(changed: () => void): () => void;
}

export interface NetworkMapOptions {
  /** network.peers from the config. */
  peers: PeerEntry[];
  /** network.mapFile: more peers, reloaded when it changes. */
  source?: NetworkMapSource;
  log: Logger;
}

export interface Peer {
  alias: string;
  identity: string;
  host: string;
  port: number;
  verifyKey: KeyObject;
  allow: AddressPattern[];
}

/** `trades` (no scheme) means `queue:trades` in a peer address (DESIGN §6). */
export function localAddress(path: string): string {
  return /^[a-z]+:/.test(path) ? path : `queue:${path}`;
}

function compile(c: PeerEntry): Peer {
  return { alias: c.alias, identity: c.identity, host: c.host, port: c.port, verifyKey: c.verifyKey, allow: c.allow.map((a) => parsePattern(localAddress(a))) };
}

/**
 * The network map: who the peers are, where they are, what they may send to. From the config, or
 * from a source it points to that is read again when it changes (no restart): a peer that moved
 * is reached at its new address, with its queued messages.
 */
export class NetworkMap extends EventEmitter {
  private peers = new Map<string, Peer>();
  private unwatch?: () => void;

  constructor(private readonly o: NetworkMapOptions) {
    super();
    this.load(o.peers);
  }

  private load(list: PeerEntry[]): void {
    const next = new Map(list.map((p) => [p.alias, compile(p)]));
    this.peers = next;
  }

  start(): void {
    const source = this.o.source;
    if (!source) return;
    this.load([...this.o.peers, ...source.read()]);
    this.unwatch = source.watch(() => {
      try {
        const before = new Map(this.peers);
        this.load([...this.o.peers, ...source.read()]);
        this.o.log.info({ peers: [...this.peers.keys()] }, 'network map reloaded');
        for (const [alias, p] of this.peers) {
          const old = before.get(alias);
          if (!old || old.host !== p.host || old.port !== p.port || identityKey(old.identity) !== identityKey(p.identity)) this.emit('peer-changed', alias);
        }
        for (const alias of before.keys()) if (!this.peers.has(alias)) this.emit('peer-changed', alias);
      } catch (err) {
        // A broken edit keeps the last good map; the log says why.
        this.o.log.error({ err: (err as Error).message, file: source.name }, 'network map not reloaded: the file is not valid');
      }
    });
  }

  stop(): void {
    this.unwatch?.();
    this.unwatch = undefined;
  }

  get(alias: string): Peer | undefined {
    return this.peers.get(alias);
  }

  byIdentity(identity: string): Peer | undefined {
    const key = identityKey(identity);
    for (const p of this.peers.values()) if (identityKey(p.identity) === key) return p;
    return undefined;
  }

  get aliases(): string[] {
    return [...this.peers.keys()];
  }
}
