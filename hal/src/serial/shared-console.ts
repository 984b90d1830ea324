// The console port shared by the getty and the provisioner (see hal/README.md, "Sharing the console").
// Port input goes through a ConsoleMux; getty output goes to the port only while no provisioning
// session is active, and is held (bounded) during one, so neither side's bytes land in the other's.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Duplex } from 'node:stream';
import type { Clock } from '../clock.ts';
import { type ConsoleMode, ConsoleMux } from './console-mux.ts';

export interface SharedConsoleOptions {
  /** The console port (e.g. from openSerial). */
  readonly port: Duplex;
  /** The getty's side: the master of the pty the getty runs on (e.g. from openGettyPty). */
  readonly terminal: Duplex;
  readonly preamble: Uint8Array;
  /** A session's bytes from the port, the preamble first. */
  readonly onProvisioning: (bytes: Uint8Array) => void;
  readonly onSessionStart?: () => void;
  /** Getty output held during a session beyond this is dropped, oldest first (default 64 KiB). */
  readonly maxHeldOutput?: number;
  readonly holdMs?: number;
  readonly clock?: Clock;
}

export class SharedConsole {
  readonly #port: Duplex;
  readonly #terminal: Duplex;
  readonly #mux: ConsoleMux;
  readonly #maxHeld: number;
  #heldOutput: Buffer[] = [];
  #heldBytes = 0;
  #dropped = 0;
  readonly #fromPort = (chunk: Buffer) => this.#mux.push(chunk);
  readonly #fromTerminal = (chunk: Buffer) => this.#gettyOutput(chunk);

  constructor(options: SharedConsoleOptions) {
    this.#port = options.port;
    this.#terminal = options.terminal;
    this.#maxHeld = options.maxHeldOutput ?? 64 * 1024;
    this.#mux = new ConsoleMux({
      preamble: options.preamble,
      holdMs: options.holdMs,
      clock: options.clock,
      toTerminal: (bytes) => this.#terminal.write(bytes),
      toProvisioner: options.onProvisioning,
      onSessionStart: options.onSessionStart,
    });
    this.#port.on('data', this.#fromPort);
    this.#terminal.on('data', this.#fromTerminal);
  }

  get mode(): ConsoleMode {
    return this.#mux.mode;
  }

  /** Getty output bytes dropped because a session held them past maxHeldOutput. */
  get droppedOutputBytes(): number {
    return this.#dropped;
  }

  /** Writes the provisioner's bytes to the port; only during a session (the box never speaks first). */
  send(bytes: Uint8Array): Promise<void> {
    if (this.#mux.mode !== 'provisioning') {
      return Promise.reject(
        new Error('shared console: no provisioning session is active; the box only answers'),
      );
    }
    return write(this.#port, bytes);
  }

  /** Ends the session: held getty output is written, and the port's bytes are the getty's again. */
  endSession(leftover?: Uint8Array): void {
    this.#mux.endSession(leftover);
    if (this.#mux.mode !== 'terminal') return;
    const held = Buffer.concat(this.#heldOutput);
    this.#heldOutput = [];
    this.#heldBytes = 0;
    if (held.length > 0) this.#port.write(held);
  }

  /** Detaches from both streams (does not close them). */
  close(): void {
    this.#port.off('data', this.#fromPort);
    this.#terminal.off('data', this.#fromTerminal);
    this.#mux.close();
  }

  #gettyOutput(chunk: Buffer): void {
    if (this.#mux.mode === 'terminal') {
      this.#port.write(chunk);
      return;
    }
    this.#heldOutput.push(chunk);
    this.#heldBytes += chunk.length;
    while (this.#heldBytes > this.#maxHeld) {
      const first = this.#heldOutput[0]!;
      const over = this.#heldBytes - this.#maxHeld;
      if (first.length <= over) {
        this.#heldOutput.shift();
        this.#heldBytes -= first.length;
        this.#dropped += first.length;
      } else {
        this.#heldOutput[0] = first.subarray(over);
        this.#heldBytes -= over;
        this.#dropped += over;
      }
    }
  }
}

function write(stream: Duplex, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => stream.write(bytes, (err) => (err ? reject(err) : resolve())));
}

export interface GettyPty {
  /** The pty master's side, to pass as SharedConsole's terminal. */
  readonly terminal: Duplex;
  /** The slave's path (the symlink asked for), for the getty to open: e.g. /dev/ttyUMBRA0. */
  readonly path: string;
  readonly pid: number;
  close(): Promise<void>;
}

/**
 * Makes the pty the getty runs on: socat joins its stdio to a new pty and links the pty's slave at
 * `link` (inittab: `ttyUMBRA0::respawn:/sbin/getty -L ttyUMBRA0 115200 vt100`).
 */
export async function openGettyPty(link: string, socat = 'socat'): Promise<GettyPty> {
  const child = spawn(socat, ['-d', '-d', 'STDIO', `PTY,link=${link},rawer`], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  const ready = new Promise<void>((resolve, reject) => {
    child.stderr.on('data', (text: string) => {
      stderr += text;
      if (/PTY is \S+/.test(stderr) && /starting data transfer loop/.test(stderr)) resolve();
    });
    child.once('error', (err) =>
      reject(new Error(`getty pty: starting ${socat} failed: ${err.message}; install socat`, { cause: err })),
    );
    child.once('exit', (code) =>
      reject(new Error(`getty pty: socat exited (${code}) before the pty was up: ${stderr.trim()}`)),
    );
  });
  await ready;
  const pid = child.pid!;
  // A Duplex of our own over the pipes (Duplex.from's composite turns a close into an error).
  const terminal = new Duplex({
    read() {
      child.stdout.resume();
    },
    write(chunk, _encoding, callback) {
      child.stdin.write(chunk, callback);
    },
    final(callback) {
      child.stdin.end(callback);
    },
    destroy(err, callback) {
      child.stdout.destroy();
      child.stdin.destroy();
      callback(err);
    },
  });
  child.stdout.on('data', (chunk: Buffer) => {
    if (!terminal.push(chunk)) child.stdout.pause();
  });
  child.stdout.on('end', () => terminal.push(null));
  // socat gone: the write's callback has the error; the pipe's own event must not crash the process.
  child.stdin.on('error', () => {});
  return {
    terminal,
    path: link,
    pid,
    async close() {
      // First, so the pipes closing under it are not a premature close.
      terminal.destroy();
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      process.kill(pid, 'SIGTERM');
      await exited;
    },
  };
}
