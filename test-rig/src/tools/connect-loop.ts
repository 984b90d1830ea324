// Knock → first connect, measured from the client's side:
//   connect-loop.ts ADDR PORT DEADLINE_MS [--attempt-ms 5] [--interval-us 1000] [--wait-go 1]
// Starts a fresh TCP connect every ~interval; each attempt is its own socket, abandoned after
// attempt-ms, because a SYN the firewall dropped would otherwise sit in the kernel's 1 s retransmit
// timer. Prints one JSON line: {ok, elapsedMs, attempts, refused, startEpochMs, successEpochMs}.
// With --wait-go 1 it prints {"ready":true} first and starts its clock on the first line of stdin,
// so a benchmark can pay Node's startup before it knocks. With --knock-port P, the go line holds a
// knock as hex: the loop sends it as one UDP datagram to ADDR:P and starts its clock at the send,
// so knock → first connect is measured in one process with no spawn in between.

import { createSocket } from 'node:dgram';
import { createConnection, createServer, isIP, type Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { emit, epochMs, fail, intArg, options } from './args.ts';

const USAGE =
  'connect-loop.ts ADDR PORT DEADLINE_MS [--attempt-ms N] [--interval-us N] [--wait-go 1] [--knock-port P]';
const MAX_DEADLINE_MS = 120_000;
/** At most this many sockets in flight: attempt-ms / interval of them normally. */
const MAX_IN_FLIGHT = 64;

const [addr, portText, deadlineText, ...rest] = process.argv.slice(2);
if (!addr) fail(USAGE, 'ADDR is missing');
const port = intArg(USAGE, 'PORT', portText, 1, 65535);
const deadlineMs = intArg(USAGE, 'DEADLINE_MS', deadlineText, 1, MAX_DEADLINE_MS);
const opts = options(USAGE, rest, ['attempt-ms', 'interval-us', 'wait-go', 'knock-port']);
const attemptMs = intArg(USAGE, '--attempt-ms', opts.get('attempt-ms') ?? '5', 1, 1000);
// Timers fire at most once a millisecond; shorter intervals poll the clock from setImmediate,
// which keeps one core busy for the (short, bounded) life of the loop.
const intervalUs = intArg(USAGE, '--interval-us', opts.get('interval-us') ?? '1000', 50, 1_000_000);
const waitGo = opts.get('wait-go') === '1';
const knockPort = opts.has('knock-port')
  ? intArg(USAGE, '--knock-port', opts.get('knock-port'), 1, 65535)
  : 0;
if (knockPort && !waitGo) fail(USAGE, '--knock-port needs --wait-go 1: the knock comes on the go line');
// Created before "ready", so sending costs no socket setup on the clock.
const knockSocket = knockPort ? createSocket(isIP(addr!) === 6 ? 'udp6' : 'udp4') : undefined;

const inFlight = new Set<Socket>();
let attempts = 0;
let refused = 0;
let finished = false;
let started = 0;
let startEpochMs = 0;
let ticker: NodeJS.Timeout | undefined;
let nextAttemptAt = 0;
let deadlineTimer: NodeJS.Timeout | undefined;

function finish(result: Record<string, unknown>): void {
  if (finished) return;
  finished = true;
  clearInterval(ticker);
  clearTimeout(deadlineTimer);
  for (const socket of inFlight) socket.destroy();
  inFlight.clear();
  knockSocket?.close();
  emit({ ...result, attempts, refused, startEpochMs });
  process.exit(0);
}

function attempt(): void {
  if (finished || inFlight.size >= MAX_IN_FLIGHT) return;
  attempts++;
  const socket = createConnection({ host: addr!, port, noDelay: true });
  inFlight.add(socket);
  const abandon = setTimeout(() => {
    inFlight.delete(socket);
    socket.destroy();
  }, attemptMs);
  socket.once('connect', () => {
    const successEpochMs = epochMs();
    clearTimeout(abandon);
    finish({ ok: true, elapsedMs: performance.now() - started, successEpochMs });
  });
  socket.once('error', (error: NodeJS.ErrnoException) => {
    clearTimeout(abandon);
    inFlight.delete(socket);
    socket.destroy();
    if (error.code === 'ECONNREFUSED') refused++;
  });
}

function start(knock?: Buffer): void {
  if (knock) knockSocket!.send(knock, knockPort, addr!);
  started = performance.now();
  startEpochMs = epochMs();
  deadlineTimer = setTimeout(() => finish({ ok: false, elapsedMs: performance.now() - started }), deadlineMs);
  attempt();
  if (intervalUs >= 1000) {
    ticker = setInterval(attempt, intervalUs / 1000);
    return;
  }
  nextAttemptAt = started + intervalUs / 1000;
  const poll = () => {
    if (finished) return;
    const now = performance.now();
    if (now >= nextAttemptAt) {
      nextAttemptAt += intervalUs / 1000;
      attempt();
    }
    setImmediate(poll);
  };
  setImmediate(poll);
}

/**
 * Runs the connect and send paths a few times over loopback before "ready": a fresh Node process
 * otherwise spends ~2 ms of its first measurement loading and compiling them, which would be
 * charged to the gateway under test.
 */
async function warmUp(): Promise<void> {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: localPort } = server.address() as { port: number };
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port: localPort, noDelay: true });
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => resolve());
    });
  }
  server.close();
  if (knockSocket) {
    const sink = createSocket('udp4');
    await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', resolve));
    const sinkPort = sink.address().port;
    const warm = createSocket('udp4');
    for (let i = 0; i < 20; i++) warm.send(Buffer.alloc(200), sinkPort, '127.0.0.1');
    await new Promise((resolve) => setTimeout(resolve, 10));
    warm.close();
    sink.close();
  }
}

if (waitGo) {
  await warmUp();
  const lines = createInterface({ input: process.stdin });
  // Never wait for "go" longer than the longest deadline, nor past stdin closing.
  const idle = setTimeout(() => finish({ ok: false, elapsedMs: 0, error: 'no go line' }), MAX_DEADLINE_MS);
  lines.once('line', (line) => {
    clearTimeout(idle);
    const knock = knockPort ? Buffer.from(line.trim(), 'hex') : undefined;
    if (knock && knock.length === 0) finish({ ok: false, elapsedMs: 0, error: 'the go line holds no knock' });
    start(knock);
    lines.close();
  });
  lines.once('close', () => {
    clearTimeout(idle);
    if (!started) finish({ ok: false, elapsedMs: 0, error: 'stdin closed before go' });
  });
  emit({ ready: true });
} else {
  start();
}
