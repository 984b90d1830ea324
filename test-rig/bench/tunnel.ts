// npm run bench:tunnel — the gateway's mTLS tunnel against stunnel (Debian's stunnel4), side by
// side in one run, on the same veths, with the same client and the same backend.
//
//   1. Throughput, MB/s (10^6 bytes a second): 1 stream and 64 concurrent streams, downloads
//      (backend → client) and uploads (client → backend), each for a fixed time after a warm-up.
//   2. Connection setup: connect → TLS 1.3 handshake with client certificate → the first byte
//      echoed by the backend through the tunnel, one at a time and 16 at a time: median and p99.
//   3. The server's CPU (user + system, share of one core, from /proc/PID/stat) while it works.
//
// Topology: hosts `gateway`, `client` and `backend` on one bridge. On the gateway, Umbra's
// TunnelListener (tunnel-gateway.ts, with one grant from the client's address) and stunnel in
// server mode (TLS 1.3 only, verifyChain + requireCert against the same CA) both forward to the
// same backend (tunnel-backend.c) on the backend host. The client runs one load generator
// (tunnel-load.ts) that dials like `umbra connect` does; it talks to both servers in turn, Umbra
// and stunnel interleaved round by round, so drift in the machine affects both alike.
//
// Options: --quick (a smoke run of a few seconds: small counts, short windows)  --rounds N
//          --seconds S (per throughput window)  --setups N (sequential setups per server per round)
//          --cases down:1,down:64,up:1,up:64 (the throughput cases, the default)
//          --workers N (the listener's worker threads, as the gateway's tunnel.workers; by default
//          the gateway's default; 0 = the TLS in the main thread)  --json FILE

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createTestPki } from '@umbra/spa-gateway/testing';
import { type Host, LineReader, Topology } from '../src/index.ts';
import { cpuMeter, percentile, residentMiB } from './measure.ts';
import { printHelpAndExit, wholeOption } from './options.ts';

const { values: opts } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    setups: { type: 'string' },
    cases: { type: 'string' },
    workers: { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) printHelpAndExit(import.meta.url);

function boundedNumber(name: string, text: string | undefined, fallback: number, min: number, max: number) {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < min || n > max) {
    console.error(`--${name}: expected a number from ${min} to ${max}, got ${text}`);
    process.exit(2);
  }
  return n;
}

const QUICK = opts.quick!;
const ROUNDS = Math.round(boundedNumber('rounds', opts.rounds, QUICK ? 1 : 3, 1, 10));
const SECONDS = boundedNumber('seconds', opts.seconds, QUICK ? 0.5 : 2.5, 0.2, 20);
const WARMUP_MS = QUICK ? 200 : 500;
const SETUPS = Math.round(boundedNumber('setups', opts.setups, QUICK ? 20 : 200, 1, 2000));
const CONCURRENCY = 16;
const CONCURRENT_SETUPS = QUICK ? 32 : 160;
const CASES = (opts.cases ?? 'down:1,down:64,up:1,up:64').split(',').map((text) => {
  const [direction, streams] = text.split(':');
  const n = Number(streams);
  if ((direction !== 'down' && direction !== 'up') || !Number.isInteger(n) || n < 1 || n > 256) {
    console.error(
      `--cases: expected DIRECTION:STREAMS,... with down or up and 1 to 256 streams, got ${text}`,
    );
    process.exit(2);
  }
  return { direction, streams: n } as const;
});
const WORKERS = opts.workers === undefined ? undefined : wholeOption('workers', opts.workers, 0, 16);
const THROUGHPUT_TARGET = 0.9;
const SETUP_P99_TARGET_MS = 10;

const UMBRA_PORT = 8443;
const STUNNEL_PORT = 8444;
const BACKEND_PORT = 9000;
/** Every process the benchmark starts ends by itself after this, whatever happens to us. */
const LIFETIME_SECONDS = 600;
const COMMAND_TIMEOUT_MS = 90_000;

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

type ServerName = 'umbra' | 'stunnel';
interface Server {
  name: ServerName;
  label: string;
  port: number;
  alpn: boolean;
  pid: number;
}

