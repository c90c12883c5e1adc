import { pino, type Logger } from 'pino';

/** How log lines are written: one JSON object a line, or pino-pretty's coloured lines. */
export type LogFormat = 'json' | 'pretty';

/**
 * Pretty lines for a person at a terminal, JSON everywhere else: a pipe, a file, systemd's
 * journal, a container's log driver, CI and the tests all get the JSON a log shipper can parse.
 */
export function logFormat(stdout: { isTTY?: boolean }): LogFormat {
  return stdout.isTTY === true ? 'pretty' : 'json';
}

const REDACT = { paths: ['password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'token', '*.token', 'secret', '*.secret', 'bindPassword', '*.bindPassword', 'passwordHash', '*.passwordHash'], censor: '[redacted]' };

/**
 * The gateway's logger. Secrets never reach a log line: these paths are censored wherever they
 * appear (before pretty-printing too). With a `destination` the lines are JSON to it; without one
 * they go to stdout, pretty when stdout is a terminal ({@link logFormat}).
 */
export function createLogger(level: string, destination?: NodeJS.WritableStream, format: LogFormat = destination ? 'json' : logFormat(process.stdout)): Logger {
  const options = { name: 'switchboard', level, redact: REDACT };
  if (format === 'pretty' && !destination) {
    // pino-pretty in pino's transport worker, so formatting costs the event loop nothing.
    return pino({ ...options, transport: { target: 'pino-pretty', options: { destination: 1, colorize: true, translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l', ignore: 'pid,hostname,name' } } });
  }
  return pino(options, destination ?? pino.destination(1));
}
