import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { test } from 'node:test';
import { FRAME_HEADER_BYTES, type FrameError } from './frame.ts';
import {
  type BoxHello,
  type ProvisioningMessage,
  ProvisioningVersionError,
  type ToBoxMessage,
  type ToTechnicianMessage,
} from './messages.ts';
import { exchangeHello, ProvisioningLinkError, ProvisioningSession } from './session.ts';

/** mulberry32: a small seeded generator, so a failing run can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Faults {
  drop?: number;
  corrupt?: number;
  duplicate?: number;
  maxDelayMs?: number;
  /** Probability of console text ahead of a frame, and of the frame arriving in two chunks. */
  text?: number;
  /** At most this many faulty frames in a row per direction, so delivery is certain (bounded). */
  maxConsecutiveFaults?: number;
  /** Decides per frame whether it is damaged; overrides the random choice. */
  only?: (frame: Buffer, index: number) => 'drop' | 'corrupt-payload' | undefined;
}

/** Two Duplex ends of a serial line that drops, corrupts, duplicates and delays (never reorders). */
function lossyLine(seed: number, faults: Faults = {}): [Duplex, Duplex] {
  const random = rng(seed);
  const ends: Duplex[] = [];
  const direction = (to: () => Duplex) => {
    const queue: { at: number; chunks: Buffer[] }[] = [];
    let timer: NodeJS.Timeout | undefined;
    let lastAt = 0;
    let faultsInRow = 0;
    let index = 0;
    const pump = () => {
      timer = undefined;
      while (queue.length > 0 && queue[0]!.at <= Date.now())
        for (const c of queue.shift()!.chunks) to().push(c);
      if (queue.length > 0) timer = setTimeout(pump, queue[0]!.at - Date.now());
    };
    const enqueue = (chunks: Buffer[]) => {
      const at = Math.max(lastAt, Date.now() + Math.floor(random() * (faults.maxDelayMs ?? 0)));
      lastAt = at;
      queue.push({ at, chunks });
      if (!timer) timer = setTimeout(pump, Math.max(0, queue[0]!.at - Date.now()));
    };
    return (frame: Buffer) => {
      const forced = faults.only?.(frame, index++);
      const allowFault = faultsInRow < (faults.maxConsecutiveFaults ?? 3);
      const roll = (p: number | undefined) => allowFault && random() < (p ?? 0);
      if (forced === 'drop' || (!faults.only && roll(faults.drop))) {
        faultsInRow++;
        return;
      }
      const bytes = Buffer.from(frame);
      if (forced === 'corrupt-payload') bytes[FRAME_HEADER_BYTES]! ^= 0x20;
      else if (!faults.only && roll(faults.corrupt)) {
        bytes[Math.floor(random() * bytes.length)]! ^= 1 << Math.floor(random() * 8);
        faultsInRow++;
      } else faultsInRow = 0;
      const copies = !faults.only && roll(faults.duplicate) ? 2 : 1;
      for (let c = 0; c < copies; c++) {
        const chunks: Buffer[] = [];
        if (random() < (faults.text ?? 0))
          chunks.push(Buffer.from('\r\nUbuntu 24.04 umbra ttyS0\r\nlogin: '));
        if (random() < (faults.text ?? 0)) {
          const cut = Math.floor(random() * bytes.length);
          chunks.push(bytes.subarray(0, cut), bytes.subarray(cut));
        } else chunks.push(bytes);
        enqueue(chunks);
      }
    };
  };
  const toB = direction(() => ends[1]!);
  const toA = direction(() => ends[0]!);
  const end = (send: (frame: Buffer) => void) =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        send(chunk);
        callback();
      },
    });
  ends.push(end(toB), end(toA));
  return [ends[0]!, ends[1]!];
}

const boxHello: BoxHello = {
  t: 'hello',
  versions: [1],
  serialNumber: 'UMB-0001',
  firmwareVersion: '1.0.0',
  ekHash: '0f'.repeat(32),
  state: 'unprovisioned',
};

