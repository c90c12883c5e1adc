import { dedupKey } from '../../core/dedup.ts';
import type { Message } from '../../core/message.ts';

/**
 * BullMQ uses `:` as its key delimiter and refuses it in queue names, and Redis Cluster needs a
 * hash tag per queue. `queue:orders.eu` becomes `{queue%3Aorders.eu}`: reversible, readable in
 * redis-cli, and every key of one queue on one slot.
 */
export function bullQueueName(address: string): string {
  return `{${address.replace(/[^A-Za-z0-9._/-]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)}}`;
}

export function addressFromBullQueueName(name: string): string {
  return decodeURIComponent(name.slice(1, -1));
}

/**
 * The deduplication id of a message in its queue's dedup key (guarded-add.ts, the key BullMQ's own
 * deduplication option would use): the one dedup key of src/core/dedup.ts (address,
 * original sender, id), so a queue dedups exactly like every other ingress. Fixed length, no
 * delimiter, so any id is safe in BullMQ's keys.
 */
export function dedupId(message: Pick<Message, 'to' | 'sender' | 'id'>): string {
  return dedupKey(message);
}
