// Issue 5's proofs, on the real programs as processes: `umbra-provisioner run` on a box in a network
// namespace, `umbra-tech` on the laptop end of a socat pty pair, `umbra-controller serve` in another
// namespace, swtpm for the box's TPM, a fake sysfs LED tree, FAT images on loop devices for sticks
// (read and written with mtools: this kernel has no vfat driver, and the provisioner falls back to
// mtools by itself), and `umbra-gateway run` on the box once it is enrolled, scanned by an outsider.
//
// The tests run in order on one box; each leaves it as the next expects (named in each title).
// Power cuts are kill -9 of the provisioner while it is in a step. The provisioner has no hook to
// hold a step, so: the network step is held by the controller's port dropping SYNs (the box waits
// up to 10 s for it, with its new address applied); the other steps by running the provisioner under
// strace with a delay injected after the rename that records the step in provisioner.json.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { crc32 } from 'node:zlib';
import { closeSerial, ManualClock, MemoryButton, openSerial } from '@umbra/hal';
import {
  createEnrollmentToken,
  createSiteBundle,
  encodeFrame,
  encodeProvisioningMessage,
  exchangeHello,
  ProvisioningSession,
  pinOf,
  readProvisioningPrivateKey,
} from '@umbra/protocol';
import { LinuxNetworkApplier, startProvisioner } from '@umbra/provisioner';
import {
  BOX_ADDRESS,
  BoxProvisioner,
  type BoxStatus,
  boxNetwork,
  boxStatus,
  buildProvisioningRig,
  CONTROLLER_URL,
  FIRMWARE_VERSION,
  insertStick,
  LedRecorder,
  ledPattern,
  makeFatStick,
  type ProvisioningRig,
  type PtyPair,
  ptyPair,
  type RunResult,
  stateFile,
  stickFile,
  stickFiles,
  TECH_BIN,
  tech,
  waitFor,
} from '../src/provisioning-rig.ts';
import { nmapScan } from '../src/scan.ts';
import { GatewayProcess, TOOL_ENV } from '../src/umbra.ts';

interface GatewayRow {
  name: string;
  attestation: string;
  ekHash: string | null;
  firmwareVersion?: string;
}

