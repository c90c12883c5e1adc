import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { NO_EVENTS, withEvents, type ChangeEvents, type EventJournal } from '../core/lifecycle.ts';
import { loadScripts, type ScriptCalls } from '../store/scripts.ts';
import { PermissionKeys } from './keys.ts';
import type { PermissionRule, Permissions, Verb } from './permissions.ts';
import { ChangeRuleCode } from './scripts/codes.ts';

export interface RuleChange {
  version: number;
  /** What happened to the rule: it was added or removed (a revert is made of both). */
  op: 'add' | 'remove';
  at: string;
  /** Who changed it (`user:alice`). */
  by: string;
  /** Client IP. */
  from?: string;
  action: 'add' | 'remove' | 'revert';
  rule: PermissionRule;
}

const SCRIPTS = { changeRule: 4 } as const;

/** A change's lifecycle events and where they are recorded with it (none: events off). */
export interface RecordedEvents {
  journal?: EventJournal;
  events: ChangeEvents;
}

const UNRECORDED: RecordedEvents = { events: NO_EVENTS };

/**
 * Console rules live in Redis (the config file's rules are the read-only baseline). Every change
 * bumps a version and is recorded; every gateway process hears of it over pub/sub and also checks
 * the version every second, so a missed event cannot leave a process on stale rules.
 */
export class PermissionStore {
  private subscriber?: Redis;
  private poll?: NodeJS.Timeout;
  private loaded = -1;
  private readonly keys: PermissionKeys;
  private readonly scripts: ScriptCalls<typeof SCRIPTS>;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    private readonly permissions: Permissions,
    private readonly configRules: PermissionRule[],
    private readonly log: Logger,
  ) {
    this.keys = new PermissionKeys(prefix);
    this.scripts = loadScripts(redis, new URL('./scripts/', import.meta.url), SCRIPTS);
  }

  async consoleRules(): Promise<PermissionRule[]> {
    const h = await this.redis.hgetall(this.keys.rules);
    return Object.values(h).map((v) => JSON.parse(v) as PermissionRule).sort((a, b) => (a.createdAt ?? '').localeCompare(b.createdAt ?? '') || a.id.localeCompare(b.id));
  }

  async version(): Promise<number> {
    return Number((await this.redis.get(this.keys.version)) ?? 0);
  }

  /** Loads config + console rules into the live Permissions if the version moved. */
  async refresh(force = false): Promise<void> {
    const v = await this.version();
    if (!force && v === this.loaded) return;
    const rules = await this.consoleRules();
    this.permissions.replace([...this.configRules, ...rules], v);
    if (this.loaded !== -1) this.log.info({ version: v, consoleRules: rules.length }, 'permission rules changed');
    this.loaded = v;
  }

  async start(): Promise<void> {
    await this.refresh(true);
    this.subscriber = this.redis.duplicate();
    this.subscriber.on('error', (err) => this.log.warn({ err: err.message }, 'permission change subscriber error'));
    this.subscriber.on('message', () => void this.refresh().catch(() => {}));
    await this.subscriber.subscribe(this.keys.channel);
    this.poll = setInterval(() => void this.refresh().catch(() => {}), 1000);
    this.poll.unref();
  }

  async stop(): Promise<void> {
    if (this.poll) clearInterval(this.poll);
    await this.subscriber?.quit().catch(() => {});
  }

  /** The new version, or null when nothing changed (the rule was already there, or gone). */
  private async change(action: 'add' | 'remove', rule: PermissionRule, by: string, from?: string, label: RuleChange['action'] = action, record: RecordedEvents = UNRECORDED): Promise<number | null> {
    const change: Omit<RuleChange, 'version'> = { at: new Date().toISOString(), by, ...(from ? { from } : {}), action: label, op: action, rule };
    const v = await withEvents(record.journal, this.keys.events, record.events, async (ev) =>
      (await this.scripts.changeRule(this.keys.changeRule(), action, rule.id, JSON.stringify(rule), JSON.stringify(change), ...ev)) as number);
    if (v === ChangeRuleCode.RuleExists || v === ChangeRuleCode.NoSuchRule) return null;
    await this.redis.publish(this.keys.channel, String(v));
    await this.refresh();
    return v;
  }

  /** `record(rule)`: the change's lifecycle events, given the rule as stored. */
  async add(rule: { group?: string; user?: string; peer?: string; address: string; verbs: Verb[] }, by: string, from?: string, record?: (rule: PermissionRule) => RecordedEvents): Promise<PermissionRule> {
    const full: PermissionRule = { id: `r${randomBytes(6).toString('hex')}`, ...rule, source: 'console', createdBy: by, createdAt: new Date().toISOString() };
    await this.change('add', full, by, from, 'add', record?.(full));
    return full;
  }

  /** False when no console rule has this id (any more). */
  async remove(id: string, by: string, from?: string, record?: (rule: PermissionRule) => RecordedEvents): Promise<PermissionRule | null> {
    const raw = await this.redis.hget(this.keys.rules, id);
    if (!raw) return null;
    const rule = JSON.parse(raw) as PermissionRule;
    return (await this.change('remove', rule, by, from, 'remove', record?.(rule))) !== null ? rule : null;
  }

  /**
   * Makes the console rules what they were right after `version`: each rule added or removed is
   * one recorded change (action 'revert', with `removed: true` for the removals). The revert's
   * lifecycle event (`record`, given what it plans to add and remove) is recorded with its last
   * change: one event once the rules are what was asked.
   */
  async revert(version: number, by: string, from?: string, record?: (plan: { added: PermissionRule[]; removed: PermissionRule[] }) => RecordedEvents): Promise<{ added: PermissionRule[]; removed: PermissionRule[] }> {
    const target = await this.rulesAt(version);
    const current = new Map((await this.consoleRules()).map((r) => [r.id, r]));
    const plan = { removed: [...current].filter(([id]) => !target.has(id)).map(([, r]) => r), added: [...target].filter(([id]) => !current.has(id)).map(([, r]) => r) };
    const steps = [...plan.removed.map((rule) => ['remove', rule] as const), ...plan.added.map((rule) => ['add', rule] as const)];
    const added: PermissionRule[] = [];
    const removed: PermissionRule[] = [];
    for (const [i, [op, rule]] of steps.entries()) {
      const last = i === steps.length - 1 ? record?.(plan) : undefined;
      if ((await this.change(op, rule, by, from, 'revert', last)) !== null) (op === 'add' ? added : removed).push(rule);
    }
    return { added, removed };
  }

  async history(limit = 200): Promise<RuleChange[]> {
    const rows = await this.redis.lrange(this.keys.history, -limit, -1);
    return rows.map((r) => JSON.parse(r) as RuleChange).reverse();
  }

  /** The console rules as they were right after `version` (replaying the history). */
  async rulesAt(version: number): Promise<Map<string, PermissionRule>> {
    const rows = (await this.redis.lrange(this.keys.history, 0, -1)).map((r) => JSON.parse(r) as RuleChange);
    const set = new Map<string, PermissionRule>();
    for (const c of rows) {
      if (c.version > version) break;
      if (c.op === 'add') set.set(c.rule.id, c.rule);
      else set.delete(c.rule.id);
    }
    return set;
  }
}
