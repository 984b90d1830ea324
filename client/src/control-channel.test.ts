import assert from 'node:assert/strict';
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import { test } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { encodeControlFrame } from '@umbra/protocol';
import { decode } from 'cbor-x';
import { ControlChannel, reconnectDelayMs } from './control-channel.ts';

test('a control frame is a 4-byte big-endian length and a CBOR map { posture }', () => {
  const frame = encodeControlFrame({ posture: { os: 'debian', disk_encryption: true } });
  assert.equal(frame.readUInt32BE(0), frame.length - 4);
  assert.deepEqual(decode(frame.subarray(4)), { posture: { os: 'debian', disk_encryption: true } });
  assert.throws(() => encodeControlFrame({ posture: { big: 'x'.repeat(5000) } }), /exceeds/);
});

test('reconnects back off from 1 s, doubling, to at most a minute', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 7, 8, 20].map(reconnectDelayMs),
    [1000, 2000, 4000, 8000, 60000, 60000, 60000],
  );
});

test('the channel reports posture at once and every interval, and reconnects when it drops', async () => {
  const received: { connection: number; bytes: number }[] = [];
  let connections = 0;
  const server = createServer((socket: Socket) => {
    const connection = ++connections;
    socket.on('data', (chunk) => {
      received.push({ connection, bytes: chunk.length });
      // The first connection drops after its first two reports.
      if (connection === 1 && received.length === 2) socket.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const port = (server.address() as { port: number }).port;
  const lines: string[] = [];
  const channel = new ControlChannel({
    dial: () =>
      new Promise((resolve) => {
        const socket = tcpConnect({ host: '127.0.0.1', port }, () => resolve(socket as unknown as TLSSocket));
      }),
    posture: () => ({ os: 'debian' }),
    intervalMs: 50,
    log: (line) => lines.push(line),
  });
  channel.start();
  try {
    const deadline = Date.now() + 3000;
    while (!received.some((r) => r.connection === 2) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.ok(received.filter((r) => r.connection === 1).length >= 2, 'periodic reports');
    assert.ok(
      received.some((r) => r.connection === 2),
      'reconnected',
    );
    assert.match(lines[0] ?? '', /control channel closed; reconnecting in 1 s/);
  } finally {
    channel.stop();
    server.close();
  }
});
