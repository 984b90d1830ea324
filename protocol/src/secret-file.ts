// Writing a file that holds a private key: readable by its owner only from the first byte, on disk
// before we report success, and never half-written or silently replacing another key.
//
// The bytes go to a temporary file in the same directory (created exclusively, mode 0600), are
// fsynced, and only then take the final name, so a crash leaves either the old state or the whole
// new file. Without `overwrite` the final name is taken with link(2), which fails atomically if the
// name exists — a check-then-rename would race with another writer.

import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { type FileHandle, link, lstat, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

const SECRET_FILE_MODE = 0o600;

export interface WriteSecretFileOptions {
  /** Replace an existing file at `path`. Off by default: the old file may hold the only copy of a key. */
  overwrite?: boolean;
}

/** The write failed; `code` is the errno code (EEXIST when the file exists and overwrite is off). */
export class SecretFileError extends Error {
  override name = 'SecretFileError';
  readonly code: string | undefined;
  constructor(message: string, code: string | undefined, cause?: unknown) {
    super(message, { cause });
    this.code = code;
  }
}

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function failure(path: string, error: unknown): SecretFileError {
  const code = errnoCode(error);
  const dir = dirname(path);
  switch (code) {
    case 'EEXIST':
      return new SecretFileError(
        `${path} already exists; refusing to replace a secret file — move it away first, or write it with overwrite enabled`,
        code,
        error,
      );
    case 'ENOENT':
      return new SecretFileError(
        `cannot write ${path}: directory ${dir} does not exist; create it first`,
        code,
        error,
      );
    case 'EACCES':
    case 'EPERM':
      return new SecretFileError(
        `cannot write ${path}: no permission to create files in ${dir}`,
        code,
        error,
      );
    case 'EISDIR':
      return new SecretFileError(`cannot write ${path}: it is a directory; choose a file name`, code, error);
    default:
      return new SecretFileError(`cannot write ${path}: ${code ?? String(error)}`, code, error);
  }
}

export async function writeSecretFile(
  path: string,
  /** Text (written as UTF-8) or bytes. */
  contents: string | Uint8Array,
  options: WriteSecretFileOptions = {},
): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  let handle: FileHandle;
  try {
    handle = await open(temp, 'wx', SECRET_FILE_MODE);
  } catch (error) {
    throw failure(path, error);
  }
  try {
    try {
      await handle.chmod(SECRET_FILE_MODE); // the umask can only remove bits, but be exact
      await (typeof contents === 'string' ? handle.writeFile(contents, 'utf8') : handle.writeFile(contents));
      await handle.sync();
    } finally {
      await handle.close();
    }
    if (options.overwrite) await rename(temp, path);
    else await linkExclusive(temp, path);
  } catch (error) {
    throw failure(path, error);
  } finally {
    await unlink(temp).catch(() => {}); // gone already after a rename
  }
  await syncDirectory(dir);
}

/** Gives `temp` the name `path` unless `path` exists. */
async function linkExclusive(temp: string, path: string): Promise<void> {
  try {
    await link(temp, path);
    return;
  } catch (error) {
    const code = errnoCode(error);
    // Filesystems without hard links (FAT on a USB stick) say EPERM or ENOTSUP; there, fall back to
    // check-then-rename, which is racy but still refuses the common case of an existing file.
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw error;
  }
  const existing = await lstat(path).catch((error) => {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw error;
  });
  if (existing) throw Object.assign(new Error('exists'), { code: 'EEXIST' });
  await rename(temp, path);
}

/** Makes the new directory entry durable too; some filesystems cannot, and that is not an error. */
async function syncDirectory(dir: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // EINVAL/EISDIR on filesystems that do not sync directories
  } finally {
    await handle?.close();
  }
}

/**
 * Reads a file that holds a private key, refusing one that other users could read (as ssh does):
 * a key that leaked is worse than a service that does not start. `what` names the input in errors,
 * e.g. "--identity /home/alice/.umbra/identity"; `createHint` says how to make a missing one.
 */
export function readSecretFile(path: string, what: string, createHint: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT') throw new SecretFileError(`${what}: no such file; ${createHint}`, code, error);
    throw new SecretFileError(`${what}: cannot read it (${code})`, code, error);
  }
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077)
    throw new SecretFileError(
      `${what}: permissions ${mode.toString(8).padStart(4, '0')} let other users read the private key; run \`chmod 600 ${path}\``,
      'EPERM',
    );
  return text;
}