/** Builds tunnel-backend.c into `dir`. */
function compileBackend(dir: string): string {
  const binary = join(dir, 'tunnel-backend');
  const source = new URL('./tunnel-backend.c', import.meta.url).pathname;
  const cc = spawnSync('cc', ['-O2', '-Wall', '-pthread', '-o', binary, source], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cannot compile ${source} (is a C compiler installed?): ${cc.stderr}`);
  return binary;
}

/** A throwaway CA and the two certificates, written as PEM files into `dir`. */
function writeCertificates(dir: string): void {
  const pki = createTestPki();
  try {
    const gateway = pki.issue({ uris: ['umbra://gateway/gw'], server: true });
    const client = pki.issue({ uris: ['umbra://identity/bench'] });
    writeFileSync(join(dir, 'ca.crt'), pki.ca);
    writeFileSync(join(dir, 'gateway.key'), gateway.key, { mode: 0o600 });
    writeFileSync(join(dir, 'gateway.crt'), gateway.cert);
    writeFileSync(join(dir, 'client.key'), client.key, { mode: 0o600 });
    writeFileSync(join(dir, 'client.crt'), client.cert);
  } finally {
    pki.remove();
  }
}

function alive(host: Host, argv: string[], label: string) {
  const child = host.spawn(argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  const output = LineReader.ofChild(label, child);
  return { child, output };
}

async function startStunnel(gateway: Host, dir: string, backend: string): Promise<number> {
  const config = join(dir, 'stunnel.conf');
  writeFileSync(
    config,
    [
      'foreground = yes',
      'syslog = no',
      'pid =',
      // Warnings and errors only: Umbra's listener logs nothing for a connection that succeeds,
      // and stunnel's default (notice) writes two lines per connection.
      'debug = warning',
      '[bench]',
      `accept = 0.0.0.0:${STUNNEL_PORT}`,
      `connect = ${backend}`,
      `cert = ${join(dir, 'gateway.crt')}`,
      `key = ${join(dir, 'gateway.key')}`,
      `CAfile = ${join(dir, 'ca.crt')}`,
      'verifyChain = yes',
      'requireCert = yes',
      'sslVersionMin = TLSv1.3',
      '',
    ].join('\n'),
  );
  // Under timeout(1), so that stunnel too ends by itself whatever happens to this process; the
  // CPU figures are read for stunnel itself, timeout's one child.
  const { child, output } = alive(
    gateway,
    ['timeout', '-k', '5', String(LIFETIME_SECONDS), 'stunnel', config],
    'stunnel',
  );
  for (let attempt = 0; attempt < 100; attempt++) {
    const children = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
    if (children) return Number(children.split(' ')[0]);
    await sleep(20);
  }
  throw new Error(`stunnel did not start:\n${output.tail(10)}`);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'umbra-bench-tunnel-'));
  const topo = await Topology.create({ name: 'bench-tunnel', hosts: ['gateway', 'client', 'backend'] });
  topo.addCleanup(() => rmSync(work, { recursive: true, force: true }));
  try {
    const gateway = topo.host('gateway');
    const client = topo.host('client');
    const backendHost = topo.host('backend');
    const backendAddress = `${backendHost.ipv4}:${BACKEND_PORT}`;
    writeCertificates(work);
    const backendBinary = compileBackend(work);

    const backend = alive(
      backendHost,
      [backendBinary, String(BACKEND_PORT), String(LIFETIME_SECONDS)],
      'tunnel-backend',
    );
    await backend.output.waitForJson('listening', 5_000);

    const umbra = alive(
      gateway,
      [
        process.execPath,
        new URL('./tunnel-gateway.ts', import.meta.url).pathname,
        '--port',
        String(UMBRA_PORT),
        '--dir',
        work,
        '--source',
        client.ipv4,
        '--backend',
        backendAddress,
        '--lifetime',
        String(LIFETIME_SECONDS),
        ...(WORKERS === undefined ? [] : ['--workers', String(WORKERS)]),
      ],
      'tunnel-gateway',
    );
    await umbra.output.waitForJson('listening', 15_000);
    const stunnelPid = await startStunnel(gateway, work, backendAddress);

    const load = alive(
      client,
      [process.execPath, new URL('./tunnel-load.ts', import.meta.url).pathname, '--dir', work],
      'tunnel-load',
    );
    await load.output.waitForJson('ready', 15_000);
    const command = async <T>(body: Record<string, unknown>): Promise<T> => {
      const from = load.output.count;
      load.child.stdin!.write(`${JSON.stringify(body)}\n`);
      const { result } = await load.output.waitForJson<{ result: T & { error?: string } }>(
        'result',
        COMMAND_TIMEOUT_MS,
        from,
      );
      if (result.error) throw new Error(`load generator: ${result.error}`);
      return result;
    };

    const servers: Server[] = [
      { name: 'umbra', label: 'Umbra', port: UMBRA_PORT, alpn: true, pid: umbra.child.pid! },
      { name: 'stunnel', label: 'stunnel', port: STUNNEL_PORT, alpn: false, pid: stunnelPid },
    ];
    const target = (server: Server) => ({ host: gateway.ipv4, port: server.port, alpn: server.alpn });

    // stunnel has no ready line at our log level: wait until a connection through it works.
    for (const server of servers) {
      let up = false;
      for (let attempt = 0; attempt < 50 && !up; attempt++) {
        const probe = await command<SetupResult>({
          op: 'setup',
          ...target(server),
          count: 1,
          concurrency: 1,
        });
        up = probe.samples.length === 1;
        if (!up) await sleep(100);
      }
      if (!up) throw new Error(`${server.label} does not pass a connection through to the backend`);
    }

    const results: Results = {
      setup: {},
      concurrentSetup: {},
      throughput: {},
      cipher: {},
      rss: {},
      background: [],
    };
    const keyOf = (direction: string, streams: number) => `${direction} ${streams}`;

    // Warm-up, discarded: Node's JIT for Umbra and the load generator, caches for both.
    log('warm-up (discarded)');
    for (const server of servers) {
      await command({ op: 'setup', ...target(server), count: QUICK ? 5 : 50, concurrency: 1 });
      await command({
        op: 'throughput',
        ...target(server),
        streams: 64,
        direction: 'down',
        warmupMs: 0,
        seconds: QUICK ? 0.2 : 1,
      });
    }

    for (let round = 0; round < ROUNDS; round++) {
      // Alternate who goes first, so neither always runs on a machine the other just warmed.
      const order = round % 2 === 0 ? servers : [...servers].reverse();
      const background = machineMeter();
      await sleep(QUICK ? 200 : 1000);
      const idleBusy = background();
      results.background.push(idleBusy);
      log(
        `round ${round + 1}/${ROUNDS}: ${order.map((s) => s.label).join(' then ')}; the machine was ${fmt(idleBusy * 100, 0)}% busy (of one core) with none of our load running`,
      );
      for (const { direction, streams } of CASES) {
        for (const server of order) {
          const meters = [server.pid, load.child.pid!, backend.child.pid!].map(cpuMeter);
          const machine = machineMeter();
          const measured = await command<{ bytes: number; seconds: number; broken: number }>({
            op: 'throughput',
            ...target(server),
            streams,
            direction,
            warmupMs: WARMUP_MS,
            seconds: SECONDS,
          });
          const [serverCpu, clientCpu, backendCpu] = meters.map((meter) => meter().coreShare);
          const otherCpu = machine() - serverCpu! - clientCpu! - backendCpu!;
          const sample: ThroughputSample = {
            mbps: measured.bytes / measured.seconds / 1e6,
            serverCpu: serverCpu!,
            clientCpu: clientCpu!,
            backendCpu: backendCpu!,
            otherCpu,
            broken: measured.broken,
          };
          const key = keyOf(direction, streams);
          const byServer = results.throughput[key] ?? {};
          results.throughput[key] = byServer;
          byServer[server.name] = [...(byServer[server.name] ?? []), sample];
          log(
            `  ${direction} ×${streams} ${server.label}: ${fmt(sample.mbps)} MB/s, server CPU ${fmt(serverCpu! * 100, 0)}%, client ${fmt(clientCpu! * 100, 0)}%, backend ${fmt(backendCpu! * 100, 0)}%, rest of the machine ${fmt(otherCpu * 100, 0)}%${measured.broken ? `, ${measured.broken} streams broke` : ''}`,
          );
        }
      }
      for (const server of order) {
        const meter = cpuMeter(server.pid);
        const sequential = await command<SetupResult>({
          op: 'setup',
          ...target(server),
          count: SETUPS,
          concurrency: 1,
        });
        const sequentialCpu = meter();
        const concurrent = await command<SetupResult>({
          op: 'setup',
          ...target(server),
          count: CONCURRENT_SETUPS,
          concurrency: CONCURRENCY,
        });
        results.setup[server.name] = addSetup(
          results.setup[server.name],
          sequential,
          sequentialCpu.cpuSeconds,
        );
        results.concurrentSetup[server.name] = addSetup(results.concurrentSetup[server.name], concurrent, 0);
        results.cipher[server.name] = sequential.cipher;
        log(
          `  setup ${server.label}: median ${fmt(percentile(sequential.samples, 50), 2)} ms, p99 ${fmt(percentile(sequential.samples, 99), 2)} ms; ${CONCURRENCY} at a time: median ${fmt(percentile(concurrent.samples, 50), 2)} ms, p99 ${fmt(percentile(concurrent.samples, 99), 2)} ms${sequential.failures + concurrent.failures ? `; ${sequential.failures + concurrent.failures} failed ${JSON.stringify({ ...sequential.errors, ...concurrent.errors })}` : ''}`,
        );
      }
    }
    for (const server of servers) results.rss[server.name] = residentMiB(server.pid);
    load.child.stdin!.end();
    report(results);
    if (opts.json) writeFileSync(opts.json, JSON.stringify(results, null, 2));
  } finally {
    await topo.destroy();
  }
}

interface SetupResult {
  samples: number[];
  failures: number;
  cipher: string;
  errors: Record<string, number>;
}
interface SetupPool {
  samples: number[];
  failures: number;
  cpuSeconds: number;
}
interface ThroughputSample {
  mbps: number;
  serverCpu: number;
  clientCpu: number;
  backendCpu: number;
  /**
   * The machine's busy CPU (of one core) less the server's, the client's and the backend's: other
   * people's processes, and kernel work (softirq) that no process was charged for.
   */
  otherCpu: number;
  broken: number;
}
interface Results {
  setup: Partial<Record<ServerName, SetupPool>>;
  concurrentSetup: Partial<Record<ServerName, SetupPool>>;
  throughput: Record<string, Partial<Record<ServerName, ThroughputSample[]>>>;
  cipher: Partial<Record<ServerName, string>>;
  rss: Partial<Record<ServerName, { rss: number; peak: number }>>;
  /** Before each round, the machine's busy CPU (of one core) with none of our load running. */
  background: number[];
}

/** The whole machine's busy CPU from /proc/stat: call the result at the end for cores busy. */
function machineMeter(): () => number {
  const busy = () => {
    const fields = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]!
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    return fields.slice(0, 8).reduce((a, b) => a + b, 0) - fields[3]! - fields[4]!; // less idle, iowait
  };
  const start = busy();
  const wall0 = performance.now();
  return () => (busy() - start) / 100 / ((performance.now() - wall0) / 1000);
}

function addSetup(pool: SetupPool | undefined, result: SetupResult, cpuSeconds: number): SetupPool {
  return {
    samples: [...(pool?.samples ?? []), ...result.samples],
    failures: (pool?.failures ?? 0) + result.failures,
    cpuSeconds: (pool?.cpuSeconds ?? 0) + cpuSeconds,
  };
}

const median = (values: number[]) => percentile(values, 50);
/** The server's CPU seconds per 10^9 bytes carried: its cost per byte, whatever share of the machine it got. */
const secondsPerGB = (x: ThroughputSample) => (x.serverCpu / x.mbps) * 1000;
const verdict = (met: boolean) => (met ? 'met' : '**not met**');

function report(results: Results): void {
  if (QUICK)
    console.log(
      '\n**--quick: a smoke run with tiny windows and counts; these figures are not measurements.**',
    );
  console.log(
    `\nThe machine (${availableParallelism()} cores) was ${results.background.map((x) => `${fmt(x * 100, 0)}%`).join(', ')} busy (of one core) before each round, with none of this benchmark's load running.`,
  );
  console.log(
    `\n### Throughput, MB/s (median of ${ROUNDS} round${ROUNDS > 1 ? 's' : ''} of ${SECONDS} s; min–max in brackets)\n`,
  );
  console.log(
    '| direction, streams | Umbra MB/s | stunnel MB/s | Umbra / stunnel | Umbra CPU | stunnel CPU | server CPU s per GB, Umbra / stunnel | client CPU (Umbra / stunnel runs) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  const ratios: Array<{ key: string; ratio: number }> = [];
  for (const [key, byServer] of Object.entries(results.throughput)) {
    const u = byServer.umbra ?? [];
    const s = byServer.stunnel ?? [];
    const range = (samples: ThroughputSample[]) =>
      samples.length > 1
        ? ` (${fmt(Math.min(...samples.map((x) => x.mbps)), 0)}–${fmt(Math.max(...samples.map((x) => x.mbps)), 0)})`
        : '';
    const um = median(u.map((x) => x.mbps));
    const sm = median(s.map((x) => x.mbps));
    ratios.push({ key, ratio: um / sm });
    const perGB = (samples: ThroughputSample[]) => fmt(median(samples.map(secondsPerGB)), 2);
    const cpu = (samples: ThroughputSample[], pick: (x: ThroughputSample) => number) =>
      `${fmt(median(samples.map(pick)) * 100, 0)}%`;
    const [direction, streams] = key.split(' ');
    console.log(
      `| ${direction === 'down' ? 'download' : 'upload'}, ${streams} | ${fmt(um, 0)}${range(u)} | ${fmt(sm, 0)}${range(s)} | ${fmt((um / sm) * 100, 0)}% | ${cpu(u, (x) => x.serverCpu)} | ${cpu(s, (x) => x.serverCpu)} | ${perGB(u)} / ${perGB(s)} (${fmt(median(u.map(secondsPerGB)) / median(s.map(secondsPerGB)), 2)}×) | ${cpu(u, (x) => x.clientCpu)} / ${cpu(s, (x) => x.clientCpu)} |`,
    );
  }

  console.log(
    `\n### Connection setup: connect → TLS 1.3 mTLS handshake → first byte echoed by the backend, ms\n`,
  );
  console.log(
    '| server | one at a time: median | p99 | n | 16 at a time: median | p99 | n | failed | server CPU ms per setup |',
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const name of ['umbra', 'stunnel'] as const) {
    const seq = results.setup[name];
    const con = results.concurrentSetup[name];
    if (!seq || !con) continue;
    console.log(
      `| ${name === 'umbra' ? 'Umbra' : 'stunnel'} | ${fmt(median(seq.samples), 2)} | ${fmt(percentile(seq.samples, 99), 2)} | ${seq.samples.length} | ${fmt(median(con.samples), 2)} | ${fmt(percentile(con.samples, 99), 2)} | ${con.samples.length} | ${seq.failures + con.failures} | ${fmt((seq.cpuSeconds * 1000) / seq.samples.length, 2)} |`,
    );
  }
  const us = results.setup.umbra;
  const ss = results.setup.stunnel;
  if (us && ss)
    console.log(
      `\nUmbra / stunnel setup: median ${fmt(median(us.samples) / median(ss.samples), 2)}×, p99 ${fmt(percentile(us.samples, 99) / percentile(ss.samples, 99), 2)}×`,
    );
  console.log(`\nNegotiated: Umbra ${results.cipher.umbra ?? '?'}; stunnel ${results.cipher.stunnel ?? '?'}`);
  console.log(
    `Resident MiB at the end (peak): Umbra ${fmt(results.rss.umbra?.rss ?? Number.NaN)} (${fmt(results.rss.umbra?.peak ?? Number.NaN)}), stunnel ${fmt(results.rss.stunnel?.rss ?? Number.NaN)} (${fmt(results.rss.stunnel?.peak ?? Number.NaN)})`,
  );

  console.log('\n### Against the targets of issue 3\n');
  console.log('| target | result |');
  console.log('|---|---|');
  for (const { key, ratio } of ratios) {
    const [direction, streams] = key.split(' ');
    console.log(
      `| ≥ ${THROUGHPUT_TARGET * 100}% of stunnel's throughput, ${direction === 'down' ? 'download' : 'upload'} ${streams} stream${streams === '1' ? '' : 's'} | ${verdict(ratio >= THROUGHPUT_TARGET)}: ${fmt(ratio * 100, 0)}% |`,
    );
  }
  if (us) {
    const p99 = percentile(us.samples, 99);
    console.log(
      `| Umbra p99 setup ≤ ${SETUP_P99_TARGET_MS} ms (one at a time) | ${verdict(p99 <= SETUP_P99_TARGET_MS)}: ${fmt(p99, 2)} ms |`,
    );
  }
}

await main();
