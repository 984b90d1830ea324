import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ManualClock } from '../clock.ts';
import { ConsoleMux } from './console-mux.ts';
import { memorySerialPair } from './port.ts';
import { SharedConsole } from './shared-console.ts';

const PREAMBLE = Buffer.from([0x00, 0xd5, 0x55, 0x4d, 0x42]); // any 2..64 bytes; the protocol picks

function mux(clock = new ManualClock()) {
  const terminal: Buffer[] = [];
  const provisioner: Buffer[] = [];
  let sessions = 0;
  const m = new ConsoleMux({
    preamble: PREAMBLE,
    holdMs: 100,
    clock,
    toTerminal: (b) => terminal.push(Buffer.from(b)),
    toProvisioner: (b) => provisioner.push(Buffer.from(b)),
    onSessionStart: () => sessions++,
  });
  return {
    m,
    clock,
    terminal: () => Buffer.concat(terminal).toString('latin1'),
    provisioner: () => Buffer.concat(provisioner),
    sessions: () => sessions,
  };
}

describe('ConsoleMux', () => {
  test("bytes without a preamble are the getty's, at once", () => {
    const t = mux();
    t.m.push(Buffer.from('root\r'));
    assert.equal(t.terminal(), 'root\r');
    assert.equal(t.m.mode, 'terminal');
  });

  test("from the preamble on, the bytes are the provisioner's; bytes before it stay the getty's", () => {
    const t = mux();
    const frame = Buffer.concat([Buffer.from('ls\r'), PREAMBLE, Buffer.from([1, 2, 3])]);
    t.m.push(frame);
    assert.equal(t.terminal(), 'ls\r');
    assert.deepEqual(t.provisioner(), Buffer.concat([PREAMBLE, Buffer.from([1, 2, 3])]));
    assert.equal(t.m.mode, 'provisioning');
    assert.equal(t.sessions(), 1);
    // During the session everything is the provisioner's, text included.
    t.m.push(Buffer.from('more'));
    assert.equal(t.terminal(), 'ls\r');
    assert.equal(t.provisioner().subarray(-4).toString(), 'more');
  });

  test('a preamble split across reads, one byte at a time', () => {
    const t = mux();
    t.m.push(Buffer.from('x'));
    for (const byte of PREAMBLE) t.m.push(Buffer.from([byte]));
    t.m.push(Buffer.from([9]));
    assert.equal(t.terminal(), 'x');
    assert.deepEqual(t.provisioner(), Buffer.concat([PREAMBLE, Buffer.from([9])]));
  });

  test('the start of a preamble that goes nowhere reaches the getty: at once when the next byte differs, else after holdMs', () => {
    const t = mux();
    t.m.push(Buffer.concat([Buffer.from('a'), PREAMBLE.subarray(0, 3)]));
    assert.equal(t.terminal(), 'a');
    t.clock.advance(99);
    assert.equal(t.terminal(), 'a');
    t.clock.advance(1);
    assert.equal(t.terminal(), `a${PREAMBLE.subarray(0, 3).toString('latin1')}`);

    const u = mux();
    u.m.push(PREAMBLE.subarray(0, 2));
    u.m.push(Buffer.from('z'));
    assert.equal(u.terminal(), `${PREAMBLE.subarray(0, 2).toString('latin1')}z`);
    assert.equal(u.clock.pendingCount, 0);
  });

  test('endSession gives the port back to the getty and looks at the leftover again', () => {
    const t = mux();
    t.m.push(PREAMBLE);
    t.m.endSession(Buffer.from('after\r'));
    assert.equal(t.m.mode, 'terminal');
    assert.equal(t.terminal(), 'after\r');
    t.m.endSession(); // twice is harmless
    t.m.push(Buffer.concat([Buffer.from('!'), PREAMBLE]));
    assert.equal(t.sessions(), 2);
    assert.equal(t.terminal(), 'after\r!');
  });

  test('a preamble a person could type or a getty could print is refused', () => {
    const opts = { toTerminal() {}, toProvisioner() {} };
    assert.throws(
      () => new ConsoleMux({ ...opts, preamble: Buffer.from([0x7e]) }),
      /1 bytes; it must be 2 to 64/,
    );
    assert.throws(() => new ConsoleMux({ ...opts, preamble: Buffer.from('~~~~') }), /one repeated byte/);
    assert.throws(() => new ConsoleMux({ ...opts, preamble: PREAMBLE, holdMs: 0 }), /holdMs 0/);
  });
});

