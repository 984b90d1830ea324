// Traffic between hosts of a topology. A Node process cannot enter a network namespace in-process,
// so every probe is a small script from ./tools run with `ip netns exec`; each call pays Node's
// startup (~40 ms), which is why the timing-sensitive loop measures inside its own process.

import { fileURLToPath } from 'node:url';
import { LineReader } from './lines.ts';
import type { HostHandle } from './topology.ts';

export type ConnectResult = 'connected' | 'timeout' | 'refused' | 'unreachable' | 'error';

export interface ConnectProbe {
  result: ConnectResult;
  /** Time from connect() to the outcome, measured inside the namespace. */
  ms: number;
  /** First line the service sent, when asked for. */
  banner?: string;
  error?: string;
}

/** Absolute path of a helper script in ./tools. */
export function toolPath(name: string): string {
  return fileURLToPath(new URL(`./tools/${name}`, import.meta.url));
}

/** `node <tool> args` as an argv for HostHandle.exec/spawn, with the Node that runs us. */
export function nodeTool(name: string, args: readonly (string | number)[]): string[] {
  return [process.execPath, toolPath(name), ...args.map(String)];
}

/** Budget for Node's own startup on top of a tool's timeout. */
const NODE_STARTUP_MS = 5_000;

/** One TCP connect from inside `host`: 'connected', 'timeout' (no answer: a dark host), 'refused' (RST). */
export async function tcpConnect(
  host: HostHandle,
  addr: string,
  port: number,
  timeoutMs = 1_000,
): Promise<ConnectResult> {
  return (await tcpProbe(host, addr, port, { timeoutMs })).result;
}

/** Like tcpConnect, with the time it took and, if `readBanner`, the service's first line. */
export async function tcpProbe(
  host: HostHandle,
  addr: string,
  port: number,
  options: { timeoutMs?: number; readBanner?: boolean } = {},
): Promise<ConnectProbe> {
  const timeoutMs = options.timeoutMs ?? 1_000;
  const args: (string | number)[] = [addr, port, timeoutMs];
  if (options.readBanner) args.push('--banner', '1');
  const run = await host.exec(nodeTool('connect.ts', args), { timeoutMs: timeoutMs + NODE_STARTUP_MS });
  const line = run.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ConnectProbe;
  } catch {
    throw new Error(
      `tcpProbe from ${host.name} to [${addr}]:${port}: connect.ts printed no result (exit ${run.code}, timed out: ${run.timedOut}): ${run.stderr.trim()}`,
    );
  }
}

export interface TcpServer {
  readonly host: HostHandle;
  /** The first port listened on; `ports` has them all. */
  readonly port: number;
  readonly ports: readonly number[];
  readonly banner: string;
  /** Connections served so far: remote address and the local port it reached. */
  connections(): Array<{ address: string; port: number }>;
  stop(): Promise<void>;
}

export interface TcpServerOptions {
  /** One port or several (one process serves them all); 0 picks a free one. */
  port: number | readonly number[];
  /** Listen address; default '::', which also takes IPv4. */
  address?: string;
  banner?: string;
  /** The server exits by itself after this long; default 10 minutes. */
  lifetimeMs?: number;
  readyTimeoutMs?: number;
}

/** The "protected service": answers every connection with one banner line, then closes it. */
export async function startTcpServer(host: HostHandle, options: TcpServerOptions): Promise<TcpServer> {
  const wanted = typeof options.port === 'number' ? [options.port] : [...options.port];
  const banner = options.banner ?? `umbra-test-service on ${host.name}`;
  const args: (string | number)[] = [wanted.join(','), '--banner', banner];
  if (options.address) args.push('--address', options.address);
  if (options.lifetimeMs) args.push('--lifetime-ms', options.lifetimeMs);
  const child = host.spawn(nodeTool('tcp-server.ts', args));
  const output = LineReader.ofChild(`tcp-server on ${host.name}:${wanted.join(',')}`, child);
  const ready = await output
    .waitForJson<{ ports: number[] }>('listening', options.readyTimeoutMs ?? NODE_STARTUP_MS)
    .catch((error: Error) => {
      child.kill('SIGKILL');
      throw error;
    });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  return {
    host,
    port: ready.ports[0]!,
    ports: ready.ports,
    banner,
    connections: () =>
      output
        .lines()
        .filter((line) => line.startsWith('{"connection"'))
        .map((line) => {
          const entry = JSON.parse(line) as { connection: string; port: number };
          return { address: entry.connection, port: entry.port };
        }),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 2_000).unref())]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

