// The console port carries two conversations: a person at the login getty, and umbra-tech's
// provisioning protocol, whose every session starts with a magic preamble. The provisioner owns the
// port; the getty runs on a pty behind it. ConsoleMux reads the port's bytes: until a preamble
// appears they are the getty's; from the preamble on they are the provisioner's, until it ends the
// session. It knows nothing of frames: the preamble is a parameter (the protocol package defines it).

import { type Clock, systemClock, type Timer } from '../clock.ts';

export interface ConsoleMuxOptions {
  /** The bytes that open a provisioning session; 2 to 64 bytes no person types and no getty prints. */
  readonly preamble: Uint8Array;
  /** Bytes for the getty. */
  readonly toTerminal: (bytes: Uint8Array) => void;
  /** A session's bytes, the preamble first. */
  readonly toProvisioner: (bytes: Uint8Array) => void;
  readonly onSessionStart?: () => void;
  /**
   * How long bytes that could be the start of a preamble wait for the rest before going to the
   * getty anyway; long enough for one preamble at the slowest baud rate, short enough to go unnoticed.
   */
  readonly holdMs?: number;
  readonly clock?: Clock;
}

export type ConsoleMode = 'terminal' | 'provisioning';

export class ConsoleMux {
  readonly #preamble: Buffer;
  readonly #options: ConsoleMuxOptions;
  readonly #clock: Clock;
  readonly #holdMs: number;
  #mode: ConsoleMode = 'terminal';
  #held: Buffer = Buffer.alloc(0);
  #holdTimer: Timer | undefined;

  constructor(options: ConsoleMuxOptions) {
    const n = options.preamble.length;
    if (n < 2 || n > 64) {
      throw new RangeError(`console mux: the preamble is ${n} bytes; it must be 2 to 64 bytes`);
    }
    if (new Set(options.preamble).size === 1) {
      throw new RangeError(
        'console mux: a preamble of one repeated byte could be typed or printed by accident',
      );
    }
    const holdMs = options.holdMs ?? 100;
    if (!Number.isInteger(holdMs) || holdMs < 1 || holdMs > 10_000) {
      throw new RangeError(`console mux: holdMs ${holdMs} must be whole milliseconds, 1..10000`);
    }
    this.#preamble = Buffer.from(options.preamble);
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#holdMs = holdMs;
  }

  get mode(): ConsoleMode {
    return this.#mode;
  }

  /** Bytes read from the console port. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.#mode === 'provisioning') {
      this.#options.toProvisioner(chunk);
      return;
    }
    const data = this.#held.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#held, chunk]);
    this.#held = Buffer.alloc(0);
    this.#holdTimer?.cancel();
    this.#holdTimer = undefined;

    const at = data.indexOf(this.#preamble);
    if (at >= 0) {
      if (at > 0) this.#options.toTerminal(data.subarray(0, at));
      this.#mode = 'provisioning';
      this.#options.onSessionStart?.();
      this.#options.toProvisioner(data.subarray(at));
      return;
    }
    const keep = this.#partialPreambleAtEnd(data);
    if (data.length > keep) this.#options.toTerminal(data.subarray(0, data.length - keep));
    if (keep > 0) {
      this.#held = Buffer.from(data.subarray(data.length - keep));
      this.#holdTimer = this.#clock.after(this.#holdMs, () => this.#releaseHeld());
    }
  }

  /**
   * The provisioner is done: the port's bytes are the getty's again. `leftover` is what it read past
   * the end of its last frame; it is looked at again (it may be a person typing, or the next session).
   */
  endSession(leftover?: Uint8Array): void {
    this.#mode = 'terminal';
    if (leftover && leftover.length > 0) this.push(leftover);
  }

  /** Stops the hold timer, giving held bytes to the getty. */
  close(): void {
    this.#releaseHeld();
  }

  /** The length of the longest end of `data` that is a proper start of the preamble. */
  #partialPreambleAtEnd(data: Buffer): number {
    const max = Math.min(this.#preamble.length - 1, data.length);
    for (let k = max; k > 0; k--) {
      if (data.subarray(data.length - k).equals(this.#preamble.subarray(0, k))) return k;
    }
    return 0;
  }

  #releaseHeld(): void {
    this.#holdTimer?.cancel();
    this.#holdTimer = undefined;
    if (this.#held.length === 0) return;
    const held = this.#held;
    this.#held = Buffer.alloc(0);
    this.#options.toTerminal(held);
  }
}
