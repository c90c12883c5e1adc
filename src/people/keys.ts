import { shardOf, shardTag } from '../store/redis.ts';

/**
 * Every Redis key of the task store, and the KEYS of each task script in the order its header
 * names them. Tasks are spread over `redis.shards` hash tags (DESIGN §9): a task's id picks its
 * shard, and every key one script touches (the task, its history, the open-task indexes and the
 * undelivered set of that shard) shares the shard's tag, so each script runs in one Redis Cluster
 * slot (test/unit/redis-scripts.test.ts checks it through these functions).
 *
 * Layout, `<tag>` being `tasks` with one shard (the layout since tasks were first stored) and
 * `tasks.<i>.<n>` (see shardTag) with several:
 * - `<prefix>:{<tag>}:task:<id>` hash: spec, status, assignee | group, claimedBy, decision, …
 * - `<prefix>:{<tag>}:task:<id>:history` list of history entries (JSON)
 * - `<prefix>:{<tag>}:open:person:<name>`, `…:open:group:<name>` zsets of that shard's open task ids
 * - `<prefix>:{<tag>}:open-by-due` zset of every open task of that shard, scored by its due date
 *   (epoch ms, `+inf` without one): the open and overdue gauges count it with ZCOUNT
 * - `<prefix>:{<tag>}:unnotified` set of that shard's decided tasks whose decision is not delivered yet
 * - `<prefix>:{<tag>}:events` that shard's task lifecycle events not yet forwarded (hash: event id →
 *   CloudEvent JSON), written by the script of the change, emptied by the events drainer
 * A person's or group's open tasks are the union of their index in every shard.
 */

/** Whom a task is for: a person (`assignee`) or else a group. */
export interface TaskOwner {
  assignee?: string;
  group?: string;
}

/** The stored hash field and value naming a task's owner, as the scripts compare them. */
export function ownerField(owner: TaskOwner): ['assignee' | 'group', string] {
  return owner.assignee !== undefined ? ['assignee', owner.assignee] : ['group', owner.group ?? ''];
}

/** The owner recorded in a task hash (an empty assignee means the group's). */
export function storedOwner(assignee: string | null | undefined, group: string | null | undefined): TaskOwner {
  return assignee ? { assignee } : { group: group ?? '' };
}

export class TaskKeys {
  /** The hash tag of every shard, in shard order. */
  readonly tags: readonly string[];

  /** @param shards hash tags tasks are spread over (redis.shards); 1 keeps the `{tasks}` layout */
  constructor(readonly prefix: string, readonly shards = 1) {
    this.tags = shards <= 1 ? ['tasks'] : Array.from({ length: shards }, (_, i) => shardTag('tasks', i));
  }

  /** The hash tag of the shard a task lives in, from its id. */
  tagOf(id: string): string {
    return this.tags[shardOf(id, this.tags.length)]!;
  }

  task(id: string): string {
    return `${this.prefix}:{${this.tagOf(id)}}:task:${id}`;
  }

  history(id: string): string {
    return `${this.prefix}:{${this.tagOf(id)}}:task:${id}:history`;
  }

  /** Open tasks of a person or a group in the shard `tag`, scored by when they arrived there. */
  openIn(tag: string, owner: TaskOwner): string {
    const [field, name] = ownerField(owner);
    return field === 'assignee' ? `${this.prefix}:{${tag}}:open:person:${name}` : `${this.prefix}:{${tag}}:open:group:${name}`;
  }

  /** The open-task index of `owner` in the shard of task `id`. */
  open(owner: TaskOwner, id: string): string {
    return this.openIn(this.tagOf(id), owner);
  }

  /** Decided tasks of the shard `tag` whose decision is not delivered yet. */
  unnotifiedIn(tag: string): string {
    return `${this.prefix}:{${tag}}:unnotified`;
  }

  /** Every open task of the shard `tag`, scored by due date (epoch ms; `+inf` when none). */
  openByDueIn(tag: string): string {
    return `${this.prefix}:{${tag}}:open-by-due`;
  }

  /** Lifecycle events of the shard of task `id` not yet forwarded (src/core/event-journal.ts). */
  events(id: string): string {
    return `${this.prefix}:{${this.tagOf(id)}}:events`;
  }

  createTask(id: string, owner: TaskOwner): [string, string, string, string, string] {
    return [this.task(id), this.history(id), this.open(owner, id), this.openByDueIn(this.tagOf(id)), this.events(id)];
  }

  /** `owner`: whom the caller believes holds the task now (the script checks it). */
  decideTask(id: string, owner: TaskOwner): [string, string, string, string, string, string] {
    return [this.task(id), this.history(id), this.open(owner, id), this.unnotifiedIn(this.tagOf(id)), this.openByDueIn(this.tagOf(id)), this.events(id)];
  }

  approveTask(id: string): [string, string] {
    return [this.task(id), this.history(id)];
  }

  claimTask(id: string): [string, string, string] {
    return [this.task(id), this.history(id), this.events(id)];
  }

  releaseTask(id: string): [string, string] {
    return [this.task(id), this.history(id)];
  }

  /** `from`: whom the caller believes holds the task now (the script checks it); `to`: the new owner. */
  reassignTask(id: string, from: TaskOwner, to: TaskOwner): [string, string, string, string, string] {
    return [this.task(id), this.history(id), this.open(from, id), this.open(to, id), this.events(id)];
  }
}
