// Whether a Linux desktop locks its screen by itself. Only GNOME (and desktops built on it, such
// as Ubuntu's) is asked: its settings say whether the screen saver locks (lock-enabled) and after
// how long idle the screen blanks (idle-delay, 0 = never, so it never locks unattended either).
// Other desktops keep this elsewhere, and a server has no screen to lock, so there the claim is
// left out; so it is when gsettings is missing or answers anything but the values it prints.

import type { Switch } from './claims.ts';
import { askTool, type CommandRunner } from './command.ts';

export interface LinuxScreenLockOptions {
  runner: CommandRunner;
  /** The desktop session's environment; XDG_CURRENT_DESKTOP names the desktop, e.g. ubuntu:GNOME. */
  env: Record<string, string | undefined>;
}

export async function linuxScreenLock(options: LinuxScreenLockOptions): Promise<Switch | undefined> {
  // GNOME's keys exist wherever its schemas are installed, but only govern a GNOME session.
  const desktops = (options.env.XDG_CURRENT_DESKTOP ?? '').split(':');
  if (!desktops.includes('GNOME')) return undefined;
  const [lockEnabled, idleDelay] = await Promise.all([
    gsettings(options.runner, 'org.gnome.desktop.screensaver', 'lock-enabled'),
    gsettings(options.runner, 'org.gnome.desktop.session', 'idle-delay'),
  ]);
  return gnomeScreenLock(lockEnabled, idleDelay);
}

/** Reads `gsettings get` answers: `true`/`false`, and `uint32 SECONDS` for the idle delay. */
export function gnomeScreenLock(
  lockEnabled: string | undefined,
  idleDelay: string | undefined,
): Switch | undefined {
  const enabled = lockEnabled?.trim();
  if (enabled === 'false') return 'off';
  if (enabled !== 'true') return undefined;
  const seconds = /^uint32 (\d+)$/.exec(idleDelay?.trim() ?? '')?.[1];
  if (seconds === undefined) return undefined;
  return Number(seconds) > 0 ? 'on' : 'off';
}

function gsettings(runner: CommandRunner, schema: string, key: string): Promise<string | undefined> {
  return askTool(runner, 'gsettings', ['get', schema, key]);
}
