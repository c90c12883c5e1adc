/**
 * Every Redis key of the task store, and the KEYS of each task script in the order its header
 * names them. All task keys share the `{tasks}` hash tag, so each script runs in one Redis
 * Cluster slot (test/unit/redis-scripts.test.ts checks it through these functions).
 *
 * Layout (unchanged since tasks were first stored):
 * - `<prefix>:{tasks}:task:<id>` hash: spec, status, assignee | group, claimedBy, decision, …
 * - `<prefix>:{tasks}:task:<id>:history` list of history entries (JSON)
 * - `<prefix>:{tasks}:open:person:<name>`, `<prefix>:{tasks}:open:group:<name>` zsets of open task ids
 * - `<prefix>:{tasks}:unnotified` set of decided task ids whose decision is not delivered yet
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
  constructor(readonly prefix: string) {}

  task(id: string): string {
    return `${this.prefix}:{tasks}:task:${id}`;
  }

  history(id: string): string {
    return `${this.prefix}:{tasks}:task:${id}:history`;
  }

  /** Open tasks of a person or a group, scored by when they arrived there. */
  open(owner: TaskOwner): string {
    const [field, name] = ownerField(owner);
    return field === 'assignee' ? `${this.prefix}:{tasks}:open:person:${name}` : `${this.prefix}:{tasks}:open:group:${name}`;
  }

  get unnotified(): string {
    return `${this.prefix}:{tasks}:unnotified`;
  }

  createTask(id: string, owner: TaskOwner): [string, string, string] {
    return [this.task(id), this.history(id), this.open(owner)];
  }

  /** `owner`: whom the caller believes holds the task now (the script checks it). */
  decideTask(id: string, owner: TaskOwner): [string, string, string, string] {
    return [this.task(id), this.history(id), this.open(owner), this.unnotified];
  }

  approveTask(id: string): [string, string] {
    return [this.task(id), this.history(id)];
  }

  claimTask(id: string): [string, string] {
    return [this.task(id), this.history(id)];
  }

  releaseTask(id: string): [string, string] {
    return [this.task(id), this.history(id)];
  }

  /** `from`: whom the caller believes holds the task now (the script checks it); `to`: the new owner. */
  reassignTask(id: string, from: TaskOwner, to: TaskOwner): [string, string, string, string] {
    return [this.task(id), this.history(id), this.open(from), this.open(to)];
  }
}
