// umbra-controller with its records in PostgreSQL: the same commands, given --database, against a
// private server this test starts and stops. Two command processes writing at once stand in for
// two controllers sharing one database.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startTestPostgres, type TestPostgres } from './store/test-postgres.ts';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../bin/umbra-controller.js');
const ENV = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH}` };
const dir = mkdtempSync(join(tmpdir(), 'umbra-controller-pg-'));
const data = join(dir, 'data');
let postgres: TestPostgres;

before(async () => {
  postgres = await startTestPostgres();
});
after(async () => {
  await postgres?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function run(...args: string[]) {
  const result = spawnSync(process.execPath, [BIN, ...args], { env: ENV, encoding: 'utf8', timeout: 30_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function runAsync(...args: string[]): Promise<number | null> {
  return new Promise((resolvePromise) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: ENV, stdio: 'ignore' });
    child.once('exit', (code) => resolvePromise(code));
  });
}

test('init, tokens, services and policies with --database; the URL is never written to disk', () => {
  const db = ['--data', data, '--database', postgres.url];
  assert.equal(run('init', ...db, '--url', 'https://127.0.0.1:9443').code, 0);
  assert.doesNotMatch(readFileSync(join(data, 'controller.json'), 'utf8'), /postgres:/);
  assert.match(readFileSync(join(data, 'controller.json'), 'utf8'), /"storage": "postgresql"/);
  assert.equal(run('token', 'create', ...db, '--identity', 'alice', '--group', 'eng').code, 0);
  assert.equal(run('gateway', 'token', 'create', ...db, '--name', 'branch1').code, 0);
  assert.equal(
    run('service', 'add', ...db, '--name', 'db', '--gateway', 'branch1', '--backend', '192.0.2.5:5432').code,
    0,
  );
  assert.equal(run('policy', 'add', ...db, '--group', 'eng', '--service', 'db').code, 0);
  const without = run('identity', 'list', '--data', data);
  assert.equal(without.code, 2);
  assert.match(without.stderr, /keeps its records in PostgreSQL; give --database/);
  assert.deepEqual(
    JSON.parse(run('identity', 'list', ...db).stdout).map((i: { name: string }) => i.name),
    ['alice'],
  );
});

test('two processes writing at once keep the audit log gap-free', async () => {
  const db = ['--data', data, '--database', postgres.url];
  const codes = await Promise.all(
    Array.from({ length: 6 }, (_, i) => runAsync('token', 'create', ...db, '--identity', `device${i}`)),
  );
  assert.deepEqual(codes, [0, 0, 0, 0, 0, 0]);
  const seqs = run('audit', ...db)
    .stdout.trim()
    .split('\n')
    .map((line) => JSON.parse(line).seq as number);
  assert.deepEqual(
    seqs,
    seqs.map((_, i) => i + 1),
  );
});

test('serve answers over TLS with its records in PostgreSQL', async () => {
  const probe = createServer();
  await new Promise<void>((resolvePromise) => probe.listen(0, '127.0.0.1', resolvePromise));
  const { port } = probe.address() as { port: number };
  await new Promise((resolvePromise) => probe.close(resolvePromise));
  const server: ChildProcess = spawn(
    process.execPath,
    [BIN, 'serve', '--data', data, '--database', postgres.url, '--listen', `127.0.0.1:${port}`],
    { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  try {
    await new Promise<void>((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error('serve did not start within 20 s')), 20_000);
      server.stdout!.on('data', (chunk: Buffer) => {
        if (chunk.toString().includes('Server listening')) {
          clearTimeout(timer);
          resolvePromise();
        }
      });
    });
    const ca = readFileSync(join(data, 'ca', 'ca.crt'), 'utf8');
    const body = await new Promise<string>((resolvePromise, reject) => {
      request(`https://127.0.0.1:${port}/v1/health`, { ca }, (response) => {
        let text = '';
        response.on('data', (chunk) => {
          text += chunk;
        });
        response.on('end', () => resolvePromise(text));
      })
        .on('error', reject)
        .end();
    });
    assert.deepEqual(JSON.parse(body), { ok: true });
  } finally {
    server.kill('SIGTERM');
    await new Promise((resolvePromise) => server.once('exit', resolvePromise));
  }
});
