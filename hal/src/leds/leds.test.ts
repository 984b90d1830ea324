import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ManualClock } from '../clock.ts';
import { createFakeLedTree, kernelLikeFiles, readFakeLed } from './fake-tree.ts';
import { LedError } from './led.ts';
import { MemoryLeds } from './memory.ts';
import { flashes, PATTERN_LOOKS, STATUS_PATTERNS } from './patterns.ts';
import { StatusLeds } from './status.ts';
import { parseTriggers, SysfsLeds } from './sysfs.ts';

let root: string;
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'umbra-hal-leds-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('the trigger attribute', () => {
  test('the kernel format lists triggers with the current one in brackets', () => {
    assert.deepEqual(parseTriggers('none [timer] heartbeat pattern\n'), {
      available: ['none', 'timer', 'heartbeat', 'pattern'],
      current: 'timer',
    });
    assert.deepEqual(parseTriggers('[none] mmc0'), { available: ['none', 'mmc0'], current: 'none' });
  });
});

describe('SysfsLeds against a fake LED class', () => {
  test('each setting writes the trigger first, then its attributes', async () => {
    const dir = join(root, 'settings');
    await createFakeLedTree(dir, { 'green:status': { maxBrightness: 1 }, 'red:fault': {} });
    const leds = new SysfsLeds({ root: dir, files: kernelLikeFiles() });
    assert.deepEqual(await leds.list(), ['green:status', 'red:fault']);

    await leds.apply('green:status', { kind: 'timer', onMs: 100, offMs: 900 });
    let state = await readFakeLed(dir, 'green:status');
    assert.equal(state.trigger, 'timer');
    assert.equal(state.delayOn, 100);
    assert.equal(state.delayOff, 900);

    await leds.apply('red:fault', { kind: 'steady', level: 1 });
    state = await readFakeLed(dir, 'red:fault');
    assert.equal(state.trigger, 'none');
    assert.equal(state.brightness, 255);

    await leds.apply('red:fault', flashes(2, 100, 200, 1000));
    state = await readFakeLed(dir, 'red:fault');
    assert.equal(state.trigger, 'pattern');
    assert.equal(state.pattern, '255 100 255 0 0 200 0 0 255 100 255 0 0 1000 0 0');

    await leds.apply('green:status', { kind: 'heartbeat' });
    assert.equal((await readFakeLed(dir, 'green:status')).trigger, 'heartbeat');
  });

  test('a trigger the kernel lacks: EINVAL becomes an error naming the LED, the trigger and the fix', async () => {
    const dir = join(root, 'einval');
    await createFakeLedTree(dir, { ACT: { triggers: ['none', 'timer', 'mmc0'] } });
    const leds = new SysfsLeds({ root: dir, files: kernelLikeFiles() });
    await assert.rejects(leds.apply('ACT', { kind: 'heartbeat' }), (err: Error) => {
      assert.ok(err instanceof LedError);
      assert.equal(err.led, 'ACT');
      assert.match(err.message, /LED "ACT": the kernel refused trigger "heartbeat"/);
      assert.match(err.message, /available: none, timer, mmc0/);
      assert.match(err.message, /CONFIG_LEDS_TRIGGER_HEARTBEAT=y/);
      assert.equal((err.cause as NodeJS.ErrnoException).code, 'EINVAL');
      return true;
    });
    // The LED is left as it was.
    assert.equal((await readFakeLed(dir, 'ACT')).trigger, 'none');
  });

  test('an LED that is not there names the LEDs that are', async () => {
    const dir = join(root, 'missing');
    await createFakeLedTree(dir, { ACT: {}, PWR: {} });
    const leds = new SysfsLeds({ root: dir });
    await assert.rejects(
      leds.apply('led0', { kind: 'heartbeat' }),
      /LED "led0": there is no .*\(LEDs present: ACT, PWR\); fix the LED name in the board file/,
    );
    await assert.rejects(leds.apply('../x', { kind: 'heartbeat' }), /one directory name/);
  });

  test('bad numbers are refused before anything is written', async () => {
    const dir = join(root, 'numbers');
    await createFakeLedTree(dir, { ACT: {} });
    const leds = new SysfsLeds({ root: dir });
    await assert.rejects(leds.apply('ACT', { kind: 'steady', level: 2 }), /level 2 is outside 0\.\.1/);
    await assert.rejects(leds.apply('ACT', { kind: 'timer', onMs: -1, offMs: 5 }), /whole milliseconds/);
    await assert.rejects(
      leds.apply('ACT', { kind: 'pattern', steps: [{ level: 1, ms: 5 }] }),
      /at least two/,
    );
    await writeFile(join(dir, 'sys/class/leds/ACT/max_brightness'), 'x');
    await assert.rejects(
      new SysfsLeds({ root: dir }).apply('ACT', { kind: 'heartbeat' }),
      /max_brightness "x"/,
    );
  });

  test('no LED class at all lists no LEDs', async () => {
    assert.deepEqual(await new SysfsLeds({ root: join(root, 'nothing') }).list(), []);
  });
});

