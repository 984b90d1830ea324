// Finds a site bundle on a USB stick when the stick is inserted.
//
// It watches a directory of links to block devices (/dev/disk/by-uuid, as udev — or mdev with the
// same rules — creates them) with inotify, and scans it once at start. A new entry is a stick: its
// filesystem is probed with blkid, it is mounted read-only, the single *.umbra-bundle file at its
// top level is read, and it is unmounted again before the bundle is handed on. The listener gets a
// writeReport() that remounts the stick read-write just long enough to leave a report file on it.
import { type FSWatcher, watch } from 'node:fs';
import { lstat, mkdir, mkdtemp, readdir, realpath, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_BUNDLE_BYTES, mountedFiles, mtoolsFiles, type StickFiles, TooLargeError } from './files.ts';
import * as sys from './system.ts';

/** The filesystems a provisioning stick may carry, as blkid names them. */
export const SUPPORTED_FILESYSTEMS: readonly string[] = ['vfat', 'ext4'];
export { MAX_BUNDLE_BYTES };

export type UsbLogLevel = 'debug' | 'info' | 'warn' | 'error';
export type UsbLogger = (level: UsbLogLevel, message: string) => void;

export type UsbStickErrorCode =
  | 'unsupported-filesystem'
  | 'no-bundle'
  | 'several-bundles'
  | 'bundle-too-large'
  | 'mount-failed'
  | 'read-failed'
  | 'stick-changed';

/** What is wrong with a stick, in words for the technician's screen. */
export class UsbStickError extends Error {
  override name = 'UsbStickError';
  readonly code: UsbStickErrorCode;
  /** The stick's label, else its device path. */
  readonly source: string;
  constructor(code: UsbStickErrorCode, source: string, message: string) {
    super(message);
    this.code = code;
    this.source = source;
  }
}

export interface UsbBundle {
  /** The bundle file's bytes, exactly as on the stick (not verified here). */
  bundle: Uint8Array;
  /** The stick's filesystem label, else its device path. */
  source: string;
  /** The device the stick was read from (/dev/sdb1, /dev/loop0). */
  device: string;
  /** The bundle's file name on the stick. */
  fileName: string;
  /**
   * Writes `umbra-report-<time>.txt` to the stick's top level (remount read-write, write, fsync,
   * rename, unmount). On a read-only stick it writes nothing and logs that the report stays in the log.
   * Rejects if the stick is gone or was swapped for another.
   */
  writeReport(text: string): Promise<void>;
}

export interface DeviceCandidate {
  /** The block device node (/dev/sdb1). */
  device: string;
  /** Its kernel name (sdb1). */
  name: string;
  /** Its path under /sys/devices, when known. */
  sysfsPath?: string;
}

export interface UsbBundleWatcherOptions {
  /** The directory of links to block devices to watch. Default /dev/disk/by-uuid. */
  watchDir?: string;
  /** Where fresh mount points are made (created if missing). Default /run/umbra/usb. */
  mountRoot?: string;
  /** Glob patterns (`*`, `?`) for bundle files at the stick's top level, matched case-insensitively. */
  bundleNames?: readonly string[];
  /** Gets each bundle found. Until its promise settles, the watcher handles no other stick. */
  onBundle: (bundle: UsbBundle) => void | Promise<void>;
  /** Gets what is wrong with a stick (no bundle, several, unsupported filesystem, ...). */
  onError?: (err: UsbStickError) => void;
  log?: UsbLogger;
  /**
   * Which block devices may be provisioning sticks. Default: devices on a USB bus, and loop devices
   * (an image attached with losetup). Devices already mounted are never touched.
   */
  acceptDevice?: (candidate: DeviceCandidate) => boolean | Promise<boolean>;
  /**
   * How FAT sticks are reached: 'mount' (the kernel's vfat driver), 'mtools' (mdir/mcopy/mren on the
   * device, no mount), or 'auto' (mount, and mtools if the kernel has no vfat driver). Default 'auto'.
   */
  fatAccess?: 'auto' | 'mount' | 'mtools';
  /** A rescan of watchDir every so often, in case an inotify event was missed; 0 turns it off. Default 5000. */
  rescanMs?: number;
}

