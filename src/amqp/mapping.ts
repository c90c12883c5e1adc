import { randomUUID } from 'node:crypto';
import rhea from 'rhea';
import { ValidationError } from '../core/errors.ts';
import { principalId, type AmqpFidelity, type AmqpIdType, type AmqpValue, type Message } from '../core/message.ts';

/** The application property that carries the sender across AMQP hops (DESIGN §6). */
export const SENDER_PROPERTY = 'switchboard-sender';
/** Where a sender claimed by an outside party is kept; it is never trusted as the sender. */
export const CLAIMED_SENDER_HEADER = 'switchboard-claimed-sender';

const MAX_ID = 256;

/** An AMQP message (rhea's shape) as a plain object. */
export type AmqpMessage = Record<string, unknown> & { body?: unknown };

/** rhea's typed value (lib/types.js `Typed`): what its Reader yields and its Writer takes. */
interface Typed {
  type: { name: string; typecode: number };
  value: unknown;
  descriptor?: Typed;
  array_constructor?: { typecode: number; descriptor?: Typed };
  toRheaTyped(): Typed;
}
type Make = (v?: unknown, code?: number, descriptor?: Typed) => Typed;
const T = rhea.types as unknown as Record<string, Make> & { Reader: new (b: Buffer) => { read(): Typed; remaining(): number } };
const isTyped = (v: unknown): v is Typed => typeof v === 'object' && v !== null && typeof (v as Typed).toRheaTyped === 'function' && typeof (v as Typed).type?.typecode === 'number';

// rhea decodes a message into plain JS values and drops the AMQP types (a ulong and an int are
// both numbers, a uuid and a binary both Buffers) and keeps no bytes. Its decoder is wrapped once,
// here, to keep the encoded bytes beside the message (not enumerable), so fromAmqp can read the
// sections again with their types. Every door that receives AMQP imports this module first.
const RAW = Symbol.for('switchboard.amqp.encoded');
const codec = rhea.message as unknown as { decode: (b: Buffer) => object } & { [RAW]?: true };
if (!codec[RAW]) {
  const decode = codec.decode;
  codec.decode = (b: Buffer) => Object.defineProperty(decode(b), RAW, { value: b });
  codec[RAW] = true;
}

/**
 * The bytes a received message was decoded from, copied (rhea may reuse its frame buffer): what a
 * relay (the float) stores and forwards unchanged, so the far side reads and verifies exactly what
 * the sender wrote. Undefined for a message built in this process.
 */
export function encodedBytes(a: AmqpMessage): Buffer | undefined {
  const b = (a as { [RAW]?: Buffer })[RAW];
  return b ? Buffer.from(b) : undefined;
}

/** A message from bytes kept by encodedBytes, decoded as if it had just arrived. */
export function decodeAmqp(bytes: Buffer): AmqpMessage {
  return codec.decode(bytes) as AmqpMessage;
}

// ---- typed values <-> JSON (AmqpValue) ----

const big = (v: unknown, signed: boolean): string => Buffer.isBuffer(v) ? String(signed ? v.readBigInt64BE(0) : v.readBigUInt64BE(0)) : String(v);
const uuidText = (b: Buffer) => b.toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
const finite = (n: number): number | 'NaN' | 'Infinity' | '-Infinity' => (Number.isFinite(n) ? n : (String(n) as 'NaN'));
const stripDescriptor = (t: Typed): Typed => Object.assign(Object.create(Object.getPrototypeOf(t) as object) as Typed, { type: t.type, value: t.value, ...(t.array_constructor ? { array_constructor: t.array_constructor } : {}) });

