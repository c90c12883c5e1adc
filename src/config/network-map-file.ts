import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { parse } from 'yaml';
import { z } from 'zod';
import type { NetworkMapSource, PeerEntry } from '../network/network-map.ts';
import { readPublicKey } from './key-files.ts';
import { peerSchema } from './schema.ts';

/**
 * `network.mapFile`: a YAML file with more peers (a list, or `{peers: [...]}`), read at start and
 * again whenever it changes, so a peer that moved is reached at its new address without a
 * restart. Reading and watching the file is the config edge's job; the map gets only peers with
 * their verify keys already loaded.
 */
export function networkMapFile(path: string): NetworkMapSource {
  return {
    name: path,
    read(): PeerEntry[] {
      const raw = parse(readFileSync(path, 'utf8')) as unknown;
      const list = z.array(peerSchema).parse((raw as { peers?: unknown })?.peers ?? raw);
      return list.map((p, i) => ({ ...p, verifyKey: readPublicKey(`${path}: peers[${i}].verifyKey`, p.verifyKey) }));
    },
    watch(changed: () => void): () => void {
      // Polling, not fs.watch: editors that replace the file (write + rename) are still seen.
      const listener = () => changed();
      watchFile(path, { interval: 500 }, listener);
      return () => unwatchFile(path, listener);
    },
  };
}
