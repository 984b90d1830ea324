// The control channel to the gateway (ALPN umbra-control/1): while `umbra connect` runs it keeps
// one connection open and re-reports this device's posture on it, so a device that falls out of
// compliance loses its tunnels without knocking again. Frames are a 4-byte big-endian length and a
// CBOR map { posture: {...} } of at most 4 KiB (protocol/src/tunnel-control.ts); the gateway takes
// at most one per 5 s.

import type { TLSSocket } from 'node:tls';
import { encodeControlFrame } from '@umbra/protocol';
import type { Posture } from './posture/linux.ts';

export const POSTURE_INTERVAL_MS = 60_000;
const RECONNECT_MIN_MS = 1_000;
const RECONNECT_MAX_MS = 60_000;

/** The wait before reconnect attempt `failures` (1, 2, ...): doubling from 1 s, at most a minute. */
export function reconnectDelayMs(failures: number): number {
  return Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** Math.max(0, failures - 1));
}

export interface ControlChannelOptions {
  /** Opens a control connection (knocking first when needed). */
  dial(): Promise<TLSSocket>;
  posture(): Posture;
  intervalMs?: number;
  log(line: string): void;
}

export class ControlChannel {
  #options: ControlChannelOptions;
  #socket: TLSSocket | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #stopped = false;

  constructor(options: ControlChannelOptions) {
    this.#options = options;
  }

  start(): void {
    void this.#connect();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#socket?.destroy();
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    let socket: TLSSocket;
    try {
      socket = await this.#options.dial();
    } catch (error) {
      this.#retry(`control channel: ${(error as Error).message}`);
      return;
    }
    if (this.#stopped) {
      socket.destroy();
      return;
    }
    this.#socket = socket;
    const openedMs = Date.now();
    socket.on('error', () => {});
    socket.on('data', () => {}); // the gateway sends nothing; keep the stream flowing
    socket.once('close', () => {
      clearTimeout(this.#timer);
      this.#socket = undefined;
      // A channel that held for a while was fine: start the backoff over.
      if (Date.now() - openedMs > RECONNECT_MAX_MS) this.#failures = 0;
      this.#retry('control channel closed');
    });
    this.#report();
  }

  #report(): void {
    const socket = this.#socket;
    if (socket === undefined || this.#stopped) return;
    try {
      socket.write(encodeControlFrame({ posture: this.#options.posture() }));
    } catch (error) {
      this.#options.log(`posture not reported: ${(error as Error).message}`);
    }
    this.#timer = setTimeout(() => this.#report(), this.#options.intervalMs ?? POSTURE_INTERVAL_MS);
  }

  #retry(why: string): void {
    if (this.#stopped) return;
    const delayMs = reconnectDelayMs(++this.#failures);
    this.#options.log(`${why}; reconnecting in ${Math.round(delayMs / 1000)} s`);
    this.#timer = setTimeout(() => void this.#connect(), delayMs);
  }
}
