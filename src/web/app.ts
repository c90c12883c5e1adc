import express, { type Express } from 'express';
import helmet from 'helmet';
import { NotFound } from '../core/errors.ts';
import type { AppDeps } from './deps.ts';
import { authenticate } from './middleware/authenticate.ts';
import { errorHandler } from './middleware/error-handler.ts';
import { jsonDepthLimit } from './middleware/json-depth.ts';
import { requireRedis } from './middleware/require-redis.ts';
import { adminRoutes } from './routes/admin.ts';
import { consoleFlowRoutes } from './routes/console-flows.ts';
import { consoleOpsRoutes } from './routes/console-ops.ts';
import { consoleQueueRoutes } from './routes/console-queues.ts';
import { auditRoutes } from './routes/audit.ts';
import { pageRoutes } from './routes/pages.ts';
import { inboxRoutes } from './routes/inbox.ts';
import { sessions } from './sessions.ts';
import { canRoutes } from './routes/can.ts';
import { tokenRoutes } from './routes/tokens.ts';
import { flowPageRoutes, flowRoutes } from './routes/flows.ts';
import { permissionRoutes } from './routes/permissions.ts';
import { hookRoutes } from './routes/hooks.ts';
import { permissionPageRoutes } from './routes/permission-pages.ts';
import { taskRoutes } from './routes/tasks.ts';
import { healthRoutes } from './routes/health.ts';
import { messageRoutes } from './routes/messages.ts';
import { queueRoutes } from './routes/queues.ts';
import { topicRoutes } from './routes/topics.ts';
import { openApiRoutes } from './openapi.ts';

/** Builds the HTTP door; `listen` is the caller's (the gateway, or a test on a free port). */
export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);
  // Over plain http (the demo, an internal network behind TLS offload) upgrade-insecure-requests
  // would send the browser to https URLs nobody serves.
  app.use(helmet({ contentSecurityPolicy: { directives: { upgradeInsecureRequests: deps.session.secure ? [] : null } } }));
  app.use(healthRoutes(deps));
  // Webhooks authenticate by signature, not by user: before the API's credential check.
  app.use('/hooks', requireRedis(deps.redis));
  app.use(hookRoutes(deps));
  // The API's description needs no credentials (nor Redis): see openapi.ts.
  app.use(openApiRoutes());
  // Credentials before the body: an unauthenticated client gets 401 and its body is never parsed.
  app.use('/api', requireRedis(deps.redis), authenticate(deps.auth));
  app.use('/api', express.json({ limit: deps.bodyLimit, strict: false, type: () => true }), jsonDepthLimit());
  app.use(messageRoutes(deps));
  app.use(queueRoutes(deps));
  app.use(topicRoutes(deps));
  app.use(canRoutes(deps));
  app.use(tokenRoutes(deps));
  app.use(taskRoutes(deps));
  app.use(flowRoutes(deps));
  app.use(permissionRoutes(deps));
  app.use(auditRoutes(deps));
  // Pages: sessions in Redis, form bodies, CSRF checked per form route.
  const pages = express.Router();
  pages.use(requireRedis(deps.redis), sessions(deps.session), express.urlencoded({ extended: false, limit: '64kb' }));
  pages.use(pageRoutes(deps));
  pages.use(adminRoutes(deps));
  pages.use(consoleQueueRoutes(deps));
  pages.use(consoleFlowRoutes(deps));
  pages.use(consoleOpsRoutes(deps));
  pages.use(flowPageRoutes(deps));
  pages.use(inboxRoutes(deps));
  pages.use(permissionPageRoutes(deps));
  app.use(pages);
  app.use((req, _res, next) => next(new NotFound(`no such endpoint: ${req.method} ${req.path}`)));
  app.use(errorHandler(deps.log, deps.bodyLimit, deps.audit));
  return app;
}
