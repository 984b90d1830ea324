import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { ManualClock, MemoryLeds, StatusLeds } from '@umbra/hal';
import { generateProvisioningKey } from '@umbra/protocol';
import { MemoryNetworkApplier, NetworkError } from './network.ts';
import {
  ENROLLMENT_FILE,
  type EnrollFunction,
  loadTrustedKeys,
  type ProgressEvent,
  ProvisionError,
  Provisioner,
  type ProvisionerOptions,
} from './provisioner.ts';
import { BUNDLE_FILE, STATE_FILE, StateFileError, StateStore } from './state.ts';
import { DAY_MS, makeSiteBundle, TEST_NOW } from './testing.ts';

const key = generateProvisioningKey();
const never = () => new Promise<never>(() => {});

let dir: string;
let clock: ManualClock;
let ledDriver: MemoryLeds;
let leds: StatusLeds;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'umbra-provisioner-'));
  clock = new ManualClock();
  ledDriver = new MemoryLeds({ status: {}, fault: {} });
  leds = await StatusLeds.open(ledDriver, { status: 'status', fault: 'fault' }, { clock });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** An enrollment that reports like enrollGatewayWithTpm and writes enrollment.json last. */
const fakeEnroll: EnrollFunction = async (_token, gatewayDir, options) => {
  options.progress('reading the EK certificate from the TPM');
  mkdirSync(gatewayDir, { recursive: true });
  writeFileSync(join(gatewayDir, 'gateway.key'), 'spa key', { mode: 0o600 });
  options.progress('asking the controller for a challenge');
  writeFileSync(join(gatewayDir, ENROLLMENT_FILE), '{}');
};

function options(overrides: Partial<ProvisionerOptions> = {}): ProvisionerOptions {
  return {
    stateDir: dir,
    trustedKeys: [key.publicKey],
    network: new MemoryNetworkApplier(),
    tpm: 'swtpm:127.0.0.1:2321',
    leds,
    enroll: fakeEnroll,
    verifyController: async () => {},
    now: () => TEST_NOW + 60_000,
    faultMs: 10_000,
    ...overrides,
  };
}

const bundle = () => makeSiteBundle({ key }).bytes;

describe('applying a bundle', () => {
  test('reports each step, enrolls, persists enrolled, shows enrolled-dark', async () => {
    const network = new MemoryNetworkApplier();
    const p = await Provisioner.open(options({ network }));
    const events: ProgressEvent[] = [];
    let patternDuringNetwork: string | undefined;
    network.calls.length = 0;
    await p.apply(bundle(), {
      source: 'serial /dev/ttyS0',
      progress: (event) => {
        events.push(event);
        if (event.step === 'network') patternDuringNetwork = leds.showing;
      },
    });
    const steps = [...new Set(events.map((e) => e.step))];
    assert.deepEqual(steps, ['verify-bundle', 'network', 'enroll-tpm', 'enroll-controller', 'done']);
    assert.equal(patternDuringNetwork, 'provisioning');
    assert.equal(p.state, 'enrolled');
    assert.equal(leds.showing, 'enrolled-dark');
    assert.equal(p.record.site?.name, 'Lyon branch 3');
    assert.ok(!existsSync(join(dir, BUNDLE_FILE)), 'the bundle (and its token) is gone once enrolled');
    const onDisk = StateStore.load(dir).record;
    assert.equal(onDisk.state, 'enrolled');
    assert.deepEqual(
      onDisk.history.map((h) => `${h.state}/${h.step}`),
      [
        'provisioning/verify-bundle',
        'provisioning/network',
        'enrolling/enroll-tpm',
        'enrolling/enroll-controller',
        'enrolled/done',
      ],
    );
    assert.ok(onDisk.history.every((h) => !Number.isNaN(Date.parse(h.at))));
    assert.equal(statSync(join(dir, STATE_FILE)).mode & 0o777, 0o600);
    assert.doesNotMatch(readFileSync(join(dir, STATE_FILE), 'utf8'), /umbra-gw|token/i);
  });

  test('a box shows booting first, then awaiting-provisioning', async () => {
    await Provisioner.open(options());
    const statusHistory = ledDriver.history.filter((h) => h.name === 'status').map((h) => h.setting.kind);
    assert.deepEqual(statusHistory, ['heartbeat', 'timer']);
    assert.equal(leds.showing, 'awaiting-provisioning');
  });

  test('an enrolled box refuses another bundle', async () => {
    const p = await Provisioner.open(options());
    await p.apply(bundle(), { source: 'test' });
    await assert.rejects(p.apply(bundle(), { source: 'test' }), { code: 'already-provisioned' });
  });

  test('a bundle while one is being applied is refused as busy', async () => {
    const p = await Provisioner.open(options({ enroll: never }));
    const first = p.apply(bundle(), { source: 'serial' });
    await new Promise((r) => setImmediate(r));
    assert.ok(p.busy);
    await assert.rejects(p.apply(bundle(), { source: 'usb' }), {
      code: 'busy',
      message: /busy \(applying a bundle from serial\)/,
    });
    void first;
  });
});

