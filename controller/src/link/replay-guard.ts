// The controller's own anti-replay, behind the gateway's: a knock forwarded twice (by a confused or
// compromised gateway, or captured and resent) is decided once. Per identity, each knock's timestamp
// must be strictly later than the last one accepted, and its nonce unseen within the window.
//
// Bounded: only identities that knocked within the time window are kept (anything older is refused
// by the window check anyway), at most MAX_IDENTITIES of them. Past that it fails closed for
// identities it has no room for, rather than forgetting one whose replay would then pass.

/** How far a knock's timestamp may be from the controller's clock. */
export const KNOCK_WINDOW_MS = 30_000;
const MAX_IDENTITIES = 200_000;
/** Pruning walks the whole table; doing it at most this often keeps it off the hot path. */
const PRUNE_INTERVAL_MS = 5_000;

interface Seen {
  lastTimestampMs: number;
  /** Nonce (hex) → its knock's timestamp, for the window. */
  nonces: Map<string, number>;
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
      if (seen.nonces.has(nonceHex)) return { fresh: false, reason: 'replayed nonce' };
      if (timestampMs <= seen.lastTimestampMs)
        return { fresh: false, reason: 'timestamp not after the previous knock' };
    } else {
      if (this.#seen.size >= MAX_IDENTITIES) this.#prune(now);
      if (this.#seen.size >= MAX_IDENTITIES) return { fresh: false, reason: 'replay cache full' };
      seen = { lastTimestampMs: 0, nonces: new Map() };
      this.#seen.set(keyId, seen);
    }
    seen.lastTimestampMs = timestampMs;
    seen.nonces.set(nonceHex, timestampMs);
    if (seen.nonces.size > 64) this.#pruneNonces(seen, now);
    return FRESH;
  }

  #prune(now: number): void {
    this.#prunedAt = now;
    const oldest = now - 2 * this.#windowMs;
    for (const [keyId, seen] of this.#seen) {
      if (seen.lastTimestampMs < oldest) this.#seen.delete(keyId);
      else this.#pruneNonces(seen, now);
    }
  }

  #pruneNonces(seen: Seen, now: number): void {
    const oldest = now - 2 * this.#windowMs;
    for (const [nonce, timestampMs] of seen.nonces) if (timestampMs < oldest) seen.nonces.delete(nonce);
  }
}
