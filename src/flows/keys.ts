/**
 * Every Redis key of flow instances, and the KEYS of each flow script in the order its header
 * names them. One instance's keys share the hash tag `{<instance id>}`, so its scripts and
 * transactions run in one Redis Cluster slot while instances spread over the slots of a cluster.
 *
 * Layout:
 * - `<prefix>:flow:{<id>}:meta` hash: id, flow, status, input (when short), result, waitingOn, run
 *   (the token of the last run begun, so a process holding the instance in memory sees whether it
 *   is current), … Kept to short values, so Redis stores it as a compact listpack (every value
 *   ≤ hash-max-listpack-value, 64 bytes) rather than a hash table of its own: a third of the memory.
 * - `<prefix>:flow:{<id>}:input` the input (JSON) when it is longer than that; absent otherwise
 *   (instances stored before it keep their input in the meta hash, and are read as they are).
 * - `<prefix>:flow:{<id>}:journal` hash: step number → journal entry (JSON, without the step
 *   number and a false `done`, which the store restores: short entries keep the hash a listpack)
 * - `<prefix>:flow:{<id>}:inbox` list of delivered messages; `…:seen` ids delivered; `…:consumed` ids taken
 * - `<prefix>:flow:{<id>}:lock` the replay lock (string, token of the holder)
 * - `<prefix>:flow:{<id>}:events` the instance's lifecycle events not yet forwarded (hash: event id
 *   → CloudEvent JSON), written by the script that makes the change, emptied by the events
 *   drainer (src/core/event-journal.ts); never there while no `events:` mapping wants flow events
 * - `<prefix>:flow-id-key` the secret instance ids are derived under: an id is an HMAC of flow,
 *   starter and start id, so a start id starts one instance per starter with no key of its own,
 *   and nobody without the secret can predict another's instance. `<prefix>:flow-start:{<digest>}`
 *   (the instance a start id made, one key per start) is how earlier versions did it: still read
 *   for the retention time after an upgrade, never written.
 * - `<prefix>:flows:<flow>` zset of instance ids of one flow; `<prefix>:flow-names` set of the flows
 *   indexed (listing all flows merges their indexes). `<prefix>:flows` (zset of `<flow>/<id>`) is
 *   the all-flows index of instances stored before: read and pruned, no longer written.
 *   Index keys are written by separate commands, never in one transaction or script.
 * - `<prefix>:flow-tag:<name>=<value>` zset of `<flow>/<id>` tagged so by `ctx.tag`, scored by
 *   the instance's creation time (the business-key search of the console).
 * - `<prefix>:flow-eager-owners` set of the processes that run starts eagerly (see eager-starts.ts);
 *   `<prefix>:flow-eager:{<owner>}:alive` the heartbeat of one (string, with a lease) and
 *   `<prefix>:flow-eager:{<owner>}:ids` the instances it has acknowledged a start of and not yet
 *   parked, ended or handed to the run queue (set). One owner's two keys share a slot.
 * - The BullMQ queue of runs: `{flow-runs}` with one shard; with several, one queue per shard
 *   `{flow-runs.<i>.<n>}` (`shardTag`), an instance's runs, timers and stalled checks in the queue
 *   of `shardOf(<id>)`, so a Redis Cluster spreads them over its masters (DESIGN §9).
 */

import { shardOf, shardTag } from '../store/redis.ts';

export type InstancePart = 'meta' | 'input' | 'journal' | 'inbox' | 'seen' | 'consumed' | 'lock' | 'events';

/** The parts that make up an instance's state (everything but its lock). */
export const STATE_PARTS = ['meta', 'input', 'journal', 'inbox', 'seen', 'consumed'] as const satisfies readonly InstancePart[];

export class FlowKeys {
  constructor(readonly prefix: string) {}

  instance(id: string, part: InstancePart): string {
    return `${this.prefix}:flow:{${id}}:${part}`;
  }

  /**
   * Start id → instance of one starter (`digest` of flow, starter and start id), as earlier
   * versions bound them; read, no longer written (ids are derived now, see `idKey`).
   */
  start(digest: string): string {
    return `${this.prefix}:flow-start:{${digest}}`;
  }

