// The few system tools the USB watcher needs (util-linux's blkid, mount, umount, blockdev),
// each run without a shell, with a time limit, and failing with the tool's own message.
import { execFile } from 'node:child_process';
import { readFile, realpath } from 'node:fs/promises';
import { basename } from 'node:path';

const TOOL_TIMEOUT_MS = 30_000;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a tool; resolves with its exit code (a non-zero code is not an error here). */
export function run(file: string, args: readonly string[], timeoutMs = TOOL_TIMEOUT_MS): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: 1 << 20,
        env: { ...process.env, LC_ALL: 'C', MTOOLS_SKIP_CHECK: '1' },
      },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          // Not an exit status: the tool is missing, or it was killed by the time limit.
          const why = err.killed ? `timed out after ${timeoutMs} ms` : err.message;
          reject(new Error(`${file} ${args.join(' ')}: ${why}`));
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
  });
}

/** Runs a tool that must succeed. */
export async function runOk(file: string, args: readonly string[]): Promise<string> {
  const r = await run(file, args);
  if (r.code !== 0) {
    // mtools repeats "Could not get geometry of device" on loop devices: noise, not the error.
    const stderr = r.stderr.replace(/Could not get geometry of device \([^)]*\)/g, '').trim();
    const msg = (stderr || r.stdout.trim() || `exit status ${r.code}`).split('\n').join('; ');
    throw new Error(`${file} ${args.join(' ')}: ${msg}`);
  }
  return r.stdout;
}

export interface Probe {
  /** The filesystem type as blkid names it (vfat, ext4, exfat, ...); undefined when none is found. */
  type?: string;
  label?: string;
  uuid?: string;
  /** A partition table on a whole disk (dos, gpt), when that is what blkid found instead. */
  ptType?: string;
}

/** `blkid -p -o export DEV`: a low-level probe of the device itself, bypassing blkid's cache. */
export async function probe(device: string): Promise<Probe> {
  const r = await run('blkid', ['-p', '-o', 'export', device]);
  // blkid exits 2 when it recognises nothing: a blank or unformatted device.
  if (r.code === 2) return {};
  if (r.code !== 0) throw new Error(`blkid ${device}: ${r.stderr.trim() || `exit status ${r.code}`}`);
  const tags = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) tags.set(line.slice(0, eq), unescapeExport(line.slice(eq + 1)));
  }
  return {
    type: tags.get('TYPE'),
    label: tags.get('LABEL'),
    uuid: tags.get('UUID'),
    ptType: tags.get('PTTYPE'),
  };
}

// `-o export` escapes shell-special characters with a backslash.
function unescapeExport(v: string): string {
  return v.replace(/\\(.)/g, '$1');
}

export async function mount(
  device: string,
  dir: string,
  type: string,
  options: readonly string[],
): Promise<void> {
  await runOk('mount', ['-t', type, '-o', options.join(','), device, dir]);
}

/** Unmounts; if the mount is busy it retries, then detaches it lazily so it never stays behind. */
export async function umount(dir: string): Promise<void> {
  let last = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await run('umount', [dir]);
    if (r.code === 0) return;
    last = r.stderr.trim();
    if (/not mounted|no mount point/i.test(last)) return;
    await new Promise((res) => setTimeout(res, 100 * (attempt + 1)));
  }
  const r = await run('umount', ['-l', dir]);
  if (r.code !== 0 && !/not mounted/i.test(r.stderr))
    throw new Error(`umount ${dir}: ${last}; ${r.stderr.trim()}`);
}

/** The kernel name of a block device (sdb1, loop3) from its /dev path, following symlinks. */
export async function kernelName(device: string): Promise<string> {
  return basename(await realpath(device));
}

/** Whether the block device is read-only: /sys/class/block/NAME/ro, else `blockdev --getro`. */
export async function isReadOnly(device: string): Promise<boolean> {
  try {
    const v = await readFile(`/sys/class/block/${await kernelName(device)}/ro`, 'utf8');
    return v.trim() === '1';
  } catch {
    return (await runOk('blockdev', ['--getro', device])).trim() === '1';
  }
}

/** The sysfs path of the device (through /sys/devices/...), to tell USB from internal storage. */
export async function sysfsPath(device: string): Promise<string | undefined> {
  try {
    return await realpath(`/sys/class/block/${await kernelName(device)}`);
  } catch {
    return undefined;
  }
}

/** Whether the device is mounted anywhere (by major:minor in /proc/self/mountinfo, or by source path). */
export async function isMounted(device: string, majorMinor: string | undefined): Promise<boolean> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const real = await realpath(device).catch(() => device);
  for (const line of info.split('\n')) {
    const fields = line.split(' ');
    if (majorMinor && fields[2] === majorMinor) return true;
    const dash = fields.indexOf('-');
    const source = dash >= 0 ? fields[dash + 2] : undefined;
    if (source && (source === device || source === real)) return true;
  }
  return false;
}

/** Linux's encoding of dev_t as major:minor. */
export function majorMinor(rdev: number): string {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & 0xfff00);
  return `${major}:${minor}`;
}
