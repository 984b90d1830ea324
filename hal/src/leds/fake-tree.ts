// A fake LED class in a directory, for tests of SysfsLeds and of whatever drives it through
// --sysfs-root. Regular files cannot refuse a write, so kernelLikeFiles() puts the one rule tests need
// in between: a `trigger` write names one of the listed triggers or fails with EINVAL.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { nodeSysfsFiles, parseTriggers, type SysfsFiles } from './sysfs.ts';

export interface FakeLed {
  readonly maxBrightness?: number;
  /** The triggers the fake kernel has; default none, timer, heartbeat, pattern, default-on. */
  readonly triggers?: readonly string[];
}

export const FAKE_DEFAULT_TRIGGERS = ['none', 'timer', 'heartbeat', 'pattern', 'default-on'] as const;

/** Makes <root>/sys/class/leds/NAME/{brightness,max_brightness,trigger,delay_on,delay_off,pattern,repeat}. */
export async function createFakeLedTree(
  root: string,
  leds: Readonly<Record<string, FakeLed>>,
): Promise<void> {
  for (const [name, led] of Object.entries(leds)) {
    const dir = join(root, 'sys/class/leds', name);
    await mkdir(dir, { recursive: true });
    const triggers = led.triggers ?? FAKE_DEFAULT_TRIGGERS;
    const listed = triggers.map((t) => (t === 'none' ? '[none]' : t)).join(' ');
    const files: Record<string, string> = {
      brightness: '0\n',
      max_brightness: `${led.maxBrightness ?? 255}\n`,
      trigger: `${listed}\n`,
      delay_on: '500\n',
      delay_off: '500\n',
      pattern: '\n',
      repeat: '-1\n',
    };
    for (const [file, text] of Object.entries(files)) await writeFile(join(dir, file), text);
  }
}

/** SysfsFiles that refuse an unlisted trigger with EINVAL and keep `trigger` in the kernel's format. */
export function kernelLikeFiles(base: SysfsFiles = nodeSysfsFiles): SysfsFiles {
  return {
    read: base.read,
    list: base.list,
    async write(path, text) {
      if (basename(path) !== 'trigger') return base.write(path, text);
      const { available } = parseTriggers(await base.read(path));
      const wanted = text.trim();
      if (!available.includes(wanted)) {
        throw Object.assign(new Error(`EINVAL: invalid argument, write '${path}'`), {
          code: 'EINVAL',
          errno: -22,
          syscall: 'write',
          path,
        });
      }
      await base.write(path, `${available.map((t) => (t === wanted ? `[${t}]` : t)).join(' ')}\n`);
    },
  };
}

export interface FakeLedState {
  readonly trigger: string | undefined;
  readonly brightness: number;
  readonly delayOn: number;
  readonly delayOff: number;
  readonly pattern: string;
}

/** What was last written to one fake LED. */
export async function readFakeLed(root: string, name: string): Promise<FakeLedState> {
  const dir = join(root, 'sys/class/leds', name);
  const read = async (file: string) => (await readFile(join(dir, file), 'utf8')).trim();
  const triggers = parseTriggers(await read('trigger'));
  return {
    // A plain write leaves just the trigger's name; kernelLikeFiles leaves the list with it in brackets.
    trigger: triggers.current ?? (triggers.available.length === 1 ? triggers.available[0] : undefined),
    brightness: Number(await read('brightness')),
    delayOn: Number(await read('delay_on')),
    delayOff: Number(await read('delay_off')),
    pattern: await read('pattern'),
  };
}