/** A value rhea read, as JSON with its AMQP type. */
export function amqpValue(t: Typed): AmqpValue {
  if (t.descriptor !== undefined) return { type: 'described', descriptor: amqpValue(t.descriptor), value: amqpValue(stripDescriptor(t)) };
  const v = t.value;
  switch (t.type.name) {
    case 'Null': return { type: 'null' };
    case 'Boolean': case 'True': case 'False': return { type: 'boolean', value: Boolean(v) };
    case 'Ubyte': return { type: 'ubyte', value: v as number };
    case 'Ushort': return { type: 'ushort', value: v as number };
    case 'Uint': case 'SmallUint': case 'Uint0': return { type: 'uint', value: v as number };
    case 'Byte': return { type: 'byte', value: v as number };
    case 'Short': return { type: 'short', value: v as number };
    case 'Int': case 'SmallInt': return { type: 'int', value: v as number };
    case 'CharUTF32': return { type: 'char', value: v as number };
    case 'Ulong': case 'SmallUlong': case 'Ulong0': return { type: 'ulong', value: big(v, false) };
    case 'Long': case 'SmallLong': return { type: 'long', value: big(v, true) };
    case 'Float': return { type: 'float', value: finite(v as number) };
    case 'Double': return { type: 'double', value: finite(v as number) };
    case 'Timestamp': return { type: 'timestamp', value: v instanceof Date ? v.getTime() : Number(v) };
    case 'Uuid': return { type: 'uuid', value: uuidText(v as Buffer) };
    case 'Vbin8': case 'Vbin32': return { type: 'binary', value: (v as Buffer).toString('base64') };
    case 'Decimal32': return { type: 'decimal32', value: (v as Buffer).toString('base64') };
    case 'Decimal64': return { type: 'decimal64', value: (v as Buffer).toString('base64') };
    case 'Decimal128': return { type: 'decimal128', value: (v as Buffer).toString('base64') };
    case 'Str8': case 'Str32': return { type: 'string', value: v as string };
    case 'Sym8': case 'Sym32': return { type: 'symbol', value: v as string };
    case 'List0': case 'List8': case 'List32': return { type: 'list', value: ((v as Typed[] | undefined) ?? []).map(amqpValue) };
    case 'Map8': case 'Map32': {
      const items = v as Typed[];
      const pairs: [AmqpValue, AmqpValue][] = [];
      for (let i = 0; i + 1 < items.length; i += 2) pairs.push([amqpValue(items[i]!), amqpValue(items[i + 1]!)]);
      return { type: 'map', value: pairs };
    }
    case 'Array8': case 'Array32': {
      const c = t.array_constructor!;
      return { type: 'array', code: c.typecode, ...(c.descriptor ? { descriptor: amqpValue(c.descriptor) } : {}), value: (v as Typed[]).map(amqpValue) };
    }
    default: throw new ValidationError(`AMQP type ${t.type.name} is not supported`, 'malformed_message');
  }
}

function bigBytes(text: string, signed: boolean): number | Buffer {
  const n = BigInt(text);
  if (n <= BigInt(Number.MAX_SAFE_INTEGER) && n >= BigInt(Number.MIN_SAFE_INTEGER)) return Number(n);
  const b = Buffer.alloc(8);
  if (signed) b.writeBigInt64BE(n);
  else b.writeBigUInt64BE(n);
  return b;
}
const num = (v: number | string) => Number(v);

/** JSON with its AMQP type → the value rhea writes, exactly that type. */
export function rheaValue(v: AmqpValue): Typed {
  switch (v.type) {
    case 'null': return T.Null!();
    case 'boolean': return T.wrap_boolean!(v.value);
    case 'ubyte': return T.Ubyte!(v.value);
    case 'ushort': return T.Ushort!(v.value);
    case 'uint': return T.wrap_uint!(v.value);
    case 'byte': return T.Byte!(v.value);
    case 'short': return T.Short!(v.value);
    case 'int': return T.wrap_int!(v.value);
    case 'char': return T.CharUTF32!(v.value);
    case 'ulong': return T.wrap_ulong!(bigBytes(v.value, false));
    case 'long': return T.wrap_long!(bigBytes(v.value, true));
    case 'float': return T.Float!(num(v.value));
    case 'double': return T.Double!(num(v.value));
    case 'timestamp': return T.Timestamp!(v.value);
    case 'uuid': return T.Uuid!(Buffer.from(v.value.replace(/-/g, ''), 'hex'));
    case 'binary': return T.wrap_binary!(Buffer.from(v.value, 'base64'));
    case 'decimal32': return T.Decimal32!(Buffer.from(v.value, 'base64'));
    case 'decimal64': return T.Decimal64!(Buffer.from(v.value, 'base64'));
    case 'decimal128': return T.Decimal128!(Buffer.from(v.value, 'base64'));
    case 'string': return T.wrap_string!(v.value);
    case 'symbol': return T.wrap_symbol!(v.value);
    case 'list': return v.value.length === 0 ? T.List0!() : T.List32!(v.value.map(rheaValue));
    case 'map': return T.Map32!(v.value.flatMap(([k, x]) => [rheaValue(k), rheaValue(x)]));
    // Array items are written as bare values of the element constructor's type.
    case 'array': return T.Array32!(v.value.map((i) => (i.type === 'boolean' ? (i.value ? 1 : 0) : rheaValue(i).value)), v.code, v.descriptor ? rheaValue(v.descriptor) : undefined);
    case 'described': return (T as unknown as { described(d: Typed, t: Typed): Typed }).described(rheaValue(v.descriptor), rheaValue(v.value));
  }
}

