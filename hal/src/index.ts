// @umbra/hal: the appliance's hardware. Each piece is a small interface with a Linux implementation
// rooted at a configurable path and an in-memory one for tests (the node-serialport binding model).

export { type Board, BoardError, BoardSchema, type LedRole, loadBoard, parseBoard } from './board.ts';
export { type ResetButtonActionsOptions, resetButtonActions } from './button/actions.ts';
export {
  type ButtonInput,
  type GpioConstructor,
  type GpioLike,
  loadOnoffGpio,
  MemoryButton,
  OnoffButton,
  type OnoffButtonOptions,
  openBoardButton,
  watchResetButton,
} from './button/input.ts';
export {
  ButtonPresses,
  type PressActions,
  type PressOptions,
  PressOptionsSchema,
  type PressPhase,
} from './button/presses.ts';
export { type Clock, ManualClock, systemClock, type Timer } from './clock.ts';
export {
  createFakeLedTree,
  FAKE_DEFAULT_TRIGGERS,
  type FakeLed,
  type FakeLedState,
  kernelLikeFiles,
  readFakeLed,
} from './leds/fake-tree.ts';
export {
  type LedDriver,
  LedError,
  type LedSetting,
  type Level,
  type PatternStep,
  TRIGGER_KCONFIG,
  triggerOf,
} from './leds/led.ts';
export { type MemoryLed, MemoryLeds } from './leds/memory.ts';
export {
  flashes,
  PATTERN_LOOKS,
  type PatternLook,
  STATUS_PATTERNS,
  type StatusPattern,
} from './leds/patterns.ts';
export { StatusLeds, type StatusLedsOptions, type StatusSnapshot } from './leds/status.ts';
export {
  nodeSysfsFiles,
  parseTriggers,
  type SysfsFiles,
  SysfsLeds,
  type SysfsLedsOptions,
} from './leds/sysfs.ts';
export { type ConsoleMode, ConsoleMux, type ConsoleMuxOptions } from './serial/console-mux.ts';
export { type MemorySerial, openMemorySerial, resetMemorySerial } from './serial/memory.ts';
export {
  closeSerial,
  linuxBinding,
  memorySerialPair,
  openSerial,
  SerialError,
  type SerialOptions,
  SerialOptionsSchema,
} from './serial/port.ts';
export {
  type GettyPty,
  openGettyPty,
  SharedConsole,
  type SharedConsoleOptions,
} from './serial/shared-console.ts';
export {
  LinuxWatchdog,
  MemoryWatchdog,
  readWatchdogTimeoutMs,
  type WatchdogDevice,
  WatchdogError,
} from './watchdog/device.ts';
export {
  type HealthCheck,
  HealthGatedWatchdog,
  type HealthGateOptions,
  HealthGateOptionsSchema,
  type HealthGateState,
} from './watchdog/health-gate.ts';
