// Serial provisioning frames: how umbra-tech and a box's provisioner exchange bytes over a console
// port that a login getty also uses.
//
//   magic (4) | version (1) | type (1) | seq (2) | length (2) | header check (2) | payload | crc (4)
//
// All integers are big-endian. `header check` is the low 16 bits of CRC-32 over version…length, so
// a damaged length is refused at once instead of making the decoder wait for a body that never
// comes; `crc` is zlib's CRC-32 over the 12 header bytes and the payload. The header's layout is the
// same in every version, so a frame of a version this side does not speak is skipped whole.
//
// The magic is F5 55 4D FB ("\xF5UM\xFB"). 0xF5 and 0xFB never occur in UTF-8 text, so no line a
// shell, getty or kernel prints — and nothing a person types — starts a frame; neither is a
// character the tty line discipline acts on (^C, ^D, ^S/^Q, ^Z, DEL), nor Telnet's IAC (0xFF) for
// consoles reached through a terminal server. No proper prefix of the magic is also its suffix, so
// a scanner that fails part-way never needs to look back.
//
// The decoder takes whatever chunks the port delivers and never throws on input: it returns frames,
// errors (which the session turns into NAKs), and the bytes between frames, which belong to the
// console's other traffic and are passed on unchanged.

import { crc32 } from 'node:zlib';

export const FRAME_MAGIC = Buffer.from([0xf5, 0x55, 0x4d, 0xfb]);
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 12;
export const FRAME_CRC_BYTES = 4;
/** The largest payload of one frame: a site bundle spans a few frames, a progress event fits in one. */
export const MAX_FRAME_PAYLOAD = 4096;
export const MAX_FRAME_BYTES = FRAME_HEADER_BYTES + MAX_FRAME_PAYLOAD + FRAME_CRC_BYTES;

/** The type byte: the low nibble is the kind, the high bits are flags. */
const KIND = { data: 1, ack: 2, nak: 3 } as const;
const KIND_NAMES = { 1: 'data', 2: 'ack', 3: 'nak' } as const;
/** On a data frame: more fragments of the same message follow. */
export const FRAME_FLAG_MORE = 0x80;
/** On a data frame: the sender starts a new sequence here (a new session, or after a failed send). */
export const FRAME_FLAG_SYN = 0x40;
const KNOWN_FLAGS = FRAME_FLAG_MORE | FRAME_FLAG_SYN;

export type FrameKind = keyof typeof KIND;

export interface Frame {
  kind: FrameKind;
  /** Data frames: sender's sequence number. Acks and naks: the sequence number they answer. */
  seq: number;
  /** Data frames only. */
  more?: boolean;
  syn?: boolean;
  payload: Buffer;
}

export type FrameErrorKind = 'header' | 'version' | 'type' | 'oversize' | 'crc';

export interface FrameError {
  kind: FrameErrorKind;
  /** For a person and the log. */
  message: string;
  /** Set when the header was intact (so the sequence number is trustworthy). */
  seq?: number;
  frameKind?: FrameKind;
}

export type FrameDecoderEvent =
  | { type: 'frame'; frame: Frame }
  | { type: 'error'; error: FrameError }
  /** Bytes that are not part of any frame: the console's other traffic, in order. */
  | { type: 'text'; bytes: Buffer };

export function encodeFrame(frame: Frame): Buffer {
  const { kind, seq, payload } = frame;
  if (!Number.isInteger(seq) || seq < 0 || seq > 0xffff)
    throw new RangeError(`frame seq: expected 0 to 65535, got ${seq}`);
  if (payload.length > MAX_FRAME_PAYLOAD)
    throw new RangeError(`frame payload: ${payload.length} bytes, more than ${MAX_FRAME_PAYLOAD}`);
  if (kind !== 'data' && (payload.length > 0 || frame.more || frame.syn))
    throw new RangeError(`an ${kind} frame carries no payload and no flags`);
  const out = Buffer.alloc(FRAME_HEADER_BYTES + payload.length + FRAME_CRC_BYTES);
  FRAME_MAGIC.copy(out, 0);
  out[4] = FRAME_VERSION;
  out[5] = KIND[kind] | (frame.more ? FRAME_FLAG_MORE : 0) | (frame.syn ? FRAME_FLAG_SYN : 0);
  out.writeUInt16BE(seq, 6);
  out.writeUInt16BE(payload.length, 8);
  out.writeUInt16BE(headerCheck(out), 10);
  payload.copy(out, FRAME_HEADER_BYTES);
  out.writeUInt32BE(
    crc32(out.subarray(0, FRAME_HEADER_BYTES + payload.length)),
    out.length - FRAME_CRC_BYTES,
  );
  return out;
}

