/**
 * The public API of the `switchboard` package: what workflows and embedding code import.
 *
 * @example
 * import { parseAddress } from 'switchboard';
 * parseAddress('mq:legacy/payments.in'); // { scheme: 'mq', path: 'legacy/payments.in', … }
 */
export { parseAddress, isAddress, SCHEMES, type Address, type Scheme } from './core/address.ts';
export { parsePattern, matchesPattern, type AddressPattern } from './core/pattern.ts';
export { createMessage, principalId, type Message, type MessageInput, type Principal } from './core/message.ts';
export * from './core/errors.ts';
export { defineFlow, isFlowDefinition, type FlowContext, type FlowDefinition, type FlowOptions, type Decision, type TaskSpec, type FieldKind, type SendOptions, type MessageMatch } from './flows/define.ts';
export { FlowTimeout, NonDeterministicChange } from './flows/errors.ts';
export { startGateway, type Gateway, type GatewayOptions } from './gateway.ts';
export { loadConfig, parseConfig } from './config/load.ts';
export type { Config } from './config/schema.ts';
