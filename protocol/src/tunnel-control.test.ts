import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encode } from 'cbor-x';
import { ControlFrameReader, encodeControlFrame, MAX_CONTROL_FRAME_BYTES } from './tunnel-control.ts';

const frame = { posture: { os: 'debian-12', diskEncrypted: true, kernel: 6 } };

test('frames round-trip, whole or split across chunks', () => {
  const bytes = Buffer.concat([encodeControlFrame(frame), encodeControlFrame(frame)]);
  assert.deepEqual(new ControlFrameReader().push(bytes), [frame, frame]);
  const reader = new ControlFrameReader();
  const seen = [];
  for (const byte of bytes) seen.push(...reader.push(Buffer.from([byte])));
  assert.deepEqual(seen, [frame, frame]);
});

test('refuses oversized lengths before their body arrives, and bodies outside the schema', () => {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(MAX_CONTROL_FRAME_BYTES + 1);
  assert.throws(() => new ControlFrameReader().push(header), /1 to 4096 bytes, not 4097/);
  const framed = (value: unknown) => {
    const body = Buffer.from(encode(value));
    const length = Buffer.alloc(4);
    length.writeUInt32BE(body.length);
    return Buffer.concat([length, body]);
  };
  assert.throws(() => new ControlFrameReader().push(framed({ posture: {} })), /1 to 16 claims/);
  assert.throws(
    () => new ControlFrameReader().push(framed({ posture: { os: 'x' }, extra: 1 })),
    /invalid control frame/,
  );
  assert.throws(
    () => new ControlFrameReader().push(framed({ posture: { os: 'x'.repeat(65) } })),
    /at most 64 bytes/,
  );
  assert.throws(
    () => new ControlFrameReader().push(framed({ posture: { os: 1.5 } })),
    /invalid control frame: posture.os/,
  );
  assert.throws(
    () => new ControlFrameReader().push(Buffer.from([0, 0, 0, 1, 0xff])),
    /not one CBOR item|invalid/,
  );
});