function scripts(seed: number): { toBox: ToBoxMessage[]; toTechnician: ToTechnicianMessage[] } {
  const random = rng(seed * 7919);
  const toBox: ToBoxMessage[] = [{ t: 'hello', versions: [1] }];
  const toTechnician: ToTechnicianMessage[] = [boxHello];
  for (let i = 0; i < 12; i++) {
    // Bundles from one byte to three frames' worth, so messages span frames.
    const size = 1 + Math.floor(random() * 10_000);
    toBox.push(
      { t: 'apply-bundle', bundle: Buffer.alloc(size, i) },
      i % 2 ? { t: 'status-request' } : { t: 'logs-request', lines: i + 1 },
    );
    toTechnician.push(
      { t: 'progress', step: 'apply-network', text: `step ${i}`, percent: i },
      {
        t: 'logs',
        lines: Array.from({ length: Math.floor(random() * 100) }, (_, k) => `line ${k} ${'x'.repeat(100)}`),
      },
    );
  }
  toTechnician.push({ t: 'result', ok: true });
  return { toBox, toTechnician };
}

async function receiveAll(session: ProvisioningSession, count: number): Promise<ProvisioningMessage[]> {
  const got: ProvisioningMessage[] = [];
  for (let i = 0; i < count; i++) got.push(await session.receive({ timeoutMs: 20_000 }));
  return got;
}

async function assertNothingMore(session: ProvisioningSession): Promise<void> {
  await assert.rejects(session.receive({ timeoutMs: 150 }), (error: unknown) => {
    assert.ok(error instanceof ProvisioningLinkError && error.code === 'timeout', String(error));
    return true;
  });
}

for (const seed of [1, 2, 3, 4, 5, 6]) {
  test(`seed ${seed}: over a line that drops, corrupts, duplicates and delays, every message arrives once, in order`, async () => {
    const [laptop, box] = lossyLine(seed, {
      drop: 0.1,
      corrupt: 0.1,
      duplicate: 0.1,
      maxDelayMs: 8,
      text: 0.2,
      maxConsecutiveFaults: 3,
    });
    const frameErrors: FrameError[] = [];
    const boxText: Buffer[] = [];
    const options = { port: '/dev/ttyTEST', ackTimeoutMs: 40, maxAttempts: 10 };
    const technician = new ProvisioningSession(laptop, { ...options, side: 'technician' });
    const device = new ProvisioningSession(box, {
      ...options,
      side: 'box',
      onFrameError: (e) => frameErrors.push(e),
      onText: (bytes) => boxText.push(bytes),
    });
    const { toBox, toTechnician } = scripts(seed);
    const [receivedByBox, receivedByTechnician] = await Promise.all([
      receiveAll(device, toBox.length),
      receiveAll(technician, toTechnician.length),
      ...toBox.map((m) => technician.send(m)),
      ...toTechnician.map((m) => device.send(m)),
    ]);
    assert.deepEqual(receivedByBox, toBox);
    assert.deepEqual(receivedByTechnician, toTechnician);
    await Promise.all([assertNothingMore(device), assertNothingMore(technician)]);
    assert.ok(Buffer.concat(boxText).includes('login: '), "the console's other traffic is passed on");
    technician.close();
    device.close();
  });
}

test('a peer that never answers: a clear error naming the port after the retry limit', async () => {
  const [laptop] = lossyLine(1, { only: () => 'drop' });
  const technician = new ProvisioningSession(laptop, {
    side: 'technician',
    port: '/dev/ttyUSB0',
    ackTimeoutMs: 10,
    maxAttempts: 3,
  });
  await assert.rejects(
    technician.send({ t: 'status-request' }),
    /^ProvisioningLinkError: the box does not answer on \/dev\/ttyUSB0: no acknowledgement after 3 tries/,
  );
  technician.close();
});

test('a frame with a bad CRC is NAKed and resent at once, without waiting for the timeout', async () => {
  let damaged = false;
  const [laptop, box] = lossyLine(1, {
    only: (frame) => {
      if (damaged || (frame[5]! & 0x0f) !== 1) return undefined; // the first data frame only
      damaged = true;
      return 'corrupt-payload';
    },
  });
  const errors: FrameError[] = [];
  const technician = new ProvisioningSession(laptop, { side: 'technician', port: 'p', ackTimeoutMs: 60_000 });
  const device = new ProvisioningSession(box, {
    side: 'box',
    port: 'p',
    onFrameError: (e) => errors.push(e),
  });
  const started = Date.now();
  await technician.send({ t: 'status-request' });
  assert.deepEqual(await device.receive(), { t: 'status-request' });
  assert.ok(Date.now() - started < 5_000);
  assert.deepEqual(
    errors.map((e) => [e.kind, e.frameKind]),
    [['crc', 'data']],
  );
  technician.close();
  device.close();
});

