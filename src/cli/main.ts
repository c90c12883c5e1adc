import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { SwitchboardError } from '../core/errors.ts';
import { ApiClient, addressPath } from './client.ts';
// The gateway, the config loader and the broker check are loaded only by the commands that use
// them: every other command (the API client ones, --help) starts without reading them at all.
const local = () => import('./local-commands.ts');
import { registerTopicsCommand } from './topics-command.ts';

// A reader that has read enough (`switchboard browse … | head`) closes the pipe before a command
// has written everything: the rest is not wanted, which is nobody's error to show with a stack
// trace. Not so for a running gateway or float, which log there: for them it stays a failure
// (a supervisor restarts a process that failed, not one that ended well).
let serving = false;
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE' && !serving) process.exit(0);
  throw err;
});

const program = new Command('switchboard')
  .description('Switchboard workflow integration gateway')
  .showHelpAfterError('(run with --help for usage)')
  .addOption(new Option('--url <url>', 'gateway HTTP address').env('SWITCHBOARD_URL').default('http://127.0.0.1:3000'))
  .addOption(new Option('--user <name>', 'directory user for HTTP Basic (password from SWITCHBOARD_PASSWORD)').env('SWITCHBOARD_USER'))
  .addHelpText('after', '\nCredentials: SWITCHBOARD_USER + SWITCHBOARD_PASSWORD, or an API token in SWITCHBOARD_TOKEN.')
  .exitOverride()
  // Options of the whole CLI (--url, --user) go before the command, so a command's own options
  // (permissions add --user <name>) mean what they say.
  .enablePositionalOptions();

function client(): ApiClient {
  const o = program.opts<{ url: string; user?: string }>();
  return new ApiClient({ url: o.url, user: o.user, password: process.env.SWITCHBOARD_PASSWORD, token: process.env.SWITCHBOARD_TOKEN });
}

const print = (v: unknown): void => {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
};

program
  .command('start')
  .description('run the gateway (config: --config, SWITCHBOARD_CONFIG, or config/switchboard.yaml)')
  .option('-c, --config <file>', 'configuration file')
  .action(async (o: { config?: string }) => {
    serving = true;
    return (await local()).startCommand(o.config);
  });

program
  .command('float')
  .description('run the DMZ float: peer listener and per-peer outboxes only; the gateway connects out to it (docs/float.md)')
  .requiredOption('-c, --config <file>', 'float configuration file')
  .action(async (o: { config: string }) => {
    serving = true;
    return (await import('./float-command.ts')).floatCommand(o.config);
  });

program
  .command('check-config')
  .description('validate a configuration file and list every problem')
  .argument('[file]', 'configuration file (default: SWITCHBOARD_CONFIG or config/switchboard.yaml)')
  .action(async (file?: string) => (await local()).checkConfigCommand(file));

program
  .command('hash-password')
  .description('read a password on stdin and print its hash for the file directory')
  .action(async () => (await local()).hashPasswordCommand());

program.command('broker').description('in-house AMQP brokers').command('check').description('qualify a configured broker before go-live: prints a table, exit 1 when a must-have row fails').argument('<name>', 'broker name in the config').option('-c, --config <file>', 'configuration file').action(async (name: string, o: { config?: string }) => (await import('./broker-check-command.ts')).brokerCheckCommand(name, o.config));

