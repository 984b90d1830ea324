// When this machine booted, from the kernel's `btime` in /proc/stat (whole seconds since the epoch).

import { readFileSync } from 'node:fs';

export function bootTimeMs(): number {
  const match = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
  if (!match) throw new Error('/proc/stat has no btime line: cannot tell when this machine booted');
  // Rounded up: a knock made in the boot's first second is refused rather than risk an older one.
  return (Number(match[1]) + 1) * 1000;
}
