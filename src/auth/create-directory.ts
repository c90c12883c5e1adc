import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Directory } from './directory.ts';
import { FileDirectory } from './file-directory.ts';
import { LdapDirectory } from './ldap-directory.ts';

/**
 * The configured directory. `ca` is the PEM text of `directory.tls.caFile`, read at the config
 * edge (src/config/materials.ts): the directory itself never opens a file.
 */
export function createDirectory(config: Config['directory'], log: Logger, ca?: string): Directory {
  if (config.type === 'file') return new FileDirectory(config.users);
  return new LdapDirectory(
    {
      url: config.url,
      bindDN: config.bindDN,
      bindPassword: config.bindPassword,
      userBase: config.userBase,
      userFilter: config.userFilter,
      usernameAttribute: config.usernameAttribute,
      mailAttribute: config.mailAttribute,
      groupFilter: config.groupFilter,
      nestedGroups: config.nestedGroups,
      cacheTtlMs: config.cacheTtl,
      timeoutMs: config.timeout,
      ...(config.groupBase !== undefined ? { groupBase: config.groupBase } : {}),
      ...(config.memberOfAttribute !== undefined ? { memberOfAttribute: config.memberOfAttribute } : {}),
      ...(config.tls !== undefined
        ? { tls: { startTls: config.tls.startTls, rejectUnauthorized: config.tls.rejectUnauthorized, ...(ca !== undefined ? { ca } : {}) } }
        : {}),
    },
    log,
  );
}