function refuseHeader(
  version: number,
  typeByte: number,
  length: number,
): { kind: FrameErrorKind; message: string } | undefined {
  if (version !== FRAME_VERSION)
    return {
      kind: 'version',
      message: `a frame of framing version ${version}; this side speaks version ${FRAME_VERSION} — update the older of umbra-tech and the box's firmware`,
    };
  if (length > MAX_FRAME_PAYLOAD)
    return {
      kind: 'oversize',
      message: `a frame of ${length} payload bytes; the limit is ${MAX_FRAME_PAYLOAD}`,
    };
  const kind = KIND_NAMES[(typeByte & 0x0f) as keyof typeof KIND_NAMES] as FrameKind | undefined;
  const unknownBits = (typeByte & 0xf0 & ~KNOWN_FLAGS) !== 0;
  const badControl = kind !== 'data' && ((typeByte & KNOWN_FLAGS) !== 0 || length !== 0);
  if (kind === undefined || unknownBits || badControl)
    return { kind: 'type', message: `a frame of unknown type 0x${typeByte.toString(16).padStart(2, '0')}` };
  return undefined;
}

/** Where in `bytes` a magic starts, or a proper prefix of one ends the bytes; bytes.length if nowhere. */
function firstPossibleMagic(bytes: Uint8Array): number {
  for (let at = bytes.indexOf(FRAME_MAGIC[0]!); at !== -1; at = bytes.indexOf(FRAME_MAGIC[0]!, at + 1)) {
    let k = 1;
    while (k < FRAME_MAGIC.length && at + k < bytes.length && bytes[at + k] === FRAME_MAGIC[k]) k++;
    if (k === FRAME_MAGIC.length || at + k === bytes.length) return at;
  }
  return bytes.length;
}

function headerCheck(header: Uint8Array): number {
  return crc32(header.subarray(4, 10)) & 0xffff;
}

/**
 * Incremental decoder. push() accepts any chunking of the stream and returns what the chunk
 * completed, in stream order. Memory is bounded by one frame; a trailing partial magic is held
 * until the next chunk says whether it starts a frame (flush() releases it as text).
 */
export class FrameDecoder {
  #state: 'scan' | 'header' | 'body' | 'skip' = 'scan';
  /** Magic bytes matched so far while scanning. */
  #matched = 0;
  #frame = Buffer.alloc(MAX_FRAME_BYTES);
  #have = 0;
  #need = 0;
  #skip = 0;
  #text: number[] = [];

  push(chunk: Uint8Array): FrameDecoderEvent[] {
    const events: FrameDecoderEvent[] = [];
    this.#feed(chunk, events);
    this.#emitText(events);
    return events;
  }

