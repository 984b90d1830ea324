// The one log line every opened pinhole gets, with the time from capture to open: the figure the
// knock benchmark reads.

import type { Logger } from 'pino';
import type { Datagram } from './frame.ts';

/** The wall clock with sub-millisecond resolution (Date.now() has whole milliseconds). */
function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export function logPinholeOpened(log: Logger, datagram: Datagram, fields: Record<string, unknown>): void {
  log.info(
    {
      source: datagram.source,
      ...fields,
      ...(datagram.receivedAtMs
        ? { latencyMs: Math.round((wallClockMs() - datagram.receivedAtMs) * 1000) / 1000 }
        : {}),
    },
    'pinhole opened',
  );
}
