// The controller's own anti-replay, behind the gateway's: a knock forwarded twice (by a confused or
// compromised gateway, or captured and resent) is decided once. Per identity, each knock's timestamp
// must be strictly later than the last one accepted; that alone refuses every replay, since a replay
// carries its original timestamp. The nonces of the last few knocks are kept too, so the usual
// replay (the same knock again) is refused with the plainer reason.
//
// Bounded: only identities that knocked within the time window are kept (anything older is refused
// by the window check anyway), at most MAX_IDENTITIES of them. Past that it fails closed for
// identities it has no room for, rather than forgetting one whose replay would then pass.

/** How far a knock's timestamp may be from the controller's clock. */
export const KNOCK_WINDOW_MS = 30_000;
const MAX_IDENTITIES = 200_000;
/** Pruning walks the whole table; doing it at most this often keeps it off the hot path. */
const PRUNE_INTERVAL_MS = 5_000;
/** Nonces remembered per identity, newest last. */
const RECENT_NONCES = 16;

interface Seen {
  lastTimestampMs: number;
  /** Hex nonces of the last RECENT_NONCES knocks accepted. */
  nonces: string[];
}

export type ReplayVerdict =
  | { fresh: true }
  | {
      fresh: false;
      reason: 'replayed nonce' | 'timestamp not after the previous knock' | 'replay cache full';
    };

const FRESH: ReplayVerdict = Object.freeze({ fresh: true });

export class ReplayGuard {
  readonly #windowMs: number;
  readonly #seen = new Map<string, Seen>();
  #prunedAt = 0;

  constructor(windowMs = KNOCK_WINDOW_MS) {
    this.#windowMs = windowMs;
  }

  get size(): number {
    return this.#seen.size;
  }

  /** Whether the knock is new; if so it is remembered. Call only for knocks whose signature verified. */
  admit(keyId: string, timestampMs: number, nonce: Uint8Array, now: number): ReplayVerdict {
    if (now - this.#prunedAt >= PRUNE_INTERVAL_MS) this.#prune(now);
    const nonceHex = Buffer.from(nonce.buffer, nonce.byteOffset, nonce.byteLength).toString('hex');
    let seen = this.#seen.get(keyId);
    if (seen !== undefined) {
      if (seen.nonces.includes(nonceHex)) return { fresh: false, reason: 'replayed nonce' };
      if (timestampMs <= seen.lastTimestampMs)
        return { fresh: false, reason: 'timestamp not after the previous knock' };
    } else {
      if (this.#seen.size >= MAX_IDENTITIES) this.#prune(now);
      if (this.#seen.size >= MAX_IDENTITIES) return { fresh: false, reason: 'replay cache full' };
      seen = { lastTimestampMs: 0, nonces: [] };
      this.#seen.set(keyId, seen);
    }
    seen.lastTimestampMs = timestampMs;
    seen.nonces.push(nonceHex);
    if (seen.nonces.length > RECENT_NONCES) seen.nonces.shift();
    return FRESH;
  }

  /** Forgets identities whose last knock is past the window, which the window check refuses anyway. */
  #prune(now: number): void {
    this.#prunedAt = now;
    const oldest = now - 2 * this.#windowMs;
    for (const [keyId, seen] of this.#seen) if (seen.lastTimestampMs < oldest) this.#seen.delete(keyId);
  }
}
