// umbra-tech's commands in-process: the serial link is an in-memory pair (memorySerialPair) with a
// scripted box on the other end (testdata/box-responder.ts); short timeouts are injected where a
// box stays silent.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { UsageError } from '@umbra/cli-kit';
import { memorySerialPair } from '@umbra/hal';
import {
  createEnrollmentToken,
  type OpenedSiteBundle,
  openSiteBundle,
  ProvisioningLinkError,
  ProvisioningVersionError,
  pinOf,
  readProvisioningPublicKey,
  SecretFileError,
} from '@umbra/protocol';
import { createTestPki, type TestPki } from '../testdata/pki.ts';
import { runTech, type TechIo } from './main.ts';
import { ProgressDisplay } from './progress.ts';
import { type BoxScript, startBoxResponder, TEST_EK_HASH } from './testdata/box-responder.ts';

const PORT = '/dev/ttyTEST0';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  received: ReturnType<typeof startBoxResponder>['received'];
}

/** Runs umbra-tech against a scripted box (or, with `box: null`, against silence). */
async function run(argv: string[], script: BoxScript | null = {}, extra: Partial<TechIo> = {}): Promise<Run> {
  const [tech, box] = memorySerialPair();
  const responder = script ? startBoxResponder(box, script) : undefined;
  let stdout = '';
  let stderr = '';
  let opened = false;
  let closed = false;
  try {
    const code = await runTech(argv, {
      stdout: { write: (text: string) => (stdout += text), isTTY: false },
      stderr: { write: (text: string) => (stderr += text) },
      openPort: async () => {
        opened = true;
        return {
          stream: tech,
          close: async () => {
            closed = true;
          },
        };
      },
      link: { ackTimeoutMs: 20, maxAttempts: 3, helloTimeoutMs: 500 },
      spinMs: 0,
      ...extra,
    });
    assert.equal(closed, opened, 'a port opened is closed after the command');
    return { code, stdout, stderr, received: responder?.received ?? [] };
  } finally {
    responder?.stop();
    tech.destroy();
    box.destroy();
  }
}

let dir: string;
let bundlePath: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'umbra-tech-'));
  bundlePath = join(dir, 'site.bundle');
  writeFileSync(bundlePath, Buffer.from('not checked by the scripted box'), { mode: 0o600 });
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('umbra-tech status and logs', () => {
  test('status prints the box hello as JSON', async () => {
    const result = await run(['status', '--port', PORT], {
      hello: { state: 'provisioning', lastError: { code: 'controller-unreachable', message: 'no route' } },
    });
    assert.equal(result.code, 0);
    assert.deepEqual(JSON.parse(result.stdout), {
      versions: [1],
      serialNumber: 'UMB-0042',
      firmwareVersion: '1.4.0',
      ekHash: TEST_EK_HASH,
      state: 'provisioning',
      lastError: { code: 'controller-unreachable', message: 'no route' },
    });
    assert.deepEqual(
      result.received.map((m) => m.t),
      ['hello'],
    );
  });

  test('logs asks for --lines and prints them, control characters made harmless', async () => {
    const result = await run(['logs', '--port', PORT, '--lines', '2'], {
      logs: ['one', 'two', 'three \x1b[2Jcleared'],
    });
    assert.equal(result.code, 0);
    assert.equal(result.stdout, 'two\nthree \ufffd[2Jcleared\n');
    assert.deepEqual(result.received[1], { t: 'logs-request', lines: 2 });
  });
});

