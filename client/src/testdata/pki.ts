// A throwaway CA for the client's tests, made with the openssl CLI (the controller's CA is not a
// dependency of the client): certificates shaped like the controller's, and signing of CSRs.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestPki {
  ca: string;
  /** A key and certificate naming `uri`; `server` adds serverAuth. */
  issue(uri: string, options?: { server?: boolean; days?: number }): { key: string; cert: string };
  /** Signs a PEM CSR as the controller would renew a device: SAN URI, clientAuth. */
  sign(csr: string, uri: string, days?: number): string;
  remove(): void;
}

export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'umbra-client-pki-'));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
  openssl('req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=test ca', '-days', '2', '-out', 'ca.crt');
  let count = 0;
  const signCsr = (csrFile: string, uri: string, server: boolean, days: number) => {
    const name = `leaf${++count}`;
    writeFileSync(
      join(dir, `${name}.ext`),
      [
        'basicConstraints=critical,CA:FALSE',
        `extendedKeyUsage=${server ? 'serverAuth,clientAuth' : 'clientAuth'}`,
        `subjectAltName=URI:${uri}`,
      ].join('\n'),
    );
    openssl(
      'x509',
      '-req',
      '-in',
      csrFile,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-set_serial',
      String(1000 + count),
      '-days',
      String(days),
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    );
    return readFileSync(join(dir, `${name}.crt`), 'utf8');
  };
  return {
    ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    issue: (uri, { server = false, days = 1 } = {}) => {
      const name = `key${++count}`;
      openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
      openssl('req', '-new', '-key', `${name}.key`, '-subj', '/CN=leaf', '-out', `${name}.csr`);
      return {
        key: readFileSync(join(dir, `${name}.key`), 'utf8'),
        cert: signCsr(`${name}.csr`, uri, server, days),
      };
    },
    sign: (csr, uri, days = 1) => {
      const file = `in${++count}.csr`;
      writeFileSync(join(dir, file), csr);
      return signCsr(file, uri, false, days);
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
