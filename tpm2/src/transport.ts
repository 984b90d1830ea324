// A Transport carries one marshalled command to a TPM and brings back its response. A TPM executes one
// command at a time and neither /dev/tpm0 nor swtpm's socket interleaves replies, so every transport
// keeps one command in flight and queues the rest in order.

import { HEADER_SIZE } from './constants.ts';
import { TpmFormatError } from './marshal.ts';

export interface Transport {
  /** Sends one command and resolves with its complete response (header included). */
  send(command: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
  /** For messages: e.g. "swtpm:127.0.0.1:2321". */
  readonly description: string;
}

/** The largest response accepted: well above any TPM's MAX_RESPONSE_SIZE (4096 on common parts). */
export const MAX_RESPONSE_SIZE = 65536;

/** Runs tasks one after the other, in the order given, whatever each one's outcome. */
export class CommandQueue {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

/** The size field of a response header, checked against what a response may be. */
export function responseSize(header: Uint8Array, where: string): number {
  if (header.length < HEADER_SIZE) {
    throw new TpmFormatError(`${where}: a response of ${header.length} bytes is shorter than its header`);
  }
  const size = new DataView(header.buffer, header.byteOffset, header.byteLength).getUint32(2);
  if (size < HEADER_SIZE || size > MAX_RESPONSE_SIZE) {
    throw new TpmFormatError(
      `${where}: response size ${size} is outside ${HEADER_SIZE}..${MAX_RESPONSE_SIZE}`,
    );
  }
  return size;
}

export type TpmAddress =
  | { readonly kind: 'device'; readonly path: string }
  | { readonly kind: 'swtpm'; readonly host: string; readonly port: number }
  | { readonly kind: 'swtpm-unix'; readonly path: string };

export const TPM_ADDRESS_FORMS = 'device:/dev/tpmrm0 | swtpm:HOST:PORT | swtpm-unix:PATH';

/** Parses `device:/dev/tpmrm0`, `swtpm:HOST:PORT` (HOST may be [v6]) or `swtpm-unix:PATH`. */
export function parseTpmAddress(text: string): TpmAddress {
  const colon = text.indexOf(':');
  const scheme = colon < 0 ? '' : text.slice(0, colon);
  const rest = text.slice(colon + 1);
  const bad = (why: string) => new Error(`TPM address "${text}": ${why}; expected ${TPM_ADDRESS_FORMS}`);
  switch (scheme) {
    case 'device':
      if (!rest.startsWith('/')) throw bad('the device must be an absolute path');
      return { kind: 'device', path: rest };
    case 'swtpm-unix':
      if (rest === '') throw bad('the socket path is missing');
      return { kind: 'swtpm-unix', path: rest };
    case 'swtpm': {
      const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
      if (!m) throw bad('HOST:PORT is missing or malformed');
      const port = Number(m[3]);
      if (port < 1 || port > 65535) throw bad(`port ${port} is outside 1..65535`);
      return { kind: 'swtpm', host: m[1] ?? m[2] ?? '', port };
    }
    default:
      throw bad(`unknown kind "${scheme}"`);
  }
}