// A new session whose first seq equals the last one the box accepted would pass for a retransmission
// and be dropped: with a random first seq that is a 1 in 65536 chance, and the hello that goes
// unanswered makes umbra-tech say so (see README).
test('a restarted technician (new session, another sequence number) is heard; a duplicate is not', async () => {
  const [laptop, box] = lossyLine(2);
  const device = new ProvisioningSession(box, { side: 'box', port: 'p' });
  const first = new ProvisioningSession(laptop, { side: 'technician', port: 'p', initialSeq: 100 });
  await first.send({ t: 'status-request' });
  await first.send({ t: 'logs-request' });
  first.close();
  for (const initialSeq of [102, 50, 65535]) {
    const again = new ProvisioningSession(laptop, { side: 'technician', port: 'p', initialSeq });
    await again.send({ t: 'logs-request', lines: 3 });
    again.close();
  }
  assert.deepEqual(await receiveAll(device, 5), [
    { t: 'status-request' },
    { t: 'logs-request' },
    { t: 'logs-request', lines: 3 },
    { t: 'logs-request', lines: 3 },
    { t: 'logs-request', lines: 3 },
  ]);
  await assertNothingMore(device);
  device.close();
});

// The box keeps one session open across technician sessions (umbra-provisioner run --serial): after
// a new technician's SYN, the box's next frame must carry SYN too, or the fresh technician session
// (which has heard no sequence from the box) drops it. Clean line, then lossy lines.
for (const seed of [0, 11, 12, 13, 14]) {
  const faults =
    seed === 0
      ? {}
      : { drop: 0.1, corrupt: 0.1, duplicate: 0.1, maxDelayMs: 8, text: 0.2, maxConsecutiveFaults: 3 };
  test(`seed ${seed}: a box session that outlives technician sessions answers each new one`, async () => {
    const [laptop, box] = lossyLine(seed, faults);
    const options = { port: '/dev/ttyTEST', ackTimeoutMs: 40, maxAttempts: 10 };
    const device = new ProvisioningSession(box, { ...options, side: 'box' });
    const { toTechnician } = scripts(seed);
    const logs = toTechnician
      .filter((m) => m.t === 'logs')
      .sort((a, b) => JSON.stringify(b).length - JSON.stringify(a).length)[0]!;
    for (let n = 0; n < 4; n++) {
      const technician = new ProvisioningSession(laptop, {
        ...options,
        side: 'technician',
        initialSeq: 1000 * n,
      });
      const [t] = await Promise.all([
        exchangeHello<BoxHello>(
          technician,
          { t: 'hello', versions: [1] },
          { peer: 'the box', timeoutMs: 5_000 },
        ),
        exchangeHello(device, boxHello, { peer: 'umbra-tech', timeoutMs: 5_000 }),
      ]);
      assert.equal(t.version, 1);
      // Two replies in a row from the box, the second spanning frames, then the next command.
      const [, request, , status, , logsReply] = await Promise.all([
        technician.send({ t: 'status-request' }),
        device.receive({ timeoutMs: 5_000 }),
        device.send({ t: 'progress', step: 'apply-network', text: `session ${n}`, percent: n }),
        technician.receive({ timeoutMs: 5_000 }),
        device.send(logs),
        technician.receive({ timeoutMs: 5_000 }),
      ]);
      assert.deepEqual(request, { t: 'status-request' });
      assert.deepEqual(status, { t: 'progress', step: 'apply-network', text: `session ${n}`, percent: n });
      assert.deepEqual(logsReply, logs);
      technician.close();
    }
    await assertNothingMore(device);
    device.close();
  });
}

test('a message the box started for a technician that went away reaches the next one, resent with SYN', async () => {
  const [laptop, box] = lossyLine(5);
  const options = { port: 'p', ackTimeoutMs: 40, maxAttempts: 10 };
  const device = new ProvisioningSession(box, { ...options, side: 'box' });
  const first = new ProvisioningSession(laptop, { ...options, side: 'technician', initialSeq: 7 });
  await Promise.all([first.send({ t: 'status-request' }), device.receive()]);
  await Promise.all([device.send({ t: 'result', ok: true }), first.receive()]);
  first.close();
  // The box's next message goes out without SYN (its peer knew its sequence) and is not heard...
  const progress: ToTechnicianMessage = { t: 'progress', step: 'apply-network', text: 'late', percent: 1 };
  const sent = device.send(progress);
  await new Promise((resolve) => setTimeout(resolve, 60));
  // ...until a new technician session SYNs: the outstanding first frame is resent with SYN.
  const again = new ProvisioningSession(laptop, { ...options, side: 'technician', initialSeq: 7 + 500 });
  const [, request, received] = await Promise.all([
    again.send({ t: 'logs-request', lines: 1 }),
    device.receive({ timeoutMs: 2_000 }),
    again.receive({ timeoutMs: 2_000 }),
    sent,
  ]);
  assert.deepEqual(request, { t: 'logs-request', lines: 1 });
  assert.deepEqual(received, progress);
  again.close();
  device.close();
});

