import type { HealthReport } from '../core/endpoint.ts';
import type { Principal } from '../core/message.ts';

/**
 * Where users and their groups come from. `authenticate` answers null for a wrong user name or
 * password alike (callers must not tell them apart), and throws DependencyUnavailable when the
 * directory cannot be asked: the door then fails closed with 503.
 */
export interface Directory {
  authenticate(username: string, password: string): Promise<Principal | null>;
  /** The user and their groups without a password check (for explain and admin views); null if unknown. */
  lookup(username: string): Promise<Principal | null>;
  /** Members of a group (by cn or DN), for notices to a group; [] for an unknown group. */
  members(group: string): Promise<Principal[]>;
  /** Group names (cn) starting with `prefix`, for pickers and to check a rule names a real group. */
  groups(prefix: string, limit: number): Promise<string[]>;
  health(): Promise<HealthReport>;
}