export function defaultAcceptDevice(c: DeviceCandidate): boolean {
  return c.name.startsWith('loop') || (c.sysfsPath?.includes('/usb') ?? false);
}

export class UsbBundleWatcher {
  readonly watchDir: string;
  readonly mountRoot: string;
  readonly bundleNames: readonly string[];
  private readonly patterns: RegExp[];
  private readonly opts: UsbBundleWatcherOptions;
  private readonly log: UsbLogger;
  private fatAccess: 'auto' | 'mount' | 'mtools';
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  /** Entries of watchDir already handled, by name, with the device they pointed to. */
  private readonly seen = new Map<string, string>();
  /** Devices waiting for their turn, and the one being handled. */
  private readonly queue: { device: string; entry: string }[] = [];
  private busyDevice: string | undefined;
  private draining: Promise<void> = Promise.resolve();
  /** Serialises every mount: a stick is mounted at most once at a time. */
  private mountLock: Promise<unknown> = Promise.resolve();
  /** Mount points currently mounted, for stop() to undo whatever is left. */
  private readonly mounted = new Set<string>();

  constructor(options: UsbBundleWatcherOptions) {
    this.opts = options;
    this.watchDir = options.watchDir ?? '/dev/disk/by-uuid';
    this.mountRoot = options.mountRoot ?? '/run/umbra/usb';
    this.bundleNames = options.bundleNames ?? ['*.umbra-bundle'];
    this.patterns = this.bundleNames.map(globToRegExp);
    this.log = options.log ?? (() => {});
    this.fatAccess = options.fatAccess ?? 'auto';
  }

  /** Starts watching and scans what is already there. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    await mkdir(this.mountRoot, { recursive: true, mode: 0o700 });
    this.ensureWatch();
    const every = this.opts.rescanMs ?? 5000;
    if (every > 0) {
      this.timer = setInterval(() => {
        this.ensureWatch();
        void this.scan();
      }, every);
      this.timer.unref();
    }
    await this.scan();
  }

  /** Stops watching; waits for the stick being handled to be unmounted, and unmounts anything left. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.queue.length = 0;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.watcher?.close();
    this.watcher = undefined;
    await this.mountLock.catch(() => {});
    for (const dir of this.mounted) {
      this.log('warn', `usb: unmounting ${dir} left at stop`);
      await sys.umount(dir).catch((err) => this.log('error', `usb: ${errText(err)}`));
      await rmdir(dir).catch(() => {});
      this.mounted.delete(dir);
    }
  }

  /** Settles when every stick seen so far has been handled (for tests and orderly shutdown). */
  async idle(): Promise<void> {
    let before: Promise<void>;
    do {
      before = this.draining;
      await before;
    } while (before !== this.draining);
    await this.mountLock.catch(() => {});
  }

  private ensureWatch(): void {
    if (this.watcher || !this.running) return;
    try {
      const w = watch(this.watchDir, { persistent: false }, (_event, name) => {
        // udev makes a link under a temporary dot-name and renames it into place.
        if (name && !name.startsWith('.')) void this.consider(name.toString());
        else if (!name) void this.scan();
      });
      w.on('error', (err) => {
        // The directory went away (udev removes by-uuid with its last link); watch it again when it is back.
        this.log('debug', `usb: watch on ${this.watchDir} ended: ${errText(err)}`);
        w.close();
        if (this.watcher === w) this.watcher = undefined;
      });
      this.watcher = w;
      this.log('debug', `usb: watching ${this.watchDir}`);
    } catch (err) {
      this.log('debug', `usb: cannot watch ${this.watchDir} yet: ${errText(err)}`);
    }
  }

