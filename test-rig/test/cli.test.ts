// The command-line contract, black-box: the names, flags, outputs, file modes and error messages
// that operators and scripts rely on. Nothing here touches a firewall: every `run` below fails
// its pre-flight checks before the gateway installs anything.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { CLIENT_BIN, GATEWAY_BIN, TOOL_ENV } from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'umbra-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function run(argv: string[], prefix: string[] = []) {
  const result = spawnSync(
    prefix[0] ?? argv[0]!,
    [...prefix.slice(1), ...(prefix.length ? argv : argv.slice(1))],
    {
      env: TOOL_ENV,
      encoding: 'utf8',
      timeout: 20_000,
    },
  );
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

const BASE64_KEY = /^[A-Za-z0-9+/]{43}=$/;

describe('umbra-gateway keygen', () => {
  test('writes the key pair, the private key mode 0600, and prints the public key on one line', () => {
    const keyDir = join(dir, 'gw-keys');
    const result = run([GATEWAY_BIN, 'keygen', '--dir', keyDir]);
    assert.equal(result.code, 0, result.stderr);
    const lines = result.stdout.split('\n').filter(Boolean);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, BASE64_KEY);
    assert.equal(statSync(join(keyDir, 'gateway.key')).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(keyDir, 'gateway.pub'), 'utf8').trim(), lines[0]);
    assert.doesNotMatch(result.stdout + result.stderr, /privateKey/);
  });

  test('refuses to replace an existing key unless --force', () => {
    const keyDir = join(dir, 'gw-keys');
    const before = readFileSync(join(keyDir, 'gateway.key'));
    const again = run([GATEWAY_BIN, 'keygen', '--dir', keyDir]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /gateway\.key/);
    assert.deepEqual(readFileSync(join(keyDir, 'gateway.key')), before);
    assert.equal(run([GATEWAY_BIN, 'keygen', '--dir', keyDir, '--force']).code, 0);
    assert.notDeepEqual(readFileSync(join(keyDir, 'gateway.key')), before);
  });
});

