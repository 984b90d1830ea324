// npm run bench:first-byte — knock → first byte through the tunnel, with the controller deciding
// every knock online.
//
// The rig is the session rig (test-rig/src/session-rig.ts): a controller (`umbra-controller serve`,
// SQLite), a real gateway enrolled with it (`umbra-gateway run --dir`), a client host, and a
// PostgreSQL server behind the gateway as service db (tunnel mode). A device enrolled with
// `umbra enroll` in group staff may reach db. first-byte-client.ts, in the client host, knocks from
// a source address of its own per sample (added here to the client's interface), dials the tunnel
// until the pinhole lets it in, completes TLS 1.3 with the device's certificate, sends PostgreSQL's
// SSLRequest and stops the clock at the first byte of the answer. Each knock travels gateway →
// controller (signature, policy, session and audit written) → gateway → nftables before the port
// opens.
//
// The split: knock sent → TCP connected (the pinhole open, seen from the client), TLS handshake,
// request → first byte (the gateway's dial to the backend and PostgreSQL's answer); and the
// gateway's own figure for each pinhole, from the kernel's receive timestamp of the knock to the
// nftables element in place (its `pinhole opened` log line), which holds the controller's decision.
//
// Options: --knocks N (200, at most 200)  --quick (50)  --spacing MS (50)  --json FILE

import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LineReader } from '../src/lines.ts';
import { BACKEND_ADDRESS, BACKEND_PORT, buildSessionRig } from '../src/session-rig.ts';
import { TOOL_ENV } from '../src/umbra.ts';
import { percentile, residentMiB } from './measure.ts';
import { printHelpAndExit, wholeOption } from './options.ts';

