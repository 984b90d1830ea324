import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { memorySerialPair } from '@umbra/hal';
import {
  type BoxHello,
  exchangeHello,
  generateProvisioningKey,
  type ProgressMessage,
  ProvisioningSession,
  type ResultMessage,
  type ToTechnicianMessage,
} from '@umbra/protocol';
import { ProvisionerLog } from './log.ts';
import { MemoryNetworkApplier } from './network.ts';
import { ENROLLMENT_FILE, type EnrollFunction, Provisioner } from './provisioner.ts';
import { BoxIdentity, SerialServer, UNKNOWN_EK_HASH } from './serial-server.ts';
import { makeSiteBundle, TEST_NOW } from './testing.ts';

const key = generateProvisioningKey();
const EK = 'ab'.repeat(32);

let dir: string;
let box: Duplex;
let laptop: Duplex;
let server: SerialServer;
let tech: ProvisioningSession;
let provisioner: Provisioner;
let ekReads = 0;
let release: (() => void) | undefined;

const enroll: EnrollFunction = async (_t, gatewayDir, o) => {
  o.progress('reading the EK certificate from the TPM');
  if (release) await new Promise<void>((r) => (release = r));
  o.progress('asking the controller for a challenge');
  mkdirSync(gatewayDir, { recursive: true });
  writeFileSync(join(gatewayDir, ENROLLMENT_FILE), '{}');
};

