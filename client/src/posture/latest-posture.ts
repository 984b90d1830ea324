// A long-running client (umbra connect) reports posture from places that cannot wait for the
// platform's tools — the control channel asks synchronously — so it keeps the latest reading and
// starts a new one each time it hands one out: a report is at most one reporting interval old.
// A knock, which can wait, asks for a fresh reading instead.

import type { Posture } from './claims.ts';

export class LatestPosture {
  #read: () => Promise<Posture>;
  #latest: Posture;
  #reading: Promise<Posture> | undefined;

  private constructor(read: () => Promise<Posture>, first: Posture) {
    this.#read = read;
    this.#latest = first;
  }

  /** Takes the first reading, so there is always one to hand out. */
  static async start(read: () => Promise<Posture>): Promise<LatestPosture> {
    return new LatestPosture(read, await read());
  }

  /** The latest reading, at once; a new one starts in the background for next time. */
  current(): Posture {
    void this.fresh();
    return this.#latest;
  }

  /** A new reading (shared with one already under way); a failed one keeps the latest. */
  fresh(): Promise<Posture> {
    this.#reading ??= this.#read()
      .then((posture) => {
        this.#latest = posture;
        return posture;
      })
      .catch(() => this.#latest)
      .finally(() => {
        this.#reading = undefined;
      });
    return this.#reading;
  }
}
