/**
 * Every Redis key of the topic transport. All share the `{topics}` hash tag: the registry, its
 * version and the fan-out log must be read and written by one script in one Redis Cluster slot,
 * which is what makes "every subscription that existed when the message was accepted, or none"
 * one atomic step. (The subscriptions' messages live in their own queues, each its own slot.)
 *
 * Layout:
 * - `<prefix>:{topics}:version` counter, bumped by every change of the registry
 * - `<prefix>:{topics}:index` set of the topics and patterns that have subscriptions
 * - `<prefix>:{topics}:subs:<topic>` hash: subscription name → record (JSON), one per topic or pattern
 * - `<prefix>:{topics}:log` stream of accepted publications not yet copied to every subscription
 * - `<prefix>:{topics}:seen:<dedupKey>` a publication's id, remembered for the dedup TTL
 * - `<prefix>:{topics}:live:<process>` liveness mark of a process holding non-durable subscriptions
 */
export class TopicKeys {
  constructor(readonly prefix: string) {}

  version(): string {
    return `${this.prefix}:{topics}:version`;
  }

  index(): string {
    return `${this.prefix}:{topics}:index`;
  }

  subscriptions(topic: string): string {
    return `${this.prefix}:{topics}:subs:${topic}`;
  }

  log(): string {
    return `${this.prefix}:{topics}:log`;
  }

  seen(dedupKey: string): string {
    return `${this.prefix}:{topics}:seen:${dedupKey}`;
  }

  live(process: string): string {
    return `${this.prefix}:{topics}:live:${process}`;
  }

  /** KEYS of `acceptPublication`, in the order its header names them. */
  acceptPublication(dedupKey: string): [string, string, string] {
    return [this.version(), this.log(), this.seen(dedupKey)];
  }
}
