import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { parseCommand, parseDuration, pickCommand, required, UsageError } from './index.ts';

const HELP = 'Usage: x thing --name NAME';

test('options parse, --help is always there, and errors carry the help', () => {
  const { values } = parseCommand(HELP, ['--name', 'a'], { name: { type: 'string' } });
  assert.equal(values.name, 'a');
  assert.equal(parseCommand(HELP, ['-h'], { name: { type: 'string' } }).values.help, true);
  assert.throws(
    () => parseCommand(HELP, ['--nmae', 'a'], { name: { type: 'string' } }),
    (error: Error) => {
      return error instanceof UsageError && /--nmae/.test(error.message) && error.message.endsWith(HELP);
    },
  );
  assert.throws(() => parseCommand(HELP, ['stray'], {}), /Unexpected argument 'stray'/);
  assert.throws(() => parseCommand(HELP, ['one', 'two'], {}, 1), /unexpected argument "two"/);
  assert.deepEqual(parseCommand(HELP, ['alice'], {}, 1).positionals, ['alice']);
});

test('required names the missing option', () => {
  assert.throws(() => required(HELP, {}, 'name'), /missing --name/);
  assert.equal(required(HELP, { name: 'a' }, 'name'), 'a');
});

test('durations', () => {
  assert.equal(parseDuration('30s', 'ttl'), 30);
  assert.equal(parseDuration('10m', 'ttl'), 600);
  assert.equal(parseDuration('24h', 'ttl'), 86400);
  assert.equal(parseDuration('7d', 'ttl'), 604800);
  for (const bad of ['', '30', '1.5h', '-1s', '10 m', '3w'])
    assert.throws(() => parseDuration(bad, 'ttl'), /--ttl/);
});

test('pickCommand takes the longest command, and says which is unknown', () => {
  const commands = ['token create', 'gateway token create', 'audit'] as const;
  assert.deepEqual(pickCommand(['gateway', 'token', 'create', '--name', 'g'], 'U', commands), {
    command: 'gateway token create',
    args: ['--name', 'g'],
  });
  assert.deepEqual(pickCommand(['audit'], 'U', commands), { command: 'audit', args: [] });
  assert.throws(() => pickCommand(['gateway', 'list'], 'U', commands), /unknown command "gateway list"/);
});

test('runCli exits only after a slow reader has had all of stdout', () => {
  // 200 KB, three times a pipe's buffer, into a pipe whose reader starts 300 ms late.
  const script = `import { runCli } from ${JSON.stringify(new URL('./index.ts', import.meta.url).href)};
runCli('t', async () => { for (let i = 0; i < 2000; i++) process.stdout.write('x'.repeat(99) + '\\n'); return 3; });`;
  const result = spawnSync(
    'sh',
    [
      '-c',
      '{ "$0" --input-type=module -e "$1"; echo "exit $?" >&2; } | (sleep 0.3; wc -c)',
      process.execPath,
      script,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(result.stdout.trim(), '200000');
  assert.equal(result.stderr.trim(), 'exit 3');
});