test('version handshake: both sides pick the highest common version, or both show the error', async () => {
  const [laptop, box] = lossyLine(3);
  const technician = new ProvisioningSession(laptop, { side: 'technician', port: 'p' });
  const device = new ProvisioningSession(box, { side: 'box', port: 'p' });
  const [t, d] = await Promise.all([
    exchangeHello<BoxHello>(technician, { t: 'hello', versions: [1, 2] }, { peer: 'the box' }),
    exchangeHello(device, { ...boxHello, versions: [1] }, { peer: 'umbra-tech' }),
  ]);
  assert.equal(t.version, 1);
  assert.equal(d.version, 1);
  assert.equal(t.peerHello.serialNumber, 'UMB-0001');

  const results = await Promise.allSettled([
    exchangeHello(technician, { t: 'hello', versions: [2] }, { peer: 'the box' }),
    exchangeHello(device, { ...boxHello, versions: [1] }, { peer: 'umbra-tech' }),
  ]);
  const reasons = results.map((r) => (r.status === 'rejected' ? r.reason : undefined));
  assert.ok(reasons.every((r) => r instanceof ProvisioningVersionError));
  assert.match(String(reasons[0]), /this side speaks 2, the box speaks 1; upgrade the box/);
  assert.match(String(reasons[1]), /this side speaks 1, umbra-tech speaks 2; upgrade this side/);
  technician.close();
  device.close();
});

test('a message that arrives whole but is invalid is reported, and the session carries on', async () => {
  const [laptop, box] = lossyLine(4);
  // A "box" that sends a to-box message: the technician refuses it by type.
  const wrong = new ProvisioningSession(box, { side: 'technician', port: 'p' });
  const technician = new ProvisioningSession(laptop, { side: 'technician', port: 'p' });
  await wrong.send({ t: 'status-request' });
  await assert.rejects(technician.receive(), /not a message this side accepts \(type "status-request"\)/);
  wrong.close();
  const device = new ProvisioningSession(box, { side: 'box', port: 'p' });
  await device.send(boxHello);
  assert.deepEqual(await technician.receive(), boxHello);
  technician.close();
  device.close();
});

test('closing the port fails pending sends and receives with a clear error', async () => {
  const [laptop] = lossyLine(5, { only: () => 'drop' });
  const technician = new ProvisioningSession(laptop, { side: 'technician', port: '/dev/ttyUSB0' });
  const sending = technician.send({ t: 'status-request' });
  const receiving = technician.receive();
  laptop.destroy();
  await assert.rejects(sending, /\/dev\/ttyUSB0 closed/);
  await assert.rejects(receiving, /\/dev\/ttyUSB0 closed/);
});

test('retransmission runs on the injected timers: every try is the same frame, then the error', async () => {
  const pending: (() => void)[] = [];
  const timers = {
    setTimeout: (callback: () => void) => {
      pending.push(callback);
      return callback;
    },
    clearTimeout: (handle: unknown) => {
      const at = pending.indexOf(handle as () => void);
      if (at !== -1) pending.splice(at, 1);
    },
  };
  const writes: Buffer[] = [];
  const port = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      writes.push(chunk);
      callback();
    },
  });
  const technician = new ProvisioningSession(port, {
    side: 'technician',
    port: 'COM3',
    timers,
    maxAttempts: 4,
  });
  const sending = technician.send({ t: 'status-request' });
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  await settle();
  assert.equal(writes.length, 1);
  for (let i = 0; i < 3; i++) {
    assert.equal(pending.length, 1, 'one timer per outstanding frame');
    pending.shift()!();
    await settle();
  }
  assert.equal(writes.length, 4);
  assert.ok(writes.every((w) => w.equals(writes[0]!)));
  pending.shift()!();
  await assert.rejects(sending, /the box does not answer on COM3: no acknowledgement after 4 tries/);
  await assert.rejects(technician.send({ t: 'hello', versions: [] }), /invalid hello message: versions/);
  technician.close();
});
