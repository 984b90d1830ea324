import assert from 'node:assert/strict';
import { test } from 'node:test';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import {
  encodeFrame,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  type Frame,
  FrameDecoder,
  type FrameDecoderEvent,
  MAX_FRAME_PAYLOAD,
} from './frame.ts';

function decodeAll(chunks: Uint8Array[]) {
  const decoder = new FrameDecoder();
  const events: FrameDecoderEvent[] = [];
  for (const chunk of chunks) events.push(...decoder.push(chunk));
  events.push(...decoder.flush());
  const frames = events.flatMap((e) => (e.type === 'frame' ? [e.frame] : []));
  const errors = events.flatMap((e) => (e.type === 'error' ? [e.error] : []));
  const text = Buffer.concat(events.flatMap((e) => (e.type === 'text' ? [e.bytes] : [])));
  return { frames, errors, text };
}

function splitAt(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let last = 0;
  for (const p of points) {
    out.push(bytes.subarray(last, p));
    last = p;
  }
  out.push(bytes.subarray(last));
  return out;
}

const containsMagic = (bytes: Uint8Array) => Buffer.from(bytes).indexOf(FRAME_MAGIC) !== -1;

const arbFrame: fc.Arbitrary<Frame> = fc.oneof(
  fc.record({
    kind: fc.constant('data' as const),
    seq: fc.integer({ min: 0, max: 0xffff }),
    more: fc.boolean(),
    syn: fc.boolean(),
    payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  }),
  fc.record({
    kind: fc.constantFrom('ack' as const, 'nak' as const),
    seq: fc.integer({ min: 0, max: 0xffff }),
    payload: fc.constant(Buffer.alloc(0)),
  }),
);
// Console text: anything without a whole magic in it (a shell never prints one).
const arbText = fc.uint8Array({ maxLength: 40 }).filter((a) => !containsMagic(a));

test('a frame round-trips, and its layout is the documented one', () => {
  const payload = Buffer.from('hello');
  const bytes = encodeFrame({ kind: 'data', seq: 0x1234, more: true, payload });
  assert.deepEqual(bytes.subarray(0, 4), FRAME_MAGIC);
  assert.equal(bytes[4], 1);
  assert.equal(bytes[5], 0x81);
  assert.equal(bytes.readUInt16BE(6), 0x1234);
  assert.equal(bytes.readUInt16BE(8), 5);
  assert.equal(bytes.readUInt32BE(bytes.length - 4), crc32(bytes.subarray(0, bytes.length - 4)));
  assert.equal(bytes.length, FRAME_HEADER_BYTES + 5 + 4);
  const { frames, errors, text } = decodeAll([bytes]);
  assert.deepEqual(frames, [{ kind: 'data', seq: 0x1234, more: true, syn: false, payload }]);
  assert.deepEqual(errors, []);
  assert.equal(text.length, 0);
});

test('property: frames between console text, split anywhere, come out whole and the text unchanged', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(arbText, arbFrame), { maxLength: 8 }),
      arbText,
      fc.array(fc.nat(), { maxLength: 20 }),
      (pieces, tail, cuts) => {
        const stream = Buffer.concat([...pieces.flatMap(([t, f]) => [t, encodeFrame(f)]), tail]);
        const { frames, errors, text } = decodeAll(splitAt(stream, cuts));
        assert.deepEqual(errors, []);
        assert.deepEqual(
          frames.map((f) => [f.kind, f.seq, f.payload.toString('hex')]),
          pieces.map(([, f]) => [f.kind, f.seq, f.payload.toString('hex')]),
        );
        assert.deepEqual(text, Buffer.concat([...pieces.map(([t]) => t), tail]));
      },
    ),
    { numRuns: 300 },
  );
});

test('a frame fed one byte at a time, and split at every offset, decodes the same', () => {
  const frame = encodeFrame({ kind: 'data', seq: 7, payload: Buffer.from('x'.repeat(100)) });
  const stream = Buffer.concat([Buffer.from('login: '), frame, Buffer.from('\r\n$ ')]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const { frames, text } = decodeAll([stream.subarray(0, cut), stream.subarray(cut)]);
    assert.equal(frames.length, 1, `cut at ${cut}`);
    assert.equal(text.toString('latin1'), 'login: \r\n$ ');
  }
  const { frames } = decodeAll([...stream].map((b) => Buffer.from([b])));
  assert.equal(frames.length, 1);
});

test('property: random bytes never throw, never make up frames, and all come back as text', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), fc.array(fc.nat(), { maxLength: 10 }), (bytes, cuts) => {
      const { frames, text } = decodeAll(splitAt(Buffer.from(bytes), cuts));
      assert.equal(frames.length, 0);
      if (!containsMagic(bytes)) assert.deepEqual(text, Buffer.from(bytes));
    }),
    { numRuns: 300 },
  );
});

test('property: random bytes after a magic (a fake header) never throw and never hang the decoder', () => {
  const good = encodeFrame({ kind: 'ack', seq: 9, payload: Buffer.alloc(0) });
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), fc.array(fc.nat(), { maxLength: 6 }), (junk, cuts) => {
      // After the junk, enough good frames to complete any length a fake header could claim.
      const trailer = Buffer.concat(Array.from({ length: 2 }, () => good));
      const stream = Buffer.concat([FRAME_MAGIC, junk, Buffer.alloc(MAX_FRAME_PAYLOAD + 16), trailer]);
      const { frames } = decodeAll(splitAt(stream, cuts));
      assert.ok(frames.length >= 1, 'a good frame after the damage decodes');
    }),
    { numRuns: 200 },
  );
});