/** The plain JSON-safe value flows and HTTP see (64-bit integers past 2^53 as decimal text, bytes as {base64}). */
export function plainValue(v: AmqpValue): unknown {
  switch (v.type) {
    case 'null': return null;
    case 'ulong': case 'long': { const n = Number(v.value); return Number.isSafeInteger(n) ? n : v.value; }
    case 'timestamp': return new Date(v.value).toISOString();
    case 'binary': case 'decimal32': case 'decimal64': case 'decimal128': return { base64: v.value };
    case 'list': case 'array': return v.value.map(plainValue);
    case 'map': return Object.fromEntries(v.value.map(([k, x]) => [String(plainValue(k)), plainValue(x)]));
    case 'described': return plainValue(v.value);
    default: return v.value;
  }
}

/** An application property's string form in `Message.headers` (timestamps ISO, binary base64, uuid dashed). */
function headerText(v: AmqpValue): string {
  if (v.type === 'binary') return v.value;
  const p = plainValue(v);
  return typeof p === 'object' && p !== null ? JSON.stringify(p) : String(p);
}

// ---- ids ----

function idOf(t: Typed): { text: string; type: AmqpIdType } {
  const v = amqpValue(t);
  if (v.type === 'ulong') return { text: v.value, type: 'ulong' };
  if (v.type === 'uuid') return { text: v.value, type: 'uuid' };
  if (v.type === 'binary') return { text: Buffer.from(v.value, 'base64').toString('hex'), type: 'binary' };
  return { text: String(plainValue(v)), type: 'string' };
}

/** A message or correlation id as rhea gave it (no encoded bytes: a number is a ulong, a Buffer binary). */
function looseId(v: unknown): Typed | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (isTyped(v)) return v;
  if (Buffer.isBuffer(v)) return T.wrap_binary!(v);
  if (typeof v === 'number') return T.wrap_ulong!(v);
  return T.wrap_string!(String(v));
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** An id back in its AMQP type, while its string form still is what that type made of it. */
function idOut(text: string, type: AmqpIdType | undefined): string | Typed {
  if (type === 'ulong' && /^\d{1,20}$/.test(text) && BigInt(text) < 2n ** 64n) return T.wrap_ulong!(bigBytes(text, false));
  if (type === 'uuid' && UUID.test(text)) return T.Uuid!(Buffer.from(text.replace(/-/g, ''), 'hex'));
  if (type === 'binary' && /^([0-9a-f]{2})+$/.test(text)) return T.wrap_binary!(Buffer.from(text, 'hex'));
  return text;
}

// ---- sections ----

interface Sections { properties?: Typed[]; applicationProperties?: Typed[]; value?: Typed; sequences: Typed[] }

const SECTION: Record<string, number> = {
  'amqp:properties:list': 0x73, 'amqp:application-properties:map': 0x74, 'amqp:data:binary': 0x75, 'amqp:amqp-sequence:list': 0x76, 'amqp:value:*': 0x77,
};

type SectionReader = { read(): Typed; remaining(): number; read_constructor(): { typecode: number; descriptor?: Typed }; read_uint(width: number): number; skip(bytes: number): void; position: number };

/**
 * Moves past a section whose content is a list or a map without decoding it (their encoding
 * states their size); false, with nothing moved, for any other encoding.
 */
