import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ManualClock, MemoryButton, MemoryLeds, memorySerialPair, StatusLeds } from '@umbra/hal';
import { type BoxHello, exchangeHello, generateProvisioningKey, ProvisioningSession } from '@umbra/protocol';
import { MemoryNetworkApplier } from './network.ts';
import { ENROLLMENT_FILE, type EnrollFunction } from './provisioner.ts';
import { KernelConsoleLevel } from './shared-console.ts';
import { applyFromStick, type StartProvisionerOptions, startProvisioner } from './start.ts';
import { makeSiteBundle, TEST_NOW } from './testing.ts';

const key = generateProvisioningKey();
const bin = fileURLToPath(new URL('../bin/umbra-provisioner.js', import.meta.url));

const enroll: EnrollFunction = async (_t, gatewayDir, o) => {
  o.progress('asking the controller for a challenge');
  mkdirSync(gatewayDir, { recursive: true });
  writeFileSync(join(gatewayDir, ENROLLMENT_FILE), '{}');
};

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'umbra-start-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function base(overrides: Partial<StartProvisionerOptions> = {}): StartProvisionerOptions {
  return {
    stateDir: dir,
    tpm: 'swtpm:127.0.0.1:2321',
    trustedKeys: [key.publicKey],
    network: new MemoryNetworkApplier(),
    sysfsRoot: join(dir, 'root'),
    etcDir: join(dir, 'etc'),
    serialNumber: 'TEST-1',
    firmwareVersion: '1.0.0',
    enroll,
    verifyController: async () => {},
    readEkHash: async () => 'cd'.repeat(32),
    now: () => TEST_NOW,
    logSink: () => {},
    ...overrides,
  };
}

describe('startProvisioner', () => {
  test('serial provisioning end to end in memory; the reset button factory-resets', async () => {
    const clock = new ManualClock();
    const leds = await StatusLeds.open(
      new MemoryLeds({ status: {}, fault: {} }),
      { status: 'status', fault: 'fault' },
      { clock },
    );
    const button = new MemoryButton();
    const [box, laptop] = memorySerialPair();
    const handle = await startProvisioner(base({ serial: box, leds, button, clock }));
    const tech = new ProvisioningSession(laptop, { side: 'technician', port: 'test' });
    try {
      const { peerHello } = await exchangeHello<BoxHello>(tech, { t: 'hello', versions: [1] });
      assert.equal(peerHello.serialNumber, 'TEST-1');
      assert.equal(handle.state().state, 'unprovisioned');
      await tech.send({ t: 'apply-bundle', bundle: makeSiteBundle({ key }).bytes });
      for (;;) {
        const m = await tech.receive({ timeoutMs: 5000 });
        if (m.t === 'result') {
          assert.deepEqual(m, { t: 'result', ok: true });
          break;
        }
      }
      assert.equal(handle.state().state, 'enrolled');
      assert.equal(leds.showing, 'enrolled-dark');

      button.press();
      clock.advance(10_000);
      await new Promise((r) => setImmediate(r));
      assert.equal(leds.showing, 'factory-reset');
      clock.advance(3_000);
      await handle.provisioner.idle();
      assert.equal(handle.state().state, 'unprovisioned');
      assert.ok(!existsSync(handle.provisioner.gatewayDir));
    } finally {
      tech.close();
      await handle.stop();
      laptop.destroy();
    }
  });

  test('a USB stick: applied, and the outcome written back as a report', async () => {
    const handle = await startProvisioner(base());
    try {
      const reports: string[] = [];
      const stick = (bundle: Uint8Array) => ({
        bundle,
        source: 'UMBRA',
        device: '/dev/sdb1',
        fileName: 'lyon.umbra-bundle',
        writeReport: async (text: string) => {
          reports.push(text);
        },
      });
      await applyFromStick(handle.provisioner, handle.identity, stick(makeSiteBundle().bytes));
      assert.match(reports[0]!, /result: error unknown-key: /);
      assert.match(reports[0]!, /box: TEST-1 \(firmware 1\.0\.0\)/);
      await applyFromStick(handle.provisioner, handle.identity, stick(makeSiteBundle({ key }).bytes));
      assert.match(reports[1]!, /verify-bundle: [^\n]+\nverify-bundle: [^\n]+\nnetwork: /);
      assert.match(reports[1]!, /result: ok \(enrolled/);
      assert.equal(handle.state().state, 'enrolled');
    } finally {
      await handle.stop();
    }
  });
});

test('the console shared with a getty: typed text reaches the getty, frames the provisioner', async () => {
  const [box, laptop] = memorySerialPair();
  const [gettyEnd, getty] = memorySerialPair();
  const handle = await startProvisioner(base({ serial: box, gettyTerminal: gettyEnd }));
  const atGetty: Buffer[] = [];
  getty.on('data', (chunk: Buffer) => atGetty.push(chunk));
  const text: Buffer[] = [];
  const tech = new ProvisioningSession(laptop, {
    side: 'technician',
    port: 'test',
    onText: (bytes) => text.push(bytes),
  });
  const settle = () => new Promise((r) => setTimeout(r, 50));
  try {
    laptop.write('root\r');
    await settle();
    assert.equal(Buffer.concat(atGetty).toString(), 'root\r');
    const hello = exchangeHello<BoxHello>(tech, { t: 'hello', versions: [1] });
    await settle();
    getty.write('Password: '); // held while the session lasts
    const { peerHello } = await hello;
    assert.equal(peerHello.serialNumber, 'TEST-1');
    await settle();
    assert.equal(Buffer.concat(text).toString(), 'Password: ', 'written once the box has answered');
    assert.equal(Buffer.concat(atGetty).toString(), 'root\r', 'no frame byte reached the getty');
    await tech.send({ t: 'status-request' });
    assert.equal(((await tech.receive({ timeoutMs: 5000 })) as BoxHello).state, 'unprovisioned');
  } finally {
    tech.close();
    await handle.stop();
    laptop.destroy();
    getty.destroy();
  }
});

test('a console session lowers the kernel console log level and puts it back (dmesg -n 1)', () => {
  const proc = join(dir, 'root', 'proc', 'sys', 'kernel');
  mkdirSync(proc, { recursive: true });
  writeFileSync(join(proc, 'printk'), '7\t4\t1\t7\n');
  const level = new KernelConsoleLevel(join(dir, 'root'));
  level.quiet();
  assert.equal(readFileSync(join(proc, 'printk'), 'utf8'), '1\n');
  level.quiet(); // a second frame of the same session changes nothing
  level.restore();
  assert.equal(readFileSync(join(proc, 'printk'), 'utf8'), '7\n');
  level.restore();
  assert.equal(readFileSync(join(proc, 'printk'), 'utf8'), '7\n');
  // No /proc (a test box, a container): nothing to do, nothing thrown.
  new KernelConsoleLevel(join(dir, 'nowhere')).quiet();
});

test('a stick without a bundle: the error is recorded and the fault shown', async () => {
  const clock = new ManualClock();
  const leds = await StatusLeds.open(new MemoryLeds({ status: {} }), { status: 'status' }, { clock });
  const handle = await startProvisioner(base({ leds, faultMs: 1000 }));
  try {
    await handle.provisioner.reportError(
      'no-bundle',
      'USB stick UMBRA: no *.umbra-bundle file at its top level',
    );
    assert.equal(handle.state().lastError?.code, 'no-bundle');
    assert.equal(leds.showing, 'fault');
    clock.advance(1000);
    await new Promise((r) => setImmediate(r));
    assert.equal(leds.showing, 'awaiting-provisioning');
  } finally {
    await handle.stop();
  }
});

describe('umbra-provisioner', () => {
  const cli = (...args: string[]) =>
    spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 20_000 });

  test('status prints the state as JSON; --help on each command', async () => {
    const handle = await startProvisioner(base());
    await handle.stop();
    const status = cli('status', '--config', join(dir, 'none.json'));
    assert.equal(status.status, 2, status.stderr);
    assert.match(status.stderr, /none\.json: no such file/);
    const ok = cli('status', '--state-dir', dir);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).state, 'unprovisioned');
    for (const command of ['run', 'status']) {
      const help = cli(command, '--help');
      assert.equal(help.status, 0);
      assert.match(help.stdout, new RegExp(`^Usage: umbra-provisioner ${command}`));
    }
  });

  test('wrong input exits 2 with the help', () => {
    const none = cli();
    assert.equal(none.status, 2);
    const run = cli('run', '--state-dir', dir, '--config', join(dir, 'none.json'));
    assert.equal(run.status, 2, run.stderr);
    const missing = cli('run', '--state-dir', dir, '--tpm', 'swtpm:127.0.0.1:1');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /missing --serial \(or --usb-dir\)/);
    const corrupt = join(dir, 'provisioner.json');
    writeFileSync(corrupt, 'nope');
    const status = cli('status', '--state-dir', dir);
    assert.equal(status.status, 1);
    assert.match(status.stderr, /provisioner\.json is corrupt/);
  });
});