async function setUp(options: { holdEnrollment?: boolean } = {}) {
  release = options.holdEnrollment ? () => {} : undefined;
  provisioner = await Provisioner.open({
    stateDir: dir,
    trustedKeys: [key.publicKey],
    network: new MemoryNetworkApplier(),
    tpm: 'swtpm:127.0.0.1:2321',
    enroll,
    verifyController: async () => {},
    now: () => TEST_NOW,
    log: new ProvisionerLog({ path: join(dir, 'provisioner.log') }),
  });
  const sysfs = join(dir, 'root');
  mkdirSync(join(sysfs, 'sys/class/dmi/id'), { recursive: true });
  writeFileSync(join(sysfs, 'sys/class/dmi/id/product_serial'), 'UMB-0042\n');
  mkdirSync(join(sysfs, 'etc/umbra'), { recursive: true });
  writeFileSync(join(sysfs, 'etc/umbra/firmware-version'), '2026.11.1\n');
  const identity = new BoxIdentity({
    sysfsRoot: sysfs,
    etcDir: join(sysfs, 'etc'),
    readEkHash: async () => {
      ekReads++;
      return EK;
    },
  });
  [box, laptop] = memorySerialPair();
  server = new SerialServer(box, {
    provisioner,
    identity,
    port: '/dev/ttyS0',
    session: { ackTimeoutMs: 100 },
  });
  tech = new ProvisioningSession(laptop, { side: 'technician', port: 'test', ackTimeoutMs: 100 });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'umbra-serial-'));
  ekReads = 0;
});
afterEach(async () => {
  tech?.close();
  await server?.close();
  box?.destroy();
  laptop?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

async function receiveUntilResult(): Promise<{ progress: ProgressMessage[]; result: ResultMessage }> {
  const progress: ProgressMessage[] = [];
  for (;;) {
    const message = (await tech.receive({ timeoutMs: 5000 })) as ToTechnicianMessage;
    if (message.t === 'progress') progress.push(message);
    else if (message.t === 'result') return { progress, result: message };
    else assert.fail(`unexpected ${message.t}`);
  }
}

describe('the serial server', () => {
  test('hello: serial number, firmware, EK hash (read once), state', async () => {
    await setUp();
    const { version, peerHello } = await exchangeHello<BoxHello>(tech, { t: 'hello', versions: [1] });
    assert.equal(version, 1);
    assert.deepEqual(peerHello, {
      t: 'hello',
      versions: [1],
      serialNumber: 'UMB-0042',
      firmwareVersion: '2026.11.1',
      ekHash: EK,
      state: 'unprovisioned',
    });
    await tech.send({ t: 'status-request' });
    assert.equal(((await tech.receive({ timeoutMs: 5000 })) as BoxHello).ekHash, EK);
    assert.equal(ekReads, 1);
  });

  test('apply-bundle: progress for each step, then ok; status says enrolled', async () => {
    await setUp();
    await exchangeHello(tech, { t: 'hello', versions: [1] });
    await tech.send({ t: 'apply-bundle', bundle: makeSiteBundle({ key }).bytes });
    const { progress, result } = await receiveUntilResult();
    assert.deepEqual(result, { t: 'result', ok: true });
    assert.deepEqual(
      [...new Set(progress.map((p) => p.step))],
      ['verify-bundle', 'network', 'enroll-tpm', 'enroll-controller', 'done'],
    );
    assert.ok(progress.every((p) => p.percent !== undefined));
    await tech.send({ t: 'status-request' });
    assert.equal(((await tech.receive({ timeoutMs: 5000 })) as BoxHello).state, 'enrolled');
  });

  test('a bad bundle: result error with the code; the hello carries it as lastError', async () => {
    await setUp();
    await exchangeHello(tech, { t: 'hello', versions: [1] });
    await tech.send({ t: 'apply-bundle', bundle: makeSiteBundle().bytes });
    const { result } = await receiveUntilResult();
    assert.equal(result.ok, false);
    assert.equal(result.ok === false && result.error.code, 'unknown-key');
    await tech.send({ t: 'status-request' });
    const hello = (await tech.receive({ timeoutMs: 5000 })) as BoxHello;
    assert.equal(hello.state, 'unprovisioned');
    assert.equal(hello.lastError?.code, 'unknown-key');
  });

  test('a second bundle during an apply is refused as busy', async () => {
    await setUp({ holdEnrollment: true });
    await exchangeHello(tech, { t: 'hello', versions: [1] });
    await tech.send({ t: 'apply-bundle', bundle: makeSiteBundle({ key }).bytes });
    for (;;) {
      const m = (await tech.receive({ timeoutMs: 5000 })) as ToTechnicianMessage;
      if (m.t === 'progress' && m.step === 'enroll-tpm') break;
    }
    await tech.send({ t: 'apply-bundle', bundle: makeSiteBundle({ key }).bytes });
    const busy = await receiveUntilResult();
    assert.equal(busy.result.ok === false && busy.result.error.code, 'busy');
    release?.();
    const first = await receiveUntilResult();
    assert.deepEqual(first.result, { t: 'result', ok: true });
  });

  test('logs-request: the last N lines of the provisioner log', async () => {
    await setUp();
    await exchangeHello(tech, { t: 'hello', versions: [1] });
    await tech.send({ t: 'apply-bundle', bundle: Buffer.from('junk') });
    await receiveUntilResult();
    await tech.send({ t: 'logs-request', lines: 3 });
    const logs = (await tech.receive({ timeoutMs: 5000 })) as ToTechnicianMessage;
    assert.equal(logs.t, 'logs');
    assert.equal(logs.t === 'logs' && logs.lines.length, 3);
    assert.ok(logs.t === 'logs' && logs.lines.every((l) => l.length <= 160));
    assert.ok(logs.t === 'logs' && logs.lines.some((l) => /malformed/.test(l)), JSON.stringify(logs));
  });

  test('console text and damaged frames between messages do not stop the session', async () => {
    await setUp();
    laptop.write('login: root\r\n');
    laptop.write(Buffer.from([0xf5, 0x55, 0x4d, 0xfb, 1, 1, 0, 9, 0, 4, 0xde, 0xad, 1, 2, 3, 4, 0, 0, 0, 0]));
    const { peerHello } = await exchangeHello<BoxHello>(tech, { t: 'hello', versions: [1] });
    assert.equal(peerHello.serialNumber, 'UMB-0042');
  });
});

describe('BoxIdentity', () => {
  test('device-tree serial, configured firmware, zeros while the TPM cannot be read', async () => {
    const root = mkdtempSync(join(tmpdir(), 'umbra-id-'));
    try {
      mkdirSync(join(root, 'proc/device-tree'), { recursive: true });
      writeFileSync(join(root, 'proc/device-tree/serial-number'), '10000000abcdef01\0');
      const messages: string[] = [];
      const identity = new BoxIdentity({
        sysfsRoot: root,
        etcDir: join(root, 'etc'),
        firmwareVersion: '1.0.0',
        readEkHash: async () => {
          throw new Error('no TPM at device:/dev/tpmrm0');
        },
        log: (m) => messages.push(m),
      });
      assert.equal(identity.serialNumber, '10000000abcdef01');
      assert.equal(identity.firmwareVersion, '1.0.0');
      assert.equal(await identity.ekHash(), UNKNOWN_EK_HASH);
      assert.match(messages[0]!, /cannot read the EK from the TPM: no TPM/);
      assert.equal(
        new BoxIdentity({ sysfsRoot: `${root}/none`, serialNumber: 'CFG-1' }).serialNumber,
        'CFG-1',
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
