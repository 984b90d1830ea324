// What the reset button does to the status LEDs: a short press flashes identify; a confirmed hold
// shows the factory-reset pattern until the reset is done (the box reboots after it, normally).

import type { StatusLeds } from '../leds/status.ts';
import type { PressActions } from './presses.ts';

export interface ResetButtonActionsOptions {
  /** How long identify blinks (default 30 s: long enough to walk to the rack). */
  readonly identifyMs?: number;
  readonly onError?: (err: unknown) => void;
}

export function resetButtonActions(
  status: StatusLeds,
  factoryReset: () => Promise<void> | void,
  options: ResetButtonActionsOptions = {},
): PressActions {
  const onError = options.onError ?? (() => {});
  return {
    identify: () => {
      status.flash('identify', options.identifyMs ?? 30_000).catch(onError);
    },
    confirmFactoryReset: () => {
      // Shown until the reset is done: it normally ends in a restart.
      status.flash('factory-reset', 24 * 3600 * 1000).catch(onError);
    },
    factoryReset: async () => {
      try {
        await factoryReset();
      } catch (err) {
        // The box was not reset: the LEDs go back to the state (the caller may then show the fault).
        await status.endFlash().catch(onError);
        throw err;
      }
    },
    onError,
  };
}
