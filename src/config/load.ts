import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../core/errors.ts';
import { configSchema, type Config } from './schema.ts';

export const DEFAULT_CONFIG = 'config/switchboard.yaml';

export interface LoadedConfig {
  file: string;
  config: Config;
}

/** `${VAR}` in any string is replaced from the environment; a missing variable is an error. */
function substitute(value: unknown, env: NodeJS.ProcessEnv, path: string, problems: string[]): unknown {
  // A scalar that is only `${VAR}` takes the variable's type as YAML would read it (port: ${PORT}).
  const whole = typeof value === 'string' ? /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(value) : null;
  if (whole && env[whole[1]!] !== undefined) {
    const v = env[whole[1]!]!;
    return /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v === 'true' ? true : v === 'false' ? false : v;
  }
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
      const v = env[name];
      if (v === undefined) problems.push(`${path || '(top)'}: environment variable ${name} is not set (referenced as \${${name}})`);
      return v ?? '';
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, env, `${path}[${i}]`, problems));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, env, path ? `${path}.${k}` : k, problems)]));
  }
  return value;
}

function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)), '') || '(top)';
}

function describe(issue: z.core.$ZodIssue): string {
  const where = formatPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((k) => `${where === '(top)' ? k : `${where}.${k}`}: unknown key (not part of the configuration; check the spelling)`).join('\n');
  }
  return `${where}: ${issue.message}`;
}

/** Parses and validates config text; throws ConfigError listing every problem. */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): Config {
  const { substituted, problems } = readSections(text, file, env, 'http, redis, directory, …');
  // Only a namespaced variable overrides the file: a generic REDIS_URL left in a shell or set for
  // another program must never point the gateway at someone else's Redis. It replaces the whole
  // connection form (url, cluster or sentinel) and the start log names it as the source.
  const override = env.SWITCHBOARD_REDIS_URL;
  if (override) {
    const { cluster: _c, sentinel: _s, ...rest } = (substituted.redis as Record<string, unknown> | undefined) ?? {};
    substituted.redis = { ...rest, url: override };
  }
  const config = validateSections(configSchema, substituted, problems, file, (l) => (override && l.startsWith('redis.url:') ? `${l} (redis.url comes from the environment variable SWITCHBOARD_REDIS_URL)` : l));
  if (override) config.redis.source = 'SWITCHBOARD_REDIS_URL';
  return config;
}

/**
 * A config file's YAML as a mapping of sections with `${VAR}` substituted; a missing variable is a
 * problem in `problems`, YAML syntax and a non-mapping are thrown at once. `sections` names what
 * the top level should hold, for that message.
 */
export function readSections(text: string, file: string, env: NodeJS.ProcessEnv, sections: string): { substituted: Record<string, unknown>; problems: string[] } {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(file, doc.errors.map((e) => `YAML syntax: ${e.message.split('\n')[0]}`));
  }
  const raw = doc.toJS() ?? {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, [`(top): expected a mapping of sections (${sections})`]);
  const problems: string[] = [];
  const substituted = substitute(raw, env, '', problems) as Record<string, unknown>;
  return { substituted, problems };
}

/**
 * Validates sections with `schema`; throws one ConfigError with every problem (a path whose
 * variable was missing is reported once, as the missing variable). `annotate` may add to a line.
 */
export function validateSections<S extends z.ZodType>(schema: S, substituted: unknown, problems: string[], file: string, annotate: (line: string) => string = (l) => l): z.output<S> {
  const parsed = schema.safeParse(substituted);
  const missingAt = new Set(problems.map((p) => p.slice(0, p.indexOf(':'))));
  if (!parsed.success) {
    const lines = parsed.error.issues.filter((i) => !missingAt.has(formatPath(i.path))).flatMap((i) => describe(i).split('\n'));
    problems.push(...lines.map(annotate));
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(file, problems);
  return parsed.data;
}

/** The text of a config file; a missing or unreadable file is a ConfigError saying what to do. */
export function readConfigText(file: string, hint: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(file, [code === 'ENOENT' ? `file not found (${hint})` : `cannot read: ${code ?? (err as Error).message}`]);
  }
}

export function configFile(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  return resolve(explicit ?? env.SWITCHBOARD_CONFIG ?? DEFAULT_CONFIG);
}

export function loadConfig(explicit?: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  const file = configFile(explicit, env);
  return { file, config: parseConfig(readConfigText(file, 'set SWITCHBOARD_CONFIG or pass --config FILE'), file, env) };
}
