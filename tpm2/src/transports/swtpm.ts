// swtpm's socket interface (`swtpm socket --tpm2 --server type=tcp|unixio`): its data channel takes a
// raw TPM command and answers with the raw response, no framing around either (verified against swtpm
// 0.7; the MS-simulator TPM_SEND_COMMAND framing is what `--server` does *not* speak). As tpm2-tss's
// swtpm TCTI does, each command gets its own connection: no state survives between commands that a
// crashed or restarted swtpm could leave half-read. swtpm has no resource manager, so callers flush
// what they load (Tpm.withTransient).

import { connect, type Socket } from 'node:net';
import { HEADER_SIZE } from '../constants.ts';
import { TpmFormatError } from '../marshal.ts';
import { CommandQueue, MAX_RESPONSE_SIZE, responseSize, type Transport } from '../transport.ts';

export interface SwtpmTransportOptions {
  /** How long one command may take, connection included. RSA key generation on swtpm takes ~1 s. */
  readonly timeoutMs?: number;
}

type Endpoint = { readonly host: string; readonly port: number } | { readonly path: string };

export class SwtpmTransport implements Transport {
  readonly description: string;
  readonly #endpoint: Endpoint;
  readonly #timeoutMs: number;
  readonly #queue = new CommandQueue();
  #closed = false;

  constructor(endpoint: Endpoint, options: SwtpmTransportOptions = {}) {
    this.#endpoint = endpoint;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.description =
      'path' in endpoint ? `swtpm-unix:${endpoint.path}` : `swtpm:${endpoint.host}:${endpoint.port}`;
  }

  send(command: Uint8Array): Promise<Uint8Array> {
    return this.#queue.run(() => {
      if (this.#closed) return Promise.reject(new Error(`${this.description}: transport is closed`));
      return this.#exchange(command);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue.run(async () => undefined);
  }

  #exchange(command: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const where = this.description;
      const socket: Socket = connect(this.#endpoint);
      const chunks: Buffer[] = [];
      let received = 0;
      let expected = 0;
      let settled = false;
      const finish = (error: Error | null, response?: Uint8Array) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        if (error) reject(error);
        else resolve(response!);
      };
      const timer = setTimeout(
        () => finish(new Error(`${where}: no complete response within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      socket.on('connect', () => socket.write(command));
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
        try {
          if (expected === 0 && received >= HEADER_SIZE)
            expected = responseSize(Buffer.concat(chunks), where);
        } catch (error) {
          finish(error as Error);
          return;
        }
        if (expected !== 0 && received >= expected) {
          if (received > expected) {
            finish(
              new TpmFormatError(
                `${where}: ${received - expected} bytes after the ${expected}-byte response`,
              ),
            );
          } else {
            finish(null, new Uint8Array(Buffer.concat(chunks, received)));
          }
        } else if (received > MAX_RESPONSE_SIZE) {
          finish(new TpmFormatError(`${where}: response larger than ${MAX_RESPONSE_SIZE} bytes`));
        }
      });
      socket.on('error', (error) => finish(new Error(`${where}: ${error.message}`, { cause: error })));
      socket.on('close', () =>
        finish(
          new TpmFormatError(
            `${where}: connection closed after ${received} bytes of a ${expected || 'not yet known'}-byte response`,
          ),
        ),
      );
    });
  }
}
