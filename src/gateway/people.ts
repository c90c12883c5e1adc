import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { InboxEndpoint } from '../endpoints/inbox/inbox-endpoint.ts';
import { Inbox } from '../people/inbox.ts';
import { OpenByDueBackfill } from '../people/open-by-due-backfill.ts';
import type { Cleanup } from './cleanup.ts';
import type { Access } from './directory.ts';
import type { Transports } from './router-and-transports.ts';

/**
 * Step 5: the people application — tasks for person: and group: addresses, with notices and
 * reminders. It comes before the flows step because a flow that runs may at once ask a person.
 */
export async function startPeople(config: Config, redis: Redis, access: Access, transports: Transports, log: Logger, cleanup: Cleanup): Promise<Inbox> {
  const { router } = transports;
  const baseUrl = config.http.baseUrl ?? `http://localhost:${config.http.port}`;
  const inbox = new Inbox({
    redis, prefix: config.redis.prefix, shards: transports.shards, router, permissions: access.permissions, directory: access.directory, baseUrl,
    email: config.email !== undefined, remindersMs: config.people.reminders, ...(transports.events.journal ? { events: transports.events.journal } : {}), log,
    onDecided: (task, at) => transports.metrics.taskDecided(task.createdAt, task.due, at),
  });
  transports.metrics.countOpenTasks(() => inbox.store.openByDue());
  router.register(new InboxEndpoint('person', inbox));
  router.register(new InboxEndpoint('group', inbox));
  await inbox.start();
  cleanup.push(() => inbox.stop());
  // Tasks stored before the open-by-due index existed are counted once it is backfilled (once per store).
  const backfill = new OpenByDueBackfill({ redis, prefix: config.redis.prefix, shards: transports.shards, log });
  await backfill.start();
  cleanup.push(() => backfill.stop());
  return inbox;
}
