import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../src/store/embedded-redis.ts';

const run = promisify(execFile);
const SLAPD = '/usr/sbin/slapd';
const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'directory.ldif');

export const LDAP = {
  base: 'dc=example,dc=com',
  admin: 'cn=admin,dc=example,dc=com',
  adminPassword: 'admin-secret',
  service: 'cn=switchboard,dc=example,dc=com',
  servicePassword: 'switchboard-pw',
};

export interface TestLdap {
  url: string;
  /** ldaps:// URL when started with { tls: true }. */
  ldapsUrl?: string;
  /** PEM file of the CA that signed the server certificate ({ tls: true }). */
  caFile?: string;
  port: number;
  pid: number;
  /** Stops slapd (an outage); `start()` brings it back with the same data. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Applies an LDIF change as the directory admin (ldapmodify). */
  modify(ldif: string): Promise<void>;
  dispose(): Promise<void>;
}

/** A throwaway CA and a server certificate for 127.0.0.1 / localhost, made with openssl. */
async function makeCertificates(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ca = join(dir, 'ca.pem'), caKey = join(dir, 'ca.key'), key = join(dir, 'server.key'), csr = join(dir, 'server.csr'), cert = join(dir, 'server.pem'), ext = join(dir, 'ext.cnf');
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=Switchboard Test LDAP CA']);
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=localhost']);
  writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext]);
  return { ca, cert, key };
}

/** A private OpenLDAP slapd on a free loopback port, seeded from test/fixtures/directory.ldif. */
export async function startTestLdap(options: { tls?: boolean } = {}): Promise<TestLdap> {
  const dir = mkdtempSync(join(tmpdir(), 'sb-ldap-'));
  mkdirSync(join(dir, 'db'));
  const conf = join(dir, 'slapd.conf');
  const certs = options.tls ? await makeCertificates(dir) : undefined;
  writeFileSync(conf, [
    ...(certs ? [`TLSCACertificateFile ${certs.ca}`, `TLSCertificateFile ${certs.cert}`, `TLSCertificateKeyFile ${certs.key}`] : []),
    'include /etc/ldap/schema/core.schema',
    'include /etc/ldap/schema/cosine.schema',
    'include /etc/ldap/schema/inetorgperson.schema',
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    `pidfile ${dir}/slapd.pid`,
    'access to attrs=userPassword by self read by anonymous auth by * none',
    'access to * by * read',
    'database mdb',
    'maxsize 104857600',
    `suffix "${LDAP.base}"`,
    `rootdn "${LDAP.admin}"`,
    `rootpw ${LDAP.adminPassword}`,
    `directory ${dir}/db`,
    '',
  ].join('\n'));
  await run('/usr/sbin/slapadd', ['-f', conf, '-l', FIXTURE]);
  const port = await freePort();
  const url = `ldap://127.0.0.1:${port}`;
  const ldapsUrl = certs ? `ldaps://127.0.0.1:${await freePort()}` : undefined;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  async function start(): Promise<void> {
    const c = spawn(SLAPD, ['-f', conf, '-h', ldapsUrl ? `${url}/ ${ldapsUrl}/` : `${url}/`, '-d', '0'], { stdio: 'ignore' });
    child = c;
    exited = new Promise((r) => c.once('exit', () => r()));
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        await run('ldapwhoami', ['-x', '-H', url, '-D', LDAP.service, '-w', LDAP.servicePassword]);
        return;
      } catch {
        if (c.exitCode !== null || Date.now() > deadline) throw new Error(`slapd did not start on ${url}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async function stop(): Promise<void> {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child?.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
  }

  await start();
  return {
    url,
    port,
    ...(ldapsUrl ? { ldapsUrl, caFile: certs!.ca } : {}),
    get pid() {
      return child?.pid ?? -1;
    },
    stop,
    start,
    async modify(ldif: string) {
      const p = spawn('ldapmodify', ['-x', '-H', url, '-D', LDAP.admin, '-w', LDAP.adminPassword], { stdio: ['pipe', 'ignore', 'pipe'] });
      let err = '';
      p.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
      p.stdin!.end(ldif);
      const code = await new Promise<number | null>((r) => p.once('exit', r));
      if (code !== 0) throw new Error(`ldapmodify failed (${code}): ${err}`);
    },
    async dispose() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The `directory:` config section for a test slapd. */
export function ldapDirectoryConfig(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'ldap',
    url,
    bindDN: LDAP.service,
    bindPassword: LDAP.servicePassword,
    userBase: `ou=people,${LDAP.base}`,
    groupBase: `ou=groups,${LDAP.base}`,
    cacheTtl: '1s',
    timeout: '2s',
    ...extra,
  };
}