function skipSection(reader: SectionReader, start: number, typecode: number): boolean {
  const width = typecode === 0xc0 || typecode === 0xc1 ? 1 : typecode === 0xd0 || typecode === 0xd1 ? 4 : typecode === 0x45 ? 0 : -1;
  if (width < 0) {
    reader.position = start;
    return false;
  }
  if (width > 0) reader.skip(reader.read_uint(width));
  return true;
}

/**
 * The sections of an encoded message as rhea's Reader yields them, types and all: the ones
 * fromAmqp reads types from. A message passes here on every hop, so what rhea's own decode
 * already told without loss is not decoded twice: the properties (only when an id is bytes,
 * which may be a uuid or a binary), and data sections (bytes, read from rhea's message).
 */
function readSections(encoded: Buffer, idsAreBytes: boolean): Sections {
  const out: Sections = { sequences: [] };
  const reader = new T.Reader(encoded) as unknown as SectionReader;
  while (reader.remaining() > 0) {
    const start = reader.position;
    const c = reader.read_constructor();
    const d = c.descriptor?.value;
    const code = typeof d === 'number' ? d : SECTION[String(d)];
    // Data sections hold the body, and after them come only more of them and the footer.
    if (code === 0x75) break;
    if (code !== 0x74 && code !== 0x76 && code !== 0x77 && !(code === 0x73 && idsAreBytes) && skipSection(reader, start, c.typecode)) continue;
    reader.position = start;
    const s = reader.read();
    if (code === 0x73) out.properties = s.value as Typed[];
    else if (code === 0x74) out.applicationProperties = s.value as Typed[];
    else if (code === 0x76) out.sequences.push(stripDescriptor(s));
    else if (code === 0x77) out.value = stripDescriptor(s);
  }
  return out;
}

const sameJson = (a: unknown, b: unknown): boolean => {
  if (Buffer.isBuffer(a) || Buffer.isBuffer(b)) return Buffer.isBuffer(a) && Buffer.isBuffer(b) && a.equals(b);
  return JSON.stringify(a) === JSON.stringify(b);
};

/** The body flows and HTTP see for a value or sequence body (a bare binary value is bytes). */
function plainBody(section: 'value' | 'sequence', typed: AmqpValue): unknown {
  if (section === 'sequence') {
    const lists = (typed as { value: AmqpValue[] }).value;
    return lists.length === 1 ? plainValue(lists[0]!) : lists.map(plainValue);
  }
  return typed.type === 'binary' ? Buffer.from(typed.value, 'base64') : plainValue(typed);
}

const JSON_TYPE = /^application\/([a-z.+-]*\+)?json\b/i;
const isBytes = (b: unknown): b is Uint8Array => Buffer.isBuffer(b) || b instanceof Uint8Array;

/**
 * The record of a message whose body came as a JSON data section. Its `data` (the base64 of a
 * JSON body JSON.stringify would not write the same: spacing, escapes, number forms) is worked out
 * when read: by bodyOut of a message stored and read back, or when the message is stored
 * (JSON.stringify calls toJSON). A bridge passing a message straight on never needs it. An
 * accessor of the class, not one defined on each record: defining it per message cost ~5 µs a
 * message on the bridge (and left each record a slow dictionary object). The text and bytes it
 * came in with stay on the record (which a route's copy of the message shares), never stored or
 * shown: bodyOut sends those bytes on while the body still says the same.
 */
class ReceivedJsonFidelity implements AmqpFidelity {
  #data: string | undefined | null = null;
  #received?: { body: unknown; text: string; bytes: Buffer };

  /** The body and the text and bytes it was parsed from (fromAmqp, once it parsed). */
  keep(body: unknown, text: string, bytes: Buffer): void {
    this.#received = { body, text, bytes };
  }

  /** The text and bytes the body came in with; none when it was not JSON after all. */
  get received(): { text: string; bytes: Buffer } | undefined {
    return this.#received;
  }

