// A TPM character device: /dev/tpmrm0 (the kernel's resource manager, the one to use) or /dev/tpm0.
// The kernel driver's contract is one write() of a whole command, then one read() of the whole
// response; a partial write or a second read in between is an error, so this transport does exactly
// one of each per command and never splits a buffer.

import { type FileHandle, open } from 'node:fs/promises';
import { TpmFormatError } from '../marshal.ts';
import { CommandQueue, responseSize, type Transport } from '../transport.ts';

/** TPM_BUFSIZE in the Linux driver: no command or response is larger. */
export const DEVICE_BUFFER_SIZE = 4096;

export class DeviceTransport implements Transport {
  readonly description: string;
  readonly #path: string;
  readonly #queue = new CommandQueue();
  #file: Promise<FileHandle> | undefined;
  #closed = false;

  constructor(path: string) {
    this.#path = path;
    this.description = `device:${path}`;
  }

  send(command: Uint8Array): Promise<Uint8Array> {
    return this.#queue.run(async () => {
      if (this.#closed) throw new Error(`${this.description}: transport is closed`);
      if (command.length > DEVICE_BUFFER_SIZE) {
        throw new Error(
          `${this.description}: a ${command.length}-byte command exceeds ${DEVICE_BUFFER_SIZE} bytes`,
        );
      }
      const file = await this.#open();
      const { bytesWritten } = await file.write(command, 0, command.length, null);
      if (bytesWritten !== command.length) {
        throw new Error(`${this.description}: wrote ${bytesWritten} of ${command.length} bytes of a command`);
      }
      const buffer = new Uint8Array(DEVICE_BUFFER_SIZE);
      const { bytesRead } = await file.read(buffer, 0, DEVICE_BUFFER_SIZE, null);
      const response = buffer.subarray(0, bytesRead);
      const size = responseSize(response, this.description);
      if (size !== bytesRead) {
        throw new TpmFormatError(
          `${this.description}: read ${bytesRead} bytes of a response that says ${size}`,
        );
      }
      return response;
    });
  }

  // Opened once, on first use, and kept: /dev/tpmrm0 ties the transient objects and sessions a
  // client created to its open file and flushes them when it is closed.
  #open(): Promise<FileHandle> {
    this.#file ??= open(this.#path, 'r+').catch((error: NodeJS.ErrnoException) => {
      this.#file = undefined;
      throw new Error(`${this.description}: cannot open: ${error.code ?? error.message}`, { cause: error });
    });
    return this.#file;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue.run(async () => {
      const file = this.#file;
      this.#file = undefined;
      if (file) await (await file).close();
    });
  }
}