  /** Releases a held partial magic as text (e.g. when the port goes idle or closes). */
  flush(): FrameDecoderEvent[] {
    const events: FrameDecoderEvent[] = [];
    if (this.#state === 'scan' && this.#matched > 0) {
      for (let k = 0; k < this.#matched; k++) this.#text.push(FRAME_MAGIC[k]!);
      this.#matched = 0;
    }
    this.#emitText(events);
    return events;
  }

  #emitText(events: FrameDecoderEvent[]): void {
    if (this.#text.length === 0) return;
    events.push({ type: 'text', bytes: Buffer.from(this.#text) });
    this.#text = [];
  }

  #feed(data: Uint8Array, events: FrameDecoderEvent[]): void {
    let i = 0;
    while (i < data.length) {
      switch (this.#state) {
        case 'scan': {
          const byte = data[i++]!;
          if (byte === FRAME_MAGIC[this.#matched]) {
            if (++this.#matched === FRAME_MAGIC.length) {
              this.#emitText(events);
              FRAME_MAGIC.copy(this.#frame, 0);
              this.#have = FRAME_MAGIC.length;
              this.#matched = 0;
              this.#state = 'header';
            }
          } else {
            for (let k = 0; k < this.#matched; k++) this.#text.push(FRAME_MAGIC[k]!);
            // The magic's first byte occurs nowhere else in it, so only this byte can restart a match.
            this.#matched = byte === FRAME_MAGIC[0] ? 1 : 0;
            if (this.#matched === 0) this.#text.push(byte);
          }
          break;
        }
        case 'header': {
          const take = Math.min(FRAME_HEADER_BYTES - this.#have, data.length - i);
          this.#frame.set(data.subarray(i, i + take), this.#have);
          this.#have += take;
          i += take;
          if (this.#have === FRAME_HEADER_BYTES) this.#checkHeader(events);
          break;
        }
        case 'body': {
          const take = Math.min(this.#need - this.#have, data.length - i);
          this.#frame.set(data.subarray(i, i + take), this.#have);
          this.#have += take;
          i += take;
          if (this.#have === this.#need) this.#finishFrame(events);
          break;
        }
        case 'skip': {
          const take = Math.min(this.#skip, data.length - i);
          this.#skip -= take;
          i += take;
          if (this.#skip === 0) this.#state = 'scan';
          break;
        }
      }
    }
  }

  #checkHeader(events: FrameDecoderEvent[]): void {
    const header = this.#frame;
    if (header.readUInt16BE(10) !== headerCheck(header)) {
      events.push({
        type: 'error',
        error: { kind: 'header', message: 'a frame header failed its check (damaged on the line)' },
      });
      // Not a frame after all (or one whose length cannot be trusted): its first byte is text, and
      // the rest is scanned again, since a real frame may start inside it.
      this.#text.push(header[0]!);
      this.#state = 'scan';
      this.#feed(Buffer.from(header.subarray(1, FRAME_HEADER_BYTES)), events);
      return;
    }
    const version = header[4]!;
    const typeByte = header[5]!;
    const seq = header.readUInt16BE(6);
    const length = header.readUInt16BE(8);
    const refusal = refuseHeader(version, typeByte, length);
    if (refusal) {
      events.push({ type: 'error', error: { ...refusal, seq } });
      if (length > MAX_FRAME_PAYLOAD) {
        // No frame is that long, so the length is not one to act on (a peer's bug, or noise that
        // passed the 16-bit check): skipping by it could swallow up to 64 KiB of good frames.
        // Drop the header and scan again right after it.
        this.#state = 'scan';
        return;
      }
      // The header is intact and its length possible: skip the frame whole, buffering none of it.
      this.#skip = length + FRAME_CRC_BYTES;
      this.#state = 'skip';
      return;
    }
    this.#need = FRAME_HEADER_BYTES + length + FRAME_CRC_BYTES;
    this.#state = 'body';
    if (this.#have === this.#need) this.#finishFrame(events);
  }

  #finishFrame(events: FrameDecoderEvent[]): void {
    const frame = this.#frame;
    const end = this.#need - FRAME_CRC_BYTES;
    const typeByte = frame[5]!;
    const kind = KIND_NAMES[(typeByte & 0x0f) as keyof typeof KIND_NAMES] as FrameKind;
    const seq = frame.readUInt16BE(6);
    this.#state = 'scan';
    if (frame.readUInt32BE(end) !== crc32(frame.subarray(0, end))) {
      events.push({
        type: 'error',
        error: { kind: 'crc', message: `${kind} frame ${seq} failed its CRC-32 check`, seq, frameKind: kind },
      });
      // The header was intact, so these bytes were a frame and are not console text. But the frame
      // may have been cut short on the line and filled up with the start of the next one: scan
      // again from the first magic (or trailing part of one) after the header.
      const rest = frame.subarray(FRAME_HEADER_BYTES, this.#need);
      const from = firstPossibleMagic(rest);
      if (from < rest.length) this.#feed(Buffer.from(rest.subarray(from)), events);
      return;
    }
    const decoded: Frame = { kind, seq, payload: Buffer.from(frame.subarray(FRAME_HEADER_BYTES, end)) };
    if (kind === 'data') {
      decoded.more = (typeByte & FRAME_FLAG_MORE) !== 0;
      decoded.syn = (typeByte & FRAME_FLAG_SYN) !== 0;
    }
    events.push({ type: 'frame', frame: decoded });
  }
}
