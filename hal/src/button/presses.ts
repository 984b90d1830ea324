// The reset button's meaning, apart from any GPIO: fed raw edges, it debounces them and turns presses
// into actions. A short press identifies the box; a press held for holdMs shows a confirmation pattern
// for confirmMs and then factory-resets; a release after a short press and before holdMs does nothing,
// which is how a technician changes their mind. Once confirmed, a release no longer cancels: the
// confirmation pattern is the point of no return, and the technician has been shown it.

import { z } from 'zod';
import { type Clock, systemClock, type Timer } from '../clock.ts';

export interface PressActions {
  /** A short press: blink identify. */
  identify(): void;
  /** Held for holdMs: show the confirmation pattern; the reset follows after confirmMs. */
  confirmFactoryReset(): void;
  /** Wipes identity and site configuration (keeps firmware); the provisioner supplies it. */
  factoryReset(): Promise<void> | void;
  /** Released after a short press but before holdMs: nothing happens (the LEDs may say so). */
  cancelled?(): void;
  /** factoryReset threw or rejected. */
  onError?(err: unknown): void;
}

export const PressOptionsSchema = z
  .object({
    /** An edge counts once the line has kept its level this long. */
    debounceMs: z.number().int().min(0).max(1000).default(50),
    /** The longest press that still counts as short. */
    shortPressMaxMs: z.number().int().min(1).max(60_000).default(2000),
    /** How long a press is held before the factory reset is confirmed. */
    holdMs: z.number().int().min(1).max(600_000).default(10_000),
    /** How long the confirmation pattern shows before the reset runs. */
    confirmMs: z.number().int().min(0).max(60_000).default(3000),
  })
  .strict()
  .refine((o) => o.shortPressMaxMs < o.holdMs, {
    message: 'shortPressMaxMs must be shorter than holdMs',
    path: ['shortPressMaxMs'],
  });

export type PressOptions = z.input<typeof PressOptionsSchema>;

export type PressPhase = 'idle' | 'held' | 'confirming' | 'resetting';

export class ButtonPresses {
  readonly #actions: PressActions;
  readonly #clock: Clock;
  readonly #options: z.output<typeof PressOptionsSchema>;
  #raw = false;
  #rawAt = 0;
  #stable = false;
  #phase: PressPhase = 'idle';
  #pressedAt = 0;
  #debounce: Timer | undefined;
  #timer: Timer | undefined;

  constructor(actions: PressActions, options: PressOptions = {}, clock: Clock = systemClock) {
    const parsed = PressOptionsSchema.safeParse(options);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
      throw new Error(`button press options: ${issues.join('; ')}`);
    }
    this.#options = parsed.data;
    this.#actions = actions;
    this.#clock = clock;
  }

  get phase(): PressPhase {
    return this.#phase;
  }

  /** The debounced level: true while the button is (steadily) pressed. */
  get pressed(): boolean {
    return this.#stable;
  }

  /** One edge from the line, as read: true when the button reads pressed. */
  edge(pressed: boolean): void {
    this.#raw = pressed;
    this.#rawAt = this.#clock.now();
    this.#debounce?.cancel();
    this.#debounce = this.#clock.after(this.#options.debounceMs, () => {
      this.#debounce = undefined;
      this.#settle(this.#raw);
    });
  }

  /** Stops the timers; a confirmed reset that is already running is not stopped. */
  close(): void {
    this.#debounce?.cancel();
    if (this.#phase !== 'resetting') this.#timer?.cancel();
  }

  #settle(pressed: boolean): void {
    if (pressed === this.#stable) return;
    this.#stable = pressed;
    if (pressed) {
      if (this.#phase !== 'idle') return;
      this.#phase = 'held';
      // The press began at its last edge, not when the debounce let it through.
      this.#pressedAt = this.#rawAt;
      const waited = this.#clock.now() - this.#pressedAt;
      this.#timer = this.#clock.after(this.#options.holdMs - waited, () => this.#confirm());
      return;
    }
    if (this.#phase !== 'held') return;
    this.#timer?.cancel();
    this.#phase = 'idle';
    const heldMs = this.#rawAt - this.#pressedAt;
    if (heldMs <= this.#options.shortPressMaxMs) this.#actions.identify();
    else this.#actions.cancelled?.();
  }

  #confirm(): void {
    this.#phase = 'confirming';
    this.#actions.confirmFactoryReset();
    this.#timer = this.#clock.after(this.#options.confirmMs, () => {
      this.#phase = 'resetting';
      Promise.resolve()
        .then(() => this.#actions.factoryReset())
        .catch((err: unknown) => this.#actions.onError?.(err))
        .finally(() => {
          this.#phase = 'idle';
        });
    });
  }
}
