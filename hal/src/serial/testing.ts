// For tests of code that talks over a serial cable: a linked pair of ptys from socat
// (`@umbra/hal/testing`). Each pair's socat runs until closePtyPairs(), which a test file calls in
// its after() hook.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';

/** Whether socat is installed (tests of real ptys skip without it). */
export const haveSocat = spawnSync('socat', ['-V']).status === 0;

const pairs: ChildProcess[] = [];

/** A linked pair of ptys, as a serial cable between a laptop and a box: their two paths. */
export async function ptyPair(): Promise<[string, string]> {
  const child = spawn('socat', ['-d', '-d', 'pty,raw,echo=0', 'pty,raw,echo=0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  pairs.push(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      reject(new Error(`socat gave no ptys in 5 s: ${stderr}`));
    }, 5_000);
    child.stderr.on('data', (text: string) => {
      stderr += text;
      const paths = [...stderr.matchAll(/PTY is (\S+)/g)].map((m) => m[1]!);
      if (paths.length === 2 && /starting data transfer loop/.test(stderr)) {
        clearTimeout(timer);
        resolve([paths[0]!, paths[1]!]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`socat exited ${code}: ${stderr}`));
    });
  });
}

/** Ends every pair's socat and waits for it to exit. */
export async function closePtyPairs(): Promise<void> {
  for (const child of pairs.splice(0)) {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      const exited = once(child, 'exit');
      process.kill(child.pid, 'SIGTERM');
      await exited;
    }
  }
}
