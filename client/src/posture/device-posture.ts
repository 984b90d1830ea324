// The posture this device reports, read the way its platform tells it: files and GNOME's
// settings on Linux, the system's own tools on macOS and Windows. Any other platform reports
// only its name as `os` (e.g. freebsd), so a policy that requires more refuses it rather than
// trusting a guess. Whatever is read is trimmed to what a knock can carry.

import { release as osRelease } from 'node:os';
import { fitForKnock, type Posture } from './claims.ts';
import { type CommandRunner, execRunner } from './command.ts';
import { darwinPosture } from './darwin.ts';
import { linuxPosture } from './linux.ts';
import { linuxScreenLock } from './linux-screen-lock.ts';
import { windowsPosture } from './windows.ts';

export interface DevicePostureOptions {
  /** process.platform unless a test pretends to be another. */
  platform?: NodeJS.Platform;
  runner?: CommandRunner;
  /** Linux: where /etc, /proc and /sys are. */
  root?: string;
  env?: Record<string, string | undefined>;
  /** os.release() unless a test sets it. */
  release?: string;
}

/** Never rejects: a reading that fails leaves its claim out. */
export async function devicePosture(options: DevicePostureOptions = {}): Promise<Posture> {
  const platform = options.platform ?? process.platform;
  const runner = options.runner ?? execRunner();
  const env = options.env ?? process.env;
  const release = options.release ?? osRelease();
  switch (platform) {
    case 'linux': {
      const posture = linuxPosture({ root: options.root });
      const screenLock = await linuxScreenLock({ runner, env });
      if (screenLock) posture.screen_lock = screenLock;
      return fitForKnock(posture);
    }
    case 'darwin':
      return fitForKnock(await darwinPosture({ runner, release }));
    case 'win32':
      return fitForKnock(await windowsPosture({ runner, release, env }));
    default:
      return fitForKnock({ os: platform });
  }
}