  private async scan(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.watchDir);
    } catch {
      names = [];
    }
    for (const gone of [...this.seen.keys()].filter((n) => !names.includes(n))) this.seen.delete(gone);
    for (const name of names) if (!name.startsWith('.')) await this.consider(name);
  }

  /** An entry of watchDir appeared, changed or went away. */
  private async consider(entry: string): Promise<void> {
    if (!this.running) return;
    const path = join(this.watchDir, entry);
    let device: string;
    try {
      await lstat(path);
      device = await realpath(path);
      if (!(await stat(device)).isBlockDevice()) {
        this.log('debug', `usb: ${path} is not a block device; ignored`);
        return;
      }
    } catch {
      // Removed (the stick was pulled): forget it, so that inserting it again is noticed.
      if (this.seen.delete(entry)) this.log('debug', `usb: ${path} removed`);
      return;
    }
    if (this.seen.get(entry) === device) return;
    if (this.busyDevice === device || this.queue.some((q) => q.device === device)) {
      this.log('debug', `usb: ${device} seen again while it is being handled; ignored`);
      return;
    }
    this.seen.set(entry, device);
    this.queue.push({ device, entry });
    this.draining = this.draining.then(() => this.drain());
  }

  private async drain(): Promise<void> {
    for (let next = this.queue.shift(); next && this.running; next = this.queue.shift()) {
      this.busyDevice = next.device;
      try {
        await this.handle(next.device);
      } catch (err) {
        this.log('error', `usb: ${next.device}: ${errText(err)}`);
      } finally {
        this.busyDevice = undefined;
      }
    }
  }

  private async handle(device: string): Promise<void> {
    const st = await stat(device);
    const name = await sys.kernelName(device);
    const candidate: DeviceCandidate = { device, name, sysfsPath: await sys.sysfsPath(device) };
    if (!(await (this.opts.acceptDevice ?? defaultAcceptDevice)(candidate))) {
      this.log('debug', `usb: ${device} is not a USB or loop device; ignored`);
      return;
    }
    if (await sys.isMounted(device, sys.majorMinor(st.rdev))) {
      this.log('debug', `usb: ${device} is already mounted; not a provisioning stick`);
      return;
    }
    const found = await this.readStick(device).catch((err: unknown) => {
      const e =
        err instanceof UsbStickError
          ? err
          : new UsbStickError('read-failed', device, `${device}: ${errText(err)}`);
      this.log('error', `usb: ${e.message}`);
      this.opts.onError?.(e);
      return undefined;
    });
    if (!found) return;
    this.log(
      'info',
      `usb: bundle ${found.fileName} (${found.bundle.length} bytes) read from the stick ${found.source}`,
    );
    await this.opts.onBundle({
      bundle: found.bundle,
      source: found.source,
      device,
      fileName: found.fileName,
      writeReport: (text) => this.writeReport(device, found.uuid, found.type, found.source, text),
    });
  }

  private async readStick(
    device: string,
  ): Promise<{ bundle: Uint8Array; fileName: string; source: string; type: string; uuid?: string }> {
    const p = await sys.probe(device);
    const source = p.label?.trim() || device;
    if (!p.type) {
      const what = p.ptType ? `a ${p.ptType} partition table but no filesystem` : 'no filesystem';
      throw new UsbStickError(
        'unsupported-filesystem',
        source,
        `the stick ${source} has ${what} on ${device}; format it FAT32 (vfat) or ext4 and copy the bundle onto it`,
      );
    }
    if (!SUPPORTED_FILESYSTEMS.includes(p.type)) {
      throw new UsbStickError(
        'unsupported-filesystem',
        source,
        `the stick ${source} has a ${p.type} filesystem; only FAT (vfat) and ext4 are supported`,
      );
    }
    const type = p.type;
    const read = await this.onStick(device, type, 'ro', source, async (files) => {
      // Hidden files are not candidates: macOS leaves ._NAME companions of every file it copies to FAT.
      const matches = (await files.list()).filter(
        (e) => !e.name.startsWith('.') && this.patterns.some((re) => re.test(e.name)),
      );
      const wanted = this.bundleNames.join(' or ');
      if (matches.length === 0) {
        throw new UsbStickError('no-bundle', source, `no ${wanted} file on the stick ${source}`);
      }
      if (matches.length > 1) {
        const names = matches.map((m) => m.name).sort();
        throw new UsbStickError(
          'several-bundles',
          source,
          `${matches.length} bundle files on the stick ${source} (${names.join(', ')}); leave exactly one`,
        );
      }
      const { name: fileName, isFile } = matches[0]!;
      if (!isFile)
        throw new UsbStickError('read-failed', source, `${fileName} on the stick ${source} is not a file`);
      try {
        return { fileName, bundle: await files.read(fileName) };
      } catch (err) {
        if (err instanceof TooLargeError) {
          throw new UsbStickError(
            'bundle-too-large',
            source,
            `${fileName} on the stick ${source} is larger than ${MAX_BUNDLE_BYTES} bytes, the most a bundle may be`,
          );
        }
        throw new UsbStickError(
          'read-failed',
          source,
          `cannot read ${fileName} on the stick ${source}: ${errText(err)}`,
        );
      }
    });
    return { ...read, source, type, uuid: p.uuid };
  }

  private async writeReport(
    device: string,
    uuid: string | undefined,
    type: string,
    source: string,
    text: string,
  ): Promise<void> {
    if (!this.running) throw new Error('usb: the watcher is stopped; no report written');
    // The stick may have been pulled and another put in since the bundle was read.
    const now = await sys.probe(device).catch(() => undefined);
    if (!now?.type || now.uuid !== uuid) {
      throw new UsbStickError(
        'stick-changed',
        source,
        `the stick ${source} was removed; the report stays in the log`,
      );
    }
    if (await sys.isReadOnly(device)) {
      this.log('warn', `usb: the stick ${source} is read-only; the report stays in the log`);
      return;
    }
    const fileName = `umbra-report-${reportTime(new Date())}.txt`;
    await this.onStick(device, type, 'rw', source, (files) =>
      files.writeAtomic(fileName, new TextEncoder().encode(text)),
    );
    this.log('info', `usb: report ${fileName} written to the stick ${source}`);
  }

  /**
   * Runs fn on the stick's files, one stick operation at a time. The stick is mounted at a fresh mount
   * point and unmounted, and the mount point removed, on every path; a FAT stick on a kernel without a
   * vfat driver is reached through mtools instead (fatAccess).
   */
  private onStick<T>(
    device: string,
    type: string,
    mode: 'ro' | 'rw',
    source: string,
    fn: (files: StickFiles) => Promise<T>,
  ): Promise<T> {
    const op = this.mountLock.then(async () => {
      if (!this.running) throw new Error('usb: the watcher is stopped');
      if (type === 'vfat' && this.fatAccess === 'mtools') return fn(mtoolsFiles(device));
      // ext4's noload: a read-only mount must not replay the journal, which would write to the stick.
      const options = [
        mode,
        'nosuid',
        'nodev',
        'noexec',
        ...(mode === 'ro' && type === 'ext4' ? ['noload'] : []),
      ];
      const dir = await mkdtemp(join(this.mountRoot, 'stick-'));
      let mounted = false;
      try {
        try {
          await sys.mount(device, dir, type, options);
          mounted = true;
        } catch (err) {
          if (type === 'vfat' && this.fatAccess === 'auto' && /unknown filesystem type/i.test(errText(err))) {
            this.fatAccess = 'mtools';
            this.log(
              'info',
              'usb: this kernel cannot mount vfat; FAT sticks are read and written with mtools',
            );
          } else {
            throw new UsbStickError(
              'mount-failed',
              source,
              `cannot mount the stick ${source}: ${errText(err)}`,
            );
          }
        }
        if (!mounted) return await fn(mtoolsFiles(device));
        this.mounted.add(dir);
        try {
          return await fn(mountedFiles(dir));
        } finally {
          await sys.umount(dir);
          this.mounted.delete(dir);
        }
      } finally {
        await rmdir(dir).catch((err) => this.log('warn', `usb: cannot remove ${dir}: ${errText(err)}`));
      }
    });
    this.mountLock = op.catch(() => {});
    return op;
  }
}

/** 20261121T112523.042Z: sortable, and without the colons FAT does not allow in names. */
function reportTime(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '');
}

function globToRegExp(glob: string): RegExp {
  const body = glob
    .split('')
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.|+()[\]{}]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`, 'i');
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