describe('umbra-tech provision', () => {
  const progress: BoxScript['progress'] = [
    { t: 'progress', step: 'verify-bundle', text: 'checking the signature' },
    { t: 'progress', step: 'apply-network', text: 'applying the network', percent: 50 },
    { t: 'progress', step: 'apply-network', text: 'applying the network', percent: 100 },
    { t: 'progress', step: 'enroll', text: 'enrolling with the controller' },
  ];

  test('sends the bundle, shows each step as a plain line, exits 0 on ok', async () => {
    const result = await run(['provision', '--port', PORT, '--bundle', bundlePath], { progress });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /box UMB-0042, firmware 1\.4\.0, state unprovisioned/);
    assert.match(result.stdout, new RegExp(`EK hash ${TEST_EK_HASH}`));
    assert.match(
      result.stdout,
      /\[verify-bundle\] checking the signature\n\[apply-network\] applying the network \(50%\)\n\[apply-network\] applying the network \(100%\)\n\[enroll\] enrolling with the controller\n/,
    );
    assert.match(result.stdout, /done: box UMB-0042 applied the site bundle\n$/);
    const apply = result.received.find((m) => m.t === 'apply-bundle');
    assert.ok(apply && apply.t === 'apply-bundle');
    assert.deepEqual(Buffer.from(apply.bundle), readFileSync(bundlePath));
  });

  test('on a terminal, a step line is redrawn in place and finished with a mark', async () => {
    const [tech, box] = memorySerialPair();
    const responder = startBoxResponder(box, { progress });
    let stdout = '';
    try {
      const code = await runTech(['provision', '--port', PORT, '--bundle', bundlePath], {
        stdout: { write: (text: string) => (stdout += text), isTTY: true },
        stderr: { write: () => true },
        openPort: async () => ({ stream: tech, close: async () => {} }),
        spinMs: 0,
      });
      assert.equal(code, 0);
    } finally {
      responder.stop();
      tech.destroy();
      box.destroy();
    }
    const shown = stdout.split('\n').map((line) => line.split('\r').at(-1)?.replace('\x1b[2K', ''));
    assert.ok(shown.includes('✓ verify-bundle: checking the signature'), stdout);
    assert.ok(shown.includes('✓ apply-network: applying the network'), stdout);
    assert.ok(shown.includes('✓ enroll: enrolling with the controller'), stdout);
    assert.match(stdout, /apply-network: applying the network {2}50%/);
  });

  test('a refusal: exit 1 with the box code, message and what to do', async () => {
    const result = await run(['provision', '--port', PORT, '--bundle', bundlePath], {
      progress: [{ t: 'progress', step: 'verify-bundle', text: 'checking the signature' }],
      result: {
        t: 'result',
        ok: false,
        error: { code: 'unknown-key', message: 'the site bundle is signed by provisioning key 00ff' },
      },
    });
    assert.equal(result.code, 1);
    assert.match(
      result.stderr,
      /the box refused: unknown-key: the site bundle is signed by provisioning key 00ff\n/,
    );
    assert.match(result.stderr, /provisioning key, the one whose public half is in this box's firmware/);
    assert.doesNotMatch(result.stdout, /done:/);
  });

  test('a TTY display marks the step a refusal ended with ✗', () => {
    let out = '';
    const display = new ProgressDisplay({ out: { write: (t: string) => (out += t) }, tty: true, spinMs: 0 });
    display.update({ t: 'progress', step: 'enroll', text: 'enrolling', percent: 10 });
    display.end(false);
    assert.match(out, /✗ enroll: enrolling\n$/);
  });

  test('a box with no common version: the clear error', async () => {
    await assert.rejects(
      run(['provision', '--port', PORT, '--bundle', bundlePath], { versions: [2] }),
      (error: Error) =>
        error instanceof ProvisioningVersionError &&
        /no common provisioning protocol version: this side speaks 1, the box speaks 2; upgrade this side/.test(
          error.message,
        ),
    );
  });

  test('a box that never answers: "the box does not answer on PORT" after the retries', async () => {
    const started = Date.now();
    await assert.rejects(
      run(['status', '--port', PORT], null),
      (error: Error) =>
        error instanceof ProvisioningLinkError &&
        error.code === 'no-answer' &&
        error.message.startsWith(`the box does not answer on ${PORT}: no acknowledgement after 3 tries`),
    );
    assert.ok(Date.now() - started < 2000);
  });

  test('a box that stops answering mid-way: a timeout that says what to do', async () => {
    await assert.rejects(
      run(['provision', '--port', PORT, '--bundle', bundlePath, '--timeout', '1s'], {
        progress: [{ t: 'progress', step: 'enroll', text: 'enrolling' }],
        result: null,
      }),
      (error: Error) =>
        error instanceof ProvisioningLinkError &&
        error.code === 'timeout' &&
        /no message from the box on \/dev\/ttyTEST0 within 1\.0 s; .*umbra-tech logs --port \/dev\/ttyTEST0/.test(
          error.message,
        ),
    );
  });
});

