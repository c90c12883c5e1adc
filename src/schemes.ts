/**
 * The transports' address schemes, registered with the one address parser. Adding a transport is
 * adding a folder under src/endpoints/ and one line here (and one where the gateway builds it).
 * Imported for its effect by every edge that parses addresses: the gateway, the config loader,
 * the CLI.
 */
import { registerScheme } from './core/address.ts';
import { emailScheme } from './endpoints/email/scheme.ts';
import { flowScheme } from './endpoints/flow/scheme.ts';
import { groupScheme, personScheme } from './endpoints/inbox/scheme.ts';
import { mqScheme } from './endpoints/mq/scheme.ts';
import { peerScheme } from './endpoints/peer/scheme.ts';
import { queueScheme } from './endpoints/queue/scheme.ts';
import { tmpScheme } from './endpoints/tmp/scheme.ts';
import { topicScheme } from './endpoints/topic/scheme.ts';
import { webhookScheme } from './endpoints/webhook/scheme.ts';

for (const definition of [queueScheme, personScheme, groupScheme, mqScheme, peerScheme, webhookScheme, emailScheme, flowScheme, tmpScheme, topicScheme]) registerScheme(definition);
