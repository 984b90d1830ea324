// One gateway per state directory. Two would both open pinholes and interleave writes to the same
// replay journal, so the second refuses to start and names the first. The lock is a pid file made
// with O_EXCL; one left behind by a killed gateway is taken over once its process is gone.

import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const LOCK_FILE = 'gateway.pid';

export class InstanceLock {
  private readonly path: string;

  private constructor(path: string) {
    this.path = path;
  }

  static acquire(stateDir: string): InstanceLock {
    const path = join(stateDir, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o644);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        return new InstanceLock(path);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const holder = Number.parseInt(readIfPresent(path), 10);
      if (Number.isInteger(holder) && holder !== process.pid && isGateway(holder))
        throw new Error(
          `${stateDir}: another gateway (pid ${holder}) is running with this state directory; stop it first, or give this one its own stateDir`,
        );
      unlinkSync(path); // left by a gateway that was killed: take over
    }
    throw new Error(`${path}: could not take the instance lock`);
  }

  release(): void {
    try {
      if (Number.parseInt(readIfPresent(this.path), 10) === process.pid) unlinkSync(this.path);
    } catch {
      // Gone already: nothing to release.
    }
  }
}

function readIfPresent(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/** Whether `pid` is alive and is an umbra-gateway (pids are reused by unrelated processes). */
function isGateway(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('umbra-gateway');
  } catch {
    return false;
  }
}
