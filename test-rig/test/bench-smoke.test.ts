// The knock benchmark still runs end to end (a few knocks, a one-second flood at a low rate), so
// BENCHMARKS.md can always be reproduced. It checks that the figures are produced, never their
// values: speed is measured by `npm run bench:knock`, not asserted here.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { GATEWAY_BUNDLE, REPO_ROOT, TOOL_ENV } from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'umbra-bench-smoke-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('bench:knock measures both gateways and reports every figure', { timeout: 180_000 }, () => {
  assert.ok(readFileSync(GATEWAY_BUNDLE).length > 0, 'the firmware bundle is built (npm run build)');
  const json = join(dir, 'bench.json');
  const run = spawnSync(
    process.execPath,
    [
      'test-rig/bench/knock.ts',
      '--knocks',
      '3',
      '--flood-seconds',
      '1',
      '--flood-rate',
      '2000',
      '--json',
      json,
    ],
    { cwd: REPO_ROOT, env: TOOL_ENV, encoding: 'utf8', timeout: 170_000 },
  );
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /### Knock → first TCP connect/);
  assert.match(run.stdout, /\| umbra \|/);
  assert.match(run.stdout, /\| fwknop \|/);
  const results = JSON.parse(readFileSync(json, 'utf8'));
  for (const name of ['floor', 'umbra', 'fwknop']) {
    assert.equal(results[name].latency.samples.length + results[name].latency.failures, 3, name);
  }
  assert.equal(results.umbra.latency.failures, 0, 'every Umbra knock opened its port');
  assert.equal(results.umbra.flood.validSent, 10);
  assert.ok(Number.isFinite(results.umbra.flood.coreShare));
  assert.ok(Number.isFinite(results.umbra.latency.gatewayMedian), 'the gateway logged its own latency');
});