  /** The key instance ids are derived under, and until when `start` keys are read (string `<key>.<ms>`). */
  idKey(): string {
    return `${this.prefix}:flow-id-key`;
  }

  /**
   * Instances of one flow, scored by creation time. Without a flow: the all-flows index
   * (`<flow>/<id>`), no longer written; instances stored before are still listed from it.
   */
  index(flow?: string): string {
    return flow ? `${this.prefix}:flows:${flow}` : `${this.prefix}:flows`;
  }

  /** Names of the flows that have an index (set). */
  names(): string {
    return `${this.prefix}:flow-names`;
  }

  /** Instances tagged `name` = `value` (as `<flow>/<id>`), scored by creation time. */
  tag(name: string, value: string): string {
    return `${this.prefix}:flow-tag:${name}=${value}`;
  }

  /** Processes running starts eagerly (set of owner names). */
  eagerOwners(): string {
    return `${this.prefix}:flow-eager-owners`;
  }

  /** One eager owner's heartbeat (expires with its lease). */
  eagerAlive(owner: string): string {
    return `${this.prefix}:flow-eager:{${owner}}:alive`;
  }

  /** The instances one eager owner has started and not yet dealt with. */
  eagerIds(owner: string): string {
    return `${this.prefix}:flow-eager:{${owner}}:ids`;
  }

  createInstance(id: string): [string, string, string, string] {
    return [this.instance(id, 'meta'), this.instance(id, 'input'), this.instance(id, 'events'), this.instance(id, 'lock')];
  }

  cancelInstance(id: string): [string, string] {
    return [this.instance(id, 'meta'), this.instance(id, 'events')];
  }

  deliverMessage(id: string): [string, string, string] {
    return [this.instance(id, 'seen'), this.instance(id, 'inbox'), this.instance(id, 'meta')];
  }

  refreshLock(id: string): [string] {
    return [this.instance(id, 'lock')];
  }

  releaseLock(id: string): [string] {
    return [this.instance(id, 'lock')];
  }

  beginRun(id: string): [string, string, string, string] {
    return [this.instance(id, 'lock'), this.instance(id, 'meta'), this.instance(id, 'journal'), this.instance(id, 'input')];
  }

  parkInstance(id: string): [string, string, string, string] {
    return [this.instance(id, 'meta'), this.instance(id, 'journal'), this.instance(id, 'lock'), this.instance(id, 'events')];
  }

  finishInstance(id: string): [string, string, string, string, string, string, string] {
    return [this.instance(id, 'meta'), this.instance(id, 'journal'), this.instance(id, 'inbox'), this.instance(id, 'seen'), this.instance(id, 'consumed'), this.instance(id, 'input'), this.instance(id, 'events')];
  }

  /** Keys of the transaction that journals a step and takes its message from the inbox. */
  consumeStep(id: string): [string, string, string] {
    return [this.instance(id, 'journal'), this.instance(id, 'consumed'), this.instance(id, 'inbox')];
  }
}

/**
 * The event stream of a run queue keeps this many entries (BullMQ's default is 10,000). Nothing
 * reads it; at 10,000 waiting flows the default stream was ~60 bytes of Redis per flow. Every
 * Queue object on a run queue passes it (BullMQ stores the last one given in the queue's meta).
 */
export const RUN_QUEUE_STREAMS = { events: { maxLen: 500 } };

/** The queue of flow runs with one shard, and of runs added before the queue was sharded. */
export const UNSHARDED_RUN_QUEUE = '{flow-runs}';

/** The run queues of `shards` shards, shard i at index i. */
export function runQueues(shards: number): string[] {
  return shards <= 1 ? [UNSHARDED_RUN_QUEUE] : Array.from({ length: shards }, (_, i) => `{${shardTag('flow-runs', i)}}`);
}

/** The shard (index into `runQueues(shards)`) whose queue runs an instance. */
export function runShard(id: string, shards: number): number {
  return shardOf(id, shards);
}
