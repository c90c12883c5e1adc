import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Cluster, Redis } from 'ioredis';

/**
 * Redis-side logic lives in named Lua files beside the store that runs them, BullMQ style:
 * `src/people/scripts/decideTask-6.lua` is the script `decideTask`, called with 6 KEYS. Each file
 * opens with a header naming every KEYS[i], ARGV[i] and return value; every key it touches comes
 * in KEYS and all of one call's KEYS share one hash tag, so a Redis Cluster runs it on one node
 * (test/unit/redis-scripts.test.ts checks both for every file).
 *
 * A store declares the scripts it calls with their key counts; `loadScripts` reads each file once
 * per process, checks the declaration against the file names, registers each script on the client
 * with ioredis `defineCommand` (EVALSHA, falling back to EVAL once after a NOSCRIPT, on whichever
 * node owns the keys) and hands back typed functions called by name.
 */

/** One Lua file: `<name>-<numberOfKeys>.lua`. */
export interface ScriptFile {
  name: string;
  numberOfKeys: number;
  lua: string;
  /** Absolute path, for messages. */
  path: string;
}

/** A value passed as ARGV (ioredis turns numbers into strings). */
export type ScriptArg = string | number | Buffer;

type Tuple<N extends number, T = string, Acc extends T[] = []> = Acc['length'] extends N ? Acc : Tuple<N, T, [...Acc, T]>;

/** The typed call of each declared script: its KEYS as a tuple of the declared length, then its ARGV. */
export type ScriptCalls<S extends Record<string, number>> = {
  readonly [K in keyof S]: (keys: Tuple<S[K]>, ...args: ScriptArg[]) => Promise<unknown>;
};

const FILE_NAME = /^([a-z][A-Za-z0-9]*)-(\d+)\.lua$/;

/** A script file is missing, misnamed or disagrees with what its store declares. */
export class ScriptFileError extends Error {
  constructor(readonly path: string, reason: string) {
    super(`${path}: ${reason}`);
    this.name = 'ScriptFileError';
  }
}

/** A script was called with keys in different Redis Cluster slots: a bug in a key module. */
export class CrossSlotKeys extends Error {
  constructor(readonly script: string, readonly keys: readonly string[]) {
    super(`script '${script}' called with keys of different hash tags (${keys.map((k) => `'${k}' → '${hashTag(k)}'`).join(', ')}); all KEYS of one call must share one {tag}`);
    this.name = 'CrossSlotKeys';
  }
}

/**
 * The part of a key that Redis Cluster hashes to find its slot: the text between the first `{`
 * and the next `}` when that is not empty, otherwise the whole key.
 */
export function hashTag(key: string): string {
  const open = key.indexOf('{');
  if (open === -1) return key;
  const close = key.indexOf('}', open + 1);
  if (close === -1 || close === open + 1) return key;
  return key.slice(open + 1, close);
}

/** True when every key hashes to the same slot by construction (one shared hash tag, or one key). */
export function oneSlot(keys: readonly string[]): boolean {
  return keys.every((k) => hashTag(k) === hashTag(keys[0]!));
}

const dirs = new Map<string, ScriptFile[]>();

/** Every `.lua` file in `dir`, read once per process. */
export function readScriptDir(dir: URL): ScriptFile[] {
  const cached = dirs.get(dir.href);
  if (cached) return cached;
  const path = fileURLToPath(dir);
  const files = readdirSync(path)
    .filter((f) => f.endsWith('.lua'))
    .sort()
    .map((f): ScriptFile => {
      const m = FILE_NAME.exec(f);
      const full = fileURLToPath(new URL(f, dir));
      if (!m) throw new ScriptFileError(full, 'a script file is named <camelCaseName>-<numberOfKeys>.lua, e.g. decideTask-6.lua');
      return { name: m[1]!, numberOfKeys: Number(m[2]), lua: readFileSync(full, 'utf8'), path: full };
    });
  dirs.set(dir.href, files);
  return files;
}

/** Names defined on each client, and from which file, so two stores cannot claim one name. */
const defined = new WeakMap<object, Map<string, string>>();

type Client = Redis | Cluster;
type Dynamic = Record<string, (...args: ScriptArg[]) => Promise<unknown>>;

/**
 * Registers the scripts in `dir` on `redis` (once per client) and returns them callable by name.
 * `declared` names every script the caller uses with its number of KEYS; a script without its
 * file, or with a file of another key count, fails at start, not at its first call. (Several
 * stores may share a folder; test/unit/redis-scripts.test.ts checks every file is called.)
 *
 * @example
 * const scripts = loadScripts(redis, new URL('./scripts/', import.meta.url), { releaseLock: 1 });
 * await scripts.releaseLock([keys.lock(id)], token);
 */
export function loadScripts<const S extends Record<string, number>>(redis: Client, dir: URL, declared: S): ScriptCalls<S> {
  const all = new Map(readScriptDir(dir).map((f) => [f.name, f]));
  const folder = fileURLToPath(dir);
  const files: ScriptFile[] = Object.entries(declared).map(([name, count]) => {
    const file = all.get(name);
    if (!file) throw new ScriptFileError(folder, `no script file ${name}-${count}.lua`);
    if (file.numberOfKeys !== count) throw new ScriptFileError(file.path, `declared with ${count} KEYS, but the file name says ${file.numberOfKeys}`);
    return file;
  });

  let names = defined.get(redis);
  if (!names) defined.set(redis, (names = new Map()));
  const client = redis as unknown as Dynamic;
  const calls: Record<string, (keys: string[], ...args: ScriptArg[]) => Promise<unknown>> = {};
  for (const file of files) {
    const owner = names.get(file.name);
    if (owner === undefined) {
      if (file.name in client) throw new ScriptFileError(file.path, `'${file.name}' is already a method of the Redis client; name the script for what it does`);
      redis.defineCommand(file.name, { numberOfKeys: file.numberOfKeys, lua: file.lua });
      names.set(file.name, file.path);
    } else if (owner !== file.path) {
      throw new ScriptFileError(file.path, `a script named '${file.name}' is already defined from ${owner}`);
    }
    const { name, numberOfKeys } = file;
    calls[name] = (keys, ...args) => {
      if (keys.length !== numberOfKeys) return Promise.reject(new ScriptFileError(file.path, `called with ${keys.length} KEYS, expects ${numberOfKeys}`));
      if (!oneSlot(keys)) return Promise.reject(new CrossSlotKeys(name, keys));
      return client[name]!(...keys, ...args);
    };
  }
  return calls as unknown as ScriptCalls<S>;
}
