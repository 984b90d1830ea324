// A serial port in memory through @serialport/binding-mock: the same SerialPortStream as on a box,
// with the bytes "received" injected and the bytes written recorded.

import { createRequire } from 'node:module';
import type { SerialPortStream } from '@serialport/stream';
import { openSerial, type SerialBinding } from './port.ts';

// binding-mock's package exports hide its types from TypeScript; these are the calls used here.
const MockBinding = createRequire(import.meta.url)('@serialport/binding-mock')
  .MockBinding as SerialBinding & {
  createPort(path: string, options: { echo: boolean; record: boolean }): void;
  reset(): void;
};

export interface MemorySerial {
  readonly stream: SerialPortStream;
  /** Bytes as if they arrived on the line. */
  receive(bytes: Uint8Array | string): void;
  /** Everything the stream has written to the line so far. */
  written(): Buffer;
}

/** Opens a mock port at `path` (created if the mock has no port there yet). */
export async function openMemorySerial(path = '/dev/ttyMOCK0', baudRate = 115200): Promise<MemorySerial> {
  MockBinding.createPort(path, { echo: false, record: true });
  const stream = await openSerial({ path, baudRate }, MockBinding);
  const port = stream.port as unknown as { emitData(data: Buffer | string): void; recording: Buffer };
  return {
    stream,
    receive: (bytes) => port.emitData(typeof bytes === 'string' ? bytes : Buffer.from(bytes)),
    written: () => Buffer.from(port.recording),
  };
}

/** Forgets every mock port (between tests). */
export function resetMemorySerial(): void {
  MockBinding.reset();
}