program
  .command('send')
  .description('send a message; prints {id, duplicate} once the destination durably accepted it')
  .argument('<address>', 'destination, e.g. queue:orders')
  .option('--json <json>', 'message body as JSON')
  .option('--file <file>', 'read the JSON body from a file (- for stdin)')
  .option('--id <id>', 'message id (the dedup key); generated when omitted')
  .option('--header <key=value...>', 'message header (repeatable)')
  .option('--correlation-id <id>', 'correlation id')
  .option('--reply-to <address>', 'address for replies')
  .action(async (address: string, o: { json?: string; file?: string; id?: string; header?: string[]; correlationId?: string; replyTo?: string }) => {
    if ((o.json === undefined) === (o.file === undefined)) throw new SwitchboardError('usage', 'give the body with exactly one of --json or --file', 2);
    const text = o.json ?? readFileSync(o.file === '-' ? 0 : o.file!, 'utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new SwitchboardError('usage', `the body is not valid JSON: ${(err as Error).message}`, 2);
    }
    const headers = Object.fromEntries((o.header ?? []).map((h) => {
      const eq = h.indexOf('=');
      if (eq <= 0) throw new SwitchboardError('usage', `--header '${h}': expected key=value`, 2);
      return [h.slice(0, eq), h.slice(eq + 1)];
    }));
    print(await client().request('POST', '/api/messages', { to: address, body, id: o.id, headers, correlationId: o.correlationId, replyTo: o.replyTo }));
  });

program
  .command('receive')
  .description('take messages from a queue and acknowledge them (--peek leaves them leased, to come back)')
  .argument('<address>', 'queue address, e.g. queue:orders')
  .option('--max <n>', 'most messages to take', '10')
  .option('--lease <seconds>', 'lease while messages are processed', '30')
  .option('--peek', 'do not acknowledge (the messages return after the lease)')
  .action(async (address: string, o: { max: string; lease: string; peek?: boolean }) => {
    const api = client();
    const got = await api.request<{ messages: { lease: string }[] }>('POST', `/api/queues/${addressPath(address)}/receive`, { max: Number(o.max), leaseSeconds: Number(o.lease) });
    // Print first, then acknowledge: a crash in between re-delivers rather than loses.
    for (const m of got.messages) process.stdout.write(`${JSON.stringify(m)}\n`);
    if (!o.peek && got.messages.length > 0) {
      const ack = await api.request<{ acked: number; expired: string[] }>('POST', `/api/queues/${addressPath(address)}/ack`, { leases: got.messages.map((m) => m.lease) });
      if (ack.expired.length > 0) process.stderr.write(`${ack.expired.length} lease(s) had expired; those messages will be delivered again\n`);
    }
  });

program
  .command('browse')
  .description('show the depth and the first messages of a queue')
  .argument('<address>')
  .option('--limit <n>', 'messages to show', '20')
  .action(async (address: string, o: { limit: string }) => print(await client().request('GET', `/api/queues/${addressPath(address)}?limit=${encodeURIComponent(o.limit)}`)));

const dlq = program.command('dlq').description('dead letters');
dlq
  .command('ls')
  .description('list the dead letters of an address')
  .argument('<address>', 'the original address, e.g. queue:orders')
  .option('--limit <n>', 'messages to show', '20')
  .action(async (address: string, o: { limit: string }) => print(await client().request('GET', `/api/dlq/${addressPath(address)}?limit=${encodeURIComponent(o.limit)}`)));
dlq
  .command('replay')
  .description('move dead letters back to their address (all, or --id …)')
  .argument('<address>')
  .option('--id <id...>', 'only these message ids')
  .action(async (address: string, o: { id?: string[] }) => print(await client().request('POST', `/api/dlq/${addressPath(address)}/replay`, o.id ? { ids: o.id } : {})));

program
  .command('can')
  .description('explain whether a user may do a verb on an address, and which rule decides')
  .argument('<user>')
  .argument('<verb>', 'send, consume, browse, start or admin')
  .argument('<address>')
  .action(async (user: string, verb: string, address: string) => {
    const q = new URLSearchParams({ user, verb, address });
    print(await client().request('GET', `/api/can?${q}`));
  });

const flows = program.command('flows').description('flow instances');
flows
  .command('start')
  .description('start an instance of a flow; prints {instanceId}')
  .argument('<name>', 'flow name')
  .option('--json <json>', 'input as JSON', '{}')
  .option('--id <id>', 'message id (starting twice with the same id starts one instance)')
  .action(async (name: string, o: { json: string; id?: string }) => {
    let input: unknown;
    try {
      input = JSON.parse(o.json);
    } catch (err) {
      throw new SwitchboardError('usage', `--json is not valid JSON: ${(err as Error).message}`, 2);
    }
    print(await client().request('POST', `/api/flows/${encodeURIComponent(name)}`, { input, ...(o.id ? { id: o.id } : {}) }));
  });
