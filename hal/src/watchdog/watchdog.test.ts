import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ManualClock } from '../clock.ts';
import { LinuxWatchdog, MemoryWatchdog, readWatchdogTimeoutMs } from './device.ts';
import { HealthGatedWatchdog } from './health-gate.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'umbra-hal-watchdog-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Lets pending promise callbacks run (checks and keepalives are async even on a manual clock). */
const flush = async () => {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
};

describe('health-gated watchdog, in memory', () => {
  test('fed every interval while healthy; a clean stop closes with the magic character', async () => {
    const clock = new ManualClock();
    const device = new MemoryWatchdog();
    const dog = new HealthGatedWatchdog(device, () => true, { intervalMs: 1000, checkTimeoutMs: 500, clock });
    dog.start();
    for (let i = 0; i < 5; i++) {
      clock.advance(i === 0 ? 0 : 1000);
      await flush();
    }
    assert.equal(device.keepalives, 5);
    await dog.stop();
    assert.equal(device.closed, 'magic');
    clock.advance(10_000);
    await flush();
    assert.equal(device.keepalives, 5);
  });

  test('never fed again once a check fails, even if later checks would pass; stop does not disarm', async () => {
    const clock = new ManualClock();
    const device = new MemoryWatchdog();
    let healthy = true;
    const failures: string[] = [];
    const dog = new HealthGatedWatchdog(device, () => healthy, {
      intervalMs: 1000,
      checkTimeoutMs: 100,
      clock,
      onFailure: (r) => failures.push(r),
    });
    dog.start();
    clock.advance(0);
    await flush();
    clock.advance(1000);
    await flush();
    assert.equal(device.keepalives, 2);
    healthy = false;
    clock.advance(1000);
    await flush();
    healthy = true;
    clock.advance(5000);
    await flush();
    assert.equal(device.keepalives, 2);
    assert.equal(dog.state, 'failed');
    assert.deepEqual(failures, ['the health check failed']);
    await dog.stop();
    assert.equal(device.closed, 'plain');
  });

  test('a check that throws, or does not answer in time, is a failure', async () => {
    const clock = new ManualClock();
    const throwing = new HealthGatedWatchdog(
      new MemoryWatchdog(),
      () => {
        throw new Error('controller link down');
      },
      { intervalMs: 1000, checkTimeoutMs: 100, clock },
    );
    throwing.start();
    clock.advance(0);
    await flush();
    assert.equal(throwing.failure, 'the health check threw: controller link down');

    const device = new MemoryWatchdog();
    const hanging = new HealthGatedWatchdog(device, () => new Promise<boolean>(() => {}), {
      intervalMs: 1000,
      checkTimeoutMs: 100,
      clock,
    });
    hanging.start();
    clock.advance(0);
    await flush();
    clock.advance(100);
    await flush();
    assert.equal(hanging.failure, 'the health check did not answer within 100 ms');
    assert.equal(device.keepalives, 0);
  });

  test('a device that cannot be fed stops the feeding with the reason', async () => {
    const clock = new ManualClock();
    const device = new MemoryWatchdog();
    device.failNext = new Error('EIO');
    const dog = new HealthGatedWatchdog(device, () => true, { intervalMs: 1000, checkTimeoutMs: 100, clock });
    dog.start();
    clock.advance(0);
    await flush();
    assert.equal(dog.failure, 'feeding memory failed: EIO');
  });

  test('options are checked against each other and the device timeout', () => {
    const d = new MemoryWatchdog();
    assert.throws(
      () => new HealthGatedWatchdog(d, () => true, { intervalMs: 1000, checkTimeoutMs: 1000 }),
      /watchdog options: checkTimeoutMs: 1000 must be shorter than intervalMs \(1000\)/,
    );
    assert.throws(
      () =>
        new HealthGatedWatchdog(d, () => true, {
          intervalMs: 10_000,
          checkTimeoutMs: 2000,
          deviceTimeoutMs: 10_000,
        }),
      /intervalMs: intervalMs \+ checkTimeoutMs \(12000\) must be below the device's timeout \(10000 ms\)/,
    );
  });
});

describe('LinuxWatchdog against a regular file', () => {
  test('one byte per feed, then the magic V on a clean stop', async () => {
    const path = join(root, 'watchdog');
    await writeFile(path, '');
    const clock = new ManualClock();
    const dog = new HealthGatedWatchdog(await LinuxWatchdog.open(path), () => true, {
      intervalMs: 1000,
      checkTimeoutMs: 100,
      clock,
    });
    dog.start();
    for (let i = 0; i < 3; i++) {
      clock.advance(i === 0 ? 0 : 1000);
      await dog.settled();
    }
    await dog.stop();
    const written = await readFile(path);
    assert.equal(dog.feeds, 3);
    assert.deepEqual(written, Buffer.from([0, 0, 0, 0x56]));
  });

  test('after a failure the file gets no V', async () => {
    const path = join(root, 'watchdog-failed');
    await writeFile(path, '');
    const clock = new ManualClock();
    let healthy = true;
    const dog = new HealthGatedWatchdog(await LinuxWatchdog.open(path), () => healthy, {
      intervalMs: 1000,
      checkTimeoutMs: 100,
      clock,
    });
    dog.start();
    clock.advance(0);
    await dog.settled();
    healthy = false;
    clock.advance(1000);
    await dog.settled();
    await dog.stop();
    assert.deepEqual(await readFile(path), Buffer.from([0]));
  });

  test('a missing device is not created, and the error says why it may be missing', async () => {
    const path = join(root, 'no-watchdog');
    await assert.rejects(
      LinuxWatchdog.open(path),
      /watchdog .*no-watchdog: open failed: .*no watchdog driver for this board/,
    );
    await assert.rejects(readFile(path), /ENOENT/);
  });

  test('the device timeout from sysfs', async () => {
    await mkdir(join(root, 'sys/class/watchdog/watchdog0'), { recursive: true });
    await writeFile(join(root, 'sys/class/watchdog/watchdog0/timeout'), '15\n');
    assert.equal(await readWatchdogTimeoutMs(root), 15_000);
    assert.equal(await readWatchdogTimeoutMs(join(root, 'none')), undefined);
  });
});
