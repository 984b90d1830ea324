// The real `umbra-tech` command over a real serial line: a socat pty pair stands in for the cable,
// the scripted box (testdata/box-responder.ts) listens on one end through openSerial, and the
// command runs as its own process on the other. socat is ended by its pid.

import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { closeSerial, openSerial } from '@umbra/hal';
import { closePtyPairs, haveSocat, ptyPair } from '@umbra/hal/testing';
import { startBoxResponder, TEST_EK_HASH } from './testdata/box-responder.ts';

const BIN = fileURLToPath(new URL('../../bin/umbra-tech.js', import.meta.url));
const children: ChildProcess[] = [];

after(async () => {
  await closePtyPairs();
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      const exited = once(child, 'exit');
      process.kill(child.pid, 'SIGTERM');
      await exited;
    }
});

function umbraTech(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [BIN, ...args], { timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
    children.push(child);
  });
}

describe('umbra-tech over a socat pty pair', { skip: !haveSocat && 'needs socat' }, () => {
  test('umbra-tech status --port PTY prints the hello of the box on the other end', async () => {
    const [laptop, boxPath] = await ptyPair();
    const box = await openSerial({ path: boxPath, baudRate: 115200 });
    // console chatter on the line, as a getty would print, is passed over
    box.write('\r\nbox login: ');
    const responder = startBoxResponder(box, { hello: { state: 'enrolled' } }, boxPath);
    try {
      const result = await umbraTech(['status', '--port', laptop]);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), {
        versions: [1],
        serialNumber: 'UMB-0042',
        firmwareVersion: '1.4.0',
        ekHash: TEST_EK_HASH,
        state: 'enrolled',
      });
    } finally {
      responder.stop();
      await closeSerial(box);
    }
  });

  test('umbra-tech provision --port PTY: progress lines, a refusal, exit 1', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'umbra-tech-pty-'));
    const bundle = join(dir, 'site.bundle');
    writeFileSync(bundle, Buffer.alloc(6000, 0x5a), { mode: 0o600 }); // two frames
    const [laptop, boxPath] = await ptyPair();
    const box = await openSerial({ path: boxPath, baudRate: 115200 });
    const responder = startBoxResponder(
      box,
      {
        progress: [{ t: 'progress', step: 'verify-bundle', text: 'checking the signature' }],
        result: { t: 'result', ok: false, error: { code: 'expired', message: 'the site bundle expired' } },
      },
      boxPath,
    );
    try {
      const result = await umbraTech(['provision', '--port', laptop, '--bundle', bundle]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stdout, /\[verify-bundle\] checking the signature\n/);
      assert.match(result.stderr, /the box refused: expired: the site bundle expired\n/);
      const apply = responder.received.find((m) => m.t === 'apply-bundle');
      assert.ok(apply && apply.t === 'apply-bundle' && apply.bundle.length === 6000);
    } finally {
      responder.stop();
      await closeSerial(box);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
