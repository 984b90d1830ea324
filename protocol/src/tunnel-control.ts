// The tunnel's control channel: a TLS connection with ALPN umbra-control/1 on which the client
// re-reports its posture while its tunnels are up. Each frame is a 4-byte big-endian length and
// one CBOR map `{ posture: { claim: value, ... } }`, claims as in a knock. The client writes these
// (client/src/control-channel.ts); the gateway's tunnel listener reads them.

import { Decoder, Encoder } from 'cbor-x';
import { z } from 'zod';

export const CONTROL_ALPN = 'umbra-control/1';
/** A tunnel's ALPN protocol is this prefix and the service name. */
export const SERVICE_ALPN_PREFIX = 'umbra-svc/';

/** The ALPN protocol a tunnel to `service` offers. */
export function serviceAlpn(service: string): string {
  return `${SERVICE_ALPN_PREFIX}${service}`;
}
export const MAX_CONTROL_FRAME_BYTES = 4096;
const LENGTH_BYTES = 4;

export type PostureClaims = Record<string, string | number | boolean>;

// The limits of a knock's posture (protocol/src/knock.ts): 1 to 16 claims, names of 1 to 32
// bytes, text of at most 64 bytes.
const utf8Bytes = (text: string) => Buffer.byteLength(text, 'utf8');
const postureFrame = z
  .object({
    posture: z
      .record(
        z
          .string()
          .refine((name) => utf8Bytes(name) >= 1 && utf8Bytes(name) <= 32, 'a claim name is 1 to 32 bytes'),
        z.union([
          z.string().refine((text) => utf8Bytes(text) <= 64, 'a text claim is at most 64 bytes'),
          z.number().int().safe(),
          z.boolean(),
        ]),
      )
      .refine((claims) => {
        const count = Object.keys(claims).length;
        return count >= 1 && count <= 16;
      }, '1 to 16 claims'),
  })
  .strict();

export type ControlFrame = z.infer<typeof postureFrame>;

export class ControlFrameError extends Error {
  override name = 'ControlFrameError';
}

const encoder = new Encoder({ useRecords: false, pack: false, tagUint8Array: false, mapsAsObjects: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

export function encodeControlFrame(frame: ControlFrame): Buffer {
  const body = encoder.encode(frame);
  if (body.length > MAX_CONTROL_FRAME_BYTES) {
    throw new ControlFrameError(`a control frame of ${body.length} bytes exceeds ${MAX_CONTROL_FRAME_BYTES}`);
  }
  const framed = Buffer.allocUnsafe(LENGTH_BYTES + body.length);
  framed.writeUInt32BE(body.length, 0);
  framed.set(body, LENGTH_BYTES);
  return framed;
}

/** Splits a byte stream into checked control frames; throws ControlFrameError on anything else. */
export class ControlFrameReader {
  #buffered: Buffer = Buffer.alloc(0);

  /** Takes the next chunk and returns the frames it completed. */
  push(chunk: Buffer): ControlFrame[] {
    this.#buffered = this.#buffered.length === 0 ? chunk : Buffer.concat([this.#buffered, chunk]);
    const frames: ControlFrame[] = [];
    while (this.#buffered.length >= LENGTH_BYTES) {
      const length = this.#buffered.readUInt32BE(0);
      // Checked before waiting for the body, so a peer cannot make the gateway buffer more.
      if (length === 0 || length > MAX_CONTROL_FRAME_BYTES) {
        throw new ControlFrameError(
          `a control frame must be 1 to ${MAX_CONTROL_FRAME_BYTES} bytes, not ${length}`,
        );
      }
      if (this.#buffered.length < LENGTH_BYTES + length) break;
      frames.push(decodeBody(this.#buffered.subarray(LENGTH_BYTES, LENGTH_BYTES + length)));
      this.#buffered = this.#buffered.subarray(LENGTH_BYTES + length);
    }
    return frames;
  }
}

function decodeBody(body: Buffer): ControlFrame {
  let value: unknown;
  try {
    value = decoder.decode(body);
  } catch (error) {
    throw new ControlFrameError(`a control frame is not one CBOR item (${(error as Error).message})`);
  }
  const parsed = postureFrame.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ControlFrameError(
      `invalid control frame: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`,
    );
  }
  return parsed.data;
}
