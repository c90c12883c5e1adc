import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { SwitchboardError } from '../core/errors.ts';
import { sameIdentity } from './identity.ts';

/** What a gateway without a network records as its identity in its keyspace. */
export const NO_NETWORK = '(no network)';

/**
 * Two gateways with different network identities on one Redis keyspace (same URL and prefix)
 * would share outboxes and queues: one would sign and send the other's messages. Refused at start.
 */
export class KeyspaceOwnedByAnotherGateway extends SwitchboardError {
  constructor(readonly url: string, readonly prefix: string, readonly owner: string, readonly identity: string) {
    super('keyspace_taken', `this Redis keyspace (url ${url}, prefix ${prefix}) belongs to the gateway '${owner}', not to '${identity}'; give this gateway its own redis.prefix or its own Redis`, 500);
  }
}

export interface KeyspaceClaim {
  redis: Redis;
  /** redis.prefix: the keyspace. */
  prefix: string;
  /** Where the keyspace is, for the message (the Redis URL). */
  url: string;
  /** network.identity, or undefined for a gateway without a network. */
  identity: string | undefined;
  log: Logger;
}

/**
 * Records this gateway's network identity at `<prefix>:gateway-identity` (SET NX) and refuses to
 * start beside a different one. Every process of one gateway has the same identity and shares the
 * keyspace. A keyspace recorded as `(no network)` is taken over by the first gateway that starts
 * with a network identity on it: that is how a gateway joins a network (no peer message can be
 * in its outboxes yet, as a gateway without a network has none).
 */
export async function claimKeyspace(o: KeyspaceClaim): Promise<void> {
  const key = `${o.prefix}:gateway-identity`;
  const mine = o.identity ?? NO_NETWORK;
  if ((await o.redis.set(key, mine, 'NX')) === 'OK') return;
  const owner = await o.redis.get(key);
  if (owner === null) return claimKeyspace(o); // deleted between the two calls
  if (owner === mine || (owner !== NO_NETWORK && mine !== NO_NETWORK && sameIdentity(owner, mine))) return;
  if (owner === NO_NETWORK) {
    o.log.warn({ prefix: o.prefix, identity: mine }, 'this keyspace was used by a gateway without a network: it now belongs to this network identity');
    await o.redis.set(key, mine);
    return;
  }
  throw new KeyspaceOwnedByAnotherGateway(withoutPassword(o.url), o.prefix, owner, mine);
}

/** The URL as a message may show it: no password. */
function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString().replace(/\/$/, '');
  } catch {
    return url;
  }
}
