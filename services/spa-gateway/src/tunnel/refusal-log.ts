// Log lines for refused tunnel connections, rate limited: anyone who reaches the listener (which
// takes a knock first) can cause them, and a flood must not fill the disk. Only the source, the
// identity and the reason are logged — never certificates' keys or bytes from the stream.

import type { Logger } from 'pino';

const WINDOW_MS = 10_000;
const LINES_PER_WINDOW = 20;

export class RefusalLog {
  #log: Logger;
  #now: () => number;
  #windowStartMs = Number.NEGATIVE_INFINITY;
  #logged = 0;
  #suppressed = 0;

  constructor(log: Logger, now: () => number = Date.now) {
    this.#log = log;
    this.#now = now;
  }

  refuse(reason: string, fields: { source?: string; identity?: string; service?: string }): void {
    const now = this.#now();
    if (now - this.#windowStartMs >= WINDOW_MS) {
      if (this.#suppressed > 0) {
        this.#log.warn({ suppressed: this.#suppressed }, 'tunnel connections refused without a log line');
      }
      this.#windowStartMs = now;
      this.#logged = 0;
      this.#suppressed = 0;
    }
    if (this.#logged >= LINES_PER_WINDOW) {
      this.#suppressed++;
      return;
    }
    this.#logged++;
    this.#log.info({ ...fields, reason }, 'tunnel connection refused');
  }
}