describe('provisioning a box over serial and USB, on the real programs', { timeout: 240_000 }, () => {
  let rig: ProvisioningRig;
  let pty: PtyPair;
  let box: BoxProvisioner | undefined;
  let gateway: GatewayProcess | undefined;
  let counter = 0;
  const techChildren: ChildProcess[] = [];
  /** The box's network before anything was applied: what every refusal must leave. */
  let pristine: { addresses: string[]; routes: string[] };

  const startBox = async (options: { holdStateWritesMs?: number; configFile?: string } = {}) => {
    box = await BoxProvisioner.start(rig, { serial: pty.box, usb: true, ...options });
    return box;
  };
  const gateways = async () => JSON.parse(await rig.controller.admin('gateway', 'list')) as GatewayRow[];
  const newToken = async (name: string) =>
    (await rig.controller.admin('gateway', 'token', 'create', '--name', name)).trim();
  /** `umbra-tech bundle create` for the box: static BOX_ADDRESS/24, default route and DNS via ctl. */
  const makeBundle = async (name: string, extra: { signKey?: string } = {}): Promise<string> => {
    const file = join(rig.dir, `${name}-${++counter}.umbra-bundle`);
    const result = await tech([
      'bundle',
      'create',
      '--controller',
      CONTROLLER_URL,
      '--ca',
      rig.caFile,
      '--token',
      await newToken(name),
      '--site',
      `site ${name}`,
      '--network',
      `static:${BOX_ADDRESS}/24,${rig.ctl.ipv4}`,
      '--dns',
      rig.ctl.ipv4,
      '--sign-key',
      extra.signKey ?? rig.signKey,
      '--out',
      file,
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /wrote .* site "site /);
    return file;
  };
  /** Polls `umbra-provisioner status` until `accept` takes the box's status, which it returns. */
  const waitForBox = (what: string, accept: (s: BoxStatus) => boolean, timeoutMs: number, everyMs: number) =>
    waitFor(
      what,
      async () => {
        const s = await boxStatus(rig);
        return accept(s) ? s : undefined;
      },
      timeoutMs,
      everyMs,
    );
  const provision = (bundle: string): Promise<RunResult> =>
    tech(['provision', '--port', pty.laptop, '--bundle', bundle, '--timeout', '60s']);
  const ledNow = () => ledPattern(rig.sysfsRoot);
  const waitForLed = (pattern: string, timeoutMs: number) =>
    waitFor(
      `the LEDs to show ${pattern}`,
      async () => ((await ledNow()) === pattern ? pattern : undefined),
      timeoutMs,
      50,
    );

  /** The box after a refusal: unprovisioned, the error recorded, fault shown, network unchanged. */
  const assertLeftAsItWas = async (code: string) => {
    const status = await boxStatus(rig);
    assert.equal(status.state, 'unprovisioned');
    assert.equal(status.lastError?.code, code, JSON.stringify(status.lastError));
    assert.equal(status.site, undefined);
    assert.deepEqual(await boxNetwork(rig), pristine);
    assert.equal(readFileSync(join(rig.etcDir, 'resolv.conf'), 'utf8'), 'nameserver 198.51.100.53\n');
    assert.equal(await ledNow(), 'fault');
    assert.ok(!existsSync(join(rig.stateDir, 'site-bundle.cbor')), 'no bundle kept');
    assert.ok(!existsSync(join(rig.stateDir, 'gateway', 'enrollment.json')), 'no identity');
  };

  /**
   * The reset button held 10 s, through the provisioner's own button wiring (startProvisioner's
   * `button` and `clock`): the CLI provisioner is stopped, the same box (state dir, fake LEDs,
   * network namespace) is opened with a MemoryButton, the button is held, and the CLI is started again.
   */
  const factoryResetWithButton = async (): Promise<string[]> => {
    await box?.stop();
    const button = new MemoryButton();
    const clock = new ManualClock();
    const handle = await startProvisioner({
      stateDir: rig.stateDir,
      sysfsRoot: rig.sysfsRoot,
      etcDir: rig.etcDir,
      tpm: rig.swtpm.address,
      trustDir: rig.trustDir,
      board: rig.boardFile,
      button,
      clock,
      firmwareVersion: FIRMWARE_VERSION,
      network: new LinuxNetworkApplier({
        interface: rig.box.ifname,
        etcDir: rig.etcDir,
        netns: rig.box.netns,
      }),
      logSink: () => {},
    });
    const patterns: string[] = [];
    try {
      await waitFor('the provisioner to settle', () => !handle.provisioner.busy || undefined, 30_000);
      button.press();
      clock.advance(10_000); // held 10 s: the confirmation pattern
      patterns.push(await waitForLed('factory-reset', 5_000));
      clock.advance(3_000); // the confirmation shown 3 s: the reset runs
      await waitFor(
        'the reset to finish',
        () => (handle.state().state === 'unprovisioned' && handle.state().step === 'initial') || undefined,
        15_000,
      );
      button.release();
    } finally {
      await handle.stop();
    }
    // hal's resetButtonActions keeps the factory-reset pattern until the box restarts ("it normally
    // ends in a restart"): the restart of the provisioner is what brings awaiting-provisioning back.
    await startBox();
    patterns.push(await waitForLed('awaiting-provisioning', 5_000));
    return patterns;
  };

  before(async () => {
    rig = await buildProvisioningRig();
    pty = await ptyPair();
    rig.onDestroy(() => pty.stop());
    rig.onDestroy(async () => {
      for (const child of techChildren)
        if (child.exitCode === null && child.signalCode === null && child.pid)
          process.kill(child.pid, 'SIGKILL');
      await gateway?.stop();
      await box?.stop();
    });
    pristine = await boxNetwork(rig);
    assert.deepEqual(pristine.addresses, [], 'the box starts without an IPv4 address');
  });

  after(async () => {
    await rig?.destroy();
  });

  test('1. over serial: key, bundle, provision → enrolled, approved, LEDs per state, then a dark gateway', async () => {
    const bundle = await makeBundle('branch1');
    await startBox();
    assert.equal((await boxStatus(rig)).state, 'unprovisioned');
    assert.equal(await ledNow(), 'awaiting-provisioning', 'unprovisioned: awaiting-provisioning');

    const hello = await tech(['status', '--port', pty.laptop]);
    assert.equal(hello.code, 0, hello.stderr);
    const seenHello = JSON.parse(hello.stdout);
    assert.equal(seenHello.state, 'unprovisioned');
    assert.equal(seenHello.firmwareVersion, FIRMWARE_VERSION);
    assert.match(seenHello.ekHash, /^[0-9a-f]{64}$/);
    assert.notEqual(seenHello.ekHash, '0'.repeat(64));

    await waitForLed('awaiting-provisioning', 5_000);
    const leds = new LedRecorder(rig.sysfsRoot);
    const result = await provision(bundle);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}\nbox:\n${box!.tail()}`);
    await waitForLed('enrolled-dark', 5_000);
    const patterns = await leds.stop();
    for (const step of ['verify-bundle', 'network', 'enroll-tpm', 'enroll-controller', 'done'])
      assert.match(result.stdout, new RegExp(`\\[${step}\\]`), `step ${step} shown:\n${result.stdout}`);
    assert.deepEqual(patterns, ['awaiting-provisioning', 'provisioning', 'enrolled-dark']);

    const status = await boxStatus(rig);
    assert.equal(status.state, 'enrolled');
    assert.equal(status.step, 'done');
    assert.equal(status.site?.name, 'site branch1');
    assert.deepEqual((await boxNetwork(rig)).addresses, [`${BOX_ADDRESS}/24`]);
    assert.ok(!existsSync(join(rig.stateDir, 'site-bundle.cbor')), 'the bundle (it holds the token) is gone');
    const listed = (await gateways()).find((g) => g.name === 'branch1');
    assert.equal(listed?.attestation, 'approved', JSON.stringify(listed));
    assert.equal(listed?.ekHash, seenHello.ekHash);
    assert.equal(listed?.firmwareVersion, FIRMWARE_VERSION);
    const after = JSON.parse((await tech(['status', '--port', pty.laptop])).stdout);
    assert.equal(after.state, 'enrolled');

    // The gateway it enrolled runs dark: the outsider's full TCP scan finds every port filtered.
    gateway = await GatewayProcess.startEnrolled(rig.box, {
      dir: join(rig.stateDir, 'gateway'),
      extra: { log: { level: 'info', rejectionsPerSecond: 1000 } },
    });
    const scan = await nmapScan(rig.outsider, BOX_ADDRESS, 'tcp-syn');
    assert.ok(scan.hostUp);
    assert.deepEqual(scan.open, []);
    assert.deepEqual(scan.closed, []);
    assert.equal(scan.filtered, 65_535, JSON.stringify(scan.stateCounts));
    await gateway.stop();
    gateway = undefined;
  });

  test('5. factory reset (the button held 10 s): identity and site wiped, firmware kept, LEDs back to awaiting', async () => {
    const firmwareBefore = readFileSync(join(rig.etcDir, 'umbra/firmware-version'), 'utf8');
    const trustBefore = readFileSync(join(rig.trustDir, 'org.pub'), 'utf8');
    const patterns = await factoryResetWithButton();
    assert.deepEqual(patterns, ['factory-reset', 'awaiting-provisioning']);
    const status = await boxStatus(rig);
    assert.equal(status.state, 'unprovisioned');
    assert.equal(status.site, undefined);
    assert.equal(status.lastError, undefined);
    assert.ok(!existsSync(join(rig.stateDir, 'gateway')), 'the gateway identity is wiped');
    assert.deepEqual(await boxNetwork(rig), pristine, 'the network is as before provisioning');
    assert.equal(readFileSync(join(rig.etcDir, 'umbra/firmware-version'), 'utf8'), firmwareBefore);
    assert.equal(readFileSync(join(rig.trustDir, 'org.pub'), 'utf8'), trustBefore);
    assert.equal(await ledNow(), 'awaiting-provisioning');
    assert.equal(JSON.parse((await tech(['status', '--port', pty.laptop])).stdout).state, 'unprovisioned');
  });

  test('2. bad inputs: each refused with its reason, the box left as it was; then it provisions', async () => {
    // A corrupt frame (a payload byte changed after its CRC), written raw to the line.
    const hello = encodeFrame({
      kind: 'data',
      seq: 7,
      syn: true,
      payload: Buffer.from(encodeProvisioningMessage({ t: 'hello', versions: [1] }, 'to-box')),
    });
    const corrupt = Buffer.from(hello);
    corrupt[corrupt.length - 6] = (corrupt[corrupt.length - 6] ?? 0) ^ 0xff;
    const from = box!.lines.length;
    const fd = openSync(pty.laptop, 'r+');
    try {
      writeSync(fd, corrupt);
    } finally {
      closeSync(fd);
    }
    await box!.waitForLine(/damaged frame: crc/, 5_000, from);
    assert.ok(box!.running, 'the box survives damaged frames');

    // An unknown protocol version: a technician session that speaks only version 99.
    const serial = await openSerial({ path: pty.laptop, baudRate: 115200 });
    const session = new ProvisioningSession(serial, {
      side: 'technician',
      port: pty.laptop,
      peer: 'the box',
    });
    try {
      await assert.rejects(
        exchangeHello(session, { t: 'hello', versions: [99] }, { timeoutMs: 10_000, peer: 'the box' }),
        /no common provisioning protocol version/,
      );
    } finally {
      session.close();
      await closeSerial(serial);
    }
    await box!.waitForLine(/no common provisioning protocol version/, 5_000, from);
    assert.equal((await boxStatus(rig)).state, 'unprovisioned');
    assert.ok(box!.running);

    // A bundle signed by a key the firmware does not trust.
    const otherKey = join(rig.dir, 'other.key');
    assert.equal((await tech(['key', 'create', '--out', otherKey])).code, 0);
    let result = await provision(await makeBundle('unknownkey', { signKey: otherKey }));
    assert.equal(result.code, 1);
    assert.match(result.stderr, /the box refused: unknown-key: /);
    await assertLeftAsItWas('unknown-key');

    // An expired bundle (signed by the right key; the CLI cannot make one in the past).
    const key = readProvisioningPrivateKey(rig.signKey);
    const caPin = pinOf(readFileSync(rig.caFile));
    const now = Date.now();
    const expired = join(rig.dir, 'expired.umbra-bundle');
    writeFileSync(
      expired,
      createSiteBundle(
        {
          controllerUrl: `${CONTROLLER_URL}/`,
          caPin,
          enrollmentToken: await newToken('expired'),
          site: 'site expired',
          network: {
            mode: 'static',
            address: `${BOX_ADDRESS}/24`,
            gateway: rig.ctl.ipv4,
            dns: [rig.ctl.ipv4],
            ntp: [],
          },
          createdAt: now - 2 * 86_400_000,
          expiresAt: now - 86_400_000,
        },
        key.privateKey,
      ),
    );
    result = await provision(expired);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /the box refused: expired: /);
    await assertLeftAsItWas('expired');

    // An unreachable controller: the bundle names a port nothing listens on. The network is applied,
    // the controller cannot be reached within 10 s, and it is rolled back.
    const deadUrl = 'https://controller.umbra.test:9/';
    const unreachable = join(rig.dir, 'unreachable.umbra-bundle');
    writeFileSync(
      unreachable,
      createSiteBundle(
        {
          controllerUrl: deadUrl,
          caPin,
          enrollmentToken: createEnrollmentToken({ kind: 'gateway', url: deadUrl, pin: caPin }).token,
          site: 'site unreachable',
          network: {
            mode: 'static',
            address: `${BOX_ADDRESS}/24`,
            gateway: rig.ctl.ipv4,
            dns: [rig.ctl.ipv4],
            ntp: [],
          },
          createdAt: now,
          expiresAt: now + 86_400_000,
        },
        key.privateKey,
      ),
    );
    result = await provision(unreachable);
    assert.equal(result.code, 1);
    assert.match(result.stdout, /\[network\]/);
    assert.match(result.stderr, /the box refused: controller-unreachable: /);
    await assertLeftAsItWas('controller-unreachable');

    // The fault pattern lasts 30 s after the last refusal, then awaiting-provisioning again.
    await waitFor(
      'awaiting-provisioning after the fault',
      async () => {
        const p = await ledNow();
        return p === 'awaiting-provisioning' ? p : undefined;
      },
      40_000,
      250,
    );

    // And the next provision over the same line works.
    result = await provision(await makeBundle('afterbad'));
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}\nbox:\n${box!.tail()}`);
    assert.equal((await boxStatus(rig)).state, 'enrolled');
    assert.equal(await ledNow(), 'enrolled-dark');
    await factoryResetWithButton();
  });

  test('3. USB: a FAT stick with a bundle provisions the box, a report is written back; an empty stick is refused', async () => {
    // An empty stick first: the error, recorded and shown.
    const empty = makeFatStick(rig, 'EMPTY', { 'readme.txt': 'nothing here\n' });
    insertStick(empty);
    await waitForBox('the no-bundle error', (s) => s.lastError?.code === 'no-bundle', 15_000, 100);
    assert.equal((await boxStatus(rig)).state, 'unprovisioned');
    assert.match((await boxStatus(rig)).lastError!.message, /no \*\.umbra-bundle file on the stick EMPTY/);
    assert.equal(await ledNow(), 'fault');
    assert.deepEqual(await boxNetwork(rig), pristine);
    empty.remove();
    // The fault shows 30 s, then awaiting-provisioning again (a bundle applied meanwhile would show
    // the fault rather than provisioning: the overlay hides the state until it ends).
    await waitForLed('awaiting-provisioning', 35_000);

    const bundle = readFileSync(await makeBundle('usbsite'));
    const stick = makeFatStick(rig, 'SITE', { 'branch.umbra-bundle': bundle });
    const leds = new LedRecorder(rig.sysfsRoot);
    insertStick(stick);
    await waitForBox('enrolled from the stick', (s) => s.state === 'enrolled', 60_000, 100);
    const report = await waitFor(
      'the report file on the stick',
      () => stickFiles(stick.image).find((name) => /^umbra-report-.*\.txt$/i.test(name)),
      15_000,
      200,
    );
    const patterns = await leds.stop();
    assert.deepEqual(patterns.slice(-2), ['provisioning', 'enrolled-dark']);
    const text = stickFile(stick.image, report);
    assert.match(text, /umbra-provisioner report/);
    assert.match(text, /enrolled/);
    const status = await boxStatus(rig);
    assert.equal(status.site?.name, 'site usbsite');
    assert.match(status.site?.source ?? '', /SITE|loop/);
    const listed = (await gateways()).find((g) => g.name === 'usbsite');
    assert.equal(listed?.attestation, 'approved', JSON.stringify(listed));

    // The enrolled gateway is dark here too.
    gateway = await GatewayProcess.startEnrolled(rig.box, { dir: join(rig.stateDir, 'gateway') });
    const scan = await nmapScan(rig.outsider, BOX_ADDRESS, 'tcp-syn');
    assert.deepEqual(scan.open, []);
    assert.equal(scan.filtered, 65_535, JSON.stringify(scan.stateCounts));
    await gateway.stop();
    gateway = undefined;
    stick.remove();
    await factoryResetWithButton();
  });

  /** Starts `umbra-tech provision` without waiting for it (the box is about to lose power). */
  const startProvision = (bundle: string): ChildProcess => {
    const child = spawn(
      TECH_BIN,
      ['provision', '--port', pty.laptop, '--bundle', bundle, '--timeout', '60s'],
      {
        env: TOOL_ENV,
        stdio: 'ignore',
      },
    );
    techChildren.push(child);
    return child;
  };
  const endTech = async (child: ChildProcess) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    process.kill(child.pid!, 'SIGTERM');
    await exited;
  };
  const HOLD_MS = 2_000;

  for (const step of ['verify-bundle', 'network', 'enroll-tpm', 'enroll-controller'] as const) {
    test(`4. power cut (kill -9) in ${step}, restart: ${step.startsWith('enroll') ? 'the enrollment resumes' : 'rolled back'}, then enrolled`, async () => {
      const bundle = await makeBundle(`cut-${step}`);
      const name = `cut-${step}`;
      await box!.stop();
      const dropRule = ['INPUT', '-p', 'tcp', '--dport', '8444', '-j', 'DROP'];
      if (step === 'network') {
        // The controller's port drops SYNs: the box applies the address, then waits to reach it.
        await startBox();
        await rig.ctl.run(['iptables', '-I', ...dropRule]);
      } else await startBox({ holdStateWritesMs: HOLD_MS });
      const technician = startProvision(bundle);
      try {
        await waitFor(
          `the box in ${step}`,
          async () => {
            const record = stateFile(rig);
            if (record?.step !== step) return undefined;
            if (step === 'network')
              return (await boxNetwork(rig)).addresses.includes(`${BOX_ADDRESS}/24`) || undefined;
            return true;
          },
          40_000,
        );
        await box!.kill9();
      } finally {
        if (step === 'network') await rig.ctl.run(['iptables', '-D', ...dropRule]);
        await endTech(technician);
      }
      const cut = stateFile(rig)!;
      assert.equal(cut.step, step, 'the state file holds the step the power was cut in');
      if (step === 'network') assert.ok((await boxNetwork(rig)).addresses.includes(`${BOX_ADDRESS}/24`));

      await startBox(); // the restart
      if (step === 'verify-bundle' || step === 'network') {
        const status = await waitForBox('the rollback', (s) => s.state === 'unprovisioned', 15_000, 100);
        assert.equal(status.lastError?.code, 'interrupted');
        assert.match(
          status.lastError?.message ?? '',
          new RegExp(`power loss at ${step}; ready to try again`),
        );
        assert.deepEqual(await boxNetwork(rig), pristine, 'the network is as it was');
        assert.ok(!existsSync(join(rig.stateDir, 'site-bundle.cbor')));
        // The interrupted attempt is a failure like any other: the fault pattern for 30 s.
        assert.equal(await ledNow(), 'fault');
        // The fault overlay would hide the provisioning and enrolled patterns for the rest of its
        // 30 s (see the test 'a bundle applied while the fault shows'), so the box restarts first.
        await box!.stop();
        await startBox();
        await waitForLed('awaiting-provisioning', 5_000);
        const result = await provision(bundle);
        assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}\nbox:\n${box!.tail()}`);
      } else {
        await waitForBox('the resumed enrollment', (s) => s.state === 'enrolled', 60_000, 200);
        assert.ok(
          box!.lines.some((line) => /interrupted at .*resuming it/.test(line)),
          box!.tail(),
        );
      }
      const status = await boxStatus(rig);
      assert.equal(status.state, 'enrolled');
      assert.equal(await ledNow(), 'enrolled-dark');
      assert.deepEqual((await boxNetwork(rig)).addresses, [`${BOX_ADDRESS}/24`]);
      assert.ok(existsSync(join(rig.stateDir, 'gateway', 'enrollment.json')));
      assert.equal((await gateways()).find((g) => g.name === name)?.attestation, 'approved');
      await factoryResetWithButton();
    });
  }

  test('the firmware version from /etc/umbra/firmware-version alone: the enrolled box is approved against it', async () => {
    const config = join(rig.dir, 'provisioner-no-firmware.json');
    writeFileSync(config, JSON.stringify({ serialNumber: 'UMB-TEST-0002' }));
    await box!.stop();
    await startBox({ configFile: config });
    try {
      const hello = JSON.parse((await tech(['status', '--port', pty.laptop])).stdout);
      assert.equal(hello.firmwareVersion, FIRMWARE_VERSION, 'the hello reports the firmware file');
      const result = await provision(await makeBundle('fwfile'));
      assert.equal(result.code, 0, result.stderr);
      const listed = (await gateways()).find((g) => g.name === 'fwfile');
      assert.equal(listed?.attestation, 'approved', JSON.stringify(listed));
    } finally {
      if ((await boxStatus(rig)).state === 'enrolled') await factoryResetWithButton();
      else {
        await box!.stop();
        await startBox();
      }
    }
  });

  test('two umbra-tech commands in a row on one running box both work', async () => {
    const first = await tech(['status', '--port', pty.laptop]);
    const second = await tech(['status', '--port', pty.laptop]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(second.code, 0, second.stderr);
  });

  test('an oversize frame written raw to the line: the box answers the next umbra-tech command', async () => {
    const header = encodeFrame({ kind: 'data', seq: 9, syn: true, payload: Buffer.alloc(1) }).subarray(0, 12);
    header.writeUInt16BE(60_000, 8); // over MAX_FRAME_PAYLOAD, with a valid header check
    header.writeUInt16BE(crc32(header.subarray(4, 10)) & 0xffff, 10);
    const from = box!.lines.length;
    const fd = openSync(pty.laptop, 'r+');
    try {
      writeSync(fd, Buffer.concat([header, randomBytes(300)]));
    } finally {
      closeSync(fd);
    }
    try {
      await box!.waitForLine(/damaged frame: oversize/, 5_000, from);
      const status = await tech(['status', '--port', pty.laptop]);
      assert.equal(status.code, 0, status.stderr);
    } finally {
      // Whatever happened, the next test gets a box that listens.
      await box!.stop();
      await startBox();
    }
  });

  test('a bundle applied while the fault shows: the LEDs show provisioning, then enrolled-dark', async () => {
    // A failure (a stick without a bundle), then a good bundle over serial within the 30 s.
    await box!.stop();
    await startBox();
    const empty = makeFatStick(rig, 'BLANK', { 'notes.txt': 'no bundle\n' });
    const from = box!.lines.length;
    insertStick(empty);
    await box!.waitForLine(/no-bundle|no \*\.umbra-bundle/, 15_000, from);
    await waitForLed('fault', 5_000);
    empty.remove();
    const leds = new LedRecorder(rig.sysfsRoot);
    const ok = await provision(await makeBundle('overlay-good'));
    const enrolled = await waitForLed('enrolled-dark', 3_000).catch(() => undefined);
    const patterns = await leds.stop();
    try {
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(enrolled, 'enrolled-dark');
      assert.ok(patterns.includes('provisioning'), JSON.stringify(patterns));
    } finally {
      if ((await boxStatus(rig)).state === 'enrolled') await factoryResetWithButton();
    }
  });
});
