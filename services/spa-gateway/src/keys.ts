// The gateway's own key pair on disk: `gateway.key` (private, mode 0600) and `gateway.pub`.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  encodeKey,
  formatGatewayKeyFile,
  generateGatewayKeyPair,
  parseGatewayKeyFile,
  readSecretFile,
  writeFileAtomic,
  writeSecretFile,
} from '@umbra/protocol';

export const PRIVATE_KEY_FILE = 'gateway.key';
export const PUBLIC_KEY_FILE = 'gateway.pub';

export interface GatewayKeys {
  privateKey: Buffer;
  publicKey: Buffer;
}

/** Creates the key pair in `dir`; refuses to replace one unless `overwrite`, since clients pin the old key. */
export async function createGatewayKeys(dir: string, overwrite = false): Promise<GatewayKeys> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keys = generateGatewayKeyPair();
  await writeSecretFile(join(dir, PRIVATE_KEY_FILE), formatGatewayKeyFile(keys), { overwrite });
  writeFileAtomic(join(dir, PUBLIC_KEY_FILE), `${encodeKey(keys.publicKey)}\n`, 0o644);
  return keys;
}

export function loadGatewayKeys(dir: string): GatewayKeys {
  const path = join(dir, PRIVATE_KEY_FILE);
  const text = readSecretFile(path, path, `create one with \`umbra-gateway keygen --dir ${dir}\``);
  return parseGatewayKeyFile(text, path);
}