test('property: one damaged frame (a flipped byte or a truncation) costs at most that frame', () => {
  fc.assert(
    fc.property(
      fc.array(arbFrame, { minLength: 2, maxLength: 6 }),
      fc.nat(),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      fc.boolean(),
      fc.array(fc.nat(), { maxLength: 10 }),
      (list, which, where, xor, truncate, cuts) => {
        const encoded = list.map((f) => encodeFrame(f));
        const victim = which % encoded.length;
        const original = encoded[victim]!;
        const at = where % original.length;
        let damaged: Buffer;
        if (truncate) damaged = original.subarray(0, at);
        else {
          damaged = Buffer.from(original);
          damaged[at]! ^= xor;
        }
        const stream = Buffer.concat(encoded.map((e, i) => (i === victim ? damaged : e)));
        const { frames } = decodeAll(splitAt(stream, cuts));
        const expected = list.filter((_, i) => i !== victim).map((f) => f.payload.toString('hex') + f.seq);
        const got = frames.map((f) => f.payload.toString('hex') + f.seq);
        // Every undamaged frame arrives, in order; the damaged one does not (or, if only its
        // payload's bytes were re-found as a frame, nothing undamaged is lost).
        let k = 0;
        for (const g of got) if (g === expected[k]) k++;
        assert.equal(k, expected.length, `lost a good frame: got ${got.length}, wanted ${expected.length}`);
      },
    ),
    { numRuns: 500 },
  );
});

test('errors: bad CRC, oversize length and unknown version are reported with the sequence number', () => {
  const frame = encodeFrame({ kind: 'data', seq: 42, payload: Buffer.from('abc') });
  const badCrc = Buffer.from(frame);
  badCrc[FRAME_HEADER_BYTES + 1]! ^= 1;
  let { frames, errors, text } = decodeAll([badCrc]);
  assert.equal(frames.length, 0);
  assert.deepEqual(
    errors.map((e) => [e.kind, e.seq, e.frameKind]),
    [['crc', 42, 'data']],
  );
  assert.equal(text.length, 0, "a damaged frame's bytes are not passed on as console text");

  const withHeader = (mutate: (h: Buffer) => void, bodyLength: number) => {
    const h = Buffer.from(frame.subarray(0, FRAME_HEADER_BYTES));
    mutate(h);
    h.writeUInt16BE(crc32(h.subarray(4, 10)) & 0xffff, 10);
    return Buffer.concat([h, Buffer.alloc(bodyLength + 4)]);
  };
  const next = encodeFrame({ kind: 'ack', seq: 1, payload: Buffer.alloc(0) });
  ({ frames, errors } = decodeAll([
    withHeader((h) => h.writeUInt16BE(MAX_FRAME_PAYLOAD + 1, 8), MAX_FRAME_PAYLOAD + 1),
    next,
  ]));
  assert.deepEqual(
    errors.map((e) => [e.kind, e.seq]),
    [['oversize', 42]],
  );
  assert.equal(frames.length, 1, 'the frame after an oversize one decodes');
  ({ frames, errors } = decodeAll([withHeader((h) => (h[4] = 9), 3), next]));
  assert.equal(errors[0]?.kind, 'version');
  assert.match(errors[0]!.message, /framing version 9; this side speaks version 1/);
  assert.equal(frames.length, 1);
  ({ frames, errors } = decodeAll([withHeader((h) => (h[5] = 0x07), 3), next]));
  assert.equal(errors[0]?.kind, 'type');
  assert.equal(frames.length, 1);
});

test('an intact header with an oversize length: reported, and decoding resumes right after the header', () => {
  const oversizeHeader = (length: number, version = 1) => {
    const h = Buffer.from(
      encodeFrame({ kind: 'data', seq: 9, syn: true, payload: Buffer.alloc(1) }).subarray(0, 12),
    );
    h[4] = version;
    h.writeUInt16BE(length, 8);
    h.writeUInt16BE(crc32(h.subarray(4, 10)) & 0xffff, 10);
    return h;
  };
  const good = encodeFrame({ kind: 'data', seq: 10, syn: true, payload: Buffer.from('hello') });
  const noise = Buffer.alloc(300, 0x41);
  for (const length of [MAX_FRAME_PAYLOAD + 1, 60_000, 0xffff]) {
    for (const stream of [
      Buffer.concat([oversizeHeader(length), good]),
      Buffer.concat([oversizeHeader(length), noise, good, good]),
      Buffer.concat([oversizeHeader(length, 9), noise, good]),
    ]) {
      for (const chunks of [[stream], splitAt(stream, [5, 12, 13, 200])]) {
        const { frames, errors, text } = decodeAll(chunks);
        assert.equal(errors.length, 1);
        assert.equal(errors[0]!.seq, 9);
        if (stream[4] === 1) assert.equal(errors[0]!.kind, 'oversize');
        assert.ok(frames.length >= 1, `length ${length}: the frame right behind the bad header decodes`);
        assert.deepEqual(frames[0], {
          kind: 'data',
          seq: 10,
          more: false,
          syn: true,
          payload: Buffer.from('hello'),
        });
        assert.ok(!text.includes(oversizeHeader(length).subarray(0, 4)), 'the bad header is not text');
      }
    }
  }
});

test('encodeFrame refuses what the decoder would refuse', () => {
  assert.throws(
    () => encodeFrame({ kind: 'data', seq: 0, payload: Buffer.alloc(MAX_FRAME_PAYLOAD + 1) }),
    /more than 4096/,
  );
  assert.throws(() => encodeFrame({ kind: 'data', seq: 65536, payload: Buffer.alloc(0) }), /seq/);
  assert.throws(() => encodeFrame({ kind: 'ack', seq: 0, payload: Buffer.from('x') }), /no payload/);
});