/**
 * One ICMP echo (IPv4 or IPv6) from `host` to `addr`. The machines carry no iputils `ping`, and
 * nping's IPv6 mode cannot open its capture, so this uses nmap's echo probe (`-sn -PE --send-ip`),
 * which sends a real echo request and reports "received echo-reply".
 */
export async function ping(host: HostHandle, addr: string, timeoutMs = 3_000): Promise<boolean> {
  const argv = ['nmap', ...(addr.includes(':') ? ['-6'] : []), '-sn', '-PE', '--send-ip', '-n', '--reason'];
  argv.push('--max-retries', '1', '--host-timeout', `${Math.max(1, Math.ceil(timeoutMs / 1000))}s`, addr);
  const run = await host.exec(argv, { timeoutMs: timeoutMs + NODE_STARTUP_MS });
  return /Host is up, received echo-reply/.test(run.stdout);
}

export interface ConnectLoopResult {
  ok: boolean;
  /** From the loop's start (or its "go") to the first successful connect. */
  elapsedMs: number;
  attempts: number;
  refused: number;
  /** Wall-clock ms (sub-ms resolution) when the loop started and when it connected. */
  startEpochMs: number;
  successEpochMs?: number;
}

export interface ConnectLoopOptions {
  /** Give up after this long; at most 120 s. */
  deadlineMs: number;
  /** Abandon an unanswered attempt after this long; default 5 ms. */
  attemptMs?: number;
  /** Start a new attempt this often, in microseconds; default 1000. Below 1000 the loop polls (one busy core). */
  intervalUs?: number;
  /** The SPA port: go(knock) then sends the knock there itself and starts the clock at the send. */
  knockPort?: number;
}

export interface ConnectLoop {
  /** Starts the loop's clock and its attempts; with knockPort, sends `knock` (bytes) first. */
  go(knock?: Uint8Array): void;
  readonly result: Promise<ConnectLoopResult>;
}

/**
 * Starts tools/connect-loop.ts in `host` and resolves once it is ready (Node's startup paid), so a
 * benchmark can call go() right before it knocks and read knock → first connect from the result.
 */
export async function startConnectLoop(
  host: HostHandle,
  addr: string,
  port: number,
  options: ConnectLoopOptions,
): Promise<ConnectLoop> {
  const args: (string | number)[] = [addr, port, options.deadlineMs, '--wait-go', '1'];
  if (options.attemptMs) args.push('--attempt-ms', options.attemptMs);
  if (options.intervalUs) args.push('--interval-us', options.intervalUs);
  if (options.knockPort) args.push('--knock-port', options.knockPort);
  const child = host.spawn(nodeTool('connect-loop.ts', args), { stdio: ['pipe', 'pipe', 'pipe'] });
  const output = LineReader.ofChild(`connect-loop on ${host.name}`, child);
  await output.waitForJson('ready', NODE_STARTUP_MS).catch((error: Error) => {
    child.kill('SIGKILL');
    throw error;
  });
  const result = output.waitForJson<ConnectLoopResult>('ok', options.deadlineMs + NODE_STARTUP_MS);
  result.catch(() => child.kill('SIGKILL'));
  return {
    go: (knock) => child.stdin!.write(`${knock ? Buffer.from(knock).toString('hex') : 'go'}\n`),
    result,
  };
}

/** Runs the loop at once (its clock starts after Node's startup) and returns its result. */
export async function connectLoop(
  host: HostHandle,
  addr: string,
  port: number,
  options: ConnectLoopOptions,
): Promise<ConnectLoopResult> {
  const loop = await startConnectLoop(host, addr, port, options);
  loop.go();
  return loop.result;
}
