import { checkBroker, formatCheck } from '../amqp/broker-check.ts';
import { loadConfig } from '../config/load.ts';
import { readMaterials } from '../config/materials.ts';
import { SwitchboardError } from '../core/errors.ts';
import { createLogger } from '../log.ts';

/**
 * `switchboard broker check <name>`: qualifies a configured broker before go-live (connect, send,
 * receive, types, reply_to, reject, credit, size, reconnect, temporary queues, anonymous relay) on
 * a scratch address, prints the table, and fails (exit 1) when a must-have row fails.
 */
export async function brokerCheckCommand(name: string, file?: string): Promise<void> {
  const { config } = loadConfig(file);
  const b = config.brokers[name];
  if (!b) throw new SwitchboardError('usage', `no broker '${name}' in the config (configured: ${Object.keys(config.brokers).join(', ') || 'none'})`, 2);
  const { rows, notes } = await checkBroker({
    name, url: b.url, sasl: b.sasl ?? (b.username || new URL(b.url).username ? 'PLAIN' : 'ANONYMOUS'), addressFormat: b.addressFormat, sendTimeoutMs: b.sendTimeout,
    ...(b.username !== undefined ? { username: b.username } : {}), ...(b.password !== undefined ? { password: b.password } : {}),
    ...(b.tls ? { tls: { rejectUnauthorized: b.tls.rejectUnauthorized, ...(b.tls.servername !== undefined ? { servername: b.tls.servername } : {}), ...readMaterials(config).brokers[name] } } : {}),
  }, createLogger('silent'));
  process.stdout.write(formatCheck(name, rows, notes));
  const failed = rows.filter((r) => r.must && r.result !== 'pass');
  if (failed.length > 0) throw new SwitchboardError('broker_check_failed', `broker '${name}' failed ${failed.map((r) => r.check).join(', ')}: ${failed[0]!.detail}`, 1);
}
