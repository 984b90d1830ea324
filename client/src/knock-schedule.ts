// When to knock before opening a connection. A knock opens the pinhole (and earns the grant) for
// a policy's TTL, usually tens of seconds, so connections made soon after one need none; a
// connection that times out means the pinhole closed (expired, or our address changed) and is
// retried after a fresh knock, a bounded number of times.

import { setTimeout as sleep } from 'node:timers/promises';

/** A knock younger than this is assumed to hold the pinhole open still. */
export const KNOCK_FRESH_MS = 5_000;
/** How many connection attempts, and how long each waits after its knock for the pinhole to open. */
export const SETTLE_DELAYS_MS = [10, 100, 300] as const;
export const CONNECT_TIMEOUT_MS = 1_000;

export class KnockSchedule {
  #now: () => number;
  #freshMs: number;
  #lastKnockMs = Number.NEGATIVE_INFINITY;

  constructor(options: { now?: () => number; freshMs?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#freshMs = options.freshMs ?? KNOCK_FRESH_MS;
  }

  /** Whether a connection opened now needs a knock first. */
  due(): boolean {
    return this.#now() - this.#lastKnockMs >= this.#freshMs;
  }

  knocked(): void {
    this.#lastKnockMs = this.#now();
  }

  /** Forgets the last knock, so the next connection knocks (its pinhole proved to be gone). */
  expire(): void {
    this.#lastKnockMs = Number.NEGATIVE_INFINITY;
  }
}

export interface DialWithKnocks<T> {
  schedule: KnockSchedule;
  knock(): Promise<void>;
  dial(timeoutMs: number): Promise<T>;
  /** Whether a failed dial means the pinhole is closed, so that knocking again may help. */
  retryable(error: unknown): boolean;
  settleDelaysMs?: readonly number[];
  connectTimeoutMs?: number;
  /** Waits; injectable for tests. */
  wait?: (ms: number) => Promise<unknown>;
}

/**
 * Knocks if the last knock is stale, waits for the pinhole to open, and dials; after a retryable
 * failure knocks again and retries, up to one attempt per settle delay. Throws the last error.
 */
export async function dialWithKnocks<T>(options: DialWithKnocks<T>): Promise<T> {
  const { schedule, knock, dial, retryable } = options;
  const delays = options.settleDelaysMs ?? SETTLE_DELAYS_MS;
  const wait = options.wait ?? sleep;
  let lastError: unknown;
  for (const [attempt, delayMs] of delays.entries()) {
    if (attempt > 0 || schedule.due()) {
      await knock();
      schedule.knocked();
      await wait(delayMs);
    }
    try {
      return await dial(options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS);
    } catch (error) {
      lastError = error;
      if (!retryable(error)) throw error;
      schedule.expire();
    }
  }
  throw lastError;
}
