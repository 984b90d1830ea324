import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BoardError, loadBoard, parseBoard } from './board.ts';

const boards = fileURLToPath(new URL('../boards/', import.meta.url));

describe('board files', () => {
  test('the example boards load', async () => {
    const pi = await loadBoard(join(boards, 'raspberry-pi-4.json'));
    assert.deepEqual(pi.leds, { status: 'ACT', fault: 'PWR' });
    assert.deepEqual(pi.button, { gpio: 529, activeLow: true });
    const x86 = await loadBoard(join(boards, 'x86-generic.json'));
    assert.equal(x86.leds.activity, 'apu2:green:2');
    assert.equal(x86.console?.baudRate, 115200);
  });

  test('defaults: an active-low button, 115200 baud', () => {
    const b = parseBoard({
      board: 'b',
      leds: { status: 's' },
      button: { gpio: 3 },
      console: { path: '/dev/ttyS1' },
    });
    assert.equal(b.button?.activeLow, true);
    assert.equal(b.console?.baudRate, 115200);
  });

  test('errors name the file, the key and what is wrong', async () => {
    const bad = (value: unknown, pattern: RegExp) =>
      assert.throws(
        () => parseBoard(value, 'board file x.json'),
        (err: Error) => {
          assert.ok(err instanceof BoardError);
          assert.match(err.message, /^board file x\.json: /);
          assert.match(err.message, pattern);
          return true;
        },
      );
    bad({ board: 'b', leds: {} }, /leds\.status: Required/);
    bad({ board: 'b', leds: { status: '../../etc' } }, /leds\.status: an LED name is one directory name/);
    bad(
      { board: 'b', leds: { status: 'ACT', fault: 'ACT' } },
      /leds\.fault: LED "ACT" is already the status LED/,
    );
    bad({ board: 'b', leds: { status: 'ACT', red: 'PWR' } }, /leds: Unrecognized key\(s\) in object: 'red'/);
    bad(
      { board: 'b', leds: { status: 'ACT' }, console: { path: 'ttyS0' } },
      /console\.path: a device path under \/dev/,
    );

    const dir = await mkdtemp(join(tmpdir(), 'umbra-hal-board-'));
    try {
      await writeFile(join(dir, 'broken.json'), '{ "board": ');
      await assert.rejects(loadBoard(join(dir, 'broken.json')), /board file .*broken\.json is not JSON/);
      await assert.rejects(loadBoard(join(dir, 'absent.json')), /board file .*absent\.json: ENOENT/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
