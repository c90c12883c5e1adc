/**
 * What the AMQP endpoint checks before rhea sees a byte (DESIGN §6): how large each incoming
 * frame may be, before and after login, and SASL PLAIN done per connection so the login limits
 * and the audit know the client's IP. rhea itself buffers whatever frame size a peer declares,
 * logged in or not, so the limit has to sit in front of it.
 */

/** AMQP frames start with their size (4 bytes); a protocol header starts with these bytes instead. */
const AMQP_MAGIC = 0x414d5150; // 'AMQP'
const HEADER_BYTES = 8;
const FRAME_HEADER_BYTES = 8;

/** Why the gate closed: what was declared and what was allowed. */
export interface FrameRefusal {
  size: number;
  limit: number;
  /** The client had not logged in yet. */
  beforeLogin: boolean;
}

/**
 * Follows the framing of one connection's incoming bytes without keeping them: protocol headers
 * (the SASL one, then the AMQP one), then frames by their declared size. Each size is checked the
 * moment its 4 bytes arrive, so a frame over the limit is refused before its body is read, let
 * alone buffered. The limit is `beforeLogin` until `loggedIn` is set, then `afterLogin`.
 */
export class FrameGate {
  loggedIn = false;
  private phase: 'header' | 'size' | 'body' = 'header';
  /** Bytes still to skip in the current header or frame body. */
  private remaining = HEADER_BYTES;
  private size = 0;
  private sizeBytes = 0;

  constructor(private readonly beforeLogin: number, private readonly afterLogin: number) {}

  /** Reads a chunk's framing; a refusal means nothing of it may be passed on. */
  read(chunk: Buffer): FrameRefusal | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.phase === 'size') {
        this.size = ((this.size << 8) | chunk[i++]!) >>> 0;
        if (++this.sizeBytes < 4) continue;
        this.sizeBytes = 0;
        if (this.size === AMQP_MAGIC) {
          // The AMQP header after SASL: 'AMQP' then 4 more bytes.
          this.phase = 'header';
          this.remaining = HEADER_BYTES - 4;
        } else {
          const limit = this.loggedIn ? this.afterLogin : this.beforeLogin;
          if (this.size < FRAME_HEADER_BYTES || this.size > limit) return { size: this.size, limit, beforeLogin: !this.loggedIn };
          this.phase = 'body';
          this.remaining = this.size - 4;
        }
        this.size = 0;
        continue;
      }
      const skip = Math.min(this.remaining, chunk.length - i);
      i += skip;
      this.remaining -= skip;
      if (this.remaining === 0) this.phase = 'size';
    }
    return undefined;
  }
}

/**
 * SASL PLAIN (RFC 4616: authzid NUL authcid NUL password) for one connection. rhea's own PLAIN
 * calls one callback for the whole container, which cannot tell which client is asking; this one
 * is made per connection and checks through `login`, which knows the client's IP. rhea reads
 * `outcome` and `username` once `start` resolves.
 */
export class PlainLogin {
  outcome?: boolean;
  username?: string;

  constructor(private readonly login: (username: string, password: string) => Promise<boolean>) {}

  async start(response: Buffer | undefined): Promise<void> {
    const fields = (response ?? Buffer.alloc(0)).toString('utf8').split('\0');
    // A malformed response is a login with no name and no password: refused and counted per IP.
    const [username, password] = fields.length === 3 ? [fields[1]!, fields[2]!] : ['', ''];
    this.outcome = await this.login(username, password);
    if (this.outcome) this.username = username;
  }
}