  get data(): string | undefined {
    if (this.#data !== null) return this.#data;
    const r = this.#received;
    if (!r) return undefined;
    return (this.#data = JSON.stringify(r.body) !== r.text ? r.bytes.toString('base64') : undefined);
  }

  set data(v: string | undefined) {
    this.#data = v;
  }

  toJSON(): AmqpFidelity {
    const data = this.data;
    return data === undefined ? { ...this } : { ...this, data };
  }
}

/** The bytes of a JSON body (`json`: JSON.stringify of it), those it came in with while it still says the same. */
function jsonBytes(x: AmqpFidelity | undefined, body: unknown, json: string): Buffer {
  const received = x instanceof ReceivedJsonFidelity ? x.received : undefined;
  if (received) return json === received.text || sameJson(JSON.parse(received.text), body) ? received.bytes : Buffer.from(json, 'utf8');
  const own = x?.data !== undefined && x.bodySection === 'data' ? Buffer.from(x.data, 'base64') : undefined;
  return own && sameJson(JSON.parse(own.toString('utf8')), body) ? own : Buffer.from(json, 'utf8');
}

/** The body section(s) and content type a message leaves with. */
function bodyOut(m: Message): { body: unknown; contentType?: string } {
  const x = m.amqp;
  const typed = x?.body && (x.bodySection === 'value' || x.bodySection === 'sequence') && sameJson(plainBody(x.bodySection, x.body), m.body) ? x.body : undefined;
  const type = m.contentType ?? 'application/json';
  const declared = x?.noContentType ? undefined : type;
  if (x?.bodySection === 'value') return { body: typed ? rheaValue(typed) : T.wrap!(m.body ?? null), contentType: declared };
  if (x?.bodySection === 'sequence' && (typed || Array.isArray(m.body))) {
    const lists = typed ? (typed as { value: AmqpValue[] }).value.map(rheaValue) : [T.wrap!(m.body)];
    return { body: rhea.message.sequence_sections(lists as never), contentType: declared };
  }
  if (isBytes(m.body)) return { body: rhea.message.data_section(Buffer.from(m.body)), contentType: JSON_TYPE.test(type) ? 'application/octet-stream' : type };
  if (typeof m.body === 'string' && !JSON_TYPE.test(type)) return { body: rhea.message.data_section(Buffer.from(m.body, 'utf8')), contentType: type };
  const bytes = jsonBytes(x, m.body, JSON.stringify(m.body ?? null));
  return { body: rhea.message.data_section(bytes), contentType: x?.noContentType ? undefined : JSON_TYPE.test(type) ? type : 'application/json' };
}

/**
 * Message → AMQP: message_id and correlation_id in the AMQP type they came in with, reply_to,
 * subject, application properties = headers (in their AMQP types where they came with one) plus
 * switchboard-sender, the body in the section it came in (else JSON as an application/json data
 * section, bytes and text as a data section with their content type), and durable, priority, ttl,
 * absolute-expiry-time, group and content-encoding as sent. `userId` is set only where the peer
 * expects it (the embedded endpoint).
 */
export function toAmqp(m: Message, o: { userId?: string; replyTo?: string } = {}): AmqpMessage {
  const x: AmqpFidelity = m.amqp ?? {};
  const props: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m.headers)) {
    const typed = x.properties?.[k];
    props[k] = typed && headerText(typed) === v ? rheaValue(typed) : v;
  }
  props[SENDER_PROPERTY] = principalId(m.sender);
  const { body, contentType } = bodyOut(m);
  // An expiry that came as a ttl leaves as that ttl; absolute-expiry-time only if it was one.
  const absolute = x.absoluteExpiryTime ?? (x.ttl === undefined ? m.expiresAt : undefined);
  return {
    message_id: idOut(m.id, x.idType),
    durable: x.durable ?? true,
    ...(x.priority !== undefined ? { priority: x.priority } : {}),
    ...(x.ttl !== undefined ? { ttl: x.ttl } : {}),
    ...(m.correlationId !== undefined ? { correlation_id: idOut(m.correlationId, x.correlationIdType) } : {}),
    ...(o.replyTo ?? m.replyTo ? { reply_to: o.replyTo ?? m.replyTo } : {}),
    ...(m.subject !== undefined ? { subject: m.subject } : {}),
    ...(o.userId ? { user_id: Buffer.from(o.userId, 'utf8') } : {}),
    creation_time: new Date(m.createdAt),
    ...(absolute ? { absolute_expiry_time: new Date(absolute) } : {}),
    ...(contentType !== undefined ? { content_type: contentType } : {}),
    ...(x.contentEncoding !== undefined ? { content_encoding: x.contentEncoding } : {}),
    ...(x.groupId !== undefined ? { group_id: x.groupId } : {}),
    ...(x.groupSequence !== undefined ? { group_sequence: x.groupSequence } : {}),
    ...(x.replyToGroupId !== undefined ? { reply_to_group_id: x.replyToGroupId } : {}),
    application_properties: props,
    body,
  };
}

