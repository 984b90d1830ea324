// umbra-controller's administration commands, black-box: what an operator types and reads.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { parseEnrollmentToken } from '@umbra/controller';
import { REPO_ROOT, TOOL_ENV } from '../src/index.ts';

const CONTROLLER_BIN = join(REPO_ROOT, 'node_modules/.bin/umbra-controller');
const dir = mkdtempSync(join(tmpdir(), 'umbra-controller-'));
const data = join(dir, 'data');
after(() => rmSync(dir, { recursive: true, force: true }));

function run(...args: string[]) {
  const result = spawnSync(CONTROLLER_BIN, args, { env: TOOL_ENV, encoding: 'utf8', timeout: 20_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function ok(...args: string[]): string {
  const result = run(...args);
  assert.equal(result.code, 0, `${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

describe('umbra-controller', () => {
  test('init creates the database and the CA, prints the pin, and never runs twice', () => {
    const pin = ok('init', '--data', data, '--url', 'https://controller.example:8443').trim();
    assert.match(pin, /^sha256\/[A-Za-z0-9+/]{43}=$/);
    assert.equal(statSync(data).mode & 0o777, 0o700);
    assert.equal(statSync(join(data, 'ca', 'ca.key')).mode & 0o777, 0o600);
    assert.equal(statSync(join(data, 'controller.db')).mode & 0o777, 0o600);
    const again = run('init', '--data', data, '--url', 'https://controller.example:8443');
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already holds a controller/);
    assert.match(
      run('init', '--data', join(dir, 'x'), '--url', 'http://plain').stderr,
      /--url "http:\/\/plain": expected https/,
    );
  });

  test('an enrollment token carries the URL and the CA pin; only a hash of its secret is stored', () => {
    const token = ok(
      'token',
      'create',
      '--data',
      data,
      '--identity',
      'alice',
      '--group',
      'eng',
      '--ttl',
      '1h',
    ).trim();
    const parsed = parseEnrollmentToken(token);
    assert.equal(parsed.url, 'https://controller.example:8443/');
    assert.equal(parsed.kind, 'identity');
    assert.equal(
      parsed.pin,
      readFileSync(join(data, 'controller.json'), 'utf8').match(/"caPin": "([^"]+)"/)![1],
    );
    for (const file of ['controller.db', 'controller.db-wal']) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(join(data, file));
      } catch {
        continue;
      }
      assert.equal(bytes.indexOf(parsed.secret), -1, `${file} holds the token's secret`);
    }
    const identities = JSON.parse(ok('identity', 'list', '--data', data));
    assert.deepEqual(
      identities.map((i: { name: string; groups: string[] }) => [i.name, i.groups]),
      [['alice', ['eng']]],
    );
    assert.equal(
      parseEnrollmentToken(ok('gateway', 'token', 'create', '--data', data, '--name', 'branch1').trim()).kind,
      'gateway',
    );
  });

  test('services and policies, with errors that name the field', () => {
    ok(
      'service',
      'add',
      '--data',
      data,
      '--name',
      'db',
      '--gateway',
      'branch1',
      '--backend',
      '192.0.2.50:5432',
    );
    const policy = JSON.parse(
      ok(
        'policy',
        'add',
        '--data',
        data,
        '--group',
        'eng',
        '--service',
        'db',
        '--require',
        'disk_encryption=on',
        '--require',
        'os_version>=12',
        '--ttl',
        '60s',
        '--hours',
        '08:00-18:00',
        '--days',
        'mon-fri',
      ),
    );
    assert.equal(policy.maxTtlSeconds, 60);
    const cases: Array<[string[], RegExp]> = [
      [
        ['service', 'add', '--data', data, '--name', 'db2', '--gateway', 'nope', '--backend', 'h:1'],
        /gateway: no gateway named "nope"/,
      ],
      [
        ['service', 'add', '--data', data, '--name', 'db', '--gateway', 'branch1', '--backend', 'h:1'],
        /already exists/,
      ],
      [
        ['policy', 'add', '--data', data, '--group', 'eng', '--service', 'db', '--require', 'firewall'],
        /--require "firewall": expected KEY=VALUE/,
      ],
      [
        ['policy', 'add', '--data', data, '--group', 'eng', '--service', 'db', '--hours', '9-5'],
        /--hours "9-5"/,
      ],
      [
        ['policy', 'add', '--data', data, '--group', 'eng', '--service', 'db', '--ttl', 'forever'],
        /--ttl "forever": expected a duration/,
      ],
      [
        ['policy', 'add', '--data', data, '--group', 'eng', '--identity', 'alice', '--service', 'db'],
        /exactly one of --identity NAME or --group G/,
      ],
      [
        ['token', 'create', '--data', join(dir, 'none'), '--identity', 'a'],
        /holds no controller; create one with `umbra-controller init/,
      ],
      [['identity', 'revoke', 'nobody', '--data', data], /identity "nobody" does not exist/],
      [['frobnicate'], /unknown command "frobnicate"/],
    ];
    for (const [args, message] of cases) {
      const result = run(...args);
      assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      assert.match(result.stderr, message);
    }
  });

  test('revoking an identity is audited, and the audit log reads as JSON lines', () => {
    assert.deepEqual(JSON.parse(ok('identity', 'revoke', 'alice', '--data', data)), {
      identity: 'alice',
      revokedCertificates: [],
    });
    const lines = ok('audit', '--data', data)
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    assert.deepEqual(
      lines.map((entry) => entry.action),
      ['init', 'token.create', 'gateway.token.create', 'service.add', 'policy.add', 'identity.revoke'],
    );
    assert.deepEqual(
      lines.map((entry) => entry.seq),
      [1, 2, 3, 4, 5, 6],
    );
    assert.equal(ok('audit', '--data', data, '--after', '5').trim().split('\n').length, 1);
    assert.deepEqual(JSON.parse(ok('sessions', '--data', data)), []);
    const revoked = JSON.parse(ok('identity', 'list', '--data', data))[0];
    assert.notEqual(revoked.revokedAt, null);
    assert.match(
      run('token', 'create', '--data', data, '--identity', 'alice').stderr,
      /this identity is revoked/,
    );
  });

  test('every command has --help', () => {
    for (const command of [
      [],
      ['init'],
      ['token', 'create'],
      ['gateway', 'token', 'create'],
      ['service', 'add'],
      ['policy', 'add'],
      ['identity', 'list'],
      ['identity', 'revoke'],
      ['sessions'],
      ['audit'],
    ]) {
      const result = run(...command, '--help');
      assert.equal(result.code, 0, command.join(' '));
      assert.match(result.stdout, /Usage/);
    }
  });
});
