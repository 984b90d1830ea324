// Why knocks were turned away: a counter per reason, and log lines that a tool like fail2ban can
// read, rate limited so a flood cannot fill the disk. Only the source address and the reason are
// logged — never packet bytes, which could carry key material or a replayable knock.

import type { Logger } from 'pino';

export const REJECT_REASONS = [
  'size',
  'mac1',
  'budget',
  'decrypt',
  'schema',
  'unknown-identity',
  'signature',
  'time-window',
  'replay',
  'source-mismatch',
  'not-allowed',
  'firewall',
  'internal',
] as const;

export type RejectReason = (typeof REJECT_REASONS)[number];

export class Rejections {
  readonly counts: Record<RejectReason, number>;
  private readonly log: Logger;
  private readonly perSecond: number;
  private windowStartMs = 0;
  private loggedInWindow = 0;
  private suppressed = 0;

  constructor(log: Logger, perSecond: number) {
    this.log = log;
    this.perSecond = perSecond;
    this.counts = Object.fromEntries(REJECT_REASONS.map((reason) => [reason, 0])) as Record<
      RejectReason,
      number
    >;
  }

  reject(source: string, reason: RejectReason, identity?: string): void {
    this.counts[reason]++;
    this.flush();
    if (this.loggedInWindow >= this.perSecond) {
      this.suppressed++;
      return;
    }
    this.loggedInWindow++;
    this.log.info({ source, reason, ...(identity ? { identity } : {}) }, 'knock rejected');
  }

  /** Starts a new rate window once a second has passed, reporting how many lines the last one dropped. */
  flush(now = Date.now()): void {
    if (now - this.windowStartMs < 1000) return;
    if (this.suppressed > 0)
      this.log.warn({ suppressed: this.suppressed }, 'knock rejections not logged (rate limit)');
    this.windowStartMs = now;
    this.loggedInWindow = 0;
    this.suppressed = 0;
  }
}
