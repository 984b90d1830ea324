// Budgets for public-key work. A packet with a valid mac1 came from someone holding the gateway's
// public key — any enrolled client, hostile ones included — and costs an X25519 and an Ed25519
// operation (~0.3-1 ms). Two token buckets bound that work:
//   - per source, so one address cannot starve the others; IPv6 sources are grouped by /64,
//     since one host can use every address of its prefix;
//   - in total, so a client spoofing a new source for every packet still cannot take more than
//     a set share of the CPU, and the capture ring keeps room for everyone else's knocks.
// Sources live in a map bounded by evicting the least recently seen. Time is monotonic, so a
// clock step cannot lock clients out.

const DEFAULT_MAX_SOURCES = 8192;

interface Bucket {
  tokens: number;
  updatedMs: number;
}

export interface SourceBudgetOptions {
  perSecond: number;
  burst: number;
  /** For all sources together. */
  totalPerSecond: number;
  totalBurst: number;
  maxSources?: number;
  now?: () => number;
}

export type BudgetVerdict = 'ok' | 'source' | 'total';

export class SourceBudget {
  private readonly buckets = new Map<string, Bucket>();
  private readonly total: Bucket;
  private readonly options: Required<SourceBudgetOptions>;

  constructor(options: SourceBudgetOptions) {
    this.options = { maxSources: DEFAULT_MAX_SOURCES, now: () => performance.now(), ...options };
    this.total = { tokens: options.totalBurst, updatedMs: this.options.now() };
  }

  /** Takes one token for `source` and one from the total, or says which budget is spent. */
  take(source: string): BudgetVerdict {
    const now = this.options.now();
    const { perSecond, burst, totalPerSecond, totalBurst, maxSources } = this.options;
    const key = budgetKey(source);
    let bucket = this.buckets.get(key);
    if (bucket) {
      this.buckets.delete(key); // re-inserted below: the map's order is recency
      refill(bucket, now, perSecond, burst);
    } else {
      if (this.buckets.size >= maxSources) this.buckets.delete(this.buckets.keys().next().value as string);
      bucket = { tokens: burst, updatedMs: now };
    }
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) return 'source';
    refill(this.total, now, totalPerSecond, totalBurst);
    if (this.total.tokens < 1) return 'total';
    bucket.tokens -= 1;
    this.total.tokens -= 1;
    return 'ok';
  }

  get size(): number {
    return this.buckets.size;
  }
}

function refill(bucket: Bucket, now: number, perSecond: number, burst: number): void {
  bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.updatedMs) * perSecond) / 1000);
  bucket.updatedMs = now;
}

/** An IPv4 address, or the /64 prefix of an IPv6 address (canonical text in, first four groups out). */
export function budgetKey(source: string): string {
  if (!source.includes(':')) return source;
  const double = source.indexOf('::');
  const head = (double >= 0 ? source.slice(0, double) : source).split(':').filter(Boolean);
  if (head.length >= 4) return head.slice(0, 4).join(':');
  // "::" falls inside the first four groups: the missing ones are zeros.
  const tail =
    double >= 0
      ? source
          .slice(double + 2)
          .split(':')
          .filter(Boolean)
      : [];
  const missing = 8 - head.length - tail.length;
  return [...head, ...Array(missing).fill('0'), ...tail].slice(0, 4).join(':');
}