flows
  .command('ls')
  .description('list recent instances (of one flow, or all)')
  .argument('[name]', 'flow name')
  .option('--limit <n>', 'how many', '50')
  .action(async (name: string | undefined, o: { limit: string }) => {
    const q = new URLSearchParams({ limit: o.limit, ...(name ? { name } : {}) });
    print(await client().request('GET', `/api/flows?${q}`));
  });
flows
  .command('show')
  .description('status, input, result and steps of an instance')
  .argument('<name>')
  .argument('<id>')
  .action(async (name: string, id: string) => print(await client().request('GET', `/api/flows/${encodeURIComponent(name)}/${encodeURIComponent(id)}`)));
flows
  .command('retry')
  .description('retry a failed instance from its last step (admin)')
  .argument('<name>')
  .argument('<id>')
  .action(async (name: string, id: string) => print(await client().request('POST', `/api/flows/${encodeURIComponent(name)}/${encodeURIComponent(id)}/retry`, {})));
flows
  .command('cancel')
  .description('cancel an instance: it runs no further steps (admin, or who started it)')
  .argument('<name>')
  .argument('<id>')
  .action(async (name: string, id: string) => print(await client().request('POST', `/api/flows/${encodeURIComponent(name)}/${encodeURIComponent(id)}/cancel`, {})));

const tasks = program.command('tasks').description('your tasks and your groups\' tasks');
tasks
  .command('ls')
  .description('open tasks you may act on')
  .action(async () => print(await client().request('GET', '/api/tasks')));
tasks
  .command('show')
  .argument('<id>')
  .description('one task with its data and history')
  .action(async (id: string) => print(await client().request('GET', `/api/tasks/${encodeURIComponent(id)}`)));
tasks
  .command('claim')
  .argument('<id>')
  .description('claim a group task ("I am working on this")')
  .action(async (id: string) => print(await client().request('POST', `/api/tasks/${encodeURIComponent(id)}/claim`, {})));
tasks
  .command('decide')
  .argument('<id>')
  .argument('<action>', 'one of the task\'s actions, e.g. approve')
  .option('--comment <text>', 'a comment')
  .option('--field <name=value...>', 'a form field (repeatable)')
  .description('decide a task (claims it if unclaimed)')
  .action(async (id: string, action: string, o: { comment?: string; field?: string[] }) => {
    const fields = Object.fromEntries((o.field ?? []).map((f) => {
      const eq = f.indexOf('=');
      if (eq <= 0) throw new SwitchboardError('usage', `--field '${f}': expected name=value`, 2);
      return [f.slice(0, eq), f.slice(eq + 1)];
    }));
    print(await client().request('POST', `/api/tasks/${encodeURIComponent(id)}/decision`, { action, fields, ...(o.comment ? { comment: o.comment } : {}) }));
  });

const perms = program.command('permissions').description('map groups, users and peers to verbs on address patterns, live');
perms
  .command('ls')
  .description('every rule (config and console) with the rule set version')
  .action(async () => print(await client().request('GET', '/api/permissions')));
perms
  .command('add')
  .description('add a rule; it takes effect within a second on every gateway process')
  .option('--group <name>', 'a group (cn or DN)')
  .option('--user <name>', 'a user')
  .option('--peer <alias>', 'a peer gateway')
  .requiredOption('--address <pattern>', "address pattern, e.g. 'queue:payments.**'")
  .requiredOption('--verbs <verbs>', 'comma-separated: send,consume,browse,start,admin')
  .option('--force', 'add even if the directory does not know the name yet')
  .action(async (o: { group?: string; user?: string; peer?: string; address: string; verbs: string; force?: boolean }) => {
    const selector = o.group !== undefined ? { group: o.group } : o.user !== undefined ? { user: o.user } : o.peer !== undefined ? { peer: o.peer } : undefined;
    if (!selector || [o.group, o.user, o.peer].filter((x) => x !== undefined).length !== 1) throw new SwitchboardError('usage', 'give exactly one of --group, --user or --peer', 2);
    print(await client().request('POST', '/api/permissions', { ...selector, address: o.address, verbs: o.verbs.split(',').map((v) => v.trim()).filter(Boolean), ...(o.force ? { force: true } : {}) }));
  });
