// The status LEDs: the state the box is in (show) and short overlays that return to it (flash), with a
// record of what is showing for status reports. Writes go one at a time, in call order, so a quick
// succession of states never leaves one LED from each.

import type { Board, LedRole } from '../board.ts';
import { type Clock, systemClock, type Timer } from '../clock.ts';
import { type LedDriver, LedError, type LedSetting } from './led.ts';
import { PATTERN_LOOKS, type StatusPattern } from './patterns.ts';

export interface StatusLedsOptions {
  readonly clock?: Clock;
  /** Called when returning from an overlay fails (nobody is awaiting that write). */
  readonly onError?: (err: unknown) => void;
}

export interface StatusSnapshot {
  /** The state last shown. */
  readonly pattern: StatusPattern | undefined;
  /** What the LEDs show now: the state, or an overlay such as identify. */
  readonly showing: StatusPattern | undefined;
  /** When `showing` began, on the clock's scale. */
  readonly since: number;
  readonly leds: readonly { readonly role: LedRole; readonly led: string; readonly setting: LedSetting }[];
}

export class StatusLeds {
  readonly #driver: LedDriver;
  readonly #roles: readonly [LedRole, string][];
  readonly #hasFault: boolean;
  readonly #clock: Clock;
  readonly #onError: (err: unknown) => void;
  #queue: Promise<unknown> = Promise.resolve();
  #pattern: StatusPattern | undefined;
  #showing: StatusPattern | undefined;
  #since = 0;
  #settings: { role: LedRole; led: string; setting: LedSetting }[] = [];
  #overlay: Timer | undefined;

  private constructor(driver: LedDriver, leds: Board['leds'], options: StatusLedsOptions) {
    this.#driver = driver;
    this.#roles = Object.entries(leds).filter((e): e is [LedRole, string] => e[1] !== undefined);
    this.#hasFault = leds.fault !== undefined;
    this.#clock = options.clock ?? systemClock;
    this.#onError = options.onError ?? (() => {});
  }

  /** Checks that every LED the board names is present before anything is shown. */
  static async open(driver: LedDriver, leds: Board['leds'], options: StatusLedsOptions = {}) {
    const present = new Set(await driver.list());
    for (const [role, name] of Object.entries(leds)) {
      if (name !== undefined && !present.has(name)) {
        throw new LedError(
          name,
          `the board's ${role} LED is not in ${driver.description} ` +
            `(present: ${[...present].join(', ') || 'none'}); fix leds.${role} in the board file`,
        );
      }
    }
    return new StatusLeds(driver, leds, options);
  }

  get pattern(): StatusPattern | undefined {
    return this.#pattern;
  }

  get showing(): StatusPattern | undefined {
    return this.#showing;
  }

  snapshot(): StatusSnapshot {
    return { pattern: this.#pattern, showing: this.#showing, since: this.#since, leds: [...this.#settings] };
  }

  /** Shows a state. During an overlay the state is recorded and shown when the overlay ends. */
  show(pattern: StatusPattern): Promise<void> {
    this.#pattern = pattern;
    if (this.#overlay) return this.#queue.then(() => {});
    return this.#enqueue(pattern);
  }

  /** Shows `pattern` for `ms`, then the state again (a later flash replaces an earlier one). */
  flash(pattern: StatusPattern, ms: number): Promise<void> {
    this.#overlay?.cancel();
    this.#overlay = this.#clock.after(ms, () => {
      this.#overlay = undefined;
      if (this.#pattern) this.#enqueue(this.#pattern).catch(this.#onError);
    });
    return this.#enqueue(pattern);
  }

  /** Ends an overlay now and shows the state again (e.g. a factory reset that failed). */
  endFlash(): Promise<void> {
    if (!this.#overlay) return this.#queue.then(() => {});
    this.#overlay.cancel();
    this.#overlay = undefined;
    return this.#pattern ? this.#enqueue(this.#pattern) : this.#queue.then(() => {});
  }

  #enqueue(pattern: StatusPattern): Promise<void> {
    const run = () => this.#apply(pattern);
    const done = this.#queue.then(run, run);
    this.#queue = done.catch(() => undefined);
    return done;
  }

  async #apply(pattern: StatusPattern): Promise<void> {
    const look = PATTERN_LOOKS[pattern];
    const settings = this.#roles.map(([role, led]) => {
      let setting: LedSetting;
      if (role === 'status')
        setting = this.#hasFault ? look.status : (look.statusWithoutFault ?? look.status);
      else if (role === 'fault') setting = look.fault;
      else setting = look.activity;
      return { role, led, setting };
    });
    this.#showing = pattern;
    this.#since = this.#clock.now();
    this.#settings = settings;
    for (const { led, setting } of settings) await this.#driver.apply(led, setting);
  }
}
