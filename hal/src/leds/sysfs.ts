// The Linux LED class: each LED is a directory <root>/sys/class/leds/NAME holding brightness,
// max_brightness and trigger; choosing a trigger makes the kernel add that trigger's own attributes
// (timer: delay_on, delay_off; pattern: pattern, repeat), so they are written after the trigger.

import { constants } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  brightnessOf,
  checkSetting,
  type LedDriver,
  LedError,
  type LedSetting,
  triggerOf,
  unknownTriggerError,
} from './led.ts';

/** How attribute files are read and written; a test may put a kernel's rules in between. */
export interface SysfsFiles {
  read(path: string): Promise<string>;
  write(path: string, text: string): Promise<void>;
  list(dir: string): Promise<string[]>;
}

export const nodeSysfsFiles: SysfsFiles = {
  read: (path) => readFile(path, 'utf8'),
  // What `echo text > attr` does, without O_CREAT: a missing attribute is an error, as it is in sysfs.
  write: (path, text) => writeFile(path, text, { flag: constants.O_WRONLY | constants.O_TRUNC }),
  list: (dir) => readdir(dir),
};

export interface SysfsLedsOptions {
  /** The filesystem root the LED class is found under: "/" on a box, a temp dir in tests. */
  readonly root?: string;
  readonly files?: SysfsFiles;
}

/** The triggers in a `trigger` attribute: "none [timer] heartbeat" (the current one in brackets). */
export function parseTriggers(text: string): { available: string[]; current: string | undefined } {
  const available: string[] = [];
  let current: string | undefined;
  for (const word of text.trim().split(/\s+/)) {
    if (word === '') continue;
    const m = /^\[(.+)\]$/.exec(word);
    if (m?.[1]) {
      current = m[1];
      available.push(m[1]);
    } else available.push(word);
  }
  return { available, current };
}

export class SysfsLeds implements LedDriver {
  readonly description: string;
  readonly #dir: string;
  readonly #files: SysfsFiles;
  readonly #maxBrightness = new Map<string, number>();

  constructor(options: SysfsLedsOptions = {}) {
    this.#dir = join(options.root ?? '/', 'sys/class/leds');
    this.#files = options.files ?? nodeSysfsFiles;
    this.description = `sysfs:${this.#dir}`;
  }

  async list(): Promise<string[]> {
    try {
      return (await this.#files.list(this.#dir)).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  async apply(name: string, setting: LedSetting): Promise<void> {
    checkSetting(name, setting);
    const max = await this.#max(name);
    const trigger = triggerOf(setting);
    await this.#writeTrigger(name, trigger);
    switch (setting.kind) {
      case 'steady':
        await this.#write(name, 'brightness', String(brightnessOf(setting.level, max)));
        return;
      case 'timer':
        await this.#write(name, 'delay_on', String(setting.onMs));
        await this.#write(name, 'delay_off', String(setting.offMs));
        return;
      case 'heartbeat':
        return;
      case 'pattern': {
        const tuples = setting.steps.map((s) => `${brightnessOf(s.level, max)} ${s.ms}`).join(' ');
        await this.#write(name, 'pattern', tuples);
        return;
      }
    }
  }

  async #max(name: string): Promise<number> {
    const known = this.#maxBrightness.get(name);
    if (known !== undefined) return known;
    if (name === '' || name.includes('/') || name === '.' || name === '..') {
      throw new LedError(name, 'an LED name is one directory name under /sys/class/leds');
    }
    let text: string;
    try {
      text = await this.#files.read(join(this.#dir, name, 'max_brightness'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const present = await this.list();
      throw new LedError(
        name,
        `there is no ${join(this.#dir, name)} (LEDs present: ${present.join(', ') || 'none'}); ` +
          'fix the LED name in the board file',
        { cause: err },
      );
    }
    const max = Number(text.trim());
    if (!Number.isInteger(max) || max < 1) {
      throw new LedError(name, `max_brightness "${text.trim()}" is not a positive integer`);
    }
    this.#maxBrightness.set(name, max);
    return max;
  }

  async #writeTrigger(name: string, trigger: string): Promise<void> {
    try {
      await this.#files.write(join(this.#dir, name, 'trigger'), trigger);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw this.#failed(name, 'trigger', err);
      let available: string[] = [];
      try {
        available = parseTriggers(await this.#files.read(join(this.#dir, name, 'trigger'))).available;
      } catch {
        // The refusal is the news; the list only helps.
      }
      throw unknownTriggerError(name, trigger, available, err);
    }
  }

  async #write(name: string, attribute: string, text: string): Promise<void> {
    try {
      await this.#files.write(join(this.#dir, name, attribute), text);
    } catch (err) {
      throw this.#failed(name, attribute, err);
    }
  }

  #failed(name: string, attribute: string, err: unknown): LedError {
    const path = join(this.#dir, name, attribute);
    const code = (err as NodeJS.ErrnoException).code;
    const fix =
      code === 'EACCES' || code === 'EPERM'
        ? '; the service needs write access to it (a udev rule or chown at boot)'
        : code === 'ENOENT'
          ? '; the trigger did not create it (is the trigger built into the kernel?)'
          : '';
    return new LedError(name, `writing ${path} failed: ${(err as Error).message}${fix}`, { cause: err });
  }
}
