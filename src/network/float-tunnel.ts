/**
 * The float tunnel's vocabulary (docs/float.md), shared by the float and the gateway: AMQP 1.0 over
 * mutual TLS, three link addresses, and what travels on each. The gateway always dials; the float
 * only listens.
 *
 * - `identity` (gateway → float, first, on every connect): the gateway's peer TLS key and
 *   certificate, JSON `{key, cert}`. The float keeps them in memory only and opens its peer
 *   listener with them; it accepts the delivery once the listener runs.
 * - `inbound` (float → gateway, the gateway gives credit): each message a peer sent, as the bytes
 *   it arrived in (kind `peer-message`, properties `float-peer` = the peer's certificate identity
 *   and `float-target` = the address it sent to), or a notice (kind `notice`) about an outbound
 *   message the float could not deliver. The gateway accepts only once the destination inside
 *   durably took it; released comes back, rejected is kept on the float as refused.
 * - `outbound` (gateway → float): a signed envelope for a peer (kind `envelope`, JSON), accepted
 *   once stored in the float's outbox for that peer.
 *
 * Chunked payloads (attachments larger than memory) will travel as their own kind on these links,
 * each chunk acknowledged by its own settlement; nothing here assumes one message is one delivery
 * of a whole body beyond the kinds listed.
 */
import type { StoredMessage } from '../core/message.ts';

export const TUNNEL_ADDRESS = {
  identity: 'switchboard-float/identity',
  inbound: 'switchboard-float/inbound',
  outbound: 'switchboard-float/outbound',
} as const;

/** Application properties of tunnel messages. */
export const TUNNEL_PROPERTY = { kind: 'float-kind', peer: 'float-peer', target: 'float-target' } as const;

export type TunnelKind = 'peer-message' | 'notice' | 'envelope';

/** What the gateway hands over at connect. */
export interface IdentityHandover {
  key: string;
  cert: string;
}

/** An outbound envelope: the message as the gateway stored it, and what the gateway signed. */
export interface OutboundEnvelope {
  /** The peer's network identity (aliases may differ between the gateway's map and the float's). */
  peer: string;
  remote: string;
  signature: string;
  origin: string;
  message: StoredMessage;
}

/** A notice from the float: an outbound message it dead-lettered (past the event horizon, refused by the peer). */
export interface FloatNotice {
  message: StoredMessage;
  reason: string;
}

/** The bytes of a data-section body as rhea gives it (a Buffer, or a section holding one). */
export function bodyBytes(body: unknown): Buffer | undefined {
  if (Buffer.isBuffer(body)) return body;
  const section = body as { typecode?: number; content?: unknown } | undefined;
  if (section && typeof section === 'object' && section.typecode === 0x75 && Buffer.isBuffer(section.content)) return section.content;
  return undefined;
}
