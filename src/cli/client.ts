import { SwitchboardError } from '../core/errors.ts';

export interface ClientOptions {
  url: string;
  user?: string;
  password?: string;
  /** An API token; used instead of user and password when set. */
  token?: string;
}

/** A thin client of the HTTP API: the CLI goes through the same door, checks and errors as everyone. */
export class ApiClient {
  constructor(private readonly o: ClientOptions) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.o.token) headers.authorization = `Bearer ${this.o.token}`;
    else if (this.o.user !== undefined) headers.authorization = `Basic ${Buffer.from(`${this.o.user}:${this.o.password ?? ''}`).toString('base64')}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(new URL(path, this.o.url), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new SwitchboardError('unreachable', `cannot reach the gateway at ${this.o.url} (${cause}); is it running? (set --url or SWITCHBOARD_URL)`, 503, true);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      throw new SwitchboardError('bad_response', `the gateway answered ${res.status} with a body that is not JSON`, 502);
    }
    if (!res.ok) {
      const e = (json as { error?: { code?: string; message?: string } }).error;
      throw new SwitchboardError(e?.code ?? 'http_error', `${res.status}: ${e?.message ?? res.statusText}`, res.status);
    }
    return json as T;
  }
}

export function addressPath(address: string): string {
  return encodeURIComponent(address);
}
