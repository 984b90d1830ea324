// What each state looks like. Every pattern is a kernel trigger, so it keeps blinking if the service
// stalls. A technician tells states apart by rhythm: slow blink waits, fast blink works, steady is done,
// blink counts are trouble (on the fault LED when the board has one).

import type { LedSetting, PatternStep } from './led.ts';

export const STATUS_PATTERNS = [
  'booting',
  'awaiting-provisioning',
  'provisioning',
  'enrolled-dark',
  'controller-unreachable',
  'updating',
  'fault',
  'identify',
  'factory-reset',
] as const;

export type StatusPattern = (typeof STATUS_PATTERNS)[number];

export interface PatternLook {
  readonly status: LedSetting;
  /** On the fault LED when the board has one. */
  readonly fault: LedSetting;
  /** On the status LED instead, when the board has no fault LED. */
  readonly statusWithoutFault?: LedSetting;
  readonly activity: LedSetting;
}

const off: LedSetting = { kind: 'steady', level: 0 };
const on: LedSetting = { kind: 'steady', level: 1 };
const heartbeat: LedSetting = { kind: 'heartbeat' };
const blink = (onMs: number, offMs: number): LedSetting => ({ kind: 'timer', onMs, offMs });

/** `count` short flashes, then a pause: the kernel `pattern` trigger with square edges. */
export function flashes(count: number, flashMs = 150, gapMs = 250, pauseMs = 1200): LedSetting {
  const steps: PatternStep[] = [];
  for (let i = 0; i < count; i++) {
    steps.push({ level: 1, ms: flashMs }, { level: 1, ms: 0 });
    steps.push({ level: 0, ms: i === count - 1 ? pauseMs : gapMs }, { level: 0, ms: 0 });
  }
  return { kind: 'pattern', steps };
}

/** A slow breathe: up over `ms`, down over `ms`. */
const breathe = (ms: number): LedSetting => ({
  kind: 'pattern',
  steps: [
    { level: 0, ms },
    { level: 1, ms },
  ],
});

export const PATTERN_LOOKS: Readonly<Record<StatusPattern, PatternLook>> = {
  booting: { status: heartbeat, fault: off, activity: off },
  'awaiting-provisioning': { status: blink(1000, 1000), fault: off, activity: heartbeat },
  provisioning: { status: blink(100, 100), fault: off, activity: heartbeat },
  'enrolled-dark': { status: on, fault: off, activity: heartbeat },
  'controller-unreachable': {
    status: on,
    fault: blink(200, 1800),
    statusWithoutFault: flashes(2),
    activity: heartbeat,
  },
  updating: { status: breathe(1000), fault: off, activity: heartbeat },
  fault: { status: off, fault: on, statusWithoutFault: flashes(3), activity: heartbeat },
  identify: { status: blink(250, 250), fault: blink(250, 250), activity: blink(250, 250) },
  'factory-reset': { status: blink(50, 50), fault: blink(50, 50), activity: blink(50, 50) },
};
