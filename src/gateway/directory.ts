import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { AuditLog } from '../auth/audit.ts';
import { Authenticator } from '../auth/authenticator.ts';
import { verbFor } from '../auth/authorization.ts';
import { createDirectory } from '../auth/create-directory.ts';
import type { Directory } from '../auth/directory.ts';
import { LoginGuard } from '../auth/login-guard.ts';
import { PermissionStore } from '../auth/permission-store.ts';
import { Permissions, rulesFromConfig, type DeploymentGrant } from '../auth/permissions.ts';
import { TokenStore } from '../auth/tokens.ts';
import type { Materials } from '../config/materials.ts';
import type { Config } from '../config/schema.ts';
import { Route } from '../core/route.ts';
import type { Cleanup } from './cleanup.ts';

/** Who is who and who may do what: everything the doors and the router's checks ask. */
export interface Access {
  directory: Directory;
  permissions: Permissions;
  /** Console rules, kept in Redis and shared live by every gateway process. */
  permissionStore: PermissionStore;
  audit: AuditLog;
  tokens: TokenStore;
  auth: Authenticator;
}

/**
 * Step 3: the directory, the permissions (config rules, deployment grants and the console rules
 * from Redis), the audit log, API tokens and the authenticator with its login limits.
 */
export async function openDirectory(config: Config, materials: Materials, redis: Redis, log: Logger, cleanup: Cleanup): Promise<Access> {
  const prefix = config.redis.prefix;
  const configRules = rulesFromConfig(config.permissions);
  const permissions = new Permissions(configRules, deploymentGrants(config));
  const audit = new AuditLog(redis, prefix, log, { retentionMs: config.audit.retention, perSourcePerMinute: config.audit.unauthenticatedPerMinute });
  const permissionStore = new PermissionStore(redis, prefix, permissions, configRules, log);
  await permissionStore.start();
  cleanup.push(() => permissionStore.stop());
  const directory = createDirectory(config.directory, log, materials.directoryCa);
  const tokens = new TokenStore(redis, prefix);
  const limits = config.http.loginLimits;
  const guard = new LoginGuard(redis, prefix, { perUser: limits.perUser, perIp: limits.perIp, windowMs: limits.window });
  const auth = new Authenticator(directory, tokens, audit, guard);
  return { directory, permissions, permissionStore, audit, tokens, auth };
}

/**
 * Rights that follow from the config itself: a route may send to its destination, an inbound
 * webhook to its address, a broker's reply queue to the flow instances that wait on it.
 */
function deploymentGrants(config: Config): DeploymentGrant[] {
  const grants: DeploymentGrant[] = [];
  for (const r of config.routes) {
    const reason = `the route ${Route.principalName(r)} in the config`;
    grants.push({ principal: `route:${Route.principalName(r)}`, address: r.to, verbs: [verbFor(r.to)], reason }, { principal: `route:${Route.principalName(r)}`, address: r.from, verbs: ['consume'], reason });
  }
  for (const [name, w] of Object.entries(config.webhooks)) {
    if (w.inbound) grants.push({ principal: `webhook:${name}`, address: w.inbound.to, verbs: [verbFor(w.inbound.to)], reason: `the inbound webhook ${name} in the config` });
  }
  for (const [name, b] of Object.entries(config.brokers)) {
    if (b.replyQueue) grants.push({ principal: `broker:${name}`, address: 'flow:*/*', verbs: ['send'], reason: `the reply queue of broker ${name}` });
  }
  return grants;
}
