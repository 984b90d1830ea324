// Per-source budget for public-key work. A packet with a valid mac1 came from someone holding the
// gateway's public key; this caps how much X25519 and Ed25519 work one address can make us do,
// so an enrolled but hostile client cannot starve everyone else. A token bucket per address,
// in a map bounded by evicting the least recently refilled sources.

const DEFAULT_MAX_SOURCES = 8192;

interface Bucket {
  tokens: number;
  updatedMs: number;
}

export interface SourceBudgetOptions {
  perSecond: number;
  burst: number;
  maxSources?: number;
  now?: () => number;
}

export class SourceBudget {
  private readonly buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private readonly burst: number;
  private readonly maxSources: number;
  private readonly now: () => number;

  constructor(options: SourceBudgetOptions) {
    this.perMs = options.perSecond / 1000;
    this.burst = options.burst;
    this.maxSources = options.maxSources ?? DEFAULT_MAX_SOURCES;
    this.now = options.now ?? Date.now;
  }

  /** Takes one token for `source`; false when it has none left. */
  take(source: string): boolean {
    const now = this.now();
    let bucket = this.buckets.get(source);
    if (bucket) {
      this.buckets.delete(source); // re-inserted below: the map's order is recency
      bucket.tokens = Math.min(this.burst, bucket.tokens + (now - bucket.updatedMs) * this.perMs);
      bucket.updatedMs = now;
    } else {
      if (this.buckets.size >= this.maxSources) {
        const oldest = this.buckets.keys().next().value as string;
        this.buckets.delete(oldest);
      }
      bucket = { tokens: this.burst, updatedMs: now };
    }
    this.buckets.set(source, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}