describe('bad input leaves the box as it was', () => {
  async function refused(
    bytes: Uint8Array,
    code: string,
    pattern: RegExp,
    overrides: Partial<ProvisionerOptions> = {},
  ) {
    const network = new MemoryNetworkApplier({ initial: { resolvConf: 'nameserver 10.0.0.1\n' } });
    const before = network.state;
    const p = await Provisioner.open(options({ network, ...overrides }));
    await assert.rejects(p.apply(bytes, { source: 'test' }), (error: ProvisionError) => {
      assert.ok(error instanceof ProvisionError, String(error));
      assert.equal(error.code, code, error.message);
      assert.match(error.message, pattern);
      return true;
    });
    assert.deepEqual(network.state, before, 'the network is as it was');
    assert.equal(p.state, 'unprovisioned');
    assert.equal(p.lastError?.code, code);
    assert.equal(StateStore.load(dir).record.lastError?.code, code);
    assert.ok(!existsSync(join(dir, BUNDLE_FILE)));
    assert.equal(leds.showing, 'fault');
    clock.advance(10_000);
    await new Promise((r) => setImmediate(r));
    assert.equal(leds.showing, 'awaiting-provisioning');
    return { p, network };
  }

  test('signed by a key the box does not trust', async () => {
    const { network } = await refused(makeSiteBundle().bytes, 'unknown-key', /key/);
    assert.equal(network.calls.length, 0);
  });

  test('a bad signature', async () => {
    const bytes = makeSiteBundle({ key, includeKeyId: false }).bytes;
    // The signature is the last 64 bytes' neighbourhood: flip a byte inside it.
    const signatureAt = bytes.indexOf(Buffer.from('signature')) + 'signature'.length + 2;
    bytes[signatureAt + 5]! ^= 0xff;
    await refused(bytes, 'bad-signature', /signature/);
  });

  test('malformed bytes', async () => {
    await refused(Buffer.from('not a bundle at all'), 'malformed', /./);
  });

  test('an expired bundle', async () => {
    const bytes = makeSiteBundle({
      key,
      createdAt: TEST_NOW - 10 * DAY_MS,
      expiresAt: TEST_NOW - DAY_MS,
    }).bytes;
    await refused(bytes, 'expired', /expired/);
  });

  test('an unreachable controller: the network is rolled back', async () => {
    const { network } = await refused(bundle(), 'controller-unreachable', /cannot reach/, {
      verifyController: async () => {
        throw new NetworkError(
          'controller-unreachable',
          'cannot reach the controller at controller.example:8443',
        );
      },
    });
    assert.deepEqual(
      network.calls.map((c) => c.op),
      ['apply', 'rollback'],
    );
  });

  test('a TPM failure during enrollment: the network is rolled back', async () => {
    const { network } = await refused(bundle(), 'tpm-failed', /enrollment failed: no TPM/, {
      enroll: async () => {
        throw new Error('no TPM at swtpm:127.0.0.1:2321');
      },
    });
    assert.deepEqual(
      network.calls.map((c) => c.op),
      ['apply', 'rollback'],
    );
  });

  test('a controller refusal: enroll-failed, network rolled back', async () => {
    await refused(bundle(), 'enroll-failed', /the token was already used/, {
      enroll: async (_t, _d, o) => {
        o.progress('asking the controller for a challenge');
        throw new Error('the controller refused: the token was already used');
      },
    });
  });

  test('the next attempt clears the last error', async () => {
    const { p } = await refused(Buffer.from('junk'), 'malformed', /./);
    await p.apply(bundle(), { source: 'test' });
    assert.equal(p.lastError, undefined);
    assert.equal(p.state, 'enrolled');
  });
});