/** The bytes of a data section, or undefined for an AMQP value or sequence body. */
function dataBytes(body: unknown): Buffer | undefined {
  if (Buffer.isBuffer(body)) return body;
  const section = body as { typecode?: number; content?: unknown } | undefined;
  if (section && typeof section === 'object' && section.typecode === 0x75 && Buffer.isBuffer(section.content)) return section.content;
  if (section && typeof section === 'object' && section.typecode === 0x75 && Array.isArray(section.content)) return Buffer.concat(section.content as Buffer[]);
  return undefined;
}

/** The typed sections: from the encoded bytes when rhea decoded the message, else from its JS values. */
function sectionsOf(a: AmqpMessage): Sections {
  const encoded = (a as { [RAW]?: Buffer })[RAW];
  if (encoded) return readSections(encoded, Buffer.isBuffer(a.message_id) || Buffer.isBuffer(a.correlation_id));
  const out: Sections = { sequences: [] };
  const props = a.application_properties as Record<string, unknown> | undefined;
  if (props) out.applicationProperties = Object.entries(props).flatMap(([k, v]) => [T.wrap_string!(k), isTyped(v) ? v : T.wrap!(v)]);
  const section = a.body as { typecode?: number; content?: unknown; multiple?: boolean } | undefined;
  if (section && typeof section === 'object' && section.typecode === 0x76) {
    for (const list of section.multiple ? (section.content as unknown[]) : [section.content]) out.sequences.push(T.wrap!(list));
  } else if (dataBytes(a.body) === undefined) out.value = isTyped(a.body) ? a.body : T.wrap!(a.body ?? null);
  return out;
}

/**
 * AMQP → Message for `to`, with the sender stamped by the door (never the message's own claim,
 * which is kept as a header). The AMQP types and fields a Message has no place for are kept in
 * `Message.amqp` for toAmqp. A JSON data section that is not JSON is refused with the reason.
 */
