import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ManualClock } from '../clock.ts';
import { type GpioLike, loadOnoffGpio, MemoryButton, OnoffButton, watchResetButton } from './input.ts';
import { ButtonPresses, type PressActions } from './presses.ts';

function recorder() {
  const events: string[] = [];
  const actions: PressActions = {
    identify: () => events.push('identify'),
    confirmFactoryReset: () => events.push('confirm'),
    factoryReset: async () => {
      events.push('reset');
    },
    cancelled: () => events.push('cancelled'),
    onError: (err) => events.push(`error: ${(err as Error).message}`),
  };
  return { events, actions };
}

const settle = () => new Promise((r) => setImmediate(r));

describe('button presses', () => {
  test('a short press identifies', () => {
    const clock = new ManualClock();
    const { events, actions } = recorder();
    const presses = new ButtonPresses(actions, {}, clock);
    presses.edge(true);
    clock.advance(300);
    assert.equal(presses.phase, 'held');
    presses.edge(false);
    clock.advance(100);
    assert.deepEqual(events, ['identify']);
    assert.equal(presses.phase, 'idle');
  });

  test('bounces shorter than the debounce time are one press', () => {
    const clock = new ManualClock();
    const { events, actions } = recorder();
    const button = new MemoryButton();
    watchResetButton(button, actions, { debounceMs: 20 }, clock);
    for (const level of [true, false, true, false, true]) {
      button.bounce([level]);
      clock.advance(3);
    }
    clock.advance(200);
    for (const level of [false, true, false, true, false]) {
      button.bounce([level]);
      clock.advance(3);
    }
    clock.advance(100);
    assert.deepEqual(events, ['identify']);
  });

  test('a glitch shorter than the debounce time is no press at all', () => {
    const clock = new ManualClock();
    const { events, actions } = recorder();
    const presses = new ButtonPresses(actions, { debounceMs: 50 }, clock);
    presses.edge(true);
    clock.advance(10);
    presses.edge(false);
    clock.advance(1000);
    assert.deepEqual(events, []);
    assert.equal(clock.pendingCount, 0);
  });

  test('held 10 s: the confirmation pattern, then after confirmMs the factory reset', async () => {
    const clock = new ManualClock();
    const { events, actions } = recorder();
    const presses = new ButtonPresses(actions, { confirmMs: 3000 }, clock);
    presses.edge(true);
    clock.advance(9_999);
    assert.deepEqual(events, []);
    clock.advance(1);
    assert.deepEqual(events, ['confirm']);
    assert.equal(presses.phase, 'confirming');
    // Letting go once the confirmation shows no longer cancels.
    presses.edge(false);
    clock.advance(2_999);
    assert.deepEqual(events, ['confirm']);
    clock.advance(1);
    await settle();
    assert.deepEqual(events, ['confirm', 'reset']);
    assert.equal(presses.phase, 'idle');
  });

  test('the hold is timed from the press edge, not from the end of the debounce', () => {
    const clock = new ManualClock();
    const { events, actions } = recorder();
    const presses = new ButtonPresses(actions, { debounceMs: 50, holdMs: 1000, shortPressMaxMs: 500 }, clock);
    presses.edge(true);
    clock.advance(1000);
    assert.deepEqual(events, ['confirm']);
  });

  test('released before 10 s (after a short press) cancels: no identify, no reset', () => {
    const clock = new ManualClock();
    const { events, actions } = recorder();
    const presses = new ButtonPresses(actions, {}, clock);
    presses.edge(true);
    clock.advance(9_000);
    presses.edge(false);
    clock.advance(60_000);
    assert.deepEqual(events, ['cancelled']);
  });

  test('a failing reset is reported, and the button works again', async () => {
    const clock = new ManualClock();
    const { events, actions } = recorder();
    actions.factoryReset = () => {
      throw new Error('identity store is read-only');
    };
    const presses = new ButtonPresses(
      actions,
      { debounceMs: 5, holdMs: 100, shortPressMaxMs: 50, confirmMs: 10 },
      clock,
    );
    presses.edge(true);
    clock.advance(200);
    await settle();
    assert.deepEqual(events, ['confirm', 'error: identity store is read-only']);
    presses.edge(false);
    clock.advance(100);
    presses.edge(true);
    clock.advance(30);
    presses.edge(false);
    clock.advance(60);
    assert.deepEqual(events.slice(2), ['identify']);
  });

  test('options are validated and the error names the option', () => {
    const { actions } = recorder();
    assert.throws(
      () => new ButtonPresses(actions, { holdMs: 1000, shortPressMaxMs: 2000 }),
      /shortPressMaxMs: shortPressMaxMs must be shorter than holdMs/,
    );
    assert.throws(() => new ButtonPresses(actions, { debounceMs: -1 }), /button press options: debounceMs/);
  });
});