describe('power loss at each step', () => {
  test('at verify-bundle: back to unprovisioned with the reason', async () => {
    const store = StateStore.load(dir);
    store.transition({ state: 'provisioning', step: 'verify-bundle' });
    store.saveBundle(bundle());
    const network = new MemoryNetworkApplier();
    const p = await Provisioner.open(options({ network }));
    assert.equal(p.state, 'unprovisioned');
    assert.deepEqual(
      { code: p.lastError?.code, message: p.lastError?.message },
      { code: 'interrupted', message: 'interrupted by a power loss at verify-bundle; ready to try again' },
    );
    assert.equal(network.calls.length, 0);
    assert.ok(!existsSync(join(dir, BUNDLE_FILE)));
  });

  test('at network, half-applied: the network is rolled back to its previous settings', async () => {
    const network = new MemoryNetworkApplier({
      initial: { resolvConf: 'nameserver 10.0.0.1\n' },
      hook: (stage) => (stage === 'half-applied' ? never() : undefined),
    });
    const before = network.state;
    const first = await Provisioner.open(options({ network }));
    void first.apply(bundle(), { source: 'test' });
    await new Promise((r) => setTimeout(r, 20));
    assert.notDeepEqual(network.state, before, 'half applied');
    // The power comes back: a new provisioner over the same state directory.
    const p = await Provisioner.open(options({ network }));
    assert.deepEqual(network.state, before);
    assert.equal(p.state, 'unprovisioned');
    assert.equal(p.lastError?.message, 'interrupted by a power loss at network; ready to try again');
    assert.equal(leds.showing, 'fault');
  });

  test('at enroll-tpm with the network up: the enrollment resumes', async () => {
    const network = new MemoryNetworkApplier();
    const first = await Provisioner.open(options({ network, enroll: never }));
    const bytes = bundle();
    void first.apply(bytes, { source: 'test' });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(StateStore.load(dir).record.step, 'enroll-tpm');
    const tokens: (string | null)[] = [];
    const p = await Provisioner.open(
      options({
        network,
        enroll: async (token, d, o) => {
          tokens.push(token);
          await fakeEnroll(token, d, o);
        },
      }),
    );
    assert.ok(p.busy);
    await p.idle();
    assert.equal(p.state, 'enrolled');
    assert.equal(tokens.length, 1);
    assert.match(tokens[0]!, /^umbra/);
    assert.equal(leds.showing, 'enrolled-dark');
    assert.ok(!existsSync(join(dir, BUNDLE_FILE)));
  });

  test('at enroll-controller with the network gone: rolled back', async () => {
    const network = new MemoryNetworkApplier({ initial: { resolvConf: 'nameserver 10.0.0.1\n' } });
    const before = network.state;
    const first = await Provisioner.open(
      options({
        network,
        enroll: async (_t, _d, o) => {
          o.progress('asking the controller for a challenge');
          return never();
        },
      }),
    );
    void first.apply(bundle(), { source: 'test' });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(StateStore.load(dir).record.step, 'enroll-controller');
    // The kernel forgot the addresses on the way down; a rollback still restores resolv.conf.
    const rebooted = new MemoryNetworkApplier({ initial: { resolvConf: 'stale\n' } });
    const p = await Provisioner.open(options({ network: rebooted }));
    assert.equal(p.state, 'unprovisioned');
    assert.equal(
      p.lastError?.message,
      'interrupted by a power loss at enroll-controller; ready to try again',
    );
    assert.deepEqual(rebooted.state, before);
  });

  test('after enrollment.json was written but before the state: enrolled', async () => {
    const network = new MemoryNetworkApplier();
    const first = await Provisioner.open(
      options({
        network,
        enroll: async (t, d, o) => {
          await fakeEnroll(t, d, o);
          return never();
        },
      }),
    );
    void first.apply(bundle(), { source: 'test' });
    await new Promise((r) => setTimeout(r, 20));
    const p = await Provisioner.open(options({ network, enroll: never }));
    assert.equal(p.state, 'enrolled');
    assert.equal(leds.showing, 'enrolled-dark');
  });

  test('an enrolled box whose network was forgotten applies it again', async () => {
    const network = new MemoryNetworkApplier();
    const first = await Provisioner.open(options({ network }));
    await first.apply(bundle(), { source: 'test' });
    const rebooted = new MemoryNetworkApplier();
    const p = await Provisioner.open(options({ network: rebooted }));
    assert.equal(p.state, 'enrolled');
    assert.deepEqual(
      rebooted.calls.map((c) => c.op),
      ['apply'],
    );
  });

  test('a corrupt state file is an error naming it', async () => {
    writeFileSync(join(dir, STATE_FILE), '{"version":1,"state":"confused"');
    await assert.rejects(Provisioner.open(options()), (error: Error) => {
      assert.ok(error instanceof StateFileError);
      assert.ok(error.message.includes(join(dir, STATE_FILE)));
      assert.match(error.message, /corrupt: not JSON/);
      return true;
    });
    writeFileSync(
      join(dir, STATE_FILE),
      '{"version":1,"state":"confused","step":"initial","at":"x","history":[]}',
    );
    await assert.rejects(
      Provisioner.open(options()),
      /provisioner\.json is corrupt: state: Invalid enum value/,
    );
  });
});