describe('umbra keygen and knock', () => {
  const identity = join(dir, 'alice.identity');
  let gatewayKey = '';

  test('keygen writes the identity with mode 0600 and prints the public key', () => {
    const result = run([CLIENT_BIN, 'keygen', '--out', identity]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout.trim(), BASE64_KEY);
    assert.equal(statSync(identity).mode & 0o777, 0o600);
    assert.notEqual(run([CLIENT_BIN, 'keygen', '--out', identity]).code, 0, 'no silent overwrite');
    gatewayKey = readFileSync(join(dir, 'gw-keys', 'gateway.pub'), 'utf8').trim();
  });

  test('knock --print writes the knock as hex, at most 512 bytes, and sends nothing', () => {
    const args = ['knock', '--gateway', '192.0.2.10', '--gateway-key', gatewayKey, '--identity', identity];
    const result = run([CLIENT_BIN, ...args, '--access', 'tcp/22', '--print']);
    assert.equal(result.code, 0, result.stderr);
    const bytes = Buffer.from(result.stdout.trim(), 'hex');
    assert.ok(bytes.length >= 180 && bytes.length <= 512, `${bytes.length} bytes`);
    assert.equal(bytes[0], 1, 'SPA version 1');
    // The gateway key may also be given as the file that holds it.
    const fromFile = run([
      CLIENT_BIN,
      ...args.slice(0, 4),
      join(dir, 'gw-keys', 'gateway.pub'),
      ...args.slice(5),
      '--access',
      'udp/53',
      '--print',
    ]);
    assert.equal(fromFile.code, 0, fromFile.stderr);
  });

  test('posture prints this device as JSON, and --posture carries it in a knock that still fits', () => {
    const posture = run([CLIENT_BIN, 'posture']);
    assert.equal(posture.code, 0, posture.stderr);
    assert.equal(JSON.parse(posture.stdout).os, 'linux');
    const args = ['knock', '--gateway', '192.0.2.10', '--gateway-key', gatewayKey, '--identity', identity];
    const plain = run([CLIENT_BIN, ...args, '--access', 'tcp/22', '--print']);
    const withPosture = run([CLIENT_BIN, ...args, '--access', 'tcp/22', '--posture', '--print']);
    assert.equal(withPosture.code, 0, withPosture.stderr);
    const bytes = withPosture.stdout.trim().length / 2;
    assert.ok(bytes > plain.stdout.trim().length / 2 && bytes <= 512, `${bytes} bytes`);
  });

  test('errors name the input and say what would fix it', () => {
    const base = [CLIENT_BIN, 'knock', '--gateway', '192.0.2.10', '--identity', identity];
    const cases: Array<[string[], RegExp]> = [
      [
        [...base, '--gateway-key', gatewayKey, '--access', 'tcp/99999'],
        /--access "tcp\/99999": expected PROTO\/PORT/,
      ],
      [[...base, '--gateway-key', 'abc', '--access', 'tcp/22'], /--gateway-key: expected 44 characters/],
      [
        [
          CLIENT_BIN,
          'knock',
          '--gateway',
          '192.0.2.10',
          '--gateway-key',
          gatewayKey,
          '--identity',
          join(dir, 'nope'),
          '--access',
          'tcp/22',
        ],
        /no such file; create one with `umbra keygen/,
      ],
      [
        [
          CLIENT_BIN,
          'knock',
          '--gateway',
          '[192.0.2.10]:1',
          '--gateway-key',
          gatewayKey,
          '--identity',
          identity,
          '--access',
          'tcp/22',
        ],
        /brackets must hold an IPv6 address/,
      ],
      [[...base, '--access', 'tcp/22'], /missing --gateway-key/],
      [[CLIENT_BIN, 'knok'], /unknown command "knok"/],
    ];
    for (const [argv, message] of cases) {
      const result = run(argv);
      assert.notEqual(result.code, 0, argv.join(' '));
      assert.match(result.stderr, message);
      assert.doesNotMatch(result.stderr, /at .*\.ts:\d+/, 'no stack trace for a user error');
    }
  });

  test('an identity file readable by others is refused', () => {
    const loose = join(dir, 'loose.identity');
    writeFileSync(loose, readFileSync(identity), { mode: 0o644 });
    const result = run([
      CLIENT_BIN,
      'knock',
      '--gateway',
      '192.0.2.10',
      '--gateway-key',
      gatewayKey,
      '--identity',
      loose,
      '--access',
      'tcp/22',
      '--print',
    ]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /permissions 0644 .*chmod 600/);
  });
});

describe('umbra-gateway run refuses clearly before touching anything', () => {
  const config = (text: string) => {
    const path = join(dir, `gw-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(path, text);
    return path;
  };
  const valid = `interface: lo\nkeyDir: ${join(dir, 'gw-keys')}\nstateDir: ${join(dir, 'state')}\n`;

  test('a bad configuration exits 2 naming the file and the key', () => {
    const path = config(`${valid}spaPort: 0\n`);
    const result = run([GATEWAY_BIN, 'run', '--config', path]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, new RegExp(`${path}: spaPort: `));
    const missing = run([GATEWAY_BIN, 'run', '--config', join(dir, 'absent.yaml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /absent\.yaml: cannot read the configuration: ENOENT/);
  });

  test('a missing interface is named, with the ones that exist', () => {
    const path = config(valid.replace('interface: lo', 'interface: nosuch0'));
    const result = run([GATEWAY_BIN, 'run', '--config', path]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /interface: "nosuch0" does not exist on this machine \(present: .*lo/);
  });

  test('missing capabilities are named, with how to grant them', () => {
    const path = config(valid);
    // setpriv drops CAP_NET_RAW and CAP_NET_ADMIN from the bounding set: root without them.
    const result = run(
      [GATEWAY_BIN, 'run', '--config', path],
      ['setpriv', '--bounding-set=-net_raw,-net_admin', '--'],
    );
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /missing capabilities: CAP_NET_RAW \(to capture knocks\), CAP_NET_ADMIN \(to manage nftables\)/,
    );
    assert.match(result.stderr, /AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN/);
  });
});

test('every command has --help', () => {
  for (const argv of [
    [GATEWAY_BIN, '--help'],
    [GATEWAY_BIN, 'keygen', '--help'],
    [GATEWAY_BIN, 'run', '--help'],
    [GATEWAY_BIN, 'pinholes', '--help'],
    [GATEWAY_BIN, 'stats', '--help'],
    [CLIENT_BIN, '--help'],
    [CLIENT_BIN, 'keygen', '--help'],
    [CLIENT_BIN, 'knock', '--help'],
    [CLIENT_BIN, 'posture', '--help'],
  ]) {
    const result = run(argv);
    assert.equal(result.code, 0, argv.join(' '));
    assert.match(result.stdout, /Usage/, argv.join(' '));
  }
});
