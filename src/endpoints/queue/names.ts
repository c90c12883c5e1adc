import { createHash } from 'node:crypto';

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

/** Dedup keys hold any id safely: fixed length, no delimiter. */
export function dedupId(messageId: string): string {
  return createHash('sha256').update(messageId).digest('hex');
}
