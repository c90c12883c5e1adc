import './schemes.ts';
import type { Logger } from 'pino';
import type { Config } from './config/schema.ts';
import type { Router } from './core/router.ts';
import { Cleanup } from './gateway/cleanup.ts';
import { readConfigFiles } from './gateway/config-files.ts';
import { openDirectory } from './gateway/directory.ts';
import { openDoors } from './gateway/doors.ts';
import { startFlows } from './gateway/flows.ts';
import { openStores } from './gateway/open-stores.ts';
import { startPeople } from './gateway/people.ts';
import { openRouterAndTransports } from './gateway/router-and-transports.ts';
import { startRoutes } from './gateway/routes.ts';
import { createLogger } from './log.ts';

export interface GatewayOptions {
  config: Config;
  log?: Logger;
}

/** A running gateway: config → Redis → endpoints → router → routes → HTTP door. */
export interface Gateway {
  /** Base URL of the HTTP door, e.g. http://127.0.0.1:3000 */
  readonly url: string;
  readonly redisUrl: string;
  /** Port of the embedded AMQP 1.0 endpoint, when enabled. */
  readonly amqpPort?: number;
  /** Port of the peer listener, when a network is configured. */
  readonly peerPort?: number;
  readonly router: Router;
  readonly log: Logger;
  /** Graceful stop: no new requests, routes hand back or finish in-flight messages, then Redis. */
  stop(): Promise<void>;
}

/**
 * Starts a gateway from a validated config, one step after another; each step gets what the
 * earlier ones made and registers how to undo its own work. A step that fails undoes everything
 * started before it, newest first; stop does the same.
 */
export async function startGateway({ config, log = createLogger(config.log.level) }: GatewayOptions): Promise<Gateway> {
  const cleanup = new Cleanup(log);
  try {
    const { flowDefs, materials } = await readConfigFiles(config);
    const stores = await openStores(config, log, cleanup);
    const access = await openDirectory(config, materials, stores.redis, log, cleanup);
    const transports = await openRouterAndTransports(config, materials, stores, access, log, cleanup);
    const inbox = await startPeople(config, stores.redis, access, transports, log, cleanup);
    const flows = await startFlows(config, flowDefs, stores.redis, transports, log, cleanup);
    const routes = await startRoutes(config, transports.router, log, cleanup);
    // Every transport is registered now: the events' destinations are checked and delivery starts.
    transports.events.start();
    const doors = await openDoors({ config, materials, redis: stores.redis, access, transports, inbox, flows, flowDefs, log }, cleanup);
    log.info({ url: doors.url, routes: routes.length }, 'switchboard is ready');

    let stopped: Promise<void> | undefined;
    return { ...doors, redisUrl: stores.redisUrl, router: transports.router, log, stop: () => (stopped ??= cleanup.run()) };
  } catch (err) {
    await cleanup.run();
    throw err;
  }
}
