import type { HealthReport } from '../core/endpoint.ts';
import type { Principal } from '../core/message.ts';
import type { Directory } from './directory.ts';
import { verifyPassword } from './password.ts';

export interface FileUser {
  name: string;
  passwordHash: string;
  groups: string[];
  email?: string;
}

// Verified against when the user is unknown, so an unknown name costs the same time as a wrong
// password and the two cannot be told apart by timing. (hash of a random, discarded password)
const DUMMY_HASH = 'scrypt$16384$8$1$2mJxXfH3k6Y0v3qN8d4c0w==$0yq3Jm9pX2o3lC1dQe8s3cJr1aQm2x6mJ1nq0k6Kc5E=';

/** Users with scrypt hashes and their groups, from config: for the demo and small installs. */
export class FileDirectory implements Directory {
  private readonly users: Map<string, FileUser>;

  constructor(users: FileUser[]) {
    this.users = new Map(users.map((u) => [u.name, u]));
  }

  async authenticate(username: string, password: string): Promise<Principal | null> {
    const user = this.users.get(username);
    const ok = await verifyPassword(password, user?.passwordHash ?? DUMMY_HASH);
    return ok && user ? FileDirectory.principal(user) : null;
  }

  async lookup(username: string): Promise<Principal | null> {
    const user = this.users.get(username);
    return user ? FileDirectory.principal(user) : null;
  }

  async members(group: string): Promise<Principal[]> {
    return [...this.users.values()].filter((u) => u.groups.includes(group)).map((u) => FileDirectory.principal(u));
  }

  async groups(prefix: string, limit: number): Promise<string[]> {
    const all = new Set([...this.users.values()].flatMap((u) => u.groups));
    return [...all].filter((g) => g.toLowerCase().startsWith(prefix.toLowerCase())).sort().slice(0, limit);
  }

  private static principal(u: FileUser): Principal {
    return { kind: 'user', name: u.name, groups: u.groups, ...(u.email ? { email: u.email } : {}) };
  }

  async health(): Promise<HealthReport> {
    return { ok: true, detail: `file directory, ${this.users.size} user(s)` };
  }
}
