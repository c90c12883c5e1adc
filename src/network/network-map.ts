import { EventEmitter } from 'node:events';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { parse } from 'yaml';
import { z } from 'zod';
import { peerSchema, type PeerConfig } from '../config/schema.ts';
import { parsePattern, type AddressPattern } from '../core/pattern.ts';
import { identityKey, loadVerifyKey } from './identity.ts';

export type { PeerConfig } from '../config/schema.ts';

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

function compile(c: PeerConfig): Peer {
  return { alias: c.alias, identity: c.identity, host: c.host, port: c.port, verifyKey: loadVerifyKey(c.verifyKey), allow: c.allow.map((a) => parsePattern(localAddress(a))) };
}

/**
 * The network map: who the peers are, where they are, what they may send to. From the config, or
 * from a file it points to that is read again when it changes (no restart): a peer that moved is
 * reached at its new address, with its queued messages.
 */
export class NetworkMap extends EventEmitter {
  private peers = new Map<string, Peer>();

  constructor(private readonly o: { peers: PeerConfig[]; mapFile?: string; log: Logger }) {
    super();
    this.load(o.peers);
  }

  private load(list: PeerConfig[]): void {
    const next = new Map(list.map((p) => [p.alias, compile(p)]));
    this.peers = next;
  }

  private readFile(): PeerConfig[] {
    const raw = parse(readFileSync(this.o.mapFile!, 'utf8')) as unknown;
    const list = z.array(peerSchema).parse((raw as { peers?: unknown })?.peers ?? raw);
    return list;
  }

  start(): void {
    if (!this.o.mapFile) return;
    this.load([...this.o.peers, ...this.readFile()]);
    watchFile(this.o.mapFile, { interval: 500 }, () => {
      try {
        const before = new Map(this.peers);
        this.load([...this.o.peers, ...this.readFile()]);
        this.o.log.info({ peers: [...this.peers.keys()] }, 'network map reloaded');
        for (const [alias, p] of this.peers) {
          const old = before.get(alias);
          if (!old || old.host !== p.host || old.port !== p.port || identityKey(old.identity) !== identityKey(p.identity)) this.emit('peer-changed', alias);
        }
        for (const alias of before.keys()) if (!this.peers.has(alias)) this.emit('peer-changed', alias);
      } catch (err) {
        // A broken edit keeps the last good map; the log says why.
        this.o.log.error({ err: (err as Error).message, file: this.o.mapFile }, 'network map not reloaded: the file is not valid');
      }
    });
  }

  stop(): void {
    if (this.o.mapFile) unwatchFile(this.o.mapFile);
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
