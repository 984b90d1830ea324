// Why knocks were turned away: a counter per reason, and log lines that a tool like fail2ban can
// read, rate limited so a flood cannot fill the disk. Only the source address and the reason are
// logged — never packet bytes, which could carry key material or a replayable knock.
//
// Rejections of packets nobody authenticated (a garbage flood) and of signed knocks (a replay, a
// policy refusal: the signals worth an operator's attention) have separate line budgets, so the
// first cannot hide the second. Mind that the source of an unauthenticated packet can be forged.

import type { Logger } from 'pino';

/** Reasons before the signature is verified: anyone can cause these, from any claimed address. */
const UNAUTHENTICATED = [
  'size',
  'mac1',
  'budget',
  'overload',
  'decrypt',
  'schema',
  'unknown-identity',
  'signature',
] as const;
/** Reasons for knocks an enrolled identity signed. */
const AUTHENTICATED = [
  'time-window',
  'replay',
  'source-mismatch',
  'not-allowed',
  /** The controller, or the cached policy while it is away, refused (its reason is in the log). */
  'denied',
  /** The controller did not answer and failMode is `closed`. */
  'unreachable',
  'firewall',
  'internal',
] as const;

export const REJECT_REASONS = [...UNAUTHENTICATED, ...AUTHENTICATED] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

const WINDOW_MS = 1000;

class LineBudget {
  startedMs = Number.NEGATIVE_INFINITY;
  logged = 0;
  suppressed = 0;
}

export class Rejections {
  readonly counts: Record<RejectReason, number>;
  private readonly log: Logger;
  private readonly perSecond: number;
  private readonly unauthenticated = new LineBudget();
  private readonly authenticated = new LineBudget();
  private readonly authenticatedReasons: ReadonlySet<string> = new Set(AUTHENTICATED);

  constructor(log: Logger, perSecond: number) {
    this.log = log;
    this.perSecond = perSecond;
    this.counts = Object.fromEntries(REJECT_REASONS.map((reason) => [reason, 0])) as Record<
      RejectReason,
      number
    >;
  }

  /** `detail` says why in words (a controller's reason); it must never hold packet bytes or keys. */
  reject(source: string, reason: RejectReason, identity?: string, detail?: string): void {
    this.counts[reason]++;
    const budget = this.authenticatedReasons.has(reason) ? this.authenticated : this.unauthenticated;
    this.roll(budget, performance.now());
    if (budget.logged >= this.perSecond) {
      budget.suppressed++;
      return;
    }
    budget.logged++;
    this.log.info(
      { source, reason, ...(identity ? { identity } : {}), ...(detail ? { detail } : {}) },
      'knock rejected',
    );
  }

  /** Starts new rate windows once a second has passed, reporting how many lines the last ones dropped. */
  flush(now = performance.now()): void {
    this.roll(this.unauthenticated, now);
    this.roll(this.authenticated, now);
  }

  private roll(budget: LineBudget, now: number): void {
    if (now - budget.startedMs < WINDOW_MS) return;
    if (budget.suppressed > 0) {
      const kind = budget === this.authenticated ? 'signed' : 'unauthenticated';
      this.log.warn({ suppressed: budget.suppressed, kind }, 'knock rejections not logged (rate limit)');
    }
    budget.startedMs = now;
    budget.logged = 0;
    budget.suppressed = 0;
  }
}