const { values: opts } = parseArgs({
  options: {
    knocks: { type: 'string' },
    quick: { type: 'boolean', default: false },
    spacing: { type: 'string', default: '50' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) printHelpAndExit(import.meta.url);

/** Sources 192.0.2.40 … 192.0.2.239: clear of the rig's hosts (.10 upwards, one per host). */
const FIRST_SOURCE_OCTET = 40;
const MAX_KNOCKS = 200;
const KNOCKS = wholeOption('knocks', opts.knocks ?? (opts.quick ? '50' : '200'), 1, MAX_KNOCKS);
const SPACING_MS = wholeOption('spacing', opts.spacing!, 10, 1_000);
/** The client's samples must finish within this, or it is stopped. */
const CLIENT_LIMIT_MS = 120_000;
const FLOOR_SAMPLES = 50;
const CLIENT_SCRIPT = new URL('./first-byte-client.ts', import.meta.url).pathname;

/** Other work on the machine shows in every figure here: it is reported with them. */
const LOAD_AT_START = loadavg()[0]!;

interface Sample {
  sample: number;
  source: string;
  sealMs: number;
  connectMs: number;
  tlsMs: number;
  firstByteMs: number;
  totalMs: number;
  answer: string;
  /** The gateway's own: knock received (kernel timestamp) → pinhole in place. */
  gatewayMs?: number;
}

function jsonLine(line: string): Record<string, unknown> | null {
  if (!line.startsWith('{')) return null;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const wallStart = performance.now();
  console.log(`first byte: ${KNOCKS} knocks, ${SPACING_MS} ms apart, each from its own source address`);
  const rig = await buildSessionRig({ storage: 'sqlite' });
  try {
    const { admin } = rig;
    await rig.addDatabaseService();
    const device = await rig.enrollDevice('fb', ['staff']);
    await admin.admin('policy', 'add', '--group', 'staff', '--service', 'db', '--ttl', '30s');

    const client = rig.topology.host('client');
    const sources = Array.from({ length: KNOCKS }, (_, i) => `192.0.2.${FIRST_SOURCE_OCTET + i}`);
    await client.run(['ip', '-batch', '-'], {
      input: sources.map((address) => `addr add ${address}/32 dev ${client.ifname}`).join('\n'),
    });
    const config = join(rig.dir, 'first-byte.json');
    writeFileSync(config, JSON.stringify({ dir: device, service: 'db', sources, spacingMs: SPACING_MS }));

    const gatewayMark = rig.gateway.logs.length;
    const child = client.spawn([process.execPath, CLIENT_SCRIPT, config], { env: TOOL_ENV });
    const output = LineReader.ofChild('first-byte client', child);
    const limit = setTimeout(() => child.pid && process.kill(child.pid, 'SIGTERM'), CLIENT_LIMIT_MS);
    await output
      .waitFor((line) => jsonLine(line)?.done !== undefined, CLIENT_LIMIT_MS)
      .finally(() => clearTimeout(limit));

    const samples: Sample[] = [];
    const failures: string[] = [];
    for (const line of output.lines()) {
      const entry = jsonLine(line);
      if (entry?.sample !== undefined) samples.push(entry as unknown as Sample);
      else if (entry?.failed !== undefined) failures.push(`${String(entry.source)}: ${String(entry.error)}`);
    }
    const opened = new Map<string, number>();
    for (const line of rig.gateway.logs.slice(gatewayMark))
      if (line.msg === 'pinhole opened' && typeof line.latencyMs === 'number')
        opened.set(String(line.source), line.latencyMs);
    for (const sample of samples) sample.gatewayMs = opened.get(sample.source);
    const wrongAnswers = samples.filter((s) => s.answer !== 'N').length;

    // The floor: the same request straight to PostgreSQL from the gateway host, no knock, no tunnel.
    const floorConfig = join(rig.dir, 'first-byte-floor.json');
    writeFileSync(
      floorConfig,
      JSON.stringify({
        floor: { host: BACKEND_ADDRESS, port: BACKEND_PORT, count: FLOOR_SAMPLES },
        spacingMs: SPACING_MS,
      }),
    );
    const floorChild = rig.topology
      .host('gateway')
      .spawn([process.execPath, CLIENT_SCRIPT, floorConfig], { env: TOOL_ENV });
    const floorOutput = LineReader.ofChild('first-byte floor', floorChild);
    await floorOutput.waitFor((line) => jsonLine(line)?.done !== undefined, CLIENT_LIMIT_MS);
    const floorSamples = floorOutput
      .lines()
      .map(jsonLine)
      .filter((entry) => entry?.floor !== undefined && entry.answer === 'N') as Array<{
      connectMs: number;
      firstByteMs: number;
    }>;

    const controllerPid = controllerPidOf(rig.dir);
    const resident = {
      controller: controllerPid ? residentMiB(controllerPid).rss : Number.NaN,
      gateway: rig.gateway.pid ? residentMiB(rig.gateway.pid).rss : Number.NaN,
    };
    // Anything the gateway and controller(s) complained of meanwhile, shown with the figures.
    const complaints = rig.complaints();
    if (complaints.length > 0)
      console.log(
        `warnings and errors logged (${complaints.length}):\n  ${complaints.slice(0, 8).join('\n  ')}`,
      );
    report(samples, floorSamples, failures, wrongAnswers, resident, (performance.now() - wallStart) / 1000);
  } finally {
    await rig.destroy();
  }
}

/** The serving controller's pid: the process whose command line is `… serve --data RIG/controller …`. */
function controllerPidOf(rigDir: string): number | undefined {
  const data = join(rigDir, 'controller');
  for (const entry of readdirSafe('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('serve') && argv.includes(data)) return Number(entry);
    } catch {
      // Gone meanwhile.
    }
  }
  return undefined;
}

function readdirSafe(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

function report(
  samples: Sample[],
  floor: Array<{ connectMs: number; firstByteMs: number }>,
  failures: string[],
  wrongAnswers: number,
  resident: { controller: number; gateway: number },
  seconds: number,
): void {
  const rows: Array<[string, number[]]> = [
    ['knock sent → first byte back', samples.map((s) => s.totalMs)],
    ['  knock sent → TCP connected (pinhole open)', samples.map((s) => s.connectMs)],
    ['  TLS 1.3 handshake (mutual, ALPN)', samples.map((s) => s.tlsMs)],
    ['  SSLRequest → first byte (gateway → backend)', samples.map((s) => s.firstByteMs)],
    ["gateway's own: knock received → pinhole in place", samples.flatMap((s) => s.gatewayMs ?? [])],
    ['sealing the knock (before the clock starts)', samples.map((s) => s.sealMs)],
    ['floor, from the gateway host: TCP connect to PostgreSQL', floor.map((s) => s.connectMs)],
    ['floor: SSLRequest → first byte, no tunnel', floor.map((s) => s.firstByteMs)],
  ];
  console.log(`\nknock → first byte, ${samples.length} samples (ms):`);
  console.log(
    `${'phase'.padEnd(52)} ${'median'.padStart(8)} ${'p95'.padStart(8)} ${'p99'.padStart(8)} ${'max'.padStart(8)}`,
  );
  const figures: Record<string, { median: number; p95: number; p99: number; max: number; n: number }> = {};
  for (const [label, values] of rows) {
    const f = {
      median: percentile(values, 50),
      p95: percentile(values, 95),
      p99: percentile(values, 99),
      max: percentile(values, 100),
      n: values.length,
    };
    figures[label.trim()] = f;
    console.log(
      `${label.padEnd(52)} ${f.median.toFixed(2).padStart(8)} ${f.p95.toFixed(2).padStart(8)} ${f.p99.toFixed(2).padStart(8)} ${f.max.toFixed(2).padStart(8)}${f.n !== samples.length ? `  (${f.n} samples)` : ''}`,
    );
  }
  console.log(
    `\nfailed samples: ${failures.length}; answers other than PostgreSQL's 'N': ${wrongAnswers}; ` +
      `machine load average (1 min) ${LOAD_AT_START.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end, on ${availableParallelism()} cores; resident MiB: controller ${resident.controller.toFixed(1)}, gateway ${resident.gateway.toFixed(1)}; whole bench ${seconds.toFixed(0)} s`,
  );
  if (failures.length > 0) console.log(`failures:\n  ${failures.slice(0, 10).join('\n  ')}`);
  if (opts.json)
    writeFileSync(
      opts.json,
      JSON.stringify({ knocks: KNOCKS, samples, floor, failures, figures, resident }, null, 2),
    );
  if (failures.length > 0 || wrongAnswers > 0 || samples.length === 0) process.exitCode = 1;
}

await main();