describe('what the box says and what it enrolls with agree', () => {
  test('the firmware version in ETC/umbra/firmware-version (which the hello reports) is the one enrolled with', async () => {
    mkdirSync(join(dir, 'etc', 'umbra'), { recursive: true });
    writeFileSync(join(dir, 'etc', 'umbra', 'firmware-version'), '2.3.4\n');
    const versions: Array<string | undefined> = [];
    const handle = await startProvisioner(
      base({
        firmwareVersion: undefined,
        enroll: async (token, gatewayDir, o) => {
          versions.push(o.firmwareVersion);
          await enroll(token, gatewayDir, o);
        },
      }),
    );
    try {
      assert.equal(handle.identity.firmwareVersion, '2.3.4');
      await handle.provisioner.apply(makeSiteBundle({ key }).bytes, { source: 'test', progress: () => {} });
      assert.deepEqual(versions, ['2.3.4']);
    } finally {
      await handle.stop();
    }
  });
});

test('enrolled, the LEDs follow the gateway’s controller link: controller-unreachable while it is down', async () => {
  const leds = await StatusLeds.open(new MemoryLeds({ status: {}, fault: {} }), {
    status: 'status',
    fault: 'fault',
  });
  const handle = await startProvisioner(base({ leds, linkCheckMs: 20 }));
  const stats = join(handle.provisioner.gatewayDir, 'state', 'stats.json');
  const settle = () => new Promise((r) => setTimeout(r, 120));
  try {
    await handle.provisioner.apply(makeSiteBundle({ key }).bytes, { source: 'test', progress: () => {} });
    assert.equal(leds.showing, 'enrolled-dark');
    mkdirSync(join(handle.provisioner.gatewayDir, 'state'), { recursive: true });
    writeFileSync(stats, JSON.stringify({ accepted: 0, controller: { linked: false } }));
    await settle();
    assert.equal(leds.showing, 'controller-unreachable');
    writeFileSync(stats, JSON.stringify({ accepted: 0, controller: { linked: true } }));
    await settle();
    assert.equal(leds.showing, 'enrolled-dark');
  } finally {
    await handle.stop();
  }
});
