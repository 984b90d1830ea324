// The kernel watchdog device: any write is a keepalive; the character 'V' written just before close
// tells the driver the close is deliberate, and it stops the timer (unless the kernel was built with
// CONFIG_WATCHDOG_NOWAYOUT, which ignores it). A close without 'V' leaves the timer running: the box
// resets when it expires. The device's timeout is the driver's (a module option or the device tree);
// it is readable in /sys/class/watchdog/watchdogN/timeout.

import { constants } from 'node:fs';
import { type FileHandle, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface WatchdogDevice {
  keepalive(): Promise<void>;
  /** Closes so that the driver stops the timer: the clean-shutdown path. */
  magicClose(): Promise<void>;
  /** Closes leaving the timer running: the box resets when it expires. */
  close(): Promise<void>;
  readonly description: string;
}

export class WatchdogError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'WatchdogError';
  }
}

/** Any byte but 'V' feeds the watchdog; a NUL is what busybox's watchdog applet writes. */
const KEEPALIVE = Buffer.from([0]);
const MAGIC = Buffer.from('V');

export class LinuxWatchdog implements WatchdogDevice {
  readonly description: string;
  #file: FileHandle | undefined;

  private constructor(path: string, file: FileHandle) {
    this.description = path;
    this.#file = file;
  }

  /** Opens the device, which starts the timer. Never creates the path: a typo must not pass for a device. */
  static async open(path = '/dev/watchdog'): Promise<LinuxWatchdog> {
    try {
      return new LinuxWatchdog(path, await open(path, constants.O_WRONLY));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const fix =
        code === 'ENOENT'
          ? '; the kernel has no watchdog driver for this board (e.g. softdog, iTCO_wdt, bcm2835_wdt) or the path is wrong'
          : code === 'EBUSY'
            ? '; another process (a watchdog daemon, systemd) holds it open'
            : code === 'EACCES'
              ? '; the service needs write access to it'
              : '';
      throw new WatchdogError(`watchdog ${path}: open failed: ${(err as Error).message}${fix}`, {
        cause: err,
      });
    }
  }

  keepalive(): Promise<void> {
    return this.#write(KEEPALIVE, 'keepalive');
  }

  async magicClose(): Promise<void> {
    await this.#write(MAGIC, 'magic close');
    await this.close();
  }

  async close(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    await file?.close();
  }

  async #write(bytes: Buffer, what: string): Promise<void> {
    if (!this.#file) throw new WatchdogError(`watchdog ${this.description}: ${what} after close`);
    try {
      await this.#file.write(bytes);
    } catch (err) {
      throw new WatchdogError(`watchdog ${this.description}: ${what} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
}

/** A watchdog in memory: counts keepalives and says how it was closed. */
export class MemoryWatchdog implements WatchdogDevice {
  readonly description = 'memory';
  keepalives = 0;
  closed: 'open' | 'magic' | 'plain' = 'open';
  /** Set to make the next keepalive fail, as a device error would. */
  failNext: Error | undefined;

  async keepalive(): Promise<void> {
    if (this.closed !== 'open') throw new WatchdogError('watchdog memory: keepalive after close');
    if (this.failNext) {
      const err = this.failNext;
      this.failNext = undefined;
      throw err;
    }
    this.keepalives++;
  }

  async magicClose(): Promise<void> {
    if (this.closed === 'open') this.closed = 'magic';
  }

  async close(): Promise<void> {
    if (this.closed === 'open') this.closed = 'plain';
  }
}

/** The device's timeout in ms from <root>/sys/class/watchdog/NAME/timeout, or undefined if unreadable. */
export async function readWatchdogTimeoutMs(root = '/', name = 'watchdog0'): Promise<number | undefined> {
  try {
    const seconds = Number(
      (await readFile(join(root, 'sys/class/watchdog', name, 'timeout'), 'utf8')).trim(),
    );
    return Number.isInteger(seconds) && seconds > 0 ? seconds * 1000 : undefined;
  } catch {
    return undefined;
  }
}
