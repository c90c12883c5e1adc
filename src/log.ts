import { pino, type Logger } from 'pino';

/** JSON logs. Secrets never reach a log line: these paths are censored wherever they appear. */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      name: 'switchboard',
      level,
      redact: { paths: ['password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'token', '*.token', 'secret', '*.secret', 'bindPassword', '*.bindPassword', 'passwordHash', '*.passwordHash'], censor: '[redacted]' },
    },
    destination ?? pino.destination(1),
  );
}