describe('status patterns', () => {
  test('every pattern uses only timer, pattern, heartbeat or a steady level', () => {
    for (const name of STATUS_PATTERNS) {
      const look = PATTERN_LOOKS[name];
      for (const s of [look.status, look.fault, look.activity, look.statusWithoutFault]) {
        if (s) assert.ok(['steady', 'timer', 'heartbeat', 'pattern'].includes(s.kind), name);
      }
    }
  });

  test('the board roles get their settings; without a fault LED faults are blink counts on status', async () => {
    const two = new MemoryLeds({ ACT: {}, PWR: {} });
    const withFault = await StatusLeds.open(two, { status: 'ACT', fault: 'PWR' });
    await withFault.show('fault');
    assert.deepEqual(two.setting('ACT'), { kind: 'steady', level: 0 });
    assert.deepEqual(two.setting('PWR'), { kind: 'steady', level: 1 });

    const one = new MemoryLeds({ status: {} });
    const alone = await StatusLeds.open(one, { status: 'status' });
    await alone.show('fault');
    assert.deepEqual(one.setting('status'), flashes(3));
    await alone.show('controller-unreachable');
    assert.deepEqual(one.setting('status'), flashes(2));
  });

  test('open refuses a board whose LEDs are not present, naming the role and the fix', async () => {
    await assert.rejects(
      StatusLeds.open(new MemoryLeds({ ACT: {} }), { status: 'ACT', fault: 'led1' }),
      /LED "led1": the board's fault LED is not in memory \(present: ACT\); fix leds\.fault in the board file/,
    );
  });

  test('a flash overlays the state and returns to it; a state shown meanwhile waits for the end', async () => {
    const clock = new ManualClock();
    const leds = new MemoryLeds({ ACT: {}, PWR: {} });
    const status = await StatusLeds.open(leds, { status: 'ACT', fault: 'PWR' }, { clock });
    await status.show('awaiting-provisioning');
    assert.equal(status.snapshot().showing, 'awaiting-provisioning');

    clock.advance(1000);
    await status.flash('identify', 5000);
    assert.equal(status.showing, 'identify');
    assert.equal(status.pattern, 'awaiting-provisioning');
    assert.deepEqual(leds.setting('ACT'), { kind: 'timer', onMs: 250, offMs: 250 });

    await status.show('provisioning');
    assert.equal(status.showing, 'identify');
    clock.advance(5000);
    await status.show('provisioning');
    assert.equal(status.showing, 'provisioning');
    const snap = status.snapshot();
    assert.equal(snap.since, 6000);
    assert.deepEqual(snap.leds, [
      { role: 'status', led: 'ACT', setting: { kind: 'timer', onMs: 100, offMs: 100 } },
      { role: 'fault', led: 'PWR', setting: { kind: 'steady', level: 0 } },
    ]);
  });

  test('the in-memory LEDs refuse a trigger they lack, like the kernel', async () => {
    const leds = new MemoryLeds({ ACT: { triggers: ['none', 'timer'] } });
    const status = await StatusLeds.open(leds, { status: 'ACT' });
    await assert.rejects(status.show('booting'), /LED "ACT": the kernel refused trigger "heartbeat"/);
  });

  test('the patterns through SysfsLeds on a fake tree, end to end', async () => {
    const dir = join(root, 'e2e');
    await createFakeLedTree(dir, { ACT: {}, PWR: {} });
    const status = await StatusLeds.open(new SysfsLeds({ root: dir }), { status: 'ACT', fault: 'PWR' });
    for (const name of STATUS_PATTERNS) await status.show(name);
    assert.equal((await readFakeLed(dir, 'ACT')).trigger, 'timer');
    assert.equal((await readFakeLed(dir, 'ACT')).delayOn, 50);
  });
});
