import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, afterEach, describe, test } from 'node:test';
import { openMemorySerial, resetMemorySerial } from './memory.ts';
import { closeSerial, openSerial } from './port.ts';
import { openGettyPty, SharedConsole } from './shared-console.ts';
import { closePtyPairs, haveSocat, ptyPair } from './testing.ts';

after(closePtyPairs);

async function readBytes(stream: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    chunks.push(chunk as Buffer);
    total += (chunk as Buffer).length;
    if (total >= n) break;
  }
  return Buffer.concat(chunks);
}

function nextBytes(stream: Readable, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= n) {
        stream.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    stream.on('data', onData);
  });
}

describe('serial ports', () => {
  afterEach(() => resetMemorySerial());

  test('in memory: the same stream over binding-mock', async () => {
    const serial = await openMemorySerial('/dev/ttyMOCK1');
    const got = nextBytes(serial.stream, 3);
    serial.receive(Buffer.from([1, 2, 3]));
    assert.deepEqual(await got, Buffer.from([1, 2, 3]));
    await new Promise<void>((r) => serial.stream.write('hi', () => r()));
    await new Promise<void>((r) => serial.stream.drain(() => r()));
    assert.equal(serial.written().toString(), 'hi');
    await closeSerial(serial.stream);
  });

  test('bad options and missing devices get errors that say what to fix', async () => {
    await assert.rejects(openSerial({ path: 'ttyUSB0', baudRate: 115200 }), /path: an absolute device path/);
    await assert.rejects(
      openSerial({ path: '/dev/ttyS0', baudRate: 7 }),
      /baudRate: Number must be greater than or equal to 50/,
    );
    await assert.rejects(
      openSerial({ path: '/dev/ttyUMBRA-NONE', baudRate: 9600 }),
      /serial port \/dev\/ttyUMBRA-NONE at 9600 baud: open failed: .*is the device plugged in/,
    );
  });

  test('a real pty pair from socat: bytes both ways', { skip: !haveSocat && 'needs socat' }, async () => {
    const [laptopPath, boxPath] = await ptyPair();
    const laptop = await openSerial({ path: laptopPath, baudRate: 115200 });
    const box = await openSerial({ path: boxPath, baudRate: 115200 });
    try {
      const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
      const atBox = nextBytes(box, all.length);
      laptop.write(all);
      assert.deepEqual(await atBox, all);
      const reply = Buffer.alloc(4096, 0xa5);
      const atLaptop = nextBytes(laptop, reply.length);
      box.write(reply);
      assert.deepEqual(await atLaptop, reply);
    } finally {
      await closeSerial(laptop);
      await closeSerial(box);
    }
  });

  test("the getty's pty: what the terminal side writes, the getty reads, and back", {
    skip: !haveSocat && 'needs socat',
  }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'umbra-hal-getty-'));
    const getty = await openGettyPty(join(dir, 'ttyUMBRA0'));
    const slave = await openSerial({ path: getty.path, baudRate: 115200 });
    try {
      const atGetty = nextBytes(slave, 6);
      getty.terminal.write('admin\r');
      assert.equal((await atGetty).toString(), 'admin\r');
      const atTerminal = readBytes(getty.terminal, 7);
      slave.write('login: ');
      assert.equal((await atTerminal).toString(), 'login: ');
    } finally {
      await closeSerial(slave);
      await getty.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('the shared console over real ttys: a login, then a provisioning session, then the login again', {
    skip: !haveSocat && 'needs socat',
  }, async () => {
    const preamble = Buffer.from([0xf5, 0x55, 0x4d, 0xfb]);
    const dir = await mkdtemp(join(tmpdir(), 'umbra-hal-shared-'));
    const [laptopPath, boxPath] = await ptyPair();
    const laptop = await openSerial({ path: laptopPath, baudRate: 115200 });
    const console_ = await openSerial({ path: boxPath, baudRate: 115200 });
    const gettyPty = await openGettyPty(join(dir, 'ttyUMBRA0'));
    const getty = await openSerial({ path: gettyPty.path, baudRate: 115200 });
    const sessions: Buffer[] = [];
    const shared = new SharedConsole({
      port: console_,
      terminal: gettyPty.terminal,
      preamble,
      onProvisioning: (b) => sessions.push(Buffer.from(b)),
    });
    try {
      let atGetty = nextBytes(getty, 5);
      laptop.write('root\r');
      assert.equal((await atGetty).toString(), 'root\r');
      let atLaptop = nextBytes(laptop, 10);
      getty.write('Password: ');
      assert.equal((await atLaptop).toString(), 'Password: ');

      const hello = Buffer.concat([preamble, Buffer.from([1, 2, 3, 0xff])]);
      const started = new Promise<void>((r) => {
        const poll = () => (Buffer.concat(sessions).length >= hello.length ? r() : setTimeout(poll, 5));
        poll();
      });
      laptop.write(hello);
      await started;
      assert.deepEqual(Buffer.concat(sessions), hello);
      getty.write('\r\nLogin timed out');
      await new Promise((r) => setTimeout(r, 50));
      atLaptop = nextBytes(laptop, 8);
      await shared.send(Buffer.concat([preamble, Buffer.from('ok!!')]));
      assert.deepEqual(await atLaptop, Buffer.concat([preamble, Buffer.from('ok!!')]));

      atLaptop = nextBytes(laptop, 17);
      shared.endSession();
      assert.equal((await atLaptop).toString(), '\r\nLogin timed out');
      atGetty = nextBytes(getty, 6);
      laptop.write('admin\r');
      assert.equal((await atGetty).toString(), 'admin\r');
    } finally {
      shared.close();
      await closeSerial(getty);
      await gettyPty.close();
      await closeSerial(laptop);
      await closeSerial(console_);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