describe('OnoffButton', () => {
  test('onoff edges (1 = pressed with activeLow) reach the listener; errors are skipped', async () => {
    const made: { gpio: number; options: { activeLow: boolean } }[] = [];
    let emit: (err: Error | null, value: 0 | 1) => void = () => {};
    let unexported = false;
    class FakeGpio implements GpioLike {
      constructor(gpio: number, _direction: 'in', _edge: 'both', options: { activeLow: boolean }) {
        made.push({ gpio, options });
      }
      watch(cb: (err: Error | null | undefined, value: 0 | 1) => void) {
        emit = cb;
      }
      async read(): Promise<0 | 1> {
        return 1;
      }
      unexport() {
        unexported = true;
      }
    }
    const button = new OnoffButton({ gpio: 529, activeLow: true, Gpio: FakeGpio });
    assert.deepEqual(made, [{ gpio: 529, options: { activeLow: true } }]);
    const seen: boolean[] = [];
    button.watch((p) => seen.push(p));
    emit(null, 1);
    emit(new Error('epoll'), 0);
    emit(null, 0);
    assert.deepEqual(seen, [true, false]);
    assert.equal(await button.read(), true);
    await button.close();
    assert.ok(unexported);
  });

  test('a GPIO that cannot be exported names the number and the board key', () => {
    class Refusing implements GpioLike {
      constructor() {
        throw Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL' });
      }
      watch() {}
      async read(): Promise<0 | 1> {
        return 0;
      }
      unexport() {}
    }
    assert.throws(
      () => new OnoffButton({ gpio: 17, activeLow: true, Gpio: Refusing }),
      /button on GPIO 17: exporting it failed .*button\.gpio in the board file/,
    );
  });
});

describe('onoff on this machine', () => {
  test('onoff and its epoll addon load; without /sys/class/gpio the error says what is missing', (t) => {
    if (existsSync('/sys/class/gpio/export')) {
      t.skip('this machine has sysfs GPIO');
      return;
    }
    assert.throws(
      () => loadOnoffGpio(),
      /sysfs GPIO is not available: \/sys\/class\/gpio\/export .*CONFIG_GPIO_SYSFS/,
    );
  });
});

describe('the button and the status LEDs', () => {
  test('short press flashes identify and returns; a confirmed hold shows factory-reset, then resets', async () => {
    const { MemoryLeds } = await import('../leds/memory.ts');
    const { StatusLeds } = await import('../leds/status.ts');
    const { resetButtonActions } = await import('./actions.ts');
    const clock = new ManualClock();
    const leds = new MemoryLeds({ ACT: {}, PWR: {} });
    const status = await StatusLeds.open(leds, { status: 'ACT', fault: 'PWR' }, { clock });
    await status.show('enrolled-dark');
    let resets = 0;
    const button = new MemoryButton();
    watchResetButton(
      button,
      resetButtonActions(
        status,
        () => {
          resets++;
        },
        { identifyMs: 5000 },
      ),
      {},
      clock,
    );
    button.press();
    clock.advance(200);
    button.release();
    clock.advance(100);
    await settle();
    assert.equal(status.showing, 'identify');
    clock.advance(5000);
    await settle();
    assert.equal(status.showing, 'enrolled-dark');

    button.press();
    clock.advance(10_000);
    await settle();
    assert.equal(status.showing, 'factory-reset');
    assert.equal(resets, 0);
    clock.advance(3000);
    await settle();
    assert.equal(resets, 1);
  });
});

test('a factory reset that fails ends the confirmation pattern and is reported', async () => {
  const { MemoryLeds } = await import('../leds/memory.ts');
  const { StatusLeds } = await import('../leds/status.ts');
  const { resetButtonActions } = await import('./actions.ts');
  const clock = new ManualClock();
  const status = await StatusLeds.open(new MemoryLeds({ ACT: {} }), { status: 'ACT' }, { clock });
  await status.show('enrolled-dark');
  const errors: string[] = [];
  const presses = new ButtonPresses(
    resetButtonActions(
      status,
      () => {
        throw new Error('data partition is read-only');
      },
      { onError: (err) => errors.push((err as Error).message) },
    ),
    {},
    clock,
  );
  presses.edge(true);
  clock.advance(13_000);
  await settle();
  await settle();
  assert.deepEqual(errors, ['data partition is read-only']);
  assert.equal(status.showing, 'enrolled-dark');
});
