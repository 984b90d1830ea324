// LEDs in memory, for unit tests of code that shows status patterns.

import {
  checkSetting,
  type LedDriver,
  LedError,
  type LedSetting,
  triggerOf,
  unknownTriggerError,
} from './led.ts';

export interface MemoryLed {
  readonly triggers?: readonly string[];
}

export class MemoryLeds implements LedDriver {
  readonly description = 'memory';
  readonly #leds: Map<string, { triggers: readonly string[]; setting: LedSetting }>;
  /** Every apply, in order. */
  readonly history: { name: string; setting: LedSetting }[] = [];

  constructor(leds: Readonly<Record<string, MemoryLed>>) {
    this.#leds = new Map(
      Object.entries(leds).map(([name, led]) => [
        name,
        {
          triggers: led.triggers ?? ['none', 'timer', 'heartbeat', 'pattern'],
          setting: { kind: 'steady', level: 0 },
        },
      ]),
    );
  }

  async list(): Promise<string[]> {
    return [...this.#leds.keys()].sort();
  }

  async apply(name: string, setting: LedSetting): Promise<void> {
    const led = this.#leds.get(name);
    if (!led) throw new LedError(name, `no such LED (present: ${[...this.#leds.keys()].join(', ')})`);
    checkSetting(name, setting);
    const trigger = triggerOf(setting);
    if (!led.triggers.includes(trigger)) throw unknownTriggerError(name, trigger, led.triggers);
    led.setting = setting;
    this.history.push({ name, setting });
  }

  /** The setting an LED is in now. */
  setting(name: string): LedSetting | undefined {
    return this.#leds.get(name)?.setting;
  }
}
