// Which boot this is and when it began: the replay guard needs both to tell a restarted process
// (whose journal writes survived in the page cache) from a machine that lost power.

import { readFileSync } from 'node:fs';

/** When this machine booted, from the kernel's `btime` in /proc/stat (ms since the epoch). */
export function bootTimeMs(): number {
  const match = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
  if (!match) throw new Error('/proc/stat has no btime line: cannot tell when this machine booted');
  // Rounded up: btime has whole seconds.
  return (Number(match[1]) + 1) * 1000;
}

/** A random id the kernel draws at each boot. */
export function bootId(): string {
  return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
}
