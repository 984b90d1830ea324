// The gateway feeds the box's watchdog only while its firewall is in place, and closes it with the
// magic character when it stops cleanly. The device is a regular file here: what a feed and a
// magic close write to it is what the kernel's watchdog driver would read.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { MemoryCapture } from './capture.ts';
import { parseConfig } from './config.ts';
import { MemoryFirewall } from './firewall/index.ts';
import { startGateway } from './gateway.ts';
import { createGatewayKeys } from './keys.ts';

const dir = mkdtempSync(join(tmpdir(), 'umbra-gateway-watchdog-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A firewall whose ruleset an intruder (or a broken nft) can take away. */
class BreakableFirewall extends MemoryFirewall {
  broken = false;
  override isInstalled(): boolean {
    return !this.broken && super.isInstalled();
  }
}

async function gateway(name: string, firewall: MemoryFirewall) {
  const keyDir = join(dir, name, 'keys');
  await createGatewayKeys(keyDir);
  const device = join(dir, name, 'watchdog');
  writeFileSync(device, '');
  const config = parseConfig(
    JSON.stringify({
      interface: 'lo',
      keyDir,
      stateDir: join(dir, name, 'state'),
      watchdog: { device, intervalSeconds: 1 },
    }),
    join(dir, name, 'gateway.json'),
  );
  const running = await startGateway(config, {
    log: pino({ level: 'silent' }),
    firewall,
    capture: new MemoryCapture(),
  });
  return { running, device };
}

test('healthy, the watchdog is fed every interval and closed with the magic character on a clean stop', async () => {
  const { running, device } = await gateway('healthy', new MemoryFirewall());
  await sleep(2_300);
  await running.stop();
  const written = readFileSync(device);
  assert.ok(written.length >= 3, `fed ${written.length - 1} times`);
  assert.deepEqual([...written.subarray(0, -1)], new Array(written.length - 1).fill(0));
  assert.equal(written.at(-1), 'V'.charCodeAt(0));
});

test('once the firewall is gone, the watchdog is never fed again, and a stop does not disarm it', async () => {
  const firewall = new BreakableFirewall();
  const { running, device } = await gateway('broken', firewall);
  await sleep(300);
  const fedWhileHealthy = readFileSync(device).length;
  assert.ok(fedWhileHealthy >= 1);
  firewall.broken = true;
  await sleep(2_300);
  await running.stop();
  const written = readFileSync(device);
  assert.equal(written.length, fedWhileHealthy, 'no feed after the failure, and no magic close');
});
