// One LED of the Linux LED class, as the status patterns need it: a steady level, or one of the kernel's
// blink triggers. The kernel does the blinking, so a pattern keeps going while Node is busy or gone.

/** A level from 0 (off) to 1 (the LED's max_brightness). */
export type Level = number;

/**
 * One tuple of the kernel's `pattern` trigger: the LED is at `level`, then moves to the next tuple's level
 * over `ms` (gradually when the levels differ; a 0 ms tuple at the same level makes a square edge).
 */
export interface PatternStep {
  readonly level: Level;
  readonly ms: number;
}

export type LedSetting =
  | { readonly kind: 'steady'; readonly level: Level }
  | { readonly kind: 'timer'; readonly onMs: number; readonly offMs: number }
  | { readonly kind: 'heartbeat' }
  | { readonly kind: 'pattern'; readonly steps: readonly PatternStep[] };

/** The kernel trigger a setting needs ("none" for a steady level). */
export function triggerOf(setting: LedSetting): string {
  return setting.kind === 'steady' ? 'none' : setting.kind;
}

/** The kernel option that provides each trigger, for error messages. */
export const TRIGGER_KCONFIG: Readonly<Record<string, string>> = {
  timer: 'CONFIG_LEDS_TRIGGER_TIMER',
  heartbeat: 'CONFIG_LEDS_TRIGGER_HEARTBEAT',
  pattern: 'CONFIG_LEDS_TRIGGER_PATTERN',
};

/** The LEDs of a box, by their kernel names (the directory names under /sys/class/leds). */
export interface LedDriver {
  /** The LED names present. */
  list(): Promise<string[]>;
  /** Puts one LED into `setting`; throws LedError naming the LED when it cannot. */
  apply(name: string, setting: LedSetting): Promise<void>;
  /** For messages: e.g. "sysfs:/sys/class/leds" or "memory". */
  readonly description: string;
}

export class LedError extends Error {
  readonly led: string;

  constructor(led: string, message: string, options?: ErrorOptions) {
    super(`LED "${led}": ${message}`, options);
    this.name = 'LedError';
    this.led = led;
  }
}

export function unknownTriggerError(
  led: string,
  trigger: string,
  available: readonly string[],
  cause?: unknown,
) {
  const kconfig = TRIGGER_KCONFIG[trigger];
  return new LedError(
    led,
    `the kernel refused trigger "${trigger}" (available: ${available.join(', ') || 'none listed'}); ` +
      (kconfig ? `build the kernel with ${kconfig}=y, or ` : '') +
      'choose a board whose patterns use the triggers listed',
    cause === undefined ? undefined : { cause },
  );
}

/** Checks a setting's numbers before anything is written, so a bad one names itself. */
export function checkSetting(led: string, setting: LedSetting): void {
  const bad = (what: string) => new LedError(led, `${setting.kind} setting: ${what}`);
  const level = (l: number) => Number.isFinite(l) && l >= 0 && l <= 1;
  const ms = (m: number) => Number.isInteger(m) && m >= 0 && m <= 3_600_000;
  switch (setting.kind) {
    case 'steady':
      if (!level(setting.level)) throw bad(`level ${setting.level} is outside 0..1`);
      return;
    case 'timer':
      if (!ms(setting.onMs) || !ms(setting.offMs)) {
        throw bad(`onMs ${setting.onMs} / offMs ${setting.offMs} must be whole milliseconds, 0..3600000`);
      }
      return;
    case 'heartbeat':
      return;
    case 'pattern':
      if (setting.steps.length < 2) throw bad('the kernel needs at least two steps');
      for (const [i, step] of setting.steps.entries()) {
        if (!level(step.level)) throw bad(`step ${i}: level ${step.level} is outside 0..1`);
        if (!ms(step.ms)) throw bad(`step ${i}: ${step.ms} ms must be whole milliseconds, 0..3600000`);
      }
      return;
  }
}

/** A level as the kernel's brightness for an LED whose max_brightness is `max`. */
export function brightnessOf(level: Level, max: number): number {
  return Math.round(level * max);
}
