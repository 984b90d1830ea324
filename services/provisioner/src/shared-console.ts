// The console shared with the login getty (hal/README.md, "Sharing the console"): @umbra/hal's
// SharedConsole demultiplexes the port by the protocol's frame magic; this turns its provisioning side
// into a Duplex for the ProvisioningSession, and ends the console session once the box has answered
// and nothing is being applied, so the getty gets the port back (its held output is written then).

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { SharedConsole } from '@umbra/hal';
import { FRAME_MAGIC } from '@umbra/protocol';

export interface ConsoleLink {
  /** What the ProvisioningSession reads and writes. */
  readonly stream: Duplex;
  readonly console: SharedConsole;
  /** Hands the port back to the getty (a no-op outside a session). */
  endSession(): void;
  close(): void;
}

/**
 * The kernel prints its messages straight to the console, past the demultiplexer; a session lowers
 * the console log level (what `dmesg -n 1` does, through /proc/sys/kernel/printk) and puts it back
 * when it ends. The frames' CRC and retransmission cover what slips through anyway.
 */
export class KernelConsoleLevel {
  readonly #path: string;
  #saved: string | null = null;

  constructor(procRoot = '/') {
    this.#path = join(procRoot, 'proc/sys/kernel/printk');
  }

  quiet(): void {
    if (this.#saved !== null) return;
    try {
      const current = readFileSync(this.#path, 'utf8').trim().split(/\s+/)[0];
      if (!current) return;
      writeFileSync(this.#path, '1\n');
      this.#saved = current;
    } catch {
      // No /proc here, or not allowed: the frames' checks still hold.
    }
  }

  restore(): void {
    if (this.#saved === null) return;
    try {
      writeFileSync(this.#path, `${this.#saved}\n`);
    } catch {}
    this.#saved = null;
  }
}

export function shareConsole(
  port: Duplex,
  terminal: Duplex,
  kernel: KernelConsoleLevel = new KernelConsoleLevel(),
): ConsoleLink {
  let sharedConsole: SharedConsole | undefined;
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      // The box only ever answers, inside a session; a late ack after the session ended is dropped
      // (the technician's retransmission starts a new session and gets it again).
      if (sharedConsole?.mode !== 'provisioning') return callback();
      sharedConsole.send(chunk).then(
        () => callback(),
        () => callback(),
      );
    },
  });
  sharedConsole = new SharedConsole({
    port,
    terminal,
    preamble: FRAME_MAGIC,
    onProvisioning: (bytes) => {
      kernel.quiet();
      stream.push(Buffer.from(bytes));
    },
  });
  const shared = sharedConsole;
  return {
    stream,
    console: shared,
    endSession: () => {
      if (shared.mode === 'provisioning') shared.endSession();
      kernel.restore();
    },
    close: () => {
      kernel.restore();
      shared.close();
      stream.push(null);
      stream.destroy();
    },
  };
}
