// A throwaway certificate authority for the tunnel tests, made with the openssl CLI: the
// controller's CA is not a dependency of the gateway, and these certificates only need to look
// like the ones it issues (P-256, SAN URI umbra://identity/NAME, clientAuth; the gateway's with
// serverAuth and umbra://gateway/NAME).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Issued {
  key: string;
  cert: string;
  /** Lower-case hex, as the controller records it. */
  serial: string;
}

export interface TestPki {
  ca: string;
  issue(options: { uris: string[]; server?: boolean; days?: number; ips?: string[] }): Issued;
  /** A certificate for the same names from another CA, which the gateway must not trust. */
  issueElsewhere(uris: string[]): Issued;
  remove(): void;
}

export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'umbra-tunnel-pki-'));
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const makeCa = (name: string) => {
    openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
    openssl(
      'req',
      '-x509',
      '-new',
      '-key',
      `${name}.key`,
      '-subj',
      `/CN=${name}`,
      '-days',
      '2',
      '-out',
      `${name}.crt`,
    );
  };
  makeCa('ca');
  makeCa('other-ca');
  let count = 0;
  const issueFrom = (
    caName: string,
    uris: string[],
    server = false,
    days = 1,
    ips: string[] = [],
  ): Issued => {
    const name = `leaf${++count}`;
    const serial = `1${String(count).padStart(31, '0')}`;
    writeFileSync(
      join(dir, `${name}.ext`),
      [
        'basicConstraints=critical,CA:FALSE',
        'keyUsage=critical,digitalSignature',
        `extendedKeyUsage=${server ? 'serverAuth,clientAuth' : 'clientAuth'}`,
        ...(uris.length + ips.length > 0
          ? [
              `subjectAltName=${[...uris.map((uri) => `URI:${uri}`), ...ips.map((ip) => `IP:${ip}`)].join(',')}`,
            ]
          : []),
      ].join('\n'),
    );
    openssl('ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`);
    openssl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`);
    openssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${caName}.crt`,
      '-CAkey',
      `${caName}.key`,
      '-set_serial',
      `0x${serial}`,
      '-days',
      String(days),
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.crt`,
    );
    return {
      key: readFileSync(join(dir, `${name}.key`), 'utf8'),
      cert: readFileSync(join(dir, `${name}.crt`), 'utf8'),
      serial,
    };
  };
  return {
    ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    issue: ({ uris, server, days, ips }) => issueFrom('ca', uris, server, days, ips),
    issueElsewhere: (uris) => issueFrom('other-ca', uris),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
