/**
 * `npm run bench`: every benchmark, one after the other, each in its own process (each starts and
 * stops its own redis-server and exits when done).
 *
 *   npm run bench                       # every benchmark: route, flow, inbox, permissions, mq
 *   npm run bench -- route --n 5000     # one of them, with its own options
 *   npm run bench -- flow --waiting 20000
 *   npm run bench -- --rounds 5         # options shared by both (--n, --rounds, --concurrency,
 *                                       #   --warmup, --body-bytes, --timeout-s) go to both
 *
 * Exits with the first non-zero exit code, after running the rest.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const BENCHES = { route: 'route-throughput.ts', flow: 'flow-throughput.ts', inbox: 'inbox-latency.ts', permissions: 'permissions.ts', mq: 'mq-throughput.ts' } as const;
type Name = keyof typeof BENCHES;

const argv = process.argv.slice(2);
const only = argv[0] && Object.hasOwn(BENCHES, argv[0]) ? (argv[0] as Name) : undefined;
const rest = only ? argv.slice(1) : argv;
const names: Name[] = only ? [only] : (Object.keys(BENCHES) as Name[]).filter((n) => existsSync(join(import.meta.dirname, BENCHES[n])));

let child: ReturnType<typeof spawn> | undefined;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  // The child gets the signal too (same process group from a terminal); it stops its own servers.
  process.on(sig, () => {
    if (child && child.exitCode === null) child.kill(sig);
  });
}

let status = 0;
for (const name of names) {
  console.log(`\n━━━ ${name} benchmark (bench/${BENCHES[name]}) ━━━\n`);
  const code = await new Promise<number>((resolve) => {
    child = spawn(process.execPath, [...process.execArgv, join(import.meta.dirname, BENCHES[name]), ...rest], { stdio: 'inherit' });
    child.once('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
  });
  child = undefined;
  if (code !== 0) {
    console.error(`${name} benchmark exited with ${code}`);
    status ||= code;
  }
}
process.exit(status);
