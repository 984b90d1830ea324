// One TCP connect from wherever this process runs: `connect.ts ADDR PORT TIMEOUT_MS [--banner 1]`.
// Prints one JSON line: {result: connected|timeout|refused|unreachable|error, ms, banner?, error?}.

import { createConnection } from 'node:net';
import { emit, fail, intArg, options } from './args.ts';

const USAGE = 'connect.ts ADDR PORT TIMEOUT_MS [--banner 1]';
const MAX_TIMEOUT_MS = 60_000;
/** After connecting, how long to wait for a banner line before reporting without one. */
const BANNER_WAIT_MS = 1_000;
const MAX_BANNER_BYTES = 4096;

const [addr, portText, timeoutText, ...rest] = process.argv.slice(2);
if (!addr) fail(USAGE, 'ADDR is missing');
const port = intArg(USAGE, 'PORT', portText, 1, 65535);
const timeoutMs = intArg(USAGE, 'TIMEOUT_MS', timeoutText, 1, MAX_TIMEOUT_MS);
const readBanner = options(USAGE, rest, ['banner']).get('banner') === '1';

const started = performance.now();
const elapsed = () => Math.round((performance.now() - started) * 1000) / 1000;
let done = false;

const socket = createConnection({ host: addr, port, noDelay: true });

function finish(result: string, extra: Record<string, unknown> = {}): void {
  if (done) return;
  done = true;
  clearTimeout(timer);
  socket.destroy();
  emit({ result, ms: elapsed(), ...extra });
}

const timer = setTimeout(() => finish('timeout'), timeoutMs);

socket.on('connect', () => {
  const ms = elapsed();
  if (!readBanner) {
    finish('connected');
    return;
  }
  clearTimeout(timer);
  let banner = '';
  const bannerTimer = setTimeout(() => finish('connected', { ms, banner }), BANNER_WAIT_MS);
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    banner += chunk;
    if (banner.includes('\n') || banner.length >= MAX_BANNER_BYTES) {
      clearTimeout(bannerTimer);
      finish('connected', { ms, banner: banner.split('\n')[0] });
    }
  });
  socket.on('end', () => {
    clearTimeout(bannerTimer);
    finish('connected', { ms, banner: banner.split('\n')[0] });
  });
});

socket.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'ECONNREFUSED') finish('refused');
  else if (error.code === 'EHOSTUNREACH' || error.code === 'ENETUNREACH')
    finish('unreachable', { error: error.code });
  else finish('error', { error: error.code ?? error.message });
});
