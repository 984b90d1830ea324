// The device identity file written by `umbra keygen`.

import {
  formatIdentityFile,
  generateIdentity,
  type Identity,
  parseIdentityFile,
  readSecretFile,
  writeSecretFile,
} from '@umbra/protocol';

export async function createIdentityFile(path: string, overwrite = false): Promise<Identity> {
  const identity = generateIdentity();
  await writeSecretFile(path, formatIdentityFile(identity), { overwrite });
  return identity;
}

export function loadIdentityFile(path: string): Identity {
  const text = readSecretFile(path, `--identity ${path}`, `create one with \`umbra keygen --out ${path}\``);
  return parseIdentityFile(text, path);
}
