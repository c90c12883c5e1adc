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
 * - `attachments` (gateway → float): attachment pieces (docs/attachments.md, "Through the DMZ
 *   float"), one per delivery as on a peer's `$attachments` link, plus the property `float-hold` =
 *   `<peer identity>/<message id>`: the float keeps the attachment until that message is delivered.
 *   Accepted once stored in the float's Redis.
 * - `attachment/<id>/<from>` (float → gateway, the gateway gives credit): the pieces of one
 *   attachment a peer pushed to the float, from byte `from`; the gateway pulls them before the
 *   message that references them and settles each once stored inside.
 */
import type { StoredMessage } from '../core/message.ts';

export const TUNNEL_ADDRESS = {
  identity: 'switchboard-float/identity',
  inbound: 'switchboard-float/inbound',
  outbound: 'switchboard-float/outbound',
  attachments: 'switchboard-float/attachments',
} as const;

/** Where the gateway pulls one attachment from, resuming at byte `from`. */
export function attachmentSource(id: string, from: number): string {
  return `switchboard-float/attachment/${id}/${from}`;
}

/** The attachment id and start of a pull address; undefined when `address` is not one. */
export function parseAttachmentSource(address: string | undefined): { id: string; from: number } | undefined {
  const m = /^switchboard-float\/attachment\/([A-Za-z0-9_-]{8,64})\/(\d{1,15})$/.exec(address ?? '');
  return m ? { id: m[1]!, from: Number(m[2]) } : undefined;
}

/** Application properties of tunnel messages. */
export const TUNNEL_PROPERTY = { kind: 'float-kind', peer: 'float-peer', target: 'float-target', hold: 'float-hold' } as const;

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
