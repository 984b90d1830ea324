import assert from 'node:assert/strict';
import { test } from 'node:test';
import { askTool, execRunner } from './command.ts';
import { fakeRunner } from './fake-command.ts';

// The real runner, against node itself: the one program sure to exist on every machine.
const node = process.execPath;

test('the real runner returns exit code, stdout and stderr', async () => {
  const result = await execRunner().run(node, [
    '-e',
    'console.log("out"); console.error("err"); process.exit(3)',
  ]);
  assert.deepEqual(result, { code: 3, stdout: 'out\n', stderr: 'err\n' });
});

test('arguments reach the program as they are, with no shell to read them', async () => {
  const result = await execRunner().run(node, ['-e', 'console.log(process.argv[1])', '$(echo hi); `x` *']);
  assert.equal(result.stdout, '$(echo hi); `x` *\n');
});

test('a missing program, a slow one and a talkative one answer nothing', async () => {
  const runner = execRunner({ timeoutMs: 300, maxOutputBytes: 1024 });
  assert.equal((await runner.run('/nonexistent/umbra-posture-tool', [])).code, null);
  const started = Date.now();
  assert.equal((await runner.run(node, ['-e', 'setTimeout(() => {}, 10000)'])).code, null);
  assert.ok(Date.now() - started < 5000);
  assert.equal((await runner.run(node, ['-e', 'process.stdout.write("x".repeat(100000))'])).code, null);
});

test('askTool takes the answer of a tool that succeeded, and only then', async () => {
  const runner = fakeRunner({
    'tool ok': 'yes\n',
    'tool fails': { code: 1, stdout: 'yes\n' },
    'tool logs': { stderr: 'on stderr\n' },
  });
  assert.equal(await askTool(runner, 'tool', ['ok']), 'yes\n');
  assert.equal(await askTool(runner, 'tool', ['fails']), undefined);
  assert.equal(await askTool(runner, 'tool', ['missing']), undefined);
  assert.equal(await askTool(runner, 'tool', ['logs'], 'stderr'), 'on stderr\n');
  assert.deepEqual(runner.ran, ['tool ok', 'tool fails', 'tool missing', 'tool logs']);
});
