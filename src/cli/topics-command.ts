import type { Command } from 'commander';
import { SwitchboardError } from '../core/errors.ts';
import type { ApiClient } from './client.ts';

/** `topic:trades.eu`, `trades.eu` or a pattern (`trades.*`) as the API path names it. */
function topicPath(topic: string): string {
  return `/api/topics/${encodeURIComponent(topic.startsWith('topic:') ? topic : `topic:${topic}`)}/subscriptions`;
}

/**
 * `switchboard topics ls|create|rm <topic> [name]`: a topic's subscriptions (DESIGN §6), through
 * the HTTP API like every other command, so the same `admin` rule and audit apply.
 */
export function registerTopicsCommand(program: Command, client: () => ApiClient, print: (v: unknown) => void): void {
  const topics = program.command('topics').description("a topic's subscriptions: list, create, delete (admin on the topic)");
  topics
    .command('ls')
    .description('the subscriptions of a topic (and of the patterns that match it), with their depth')
    .argument('<topic>', "topic or pattern, e.g. trades.eu or 'trades.*'")
    .action(async (topic: string) => print(await client().request('GET', topicPath(topic))));
  topics
    .command('create')
    .description('create a durable subscription; consume it at topic:<topic>?subscription=<name>')
    .argument('<topic>', "topic or pattern, e.g. trades.eu or 'trades.*'")
    .argument('<name>', 'subscription name')
    .option('--shared', 'a shared subscription (JMS 2.0): its consumers split the messages')
    .option('--max-depth <n>', 'bounded: publishing is refused while it holds this many messages')
    .action(async (topic: string, name: string, o: { shared?: boolean; maxDepth?: string }) => {
      if (o.maxDepth !== undefined && !/^[1-9]\d*$/.test(o.maxDepth)) throw new SwitchboardError('usage', `--max-depth must be a positive whole number, got '${o.maxDepth}'`, 2);
      print(await client().request('POST', topicPath(topic), { name, ...(o.shared ? { shared: true } : {}), ...(o.maxDepth !== undefined ? { maxDepth: Number(o.maxDepth) } : {}) }));
    });
  topics
    .command('rm')
    .description('delete a subscription with the messages it holds')
    .argument('<topic>')
    .argument('<name>')
    .action(async (topic: string, name: string) => print(await client().request('DELETE', `${topicPath(topic)}/${encodeURIComponent(name)}`)));
}
