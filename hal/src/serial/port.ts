// A serial port as a Duplex stream: @serialport/stream over a binding, the Linux one from
// @serialport/bindings-cpp on a box, @serialport/binding-mock in unit tests. The stream never knows
// which (the node-serialport model).

import type { Duplex } from 'node:stream';
import { duplexPair } from 'node:stream';
import { SerialPortStream } from '@serialport/stream';
import { z } from 'zod';

/** A serialport binding (its types live in @serialport/bindings-interface, whose exports hide them). */
export type SerialBinding = ConstructorParameters<typeof SerialPortStream>[0]['binding'];

export const SerialOptionsSchema = z
  .object({
    path: z.string().regex(/^\/[^\s]+$/, 'an absolute device path, e.g. /dev/ttyUSB0'),
    baudRate: z.number().int().min(50).max(4_000_000).default(115200),
  })
  .strict();

export type SerialOptions = z.input<typeof SerialOptionsSchema>;

export class SerialError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SerialError';
  }
}

/** The Linux binding, loaded only when a real port is opened. */
export async function linuxBinding(): Promise<SerialBinding> {
  const { autoDetect } = await import('@serialport/bindings-cpp');
  return autoDetect();
}

/** Opens a serial port; resolves once it is open. `binding` defaults to the system's. */
export async function openSerial(options: SerialOptions, binding?: SerialBinding): Promise<SerialPortStream> {
  const parsed = SerialOptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new SerialError(`serial port options: ${issues.join('; ')}`);
  }
  const { path, baudRate } = parsed.data;
  const port = new SerialPortStream({
    binding: binding ?? (await linuxBinding()),
    path,
    baudRate,
    autoOpen: false,
  });
  await new Promise<void>((resolve, reject) => {
    port.open((err) => {
      if (!err) return resolve();
      const code = (err as NodeJS.ErrnoException).code;
      const fix =
        code === 'EACCES'
          ? '; the service needs read/write access to it (the dialout group)'
          : code === 'ENOENT' || /No such file/.test(err.message)
            ? '; is the device plugged in and the path right?'
            : '';
      reject(
        new SerialError(`serial port ${path} at ${baudRate} baud: open failed: ${err.message}${fix}`, {
          cause: err,
        }),
      );
    });
  });
  return port;
}

/** Closes a port opened by openSerial; a port already closed is fine. */
export function closeSerial(port: SerialPortStream): Promise<void> {
  if (!port.isOpen) return Promise.resolve();
  return new Promise((resolve, reject) => port.close((err) => (err ? reject(err) : resolve())));
}

/**
 * Two connected in-memory ends, for tests that need a link without a port: what is written to one is
 * read from the other (a technician's laptop and a box, say).
 */
export function memorySerialPair(): [Duplex, Duplex] {
  return duplexPair();
}
