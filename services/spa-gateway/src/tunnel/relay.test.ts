// relay(): what a tunnel does with its bytes between the client's socket and the backend's.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect as connectTcp, createServer, type Socket } from 'node:net';
import { PassThrough, Writable } from 'node:stream';
import { test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { RELAY_HIGH_WATER_MARK, relay } from './relay.ts';

/** A destination that records how it was written to, and completes writes only when told. */
function recordingSink(options: { hold?: boolean } = {}) {
  const calls: number[][] = []; // chunk sizes, one array per _write/_writev call
  const held: Array<() => void> = [];
  const received: Buffer[] = [];
  const complete = (callback: () => void) => (options.hold ? held.push(callback) : callback());
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      calls.push([chunk.length]);
      received.push(chunk);
      complete(callback);
    },
    writev(chunks, callback) {
      calls.push(chunks.map(({ chunk }) => (chunk as Buffer).length));
      for (const { chunk } of chunks) received.push(chunk as Buffer);
      complete(callback);
    },
  });
  const release = () => {
    for (const callback of held.splice(0)) callback();
  };
  return { sink, calls, received, release };
}

test('what one turn of the event loop reads leaves in one write when gathering, chunk by chunk otherwise', async () => {
  for (const gather of [true, false]) {
    const source = new PassThrough();
    const { sink, calls } = recordingSink();
    relay(source, sink, { gather });
    // Four TLS records from one read of the network, as Node's TLS hands them over.
    for (let i = 0; i < 4; i++) source.write(Buffer.alloc(16_384, i));
    await nextTurn();
    await nextTurn();
    if (gather) assert.deepEqual(calls, [[16_384, 16_384, 16_384, 16_384]]);
    else assert.deepEqual(calls, [[16_384], [16_384], [16_384], [16_384]]);
  }
});

test('the source is paused while the destination holds the high-water mark unsent, and resumed when it drains', async () => {
  const source = new PassThrough({ highWaterMark: 1024 * 1024 });
  const { sink, received, release } = recordingSink({ hold: true });
  const mark = 64 * 1024;
  relay(source, sink, { gather: false, highWaterMark: mark });
  for (let i = 0; i < 8; i++) source.write(Buffer.alloc(16_384, i)); // 128 KiB, twice the mark
  await nextTurn();
  assert.equal(source.isPaused(), true, 'paused at the mark');
  assert.ok(sink.writableLength >= mark && sink.writableLength < 2 * mark);
  const relayedBeforeDrain = received.length + sink.writableLength / 16_384;
  assert.ok(relayedBeforeDrain < 8, 'not everything was taken while the destination was full');
  // The destination completes its writes: it drains, the rest follows, in order.
  for (let turn = 0; turn < 10 && received.length < 8; turn++) {
    release();
    await nextTurn();
  }
  release();
  assert.equal(received.length, 8);
  assert.deepEqual(
    received.map((chunk) => chunk[0]),
    [0, 1, 2, 3, 4, 5, 6, 7],
  );
  assert.equal(source.isPaused(), false);
});

test("the source's end ends the destination; once the destination is closed the source is no longer read", async () => {
  const source = new PassThrough();
  const { sink } = recordingSink();
  relay(source, sink, { gather: true });
  source.end(Buffer.from('last words'));
  await new Promise((resolve) => sink.once('finish', resolve));

  const other = new PassThrough();
  const closedSink = recordingSink();
  relay(other, closedSink.sink, { gather: true });
  closedSink.sink.destroy();
  await nextTurn();
  other.write(Buffer.alloc(1000));
  await nextTurn();
  assert.equal(other.listenerCount('data'), 0);
  assert.equal(other.readableLength, 1000, 'left unread, so TCP holds the peer back');
});

test('over TCP, both directions arrive whole and in order through two relays', async () => {
  // client ⇄ [relay] ⇄ echo server: what the client sends comes back byte for byte.
  const echo = createServer((socket) => socket.on('error', () => {}).pipe(socket));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const proxy = createServer((inbound) => {
    const outbound = connectTcp((echo.address() as { port: number }).port, '127.0.0.1');
    relay(inbound, outbound, { gather: true });
    relay(outbound, inbound, { gather: false });
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  try {
    const payload = randomBytes(4 * RELAY_HIGH_WATER_MARK + 12_345);
    const client: Socket = connectTcp((proxy.address() as { port: number }).port, '127.0.0.1');
    const back: Buffer[] = [];
    let length = 0;
    // Not half-closed: the tunnel's sockets end both ways when one side ends (allowHalfOpen off).
    const all = new Promise<void>((resolve) =>
      client.on('data', (chunk: Buffer) => {
        back.push(chunk);
        length += chunk.length;
        if (length >= payload.length) resolve();
      }),
    );
    for (let offset = 0; offset < payload.length; offset += 10_000) {
      client.write(payload.subarray(offset, offset + 10_000));
    }
    await all;
    client.end();
    const digest = (data: Buffer) => createHash('sha256').update(data).digest('hex');
    assert.equal(digest(Buffer.concat(back)), digest(payload));
  } finally {
    proxy.close();
    echo.close();
  }
});
