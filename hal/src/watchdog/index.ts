// The watchdog alone, for services that need it without the rest of the HAL (serial ports, GPIO).

export {
  LinuxWatchdog,
  MemoryWatchdog,
  readWatchdogTimeoutMs,
  type WatchdogDevice,
  WatchdogError,
} from './device.ts';
export { type HealthCheck, HealthGatedWatchdog, type HealthGateState } from './health-gate.ts';
