// A button is a line that reports its level on every edge. On a box that is a sysfs GPIO watched by
// onoff (the kernel wakes epoll on each edge, no polling); in tests it is a MemoryButton.

import { createRequire } from 'node:module';
import type { Board } from '../board.ts';
import type { Clock } from '../clock.ts';
import { ButtonPresses, type PressActions, type PressOptions } from './presses.ts';

export interface ButtonInput {
  /** Calls `listener` with the level after each edge: true when the button reads pressed. */
  watch(listener: (pressed: boolean) => void): void;
  read(): Promise<boolean>;
  close(): Promise<void>;
  readonly description: string;
}

/** A button in memory: press() and release() are the edges. */
export class MemoryButton implements ButtonInput {
  readonly description = 'memory';
  #pressed = false;
  #listeners: ((pressed: boolean) => void)[] = [];

  watch(listener: (pressed: boolean) => void): void {
    this.#listeners.push(listener);
  }

  async read(): Promise<boolean> {
    return this.#pressed;
  }

  async close(): Promise<void> {
    this.#listeners = [];
  }

  press(): void {
    this.#level(true);
  }

  release(): void {
    this.#level(false);
  }

  /** A contact bouncing: `levels` as edges, one after another. */
  bounce(levels: readonly boolean[]): void {
    for (const l of levels) this.#level(l);
  }

  #level(pressed: boolean): void {
    this.#pressed = pressed;
    for (const l of this.#listeners) l(pressed);
  }
}

/** The part of onoff's Gpio that OnoffButton uses; a test may pass a class of its own. */
export interface GpioLike {
  watch(callback: (err: Error | null | undefined, value: 0 | 1) => void): void;
  read(): Promise<0 | 1>;
  unexport(): void;
}
export type GpioConstructor = new (
  gpio: number,
  direction: 'in',
  edge: 'both',
  options: { activeLow: boolean },
) => GpioLike;

/** Loads onoff only when a real button is opened, so nothing else needs its native epoll module. */
export function loadOnoffGpio(): GpioConstructor {
  const require = createRequire(import.meta.url);
  let onoff: { Gpio: GpioConstructor & { accessible: boolean } };
  try {
    onoff = require('onoff');
  } catch (err) {
    throw new Error(
      `loading onoff failed (${(err as Error).message}); its epoll addon must be built against the Node ` +
        'that runs it: npm_config_nodedir=<node headers> npm rebuild epoll',
      { cause: err },
    );
  }
  if (!onoff.Gpio.accessible) {
    throw new Error(
      'sysfs GPIO is not available: /sys/class/gpio/export cannot be opened for writing ' +
        '(the kernel needs CONFIG_GPIO_SYSFS=y, and the service write access to /sys/class/gpio)',
    );
  }
  return onoff.Gpio;
}

export interface OnoffButtonOptions {
  /** The sysfs GPIO number. */
  readonly gpio: number;
  /** True when the line reads low while pressed; onoff then reports 1 for pressed. */
  readonly activeLow: boolean;
  /** For tests: a Gpio class in place of onoff's. */
  readonly Gpio?: GpioConstructor;
}

/**
 * A button on a sysfs GPIO through onoff. onoff works on /sys/class/gpio itself (its path is fixed),
 * so this is the one piece that cannot be rooted at a fake tree; tests pass a Gpio class instead.
 * Debouncing is left to ButtonPresses, not to onoff's debounceTimeout, so it can be tested.
 */
export class OnoffButton implements ButtonInput {
  readonly description: string;
  readonly #gpio: GpioLike;
  readonly #line: number;

  constructor(options: OnoffButtonOptions) {
    const Gpio = options.Gpio ?? loadOnoffGpio();
    this.#line = options.gpio;
    this.description = `gpio:${options.gpio}${options.activeLow ? ' (active low)' : ''}`;
    try {
      this.#gpio = new Gpio(options.gpio, 'in', 'both', { activeLow: options.activeLow });
    } catch (err) {
      throw new Error(
        `button on GPIO ${options.gpio}: exporting it failed (${(err as Error).message}); ` +
          'check button.gpio in the board file (on kernels >= 6.6 add the chip base, e.g. 512)',
        { cause: err },
      );
    }
  }

  watch(listener: (pressed: boolean) => void): void {
    this.#gpio.watch((err, value) => {
      // An epoll error has no level to report; the next edge will.
      if (!err) listener(value === 1);
    });
  }

  async read(): Promise<boolean> {
    return (await this.#gpio.read()) === 1;
  }

  async close(): Promise<void> {
    try {
      this.#gpio.unexport();
    } catch (err) {
      throw new Error(`button on GPIO ${this.#line}: unexport failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
}

/** Opens the board's button, if it has one, through onoff. */
export function openBoardButton(board: Board, Gpio?: GpioConstructor): OnoffButton | undefined {
  if (!board.button) return undefined;
  return new OnoffButton({ gpio: board.button.gpio, activeLow: board.button.activeLow, Gpio });
}

/** Feeds a button's edges to the press logic; returns the logic (its phase is useful for status). */
export function watchResetButton(
  input: ButtonInput,
  actions: PressActions,
  options?: PressOptions,
  clock?: Clock,
): ButtonPresses {
  const presses = new ButtonPresses(actions, options, clock);
  input.watch((pressed) => presses.edge(pressed));
  return presses;
}