describe('SharedConsole', () => {
  test('getty output flows until a session starts, is held during it and written after it', async () => {
    const [portInside, portOutside] = memorySerialPair(); // the box's port / the technician's laptop
    const [gettySide, terminal] = memorySerialPair(); // the getty's pty slave / its master
    const laptop: Buffer[] = [];
    portOutside.on('data', (b: Buffer) => laptop.push(b));
    const getty: Buffer[] = [];
    gettySide.on('data', (b: Buffer) => getty.push(b));
    const provisioning: Buffer[] = [];
    const shared = new SharedConsole({
      port: portInside,
      terminal,
      preamble: PREAMBLE,
      onProvisioning: (b) => provisioning.push(Buffer.from(b)),
    });
    const tick = () => new Promise((r) => setImmediate(r));

    gettySide.write('login: ');
    portOutside.write('admin\r');
    await tick();
    assert.equal(Buffer.concat(laptop).toString(), 'login: ');
    assert.equal(Buffer.concat(getty).toString(), 'admin\r');
    await assert.rejects(shared.send(Buffer.from('x')), /no provisioning session is active/);

    portOutside.write(Buffer.concat([PREAMBLE, Buffer.from('hello')]));
    await tick();
    assert.equal(shared.mode, 'provisioning');
    gettySide.write('\r\nLogin timed out'); // the getty talks during the session: held
    await shared.send(Buffer.concat([PREAMBLE, Buffer.from('reply')]));
    await tick();
    assert.deepEqual(Buffer.concat(provisioning), Buffer.concat([PREAMBLE, Buffer.from('hello')]));
    assert.equal(Buffer.concat(laptop).toString('latin1'), `login: ${PREAMBLE.toString('latin1')}reply`);
    assert.equal(Buffer.concat(getty).toString(), 'admin\r');

    shared.endSession();
    await tick();
    assert.equal(Buffer.concat(laptop).toString('latin1').endsWith('reply\r\nLogin timed out'), true);
    shared.close();
  });

  test('held getty output is bounded; what is dropped is counted', async () => {
    const [portInside, portOutside] = memorySerialPair();
    const [gettySide, terminal] = memorySerialPair();
    const laptop: Buffer[] = [];
    portOutside.on('data', (b: Buffer) => laptop.push(b));
    const shared = new SharedConsole({
      port: portInside,
      terminal,
      preamble: PREAMBLE,
      onProvisioning() {},
      maxHeldOutput: 8,
    });
    const tick = () => new Promise((r) => setImmediate(r));
    portOutside.write(PREAMBLE);
    await tick();
    gettySide.write('0123456789');
    await tick();
    gettySide.write('abc');
    await tick();
    assert.equal(shared.droppedOutputBytes, 5);
    shared.endSession();
    await tick();
    assert.equal(Buffer.concat(laptop).toString(), '56789abc');
    shared.close();
  });
});

describe('ConsoleMux, by property', () => {
  test('text then a session, cut into any reads: the getty gets exactly the text, the provisioner the session', async () => {
    const fc = (await import('fast-check')).default;
    const text = fc.uint8Array({ maxLength: 60 }).filter((a) => Buffer.from(a).indexOf(PREAMBLE) === -1);
    fc.assert(
      fc.property(
        text,
        fc.uint8Array({ maxLength: 40 }),
        fc.array(fc.nat(120), { maxLength: 8 }),
        (t, payload, cuts) => {
          const stream = Buffer.concat([t, PREAMBLE, payload]);
          const m = mux();
          let at = 0;
          for (const cut of [...cuts].sort((a, b) => a - b)) {
            const end = Math.min(cut, stream.length);
            if (end > at) m.m.push(stream.subarray(at, end));
            at = Math.max(at, end);
          }
          m.m.push(stream.subarray(at));
          assert.equal(m.terminal(), Buffer.from(t).toString('latin1'));
          assert.deepEqual(m.provisioner(), Buffer.concat([PREAMBLE, payload]));
        },
      ),
    );
  });

  test('text alone, cut into any reads and given time, reaches the getty whole and in order', async () => {
    const fc = (await import('fast-check')).default;
    const text = fc.uint8Array({ maxLength: 60 }).filter((a) => Buffer.from(a).indexOf(PREAMBLE) === -1);
    fc.assert(
      fc.property(text, fc.array(fc.nat(60), { maxLength: 6 }), (t, cuts) => {
        const m = mux();
        let at = 0;
        for (const cut of [...cuts].sort((a, b) => a - b)) {
          if (cut > at) m.m.push(t.subarray(at, cut));
          at = Math.max(at, cut);
          m.clock.advance(cut % 2 === 0 ? 150 : 10);
        }
        m.m.push(t.subarray(at));
        m.clock.advance(100);
        assert.equal(m.terminal(), Buffer.from(t).toString('latin1'));
        assert.equal(m.provisioner().length, 0);
      }),
    );
  });
});
