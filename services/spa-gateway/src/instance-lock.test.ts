import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { InstanceLock } from './instance-lock.ts';

const dir = mkdtempSync(join(tmpdir(), 'umbra-lock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the lock is taken, released, and taken again', () => {
  const stateDir = mkdtempSync(join(dir, 'a'));
  const lock = InstanceLock.acquire(stateDir);
  assert.ok(existsSync(join(stateDir, 'gateway.pid')));
  lock.release();
  assert.ok(!existsSync(join(stateDir, 'gateway.pid')));
  InstanceLock.acquire(stateDir).release();
});

test('a lock left by a dead process, or by a process that is not a gateway, is taken over', () => {
  const stateDir = mkdtempSync(join(dir, 'b'));
  writeFileSync(join(stateDir, 'gateway.pid'), '999999999\n');
  InstanceLock.acquire(stateDir).release();
  writeFileSync(join(stateDir, 'gateway.pid'), `${process.ppid}\n`); // alive, but not a gateway
  InstanceLock.acquire(stateDir).release();
});

test('a live gateway holding the lock is named in the refusal', async () => {
  const stateDir = mkdtempSync(join(dir, 'c'));
  // A live process whose command line says umbra-gateway, as a running gateway's does.
  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)', 'umbra-gateway'], {
    stdio: 'ignore',
  });
  try {
    await new Promise((resolve) => holder.once('spawn', resolve));
    writeFileSync(join(stateDir, 'gateway.pid'), `${holder.pid}\n`);
    assert.throws(
      () => InstanceLock.acquire(stateDir),
      new RegExp(`another gateway \\(pid ${holder.pid}\\) is running`),
    );
  } finally {
    holder.kill();
  }
});
