// The device identity file written by `umbra keygen`.

import { readFileSync, statSync } from 'node:fs';
import {
  formatIdentityFile,
  generateIdentity,
  type Identity,
  parseIdentityFile,
  writeSecretFile,
} from '@umbra/protocol';

export async function createIdentityFile(path: string, overwrite = false): Promise<Identity> {
  const identity = generateIdentity();
  await writeSecretFile(path, formatIdentityFile(identity), { overwrite });
  return identity;
}

export function loadIdentityFile(path: string): Identity {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT')
      throw new Error(`--identity ${path}: no such file; create one with \`umbra keygen --out ${path}\``);
    throw new Error(`--identity ${path}: cannot read it (${code})`);
  }
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077)
    throw new Error(
      `--identity ${path}: permissions ${mode.toString(8).padStart(4, '0')} let other users read the private key; run \`chmod 600 ${path}\``,
    );
  return parseIdentityFile(text, path);
}