describe('factory reset', () => {
  test('wipes the identity and the site, restores the network, keeps firmware files', async () => {
    const network = new MemoryNetworkApplier({ initial: { resolvConf: 'nameserver 10.0.0.1\n' } });
    const before = network.state;
    const firmware = join(dir, 'firmware');
    mkdirSync(firmware);
    writeFileSync(join(firmware, 'firmware-version'), '1.2.3\n');
    const p = await Provisioner.open(options({ network }));
    await p.apply(bundle(), { source: 'test' });
    assert.ok(existsSync(join(p.gatewayDir, ENROLLMENT_FILE)));
    await p.factoryReset();
    assert.equal(p.state, 'unprovisioned');
    assert.equal(p.record.site, undefined);
    assert.ok(!existsSync(p.gatewayDir));
    assert.ok(existsSync(join(firmware, 'firmware-version')));
    assert.deepEqual(network.state, before);
    assert.equal(leds.showing, 'awaiting-provisioning');
    await p.apply(bundle(), { source: 'test' });
    assert.equal(p.state, 'enrolled');
  });

  test('a factory reset cut short by a power loss finishes at the next start', async () => {
    const p = await Provisioner.open(options());
    await p.apply(bundle(), { source: 'test' });
    StateStore.load(dir).transition({ state: 'unprovisioned', step: 'factory-reset' });
    const again = await Provisioner.open(options());
    assert.ok(!existsSync(again.gatewayDir));
    assert.equal(again.record.step, 'initial');
    assert.equal(again.record.site, undefined);
  });
});

test('loadTrustedKeys reads every key file and refuses an empty directory', () => {
  const keys = join(dir, 'keys');
  mkdirSync(keys);
  assert.throws(() => loadTrustedKeys(keys), /no provisioning public keys in/);
  writeFileSync(join(keys, 'org.pub'), Buffer.from(key.publicKey).toString('base64'));
  assert.deepEqual(loadTrustedKeys(keys), [Buffer.from(key.publicKey)]);
});

describe('zero-touch', () => {
  test('without a claim it stays unprovisioned with the reason; once claimed it enrolls with no token and the firmware pin', async () => {
    const calls: Array<{ token: string | null; caPin: string | undefined }> = [];
    let claimed = false;
    const p = await Provisioner.open(
      options({
        enroll: async (token, d, o) => {
          calls.push({ token, caPin: o.caPin });
          if (!claimed) throw new Error('the controller refused: no token, and no claim for this TPM');
          await fakeEnroll(token, d, o);
        },
      }),
    );
    const firmware = {
      controllerUrl: 'https://controller.example:8444/',
      caPin: `sha256/${'A'.repeat(43)}=`,
    };
    assert.equal(await p.enrollByClaim(firmware), false);
    assert.equal(p.state, 'unprovisioned');
    assert.match(p.lastError?.message ?? '', /no claim for this TPM/);
    assert.equal(leds.showing, 'awaiting-provisioning');
    claimed = true;
    assert.equal(await p.enrollByClaim(firmware), true);
    assert.equal(p.state, 'enrolled');
    assert.equal(leds.showing, 'enrolled-dark');
    assert.deepEqual(calls, [
      { token: null, caPin: firmware.caPin },
      { token: null, caPin: firmware.caPin },
    ]);
    // Enrolled, it asks no more.
    assert.equal(await p.enrollByClaim(firmware), false);
    assert.equal(calls.length, 2);
  });
});

describe('LEDs after a failure', () => {
  test('a bundle applied while the fault still flashes shows provisioning, then enrolled-dark, not the fault', async () => {
    const p = await Provisioner.open(options({ verifyController: async () => {} }));
    const expired = makeSiteBundle({
      key,
      createdAt: TEST_NOW - 10 * DAY_MS,
      expiresAt: TEST_NOW - DAY_MS,
    }).bytes;
    await assert.rejects(p.apply(expired, { source: 'test', progress: () => {} }));
    assert.equal(leds.showing, 'fault'); // flashing for faultMs (10 s of the manual clock)
    let duringNetwork: string | undefined;
    await p.apply(bundle(), {
      source: 'test',
      progress: (event) => {
        if (event.step === 'network') duringNetwork = leds.showing;
      },
    });
    assert.equal(duringNetwork, 'provisioning');
    assert.equal(leds.showing, 'enrolled-dark');
  });
});