describe('umbra-tech usage errors name the option', () => {
  const cases: [string[], RegExp][] = [
    [['status'], /missing --port: the serial port/],
    [['status', '--port', 'ttyUSB0'], /--port "ttyUSB0": expected the serial device's absolute path/],
    [['status', '--port', PORT, '--baud', 'fast'], /--baud "fast"/],
    [['logs', '--port', PORT, '--lines', '0'], /--lines "0": expected a number of lines from 1 to 100/],
    [['provision', '--port', PORT], /missing --bundle/],
    [
      ['provision', '--port', PORT, '--bundle', '/nonexistent/b'],
      /--bundle \/nonexistent\/b: cannot read it/,
    ],
    [['provision', '--port', PORT, '--bundle', bundlePathLater(), '--timeout', 'soon'], /--timeout "soon"/],
    [['status', '--port', PORT, '--colour'], /Unknown option '--colour'/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  for (const [argv, message] of cases)
    test(argv.join(' '), async () => {
      await assert.rejects(run(argv.map(resolveLater)), (error: Error) => {
        assert.ok(error instanceof UsageError, String(error));
        assert.match(error.message, message);
        return true;
      });
    });

  test('--help on every command', async () => {
    for (const command of [['key', 'create'], ['bundle', 'create'], ['provision'], ['status'], ['logs']]) {
      const result = await run([...command, '--help'], null);
      assert.equal(result.code, 0);
      assert.match(result.stdout, new RegExp(`^Usage: umbra-tech ${command.join(' ')}`));
    }
  });
});

// The bundle file is made in before(); the table above is built earlier.
function bundlePathLater(): string {
  return '@bundle';
}
function resolveLater(arg: string): string {
  return arg === '@bundle' ? bundlePath : arg;
}

describe('umbra-tech key create and bundle create', () => {
  let pki: TestPki;
  let caPath: string;
  let keyPath: string;
  const controller = 'https://controller.example:8443';
  let token: string;

  before(async () => {
    pki = createTestPki();
    caPath = join(dir, 'ca.crt');
    writeFileSync(caPath, pki.ca);
    keyPath = join(dir, 'provisioning.key');
    const result = await run(['key', 'create', '--out', keyPath], null);
    assert.equal(result.code, 0);
    assert.match(result.stdout, /firmware's trusted key line: [A-Za-z0-9+/]{43}=/);
    token = createEnrollmentToken({ kind: 'gateway', url: controller, pin: pinOf(pki.ca) }).token;
  });
  after(() => pki.remove());

  test('the key pair: private 0600, an existing file refused', async () => {
    assert.equal(statSync(keyPath).mode & 0o777, 0o600);
    assert.match(readFileSync(`${keyPath}.pub`, 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
    await assert.rejects(
      run(['key', 'create', '--out', keyPath], null),
      (error: Error) => error instanceof UsageError && /provisioning\.key already exists/.test(error.message),
    );
    const lonePub = join(dir, 'lone.key');
    writeFileSync(`${lonePub}.pub`, 'x');
    await assert.rejects(run(['key', 'create', '--out', lonePub], null), /lone\.key\.pub already exists/);
    assert.throws(() => statSync(lonePub), /ENOENT/);
  });

  const bundleArgs = (out: string, extra: string[] = []) => [
    'bundle',
    'create',
    '--controller',
    controller,
    '--ca',
    caPath,
    '--token',
    token,
    '--site',
    'Lyon office',
    '--sign-key',
    keyPath,
    '--out',
    out,
    ...extra,
  ];

  test('round trip: what bundle create writes opens with the public key', async () => {
    const out = join(dir, 'lyon.bundle');
    const now = Date.UTC(2026, 10, 21);
    const result = await run(
      bundleArgs(out, [
        '--network',
        'static:192.0.2.10/24,192.0.2.1',
        '--vlan',
        '20',
        '--dns',
        '192.0.2.53,192.0.2.54',
        '--ntp',
        'pool.ntp.org',
        '--expires',
        '3d',
      ]),
      null,
      { now: () => now },
    );
    assert.equal(result.code, 0);
    assert.equal(result.stdout.split('\n').length, 2, 'one line');
    assert.match(result.stdout, /site "Lyon office", controller https:\/\/controller\.example:8443\//);
    assert.ok(!result.stdout.includes(token.slice(7)), 'the token never printed');
    assert.equal(statSync(out).mode & 0o777, 0o600);
    const publicKey = readProvisioningPublicKey(`${keyPath}.pub`);
    const opened: OpenedSiteBundle = openSiteBundle(readFileSync(out), [publicKey], now + 1000);
    assert.equal(opened.controllerUrl, 'https://controller.example:8443/');
    assert.equal(opened.caPin, pinOf(pki.ca));
    assert.equal(opened.enrollmentToken, token);
    assert.equal(opened.site, 'Lyon office');
    assert.deepEqual(opened.network, {
      mode: 'static',
      address: '192.0.2.10/24',
      gateway: '192.0.2.1',
      vlan: 20,
      dns: ['192.0.2.53', '192.0.2.54'],
      ntp: ['pool.ntp.org'],
    });
    assert.equal(opened.expiresAt - opened.createdAt, 3 * 86_400_000);
    // an existing bundle is kept unless --force
    await assert.rejects(
      run(bundleArgs(out, ['--network', 'dhcp']), null),
      (error: Error) =>
        error instanceof SecretFileError &&
        /--out .*lyon\.bundle: it exists; give another --out, or --force/.test(error.message),
    );
    assert.equal((await run(bundleArgs(out, ['--network', 'dhcp', '--force']), null)).code, 0);
    assert.equal(openSiteBundle(readFileSync(out), [publicKey], Date.now()).network.mode, 'dhcp');
  });

  test('bad input names the option', async () => {
    const out = join(dir, 'bad.bundle');
    const identityToken = createEnrollmentToken({
      kind: 'identity',
      url: controller,
      pin: pinOf(pki.ca),
    }).token;
    const otherToken = createEnrollmentToken({
      kind: 'gateway',
      url: 'https://other.example/',
      pin: pinOf(pki.ca),
    }).token;
    const other = createTestPki();
    const otherCa = join(dir, 'other-ca.crt');
    writeFileSync(otherCa, other.ca);
    other.remove();
    const swap = (args: string[], option: string, value: string) => {
      const copy = [...args];
      copy[copy.indexOf(option) + 1] = value;
      return copy;
    };
    const base = bundleArgs(out, ['--network', 'dhcp']);
    const cases: [string[], RegExp][] = [
      [swap(base, '--token', identityToken), /--token: an identity token; a box needs a gateway token/],
      [swap(base, '--token', otherToken), /--token: made for controller https:\/\/other\.example\//],
      [swap(base, '--token', 'umbra1.nope'), /^--token: /],
      [swap(base, '--ca', otherCa), /--token: carries another CA pin than the certificate in --ca/],
      [swap(base, '--ca', keyPath), /--ca .*: not a certificate/],
      [
        swap(base, '--controller', 'http://controller.example'),
        /--controller "http:\/\/controller\.example"/,
      ],
      [
        swap(base, '--network', 'static:192.0.2.10'),
        /--network "static:192\.0\.2\.10": expected dhcp or static/,
      ],
      [
        swap(base, '--network', 'static:192.0.2.10/24,198.51.100.1'),
        /--network: .*198\.51\.100\.1 is not in 192\.0\.2\.10\/24/,
      ],
      [swap(base, '--site', 'no/slash'), /--site: site bundle field site/],
      [
        [...base, '--dns', 'resolver.example'],
        /--dns "resolver\.example": expected the IPv4 or IPv6 address/,
      ],
      [[...base, '--vlan', '5000'], /--vlan "5000"/],
      [[...base, '--expires', '91d'], /--expires: at most 90d/],
    ];
    for (const [argv, message] of cases)
      await assert.rejects(run(argv, null), (error: Error) => {
        assert.ok(error instanceof UsageError, `${argv.join(' ')}: ${error}`);
        assert.match(error.message, message);
        assert.ok(!error.message.includes(token.slice(7)));
        return true;
      });
  });
});
