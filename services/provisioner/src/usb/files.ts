// The files at a stick's top level, reached either through a kernel mount or, for FAT on a kernel
// without a FAT driver, through mtools working on the block device directly.
import { spawn } from 'node:child_process';
import { constants, type Dirent } from 'node:fs';
import { open, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { runOk } from './system.ts';

/** The largest bundle file read from a stick. */
export const MAX_BUNDLE_BYTES = 64 * 1024;

export interface StickEntry {
  name: string;
  /** A regular file (not a directory, and not a symlink). */
  isFile: boolean;
}

export interface StickFiles {
  list(): Promise<StickEntry[]>;
  /** Reads a regular file; rejects with TooLargeError past MAX_BUNDLE_BYTES. */
  read(name: string): Promise<Uint8Array>;
  /** Writes a file through a temporary name (write, fsync, rename, fsync). */
  writeAtomic(name: string, data: Uint8Array): Promise<void>;
}

export class TooLargeError extends Error {
  override name = 'TooLargeError';
}

/** A mounted stick. */
export function mountedFiles(dir: string): StickFiles {
  return {
    async list() {
      const ents: Dirent[] = await readdir(dir, { withFileTypes: true });
      return ents.map((e) => ({ name: e.name, isFile: e.isFile() }));
    },
    async read(name) {
      // O_NOFOLLOW: a symlink on an ext4 stick must not lead to a file of the box's own.
      const fh = await open(
        join(dir, name),
        constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      );
      try {
        const st = await fh.stat();
        if (!st.isFile()) throw new Error(`${name} is not a file`);
        if (st.size > MAX_BUNDLE_BYTES) throw new TooLargeError(`${name} is ${st.size} bytes`);
        const buf = new Uint8Array(MAX_BUNDLE_BYTES + 1);
        let n = 0;
        for (;;) {
          const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
          if (bytesRead === 0) break;
          n += bytesRead;
          if (n > MAX_BUNDLE_BYTES) throw new TooLargeError(`${name} grew past ${MAX_BUNDLE_BYTES} bytes`);
        }
        return buf.slice(0, n);
      } finally {
        await fh.close();
      }
    },
    async writeAtomic(name, data) {
      const tmp = join(dir, `.${name}.tmp`);
      const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
      const fh = await open(tmp, flags, 0o644);
      try {
        await fh.writeFile(data);
        await fh.sync();
      } catch (err) {
        await fh.close().catch(() => {});
        await unlink(tmp).catch(() => {});
        throw err;
      }
      await fh.close();
      await rename(tmp, join(dir, name));
      const d = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    },
  };
}

/**
 * A FAT stick through mtools (`mdir`, `mcopy`, `mren` with `-i DEVICE`), without mounting it. Used when
 * the kernel has no vfat driver. Names are passed as they were listed, so FAT's own rules apply.
 */
export function mtoolsFiles(device: string): StickFiles {
  return {
    async list() {
      const out = await runOk('mdir', ['-b', '-i', device, '::/']);
      return out
        .split('\n')
        .filter((l) => l.startsWith('::/'))
        .map((l) => l.slice(3))
        .map((l) => (l.endsWith('/') ? { name: l.slice(0, -1), isFile: false } : { name: l, isFile: true }));
    },
    async read(name) {
      const r = await mtools('mcopy', ['-n', '-i', device, `::/${name}`, '-'], {
        maxStdout: MAX_BUNDLE_BYTES,
      });
      if (r.tooLarge) throw new TooLargeError(`${name} is over ${MAX_BUNDLE_BYTES} bytes`);
      if (r.code !== 0) throw new Error(`mcopy ${name}: ${lastLine(r.stderr) || `exit status ${r.code}`}`);
      return new Uint8Array(r.stdout);
    },
    async writeAtomic(name, data) {
      const tmp = `.${name}.tmp`;
      const args = ['-n', '-D', 'o', '-i', device, '-', `::/${tmp}`];
      const r = await mtools('mcopy', args, { input: data });
      if (r.code !== 0)
        throw new Error(`mcopy ${args.join(' ')}: ${lastLine(r.stderr) || `exit status ${r.code}`}`);
      await runOk('mren', ['-D', 'o', '-i', device, `::/${tmp}`, `::/${name}`]);
      // mtools writes through the device's page cache: fsync the device itself.
      const fh = await open(device, constants.O_RDONLY);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    },
  };
}

interface MtoolsResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  /** stdout went past maxStdout (the tool was killed then). */
  tooLarge: boolean;
}

/**
 * Runs an mtools command, killed after 30 s: `input` goes to its stdin; its stdout is kept when
 * `maxStdout` is given, and the tool killed once it passes that.
 */
function mtools(
  file: string,
  args: string[],
  options: { input?: Uint8Array; maxStdout?: number },
): Promise<MtoolsResult> {
  return new Promise((resolve, reject) => {
    const { input, maxStdout } = options;
    const child = spawn(file, args, {
      stdio: [input ? 'pipe' : 'ignore', maxStdout === undefined ? 'ignore' : 'pipe', 'pipe'],
      env: { ...process.env, MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C' },
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = '';
    let tooLarge = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stdout?.on('data', (c: Buffer) => {
      size += c.length;
      if (size > (maxStdout as number)) {
        tooLarge = true;
        child.kill('SIGKILL');
      } else chunks.push(c);
    });
    child.stderr?.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(chunks), stderr, tooLarge });
    });
    if (input && child.stdin) {
      child.stdin.on('error', () => {});
      child.stdin.end(input);
    }
  });
}

// mtools repeats "Could not get geometry of device" (without a newline) on loop devices; drop it.
function lastLine(s: string): string {
  const clean = s.replace(/Could not get geometry of device \([^)]*\)/g, '').trim();
  return clean.split('\n').at(-1)?.trim() ?? '';
}
