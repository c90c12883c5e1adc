import { type SchemeDefinition } from '../../core/address.ts';

/**
 * `topic:` addresses (DESIGN §1, §6). `topic:trades.eu` is a topic one publishes to;
 * `topic:trades.*` a pattern one subscribes to (`*` one segment, `**` the rest);
 * `topic:trades.eu?subscription=risk` the durable subscription `risk`, consumed like a queue.
 */
export interface TopicAddress {
  /** The topic or pattern, without `topic:`: `trades.eu`, `trades.*`. */
  topic: string;
  /** The subscription named after `?subscription=`, if any. */
  subscription?: string;
  /** True when the topic has a wildcard segment: one subscribes to it, never publishes. */
  pattern: boolean;
}

const SEGMENT = /^[A-Za-z0-9_-]+$/;
/** Subscription names: what JMS clients use, and safe in an address and a Redis key. */
export const SUBSCRIPTION_NAME = /^[A-Za-z0-9_.-]{1,128}$/;
const QUERY = '?subscription=';

/** What is wrong with a topic or pattern (`trades.eu`, `trades.*`, `trades.**`), or undefined. */
export function topicProblem(topic: string): string | undefined {
  const segments = topic.split(/[./]/);
  for (const [i, s] of segments.entries()) {
    if (s === '**' && i !== segments.length - 1) return "'**' may only be the last segment";
    if (s !== '*' && s !== '**' && !SEGMENT.test(s)) return s === '' ? 'empty segment in the topic' : `bad topic segment '${s}'`;
  }
  return undefined;
}

/** Splits a `topic:` path (validated by the scheme) into its topic and subscription. */
export function splitTopicPath(path: string): TopicAddress {
  const q = path.indexOf(QUERY);
  const topic = q < 0 ? path : path.slice(0, q);
  const pattern = topic.split(/[./]/).some((s) => s === '*' || s === '**');
  return q < 0 ? { topic, pattern } : { topic, pattern, subscription: path.slice(q + QUERY.length) };
}

/** The address of a subscription, `topic:<topic>?subscription=<name>`: what its consumers read. */
export function subscriptionAddress(topic: string, name: string): string {
  return `topic:${topic}${QUERY}${name}`;
}

export const topicScheme: SchemeDefinition = {
  scheme: 'topic',
  expected: 'topic:<topic> (segments separated by . or /, * or ** to subscribe to a pattern), optionally ?subscription=<name>, e.g. topic:trades.eu or topic:trades.*?subscription=risk',
  check(p) {
    const q = p.indexOf('?');
    if (q >= 0 && !p.startsWith(QUERY, q)) return "the only query a topic address takes is '?subscription=<name>'";
    const { topic, subscription } = splitTopicPath(p);
    if (topic === '') return 'missing topic before ?subscription=';
    const problem = topicProblem(topic);
    if (problem) return problem;
    if (subscription !== undefined && !SUBSCRIPTION_NAME.test(subscription)) return `bad subscription name '${subscription}' (letters, digits, _ . -, at most 128)`;
    return undefined;
  },
};