export function fromAmqp(a: AmqpMessage, to: string, sender: { kind: Message['sender']['kind']; name: string }, o: { maxBytes?: number; mapReplyTo?: (replyTo: string) => string | undefined } = {}): Message {
  const maxBytes = o.maxBytes ?? 1_048_576;
  const s = sectionsOf(a);
  const contentType = typeof a.content_type === 'string' && a.content_type ? a.content_type : undefined;
  const bytes = dataBytes(a.body);
  const json = bytes !== undefined && (contentType === undefined || JSON_TYPE.test(contentType)) ? new ReceivedJsonFidelity() : undefined;
  const x: AmqpFidelity = json ?? {};
  const headers: Record<string, string> = {};
  let claimed: string | undefined;
  const ap = s.applicationProperties ?? [];
  for (let i = 0; i + 1 < ap.length; i += 2) {
    const k = String(ap[i]!.value);
    const v = amqpValue(ap[i + 1]!);
    if (k === SENDER_PROPERTY) { claimed = headerText(v); continue; }
    headers[k] = headerText(v);
    if (v.type !== 'string') (x.properties ??= {})[k] = v;
  }
  if (claimed !== undefined && claimed !== `${sender.kind}:${sender.name}`) headers[CLAIMED_SENDER_HEADER] = claimed;
  if (contentType === undefined) x.noContentType = true;
  let body: unknown;
  let type = 'application/json';
  if (bytes) {
    x.bodySection = 'data';
    if (bytes.length > maxBytes) throw new ValidationError(`message body of ${bytes.length} bytes is over the limit of ${maxBytes}`, 'payload_too_large');
    if (json) {
      const text = bytes.toString('utf8');
      try {
        body = JSON.parse(text);
        type = contentType ?? type;
        json.keep(body, text, bytes);
      } catch (err) {
        if (contentType !== undefined) throw new ValidationError(`message body is declared ${contentType} but is not valid JSON: ${(err as Error).message}`, 'malformed_message');
        body = bytes;
        type = 'application/octet-stream';
      }
    } else if (contentType !== undefined && /^text\//i.test(contentType)) {
      body = bytes.toString('utf8');
      type = contentType;
    } else {
      // Declared as neither JSON nor text (an undeclared body is tried as JSON above).
      body = bytes;
      type = contentType ?? 'application/octet-stream';
    }
  } else {
    // A value or sequence section is already structured data; its AMQP types are kept beside it.
    const section = s.sequences.length > 0 ? 'sequence' : 'value';
    const typed: AmqpValue = section === 'sequence' ? { type: 'list', value: s.sequences.map(amqpValue) } : amqpValue(s.value ?? T.Null!());
    body = plainBody(section, typed);
    const size = Buffer.isBuffer(body) ? body.length : JSON.stringify(body)?.length ?? 0;
    if (size > maxBytes) throw new ValidationError(`message body of about ${size} bytes is over the limit of ${maxBytes}`, 'payload_too_large');
    x.bodySection = section;
    x.body = typed;
    type = contentType ?? (Buffer.isBuffer(body) ? 'application/octet-stream' : type);
  }
  const rawId = s.properties?.[0] ?? looseId(a.message_id);
  const mid = rawId && rawId.type.name !== 'Null' ? idOf(rawId) : undefined;
  const id = mid?.text || randomUUID();
  if (id.length > MAX_ID || !/^[\x21-\x7e]+$/.test(id)) throw new ValidationError(`message_id must be 1 to ${MAX_ID} visible ASCII characters`, 'malformed_message');
  if (mid && mid.type !== 'string') x.idType = mid.type;
  const rawCorrelation = s.properties?.[5] ?? looseId(a.correlation_id);
  const cid = rawCorrelation && rawCorrelation.type.name !== 'Null' ? idOf(rawCorrelation) : undefined;
  if (cid && cid.type !== 'string') x.correlationIdType = cid.type;
  x.durable = a.durable === true;
  if (typeof a.priority === 'number') x.priority = a.priority;
  if (typeof a.ttl === 'number') x.ttl = a.ttl;
  if (typeof a.group_id === 'string') x.groupId = a.group_id;
  if (typeof a.group_sequence === 'number') x.groupSequence = a.group_sequence;
  if (typeof a.reply_to_group_id === 'string') x.replyToGroupId = a.reply_to_group_id;
  if (typeof a.content_encoding === 'string') x.contentEncoding = a.content_encoding;
  const created = a.creation_time instanceof Date && a.creation_time.getTime() > 0 ? a.creation_time : undefined;
  const absolute = a.absolute_expiry_time instanceof Date && a.absolute_expiry_time.getTime() > 0 ? a.absolute_expiry_time : undefined;
  if (absolute) x.absoluteExpiryTime = absolute.toISOString();
  // ttl counts from arrival here (AMQP: relative to when a node receives the message).
  const expiries = [absolute?.getTime(), x.ttl !== undefined ? Date.now() + x.ttl : undefined].filter((t): t is number => t !== undefined);
  const replyTo = typeof a.reply_to === 'string' && a.reply_to ? (o.mapReplyTo ? o.mapReplyTo(a.reply_to) : a.reply_to) : undefined;
  return {
    id,
    to,
    sender,
    headers,
    contentType: type,
    body,
    createdAt: (created ?? new Date()).toISOString(),
    ...(cid?.text ? { correlationId: cid.text } : {}),
    ...(replyTo ? { replyTo } : {}),
    ...(typeof a.subject === 'string' ? { subject: a.subject } : {}),
    ...(expiries.length > 0 ? { expiresAt: new Date(Math.min(...expiries)).toISOString() } : {}),
    amqp: x,
  };
}
