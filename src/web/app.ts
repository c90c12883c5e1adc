import express, { type Express } from 'express';
import helmet from 'helmet';
import { NotFound } from '../core/errors.ts';
import type { AppDeps } from './deps.ts';
import { authenticate } from './middleware/authenticate.ts';
import { errorHandler } from './middleware/error-handler.ts';
import { requireRedis } from './middleware/require-redis.ts';
import { canRoutes } from './routes/can.ts';
import { healthRoutes } from './routes/health.ts';
import { messageRoutes } from './routes/messages.ts';
import { queueRoutes } from './routes/queues.ts';

/** Builds the HTTP door; `listen` is the caller's (the gateway, or a test on a free port). */
export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  app.use(helmet());
  app.use(healthRoutes(deps));
  // Credentials before the body: an unauthenticated client gets 401 and its body is never parsed.
  app.use('/api', requireRedis(deps.redis), authenticate(deps.directory));
  app.use('/api', express.json({ limit: deps.bodyLimit, strict: false, type: () => true }));
  app.use(messageRoutes(deps));
  app.use(queueRoutes(deps));
  app.use(canRoutes(deps));
  app.use((req, _res, next) => next(new NotFound(`no such endpoint: ${req.method} ${req.path}`)));
  app.use(errorHandler(deps.log, deps.bodyLimit));
  return app;
}
