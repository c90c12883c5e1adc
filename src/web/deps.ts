import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { AuditLog } from '../auth/audit.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import type { Directory } from '../auth/directory.ts';
import type { TokenStore } from '../auth/tokens.ts';
import type { PermissionAdmin } from '../auth/permission-admin.ts';
import type { SessionOptions } from './sessions.ts';
import type { FlowRuntime } from '../flows/runtime.ts';
import type { Inbox } from '../people/inbox.ts';
import type { Permissions } from '../auth/permissions.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Router } from '../core/router.ts';
import type { Tracing } from '../tracing/tracing.ts';

/** Everything the HTTP door needs, built by the gateway and handed in (no I/O at import time). */
export interface AppDeps {
  /** Attachments (claim check): streamed uploads and downloads, when enabled. */
  attachments?: import('../attachments/attachment-store.ts').AttachmentStore;
  /** The topic: transport's subscription admin, when the gateway has topics. */
  topics?: TopicSubscriptions;
  router: Router;
  directory: Directory;
  auth: Authenticator;
  tokens: TokenStore;
  audit: AuditLog;
  session: SessionOptions;
  /** The flow runtime, when flows are enabled. */
  flows?: FlowRuntime;
  /** Live rules (console/API/CLI). */
  permissionAdmin?: PermissionAdmin;
  /** Addresses this gateway knows (flows, brokers, groups, queues) for pattern previews. */
  knownAddresses?: () => Promise<string[]>;
  /** Idempotent-receiver store (also binds webhook signatures to their ids). */
  dedup?: import('../core/dedup.ts').DedupStore;
  /** Inbound webhooks: POST /hooks/<name> → address. */
  hooks?: { name: string; secret: string; to: string }[];
  /** People's tasks. */
  inbox?: Inbox;
  /** Redis key prefix (rate-limit counters, sessions). */
  prefix: string;
  permissions: Permissions;
  metrics: Metrics;
  redis: Redis;
  log: Logger;
  /** Largest accepted JSON body, e.g. '1mb'. */
  bodyLimit: string;
  /** What the operations console lists: queues and connections (given by the wiring). */
  console?: ConsoleSources;
  /** Spans of requests whose work other traces link to (a decision); absent: tracing off. */
  tracing?: Tracing;
  /** Extra readiness checks (routes, …) shown in /readyz. */
  readiness?: () => Promise<Record<string, { ok: boolean; detail?: string }>>;
}

/** A subscription as the API shows it (DESIGN §6). */
export interface SubscriptionInfo {
  name: string;
  durable: boolean;
  shared: boolean;
  pattern?: string;
  depth: number;
  address: string;
}

/** What this door needs from the `topic:` transport, given by the wiring: doors never hold a transport. */
export interface TopicSubscriptions {
  listSubscriptions(topic: string): Promise<SubscriptionInfo[]>;
  createSubscription(topic: string, name: string, opts: { durable?: boolean; shared?: boolean; maxDepth?: number; createdBy?: string }): Promise<{ created: boolean; subscription: SubscriptionInfo }>;
  deleteSubscription(topic: string, name: string): Promise<boolean>;
}

/** One connection as the console shows it. */
export interface ConnectionState {
  kind: 'broker' | 'peer' | 'webhook' | 'directory';
  name: string;
  /** The address pattern a user needs admin or browse on to see it (`mq:legacy/**`, `peer:bank-b/**`, `webhook:crm`, `**`). */
  address: string;
  /** e.g. open, connecting, closed, idle, ok, down. */
  state: string;
  ok: boolean;
  lastError?: string;
  outbox?: import('../core/outbox.ts').OutboxStatus;
}

/** What the console needs from the transports, given by the wiring: doors never hold a transport. */
export interface ConsoleSources {
  /** Every `queue:` address known on this Redis. */
  queueAddresses(): Promise<string[]>;
  connections(): Promise<ConnectionState[]>;
}
