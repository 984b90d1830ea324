// The latest posture each identity reported, from its knocks and from the gateway's posture reports
// (the client re-reports over its tunnel every minute). Memory only: after a restart the next report
// fills it again, and until then live sessions keep the posture their knock was decided on.

import type { PostureValue } from '@umbra/policy';

export type Posture = Readonly<Record<string, PostureValue>>;

/** One entry per identity that reported; a bound well above any branch office's device count. */
const MAX_IDENTITIES = 100_000;

export class PostureBook {
  readonly #latest = new Map<string, Posture>();

  get(keyId: string): Posture | undefined {
    return this.#latest.get(keyId);
  }

  set(keyId: string, posture: Posture): void {
    // Re-inserted so the Map's order is least recently reported first, which is what goes when full.
    this.#latest.delete(keyId);
    this.#latest.set(keyId, posture);
    if (this.#latest.size > MAX_IDENTITIES) {
      const oldest = this.#latest.keys().next().value;
      if (oldest !== undefined) this.#latest.delete(oldest);
    }
  }
}
