/**
 * The flow API: what `import … from 'switchboard'` gives a flow file, and nothing else. Flows
 * reach the world only through `ctx`, which is what makes replay deterministic, so this module
 * opens onto nothing that reads files, the environment, or the gateway (embedding code imports
 * `switchboard/gateway` instead).
 *
 * @example
 * import { defineFlow } from 'switchboard';
 * import { z } from 'zod';
 * export default defineFlow({
 *   name: 'hello',
 *   input: z.object({ to: z.string() }),
 *   async run(ctx, input) {
 *     await ctx.send('queue:greetings', { text: `hello ${input.to}` });
 *     return { greeted: input.to };
 *   },
 * });
 */
export { defineFlow, type FlowContext, type FlowDefinition, type FlowOptions, type SendOptions, type MessageMatch } from './flows/define.ts';
export type { Decision, FieldKind, TaskSpec } from './core/task.ts';
export type { Message, Principal } from './core/message.ts';
export { SwitchboardError, ValidationError, AddressError, PermissionDenied, DestinationUnavailable } from './core/errors.ts';
export { FlowTimeout, NonDeterministicChange } from './flows/errors.ts';
