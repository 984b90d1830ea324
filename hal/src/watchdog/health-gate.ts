// Feeds the watchdog only while the gateway's health check passes. Once a check fails (says no,
// throws, or does not answer within checkTimeoutMs) the watchdog is never fed again: the box resets
// when the device's timeout runs out, which is the point. A clean shutdown closes with the magic
// character so the box does not reset; after a failure, shutdown closes without it, and the reset comes.

import { z } from 'zod';
import { type Clock, systemClock, type Timer } from '../clock.ts';
import type { WatchdogDevice } from './device.ts';

export type HealthCheck = () => boolean | Promise<boolean>;

export const HealthGateOptionsSchema = z
  .object({
    /** Time between checks (and feeds). */
    intervalMs: z.number().int().min(10).max(600_000).default(5000),
    /** A check that has not answered by then has failed. */
    checkTimeoutMs: z.number().int().min(1).max(600_000).default(2000),
    /** The device's own timeout, if known (readWatchdogTimeoutMs): checked to leave room for a slow check. */
    deviceTimeoutMs: z.number().int().positive().optional(),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.checkTimeoutMs >= o.intervalMs) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['checkTimeoutMs'],
        message: `${o.checkTimeoutMs} must be shorter than intervalMs (${o.intervalMs})`,
      });
    }
    if (o.deviceTimeoutMs !== undefined && o.intervalMs + o.checkTimeoutMs >= o.deviceTimeoutMs) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['intervalMs'],
        message:
          `intervalMs + checkTimeoutMs (${o.intervalMs + o.checkTimeoutMs}) must be below the device's ` +
          `timeout (${o.deviceTimeoutMs} ms), or a healthy box would be reset; shorten the interval`,
      });
    }
  });

export type HealthGateOptions = z.input<typeof HealthGateOptionsSchema>;

export type HealthGateState = 'running' | 'failed' | 'stopped';

export class HealthGatedWatchdog {
  readonly #device: WatchdogDevice;
  readonly #check: HealthCheck;
  readonly #clock: Clock;
  readonly #intervalMs: number;
  readonly #checkTimeoutMs: number;
  readonly #onFailure: (reason: string) => void;
  #state: HealthGateState = 'running';
  #failure: string | undefined;
  #feeds = 0;
  #timer: Timer | undefined;
  #tick: Promise<void> = Promise.resolve();

  constructor(
    device: WatchdogDevice,
    check: HealthCheck,
    options: HealthGateOptions & { clock?: Clock; onFailure?: (reason: string) => void } = {},
  ) {
    const { clock, onFailure, ...rest } = options;
    const parsed = HealthGateOptionsSchema.safeParse(rest);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
      throw new Error(`watchdog options: ${issues.join('; ')}`);
    }
    this.#device = device;
    this.#check = check;
    this.#clock = clock ?? systemClock;
    this.#intervalMs = parsed.data.intervalMs;
    this.#checkTimeoutMs = parsed.data.checkTimeoutMs;
    this.#onFailure = onFailure ?? (() => {});
  }

  /** Checks and feeds now, then every intervalMs. */
  start(): void {
    this.#schedule(0);
  }

  get state(): HealthGateState {
    return this.#state;
  }

  get feeds(): number {
    return this.#feeds;
  }

  /** Why feeding stopped, once it has. */
  get failure(): string | undefined {
    return this.#failure;
  }

  /** A check in flight, finished (for tests and for stop). */
  settled(): Promise<void> {
    return this.#tick;
  }

  /** Clean shutdown: magic close while healthy; after a failure, a plain close (the reset still comes). */
  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    const wasFailed = this.#state === 'failed';
    this.#state = 'stopped';
    this.#timer?.cancel();
    await this.#tick;
    if (wasFailed || this.#failure) await this.#device.close();
    else await this.#device.magicClose();
  }

  #schedule(ms: number): void {
    this.#timer = this.#clock.after(ms, () => {
      this.#tick = this.#round();
    });
  }

  async #round(): Promise<void> {
    if (this.#state !== 'running') return;
    const healthy = await this.#runCheck();
    if (this.#state !== 'running') return;
    if (healthy !== true) return this.#fail(healthy);
    try {
      await this.#device.keepalive();
      this.#feeds++;
    } catch (err) {
      return this.#fail(`feeding ${this.#device.description} failed: ${(err as Error).message}`);
    }
    if (this.#state === 'running') this.#schedule(this.#intervalMs);
  }

  /** true, or why not. */
  #runCheck(): Promise<true | string> {
    return new Promise((resolve) => {
      const timer = this.#clock.after(this.#checkTimeoutMs, () =>
        resolve(`the health check did not answer within ${this.#checkTimeoutMs} ms`),
      );
      Promise.resolve()
        .then(() => this.#check())
        .then(
          (ok) => resolve(ok === true ? true : 'the health check failed'),
          (err: unknown) => resolve(`the health check threw: ${(err as Error)?.message ?? String(err)}`),
        )
        .finally(() => timer.cancel());
    });
  }

  #fail(reason: string): void {
    this.#state = 'failed';
    this.#failure = reason;
    this.#onFailure(reason);
  }
}
