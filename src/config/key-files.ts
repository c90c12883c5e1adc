import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SwitchboardError } from '../core/errors.ts';

/**
 * A key or certificate file named in the config cannot be used. Each problem names the config
 * path and the file, e.g. `network.key: cannot read certs/a.key: ENOENT`, so the operator knows
 * which line to fix without reading a stack trace.
 */
export class KeyFileError extends SwitchboardError {
  constructor(readonly problems: string[]) {
    super('bad_key_file', problems.length === 1 ? problems[0]! : `${problems.length} key or certificate files named in the configuration cannot be used:\n${problems.join('\n')}`, 500);
  }
}

function read(where: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new KeyFileError([`${where}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`]);
  }
}

/** A PEM file's text (certificate, CA bundle or TLS key); `where` is its path in the config. */
export function readPem(where: string, path: string): string {
  return read(where, path).toString('utf8');
}

/** An Ed25519 signing key (PEM, PKCS#8). */
export function readPrivateKey(where: string, path: string): KeyObject {
  const pem = read(where, path);
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new KeyFileError([`${where}: ${path} is not a PEM private key (${(err as Error).message})`]);
  }
}

/** An Ed25519 verify key (PEM, SPKI). */
export function readPublicKey(where: string, path: string): KeyObject {
  const pem = read(where, path);
  try {
    return createPublicKey(pem);
  } catch (err) {
    throw new KeyFileError([`${where}: ${path} is not a PEM public key (${(err as Error).message})`]);
  }
}

/**
 * Collects the problems of many reads so that all are reported at once: `attempt` gives a read's
 * value or records its KeyFileError lines, `done` throws them as one KeyFileError.
 */
export function keyFileProblems(): { attempt<T>(read: () => T): T | undefined; done(): void } {
  const problems: string[] = [];
  return {
    attempt<T>(read: () => T): T | undefined {
      try {
        return read();
      } catch (err) {
        if (!(err instanceof KeyFileError)) throw err;
        problems.push(...err.problems);
        return undefined;
      }
    },
    done() {
      if (problems.length > 0) throw new KeyFileError(problems);
    },
  };
}
