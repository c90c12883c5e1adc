/**
 * `switchboard/gateway`: what code that embeds Switchboard in its own process imports — start a
 * gateway from a config, read and check configs, parse addresses. Flow files cannot import this
 * (the loader refuses it): a flow reaches the world only through `ctx`.
 *
 * @example
 * import { loadConfig, startGateway } from 'switchboard/gateway';
 * const gateway = await startGateway({ config: loadConfig('config/switchboard.yaml') });
 * // … later
 * await gateway.stop();
 */
export { startGateway, type Gateway, type GatewayOptions } from './gateway.ts';
export { loadConfig, parseConfig } from './config/load.ts';
export type { Config } from './config/schema.ts';
export { parseAddress, isAddress, type Address } from './core/address.ts';
export { parsePattern, matchesPattern, type AddressPattern } from './core/pattern.ts';
export { createMessage, principalId, type Message, type MessageInput, type Principal } from './core/message.ts';
export * from './core/errors.ts';
// Who acts through the router (gateway.router.browse(address, limit, caller) and the other acts
// take one, decided by the router's guard like every door's).
export type { Action, Caller, Door } from './core/pipeline.ts';
