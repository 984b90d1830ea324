import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { TpmFormatError, Writer } from './marshal.ts';
import { CommandQueue, parseTpmAddress } from './transport.ts';
import { DeviceTransport } from './transports/device.ts';
import { SwtpmTransport } from './transports/swtpm.ts';

describe('TPM addresses', () => {
  test('the three forms', () => {
    assert.deepEqual(parseTpmAddress('device:/dev/tpmrm0'), { kind: 'device', path: '/dev/tpmrm0' });
    assert.deepEqual(parseTpmAddress('swtpm:127.0.0.1:2321'), {
      kind: 'swtpm',
      host: '127.0.0.1',
      port: 2321,
    });
    assert.deepEqual(parseTpmAddress('swtpm:localhost:2321'), {
      kind: 'swtpm',
      host: 'localhost',
      port: 2321,
    });
    assert.deepEqual(parseTpmAddress('swtpm:[::1]:2321'), { kind: 'swtpm', host: '::1', port: 2321 });
    assert.deepEqual(parseTpmAddress('swtpm-unix:/run/swtpm.sock'), {
      kind: 'swtpm-unix',
      path: '/run/swtpm.sock',
    });
  });

  test('what is refused, and the message says what is expected', () => {
    for (const bad of [
      '',
      '/dev/tpmrm0',
      'device:tpmrm0',
      'swtpm:host',
      'swtpm:host:0',
      'swtpm:host:70000',
      'swtpm-unix:',
      'tcp:1:2',
    ]) {
      assert.throws(
        () => parseTpmAddress(bad),
        /expected device:\/dev\/tpmrm0 \| swtpm:HOST:PORT \| swtpm-unix:PATH/,
        bad,
      );
    }
  });
});

describe('CommandQueue', () => {
  test('runs one task at a time, in order, past failures', async () => {
    const queue = new CommandQueue();
    const log: string[] = [];
    let running = 0;
    const task = (name: string, fail = false) =>
      queue.run(async () => {
        assert.equal(running++, 0);
        log.push(`start ${name}`);
        await new Promise((resolve) => setTimeout(resolve, 2));
        log.push(`end ${name}`);
        running--;
        if (fail) throw new Error(name);
        return name;
      });
    const results = await Promise.allSettled([task('a'), task('b', true), task('c')]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  });
});

const GET_RANDOM = new Writer().u16(0x8001).u32(12).u32(0x17b).u16(8).finish();
const RESPONSE = new Writer().u16(0x8001).u32(20).u32(0).u16(8).bytes(new Uint8Array(8).fill(7)).finish();

/** A fake swtpm data channel: `serve` decides what each connection gets. */
async function fakeSwtpm(
  serve: (socket: Socket, command: Buffer) => void,
): Promise<{ server: Server; port: number; connections: () => number }> {
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    socket.once('data', (command) => serve(socket, command));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as { port: number }).port, connections: () => connections };
}

describe('SwtpmTransport against a fake data channel', () => {
  const servers: Server[] = [];
  after(() => {
    for (const s of servers) s.close();
  });

  test('a response in one-byte pieces is put together; one connection per command', async () => {
    const fake = await fakeSwtpm((socket, command) => {
      assert.deepEqual(new Uint8Array(command), GET_RANDOM);
      let i = 0;
      const drip = () => {
        if (i < RESPONSE.length) socket.write(RESPONSE.subarray(i, ++i), drip);
      };
      drip();
    });
    servers.push(fake.server);
    const transport = new SwtpmTransport({ host: '127.0.0.1', port: fake.port });
    assert.deepEqual(await transport.send(GET_RANDOM), RESPONSE);
    assert.deepEqual(await transport.send(GET_RANDOM), RESPONSE);
    assert.equal(fake.connections(), 2);
    await transport.close();
    await assert.rejects(transport.send(GET_RANDOM), /transport is closed/);
  });

  test('a connection closed mid-response, extra bytes, a bad size and silence are errors', async () => {
    const cases: [string, (s: Socket) => void, RegExp][] = [
      [
        'short',
        (s) => s.end(RESPONSE.subarray(0, 15)),
        /connection closed after 15 bytes of a 20-byte response/,
      ],
      ['before the header', (s) => s.end(RESPONSE.subarray(0, 4)), /connection closed after 4 bytes/],
      [
        'extra',
        (s) => s.write(Buffer.concat([RESPONSE, Buffer.of(1, 2)])),
        /2 bytes after the 20-byte response/,
      ],
      [
        'tiny size',
        (s) => s.write(new Writer().u16(0x8001).u32(3).u32(0).finish()),
        /response size 3 is outside/,
      ],
      [
        'huge size',
        (s) =>
          s.write(
            new Writer()
              .u16(0x8001)
              .u32(1 << 30)
              .u32(0)
              .finish(),
          ),
        /response size 1073741824/,
      ],
      ['silence', () => undefined, /no complete response within 200 ms/],
    ];
    for (const [name, serve, expected] of cases) {
      const fake = await fakeSwtpm((socket) => serve(socket));
      servers.push(fake.server);
      const transport = new SwtpmTransport({ host: '127.0.0.1', port: fake.port }, { timeoutMs: 200 });
      await assert.rejects(transport.send(GET_RANDOM), expected, name);
    }
  });

  test('a refused connection names the address', async () => {
    const fake = await fakeSwtpm(() => undefined);
    await new Promise((resolve) => fake.server.close(resolve));
    const transport = new SwtpmTransport({ host: '127.0.0.1', port: fake.port });
    await assert.rejects(
      transport.send(GET_RANDOM),
      new RegExp(`^Error: swtpm:127.0.0.1:${fake.port}: connect ECONNREFUSED`),
    );
  });
});

describe('DeviceTransport', () => {
  test('one write and one read on the same open file (a FIFO echoes the command back)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'umbra-tpm-fifo-'));
    try {
      const fifo = join(dir, 'tpm');
      execFileSync('mkfifo', [fifo]);
      const transport = new DeviceTransport(fifo);
      assert.deepEqual(await transport.send(GET_RANDOM), GET_RANDOM);
      assert.deepEqual(await transport.send(RESPONSE), RESPONSE);
      await transport.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a missing device, an oversized command, and a read that disagrees with its size', async () => {
    await assert.rejects(
      new DeviceTransport('/nonexistent/tpmrm0').send(GET_RANDOM),
      /device:\/nonexistent\/tpmrm0: cannot open: ENOENT/,
    );
    const dir = mkdtempSync(join(tmpdir(), 'umbra-tpm-fifo-'));
    try {
      const fifo = join(dir, 'tpm');
      execFileSync('mkfifo', [fifo]);
      const transport = new DeviceTransport(fifo);
      await assert.rejects(transport.send(new Uint8Array(4097)), /4097-byte command exceeds 4096/);
      const lying = new Writer().u16(0x8001).u32(30).u32(0).u16(0).finish();
      await assert.rejects(
        transport.send(lying),
        (e: unknown) =>
          e instanceof TpmFormatError && /read 12 bytes of a response that says 30/.test(e.message),
      );
      await transport.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