perms
  .command('rm')
  .description('remove a console rule')
  .argument('<id>', 'rule id from `permissions ls`')
  .action(async (id: string) => print(await client().request('DELETE', `/api/permissions/${encodeURIComponent(id)}`)));
perms
  .command('history')
  .description('every change: version, when, who, what')
  .action(async () => print(await client().request('GET', '/api/permissions/history')));
perms
  .command('revert')
  .description('make the console rules what they were right after a version from the history')
  .argument('<version>')
  .action(async (version: string) => {
    if (!/^\d+$/.test(version)) throw new SwitchboardError('usage', `version must be a number, got '${version}'`, 2);
    print(await client().request('POST', '/api/permissions/revert', { version: Number(version) }));
  });
perms
  .command('who-can')
  .description('the rules and groups (with members) that grant a verb on an address')
  .argument('<verb>')
  .argument('<address>')
  .action(async (verb: string, address: string) => print(await client().request('GET', `/api/who-can?${new URLSearchParams({ verb, address })}`)));

registerTopicsCommand(program, client, print);

const network = program.command('network').description('peer network material: a development CA and node certificates and signing keys');
network
  .command('init-ca')
  .description('create a development network CA (network-ca.key, mode 0600, and network-ca.crt) in a folder')
  .option('--dir <dir>', 'where to write', 'certs')
  .option('--name <x500>', 'the CA subject', 'CN=Switchboard Development Network CA')
  .action(async (o: { dir: string; name: string }) => {
    const { initCa } = await import('./network-certificates.ts');
    print(await initCa(o.dir, o.name));
  });
network
  .command('issue')
  .description('issue node material for an identity: TLS key and certificate (signed by the CA), Ed25519 signing key pair')
  .argument('<identity>', "X.500 name, e.g. 'O=Bank B,L=Paris,C=FR'")
  .requiredOption('--alias <alias>', 'file name stem, e.g. bank-b')
  .option('--dir <dir>', 'folder with network-ca.key/.crt, and where to write', 'certs')
  .option('--host <host...>', 'host names or IPs the certificate is valid for', ['localhost', '127.0.0.1'])
  .action(async (identity: string, o: { alias: string; dir: string; host: string[] }) => {
    const { issue } = await import('./network-certificates.ts');
    print(await issue(identity, o.dir, o.dir, o.alias, o.host));
  });

const tokens = program.command('tokens').description('your API tokens (for scripts: SWITCHBOARD_TOKEN)');
tokens
  .command('create')
  .description('create an API token; the token is printed once and cannot be shown again')
  .argument('<name>', 'what the token is for, e.g. "nightly export"')
  .action(async (name: string) => print(await client().request('POST', '/api/tokens', { name })));
tokens
  .command('ls')
  .description('list your API tokens (ids and names, never the secrets)')
  .action(async () => print(await client().request('GET', '/api/tokens')));
tokens
  .command('revoke')
  .description('revoke one of your API tokens')
  .argument('<id>', 'token id from `tokens ls`')
  .action(async (id: string) => print(await client().request('DELETE', `/api/tokens/${encodeURIComponent(id)}`)));

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Commander has printed the problem; help and --version exit 0, usage mistakes 2.
    process.exitCode = err.exitCode === 0 ? 0 : 2;
  } else if (err instanceof SwitchboardError) {
    process.stderr.write(`switchboard: ${err.message}\n`);
    process.exitCode = err.code === 'usage' ? 2 : 1;
  } else {
    process.stderr.write(`switchboard: unexpected error: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}
