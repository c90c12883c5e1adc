import { dedupKey } from '../../core/dedup.ts';
import { randomBase64url } from '../../core/random-text.ts';
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
 * BullMQ's deduplication id of a message: the one dedup key of src/core/dedup.ts (address,
 * original sender, id), so a queue dedups exactly like every other ingress. Fixed length, no
 * delimiter, so any id is safe in BullMQ's keys.
 */
export function dedupId(message: Pick<Message, 'to' | 'sender' | 'id'>): string {
  return dedupKey(message);
}

/**
 * A new job id: `m` and 72 random bits in base64url (12 characters). Short, because it appears
 * in every key and event BullMQ writes for the job; never a plain integer (BullMQ's own ids);
 * no ':'. Only unique, not secret: a queue's job ids are no capability.
 */
export function newJobId(): string {
  return `m${randomBase64url(9)}`;
}
