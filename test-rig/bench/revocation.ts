// npm run bench:revocation — revoke command → the client's live connection closed, with 100
// simulated gateways linked to the controller besides the real one.
//
// The rig is the session rig (test-rig/src/session-rig.ts): a controller (`umbra-controller serve`,
// SQLite; or PostgreSQL with two controllers, --storage postgres), a real gateway
// (`umbra-gateway run --dir`), a client host and a PostgreSQL backend behind the gateway. On the
// outsider host, revocation-gateways.ts enrolls G more gateways with real gateway tokens and holds
// their links open (hello, snapshot, then listening), so every revocation fans out to G + 1 links;
// each simulated gateway notes when it arrived, and the run checks all G got each one.
//
// Each run: a fresh device in group `staff` (policy: staff may reach service db), `umbra connect
// db` on the client, and through it a live PostgreSQL session (revocation-probe.ts: logged in,
// `select 1` every 100 ms). The clock starts when this process spawns `umbra-controller identity
// revoke NAME` and stops when the probe sees its connection closed. Alongside, where the time went:
// the revoke's audit entry written (its `at`), the controller's push (its log), the simulated
// gateways' receipt (first and last), the real gateway's `revocation applied` (its log), and the
// admin command's own exit.
//
// Options: --runs N (25)  --quick (8 runs)  --gateways G (100)  --storage sqlite|postgres  --json FILE

import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { LineReader } from '../src/lines.ts';
import { buildSessionRig, CONTROLLER_NAME, CONTROLLER_PORT, type SessionRig } from '../src/session-rig.ts';
import { TOOL_ENV } from '../src/umbra.ts';
import { percentile, residentMiB } from './measure.ts';
import { printHelpAndExit, wholeOption } from './options.ts';

const { values: opts } = parseArgs({
  options: {
    runs: { type: 'string' },
    quick: { type: 'boolean', default: false },
    gateways: { type: 'string', default: '100' },
    storage: { type: 'string', default: 'sqlite' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) printHelpAndExit(import.meta.url);

const RUNS = wholeOption('runs', opts.runs ?? (opts.quick ? '8' : '25'), 1, 200);
const GATEWAYS = wholeOption('gateways', opts.gateways!, 0, 500);
const STORAGE = opts.storage === 'postgres' ? 'postgres' : 'sqlite';
if (opts.storage !== 'sqlite' && opts.storage !== 'postgres') {
  console.error(`--storage ${opts.storage}: expected sqlite or postgres`);
  process.exit(2);
}
const TARGET_P99_MS = 1_000;
/** The measured runs stop starting once this much time has gone by. */
const RUNS_BUDGET_MS = 150_000;
const ADMIN_CONCURRENCY = 6;
const ENROLL_CONCURRENCY = 3;
const CLOSE_TIMEOUT_MS = 10_000;
const SETTLE_MS = 300;
const BASELINE_COMMANDS = 5;
const FLEET_SCRIPT = new URL('./revocation-gateways.ts', import.meta.url).pathname;
const PROBE_SCRIPT = new URL('./revocation-probe.ts', import.meta.url).pathname;
const FIRST_LOCAL_PORT = 16_000;

/** Other work on the machine shows in every figure here: it is reported with them. */
const LOAD_AT_START = loadavg()[0]!;

const epochMs = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `work` over `items`, at most `limit` at a time, results in order. */
async function pool<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>) {
  const results: R[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

function jsonLine(line: string): Record<string, unknown> | null {
  if (!line.startsWith('{')) return null;
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** A JSON line from a reader whose `key` equals `value` (any line with `key`, when value is undefined). */
async function waitJson(reader: LineReader, key: string, value: unknown, timeoutMs: number, from = 0) {
  const event = await reader.waitFor(
    (line) => {
      const parsed = jsonLine(line);
      return parsed !== null && key in parsed && (value === undefined || parsed[key] === value);
    },
    timeoutMs,
    from,
  );
  return jsonLine(event.line)!;
}

interface Run {
  device: string;
  /** Epoch ms when the revoke command was spawned. */
  startedAt: number;
  /** All in ms after the revoke command was spawned. */
  closedMs: number;
  auditWrittenMs: number | null;
  controllerPushMs: number | null;
  fleetFirstMs: number | null;
  fleetLastMs: number | null;
  fleetCount: number;
  /** Links the controller(s) sent the revoke to (the real gateway's among them). */
  linksPushedTo: number;
  gatewayAppliedMs: number | null;
  commandExitMs: number;
  queriesBefore: number;
}

async function main(): Promise<void> {
  const wallStart = performance.now();
  console.log(
    `revocation: ${RUNS} runs, ${GATEWAYS} simulated gateways + 1 real, storage ${STORAGE}` +
      `${STORAGE === 'postgres' ? ' (two controllers; the real gateway on the second, admin on the first)' : ''}`,
  );
  const rig = await buildSessionRig({ storage: STORAGE });
  const children: ChildProcess[] = [];
  try {
    console.log(`  rig up in ${((performance.now() - wallStart) / 1000).toFixed(1)} s`);
    const { admin } = rig;
    await rig.addDatabaseService();

    const setup = performance.now();
    const names = Array.from({ length: RUNS }, (_, i) => `rev${i}`);
    const [devices, tokens] = await Promise.all([
      pool(names, ENROLL_CONCURRENCY, (name) => rig.enrollDevice(name, ['staff'])),
      pool(
        Array.from({ length: GATEWAYS }, (_, i) => `sim${i}`),
        ADMIN_CONCURRENCY,
        async (name) => (await admin.admin('gateway', 'token', 'create', '--name', name)).trim(),
      ),
    ]);
    await admin.admin('policy', 'add', '--group', 'staff', '--service', 'db', '--ttl', '30s');
    console.log(
      `  ${RUNS} devices enrolled and ${GATEWAYS} gateway tokens made in ${((performance.now() - setup) / 1000).toFixed(1)} s`,
    );

    // The fleet, on the outsider: it reaches the controllers over the bridge like any gateway.
    const outsider = rig.topology.host('outsider');
    const fleetDir = join(rig.dir, 'fleet');
    mkdirSync(fleetDir, { recursive: true });
    const fleetConfig = join(fleetDir, 'config.json');
    writeFileSync(
      fleetConfig,
      JSON.stringify({
        tokens,
        dir: fleetDir,
        controllers: rig.controllers.map((controller) => controller.host.ipv4),
        port: CONTROLLER_PORT,
        servername: CONTROLLER_NAME,
        endpoint: { host: outsider.ipv4, spaPort: 62201, tunnelPort: 8443 },
        lifetimeMs: 600_000,
      }),
    );
    const fleet = outsider.spawn([process.execPath, FLEET_SCRIPT, fleetConfig], {
      env: TOOL_ENV,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(fleet);
    const fleetOut = LineReader.ofChild('gateway fleet', fleet);
    let linked: Record<string, unknown> = { linked: 0, ms: 0 };
    if (GATEWAYS > 0) {
      linked = await waitJson(fleetOut, 'linked', undefined, 120_000).catch((error: Error) => {
        const failed = fleetOut.lines().find((line) => jsonLine(line)?.error !== undefined);
        throw failed ? new Error(`the gateway fleet failed: ${failed}`) : error;
      });
      const failed = fleetOut.lines().find((line) => jsonLine(line)?.error !== undefined);
      if (failed) throw new Error(`the gateway fleet failed: ${failed}`);
    }
    console.log(
      `  ${String(linked.linked)} simulated gateways enrolled and linked (links in ${String(linked.ms)} ms)`,
    );

    const client = rig.topology.host('client');
    const probe = client.spawn([process.execPath, PROBE_SCRIPT], {
      env: TOOL_ENV,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    children.push(probe);
    const probeOut = LineReader.ofChild('probe', probe);

    const runs: Run[] = [];
    const failures: string[] = [];
    const runsStart = performance.now();
    for (let i = 0; i < RUNS; i++) {
      if (performance.now() - runsStart > RUNS_BUDGET_MS) {
        failures.push(`stopped after ${i} runs: the ${RUNS_BUDGET_MS / 1000} s budget is spent`);
        break;
      }
      const name = names[i]!;
      const port = FIRST_LOCAL_PORT + i;
      let connect: ChildProcess | undefined;
      try {
        const forward = await rig.startConnect(devices[i]!, 'db', port);
        connect = forward.child;
        children.push(connect);
        const connectOut = forward.output;
        const mark = probeOut.count;
        probe.stdin!.write(`${JSON.stringify({ open: i, port })}\n`);
        const opened = await waitJson(probeOut, 'opened', i, 20_000, mark).catch(() => null);
        if (!opened) {
          const why = probeOut.lines().find((line) => jsonLine(line)?.failed === i);
          failures.push(
            `${name}: the session did not open (${why ?? 'timeout'}); connect: ${connectOut.tail(3)}`,
          );
          continue;
        }
        await sleep(SETTLE_MS);
        const fleetMark = fleetOut.count;
        const gatewayMark = rig.gateway.logs.length;
        const started = epochMs();
        const command = admin.admin('identity', 'revoke', name).then(() => epochMs());
        const closed = await waitJson(probeOut, 'closed', i, CLOSE_TIMEOUT_MS, mark).catch(() => null);
        const commandExit = await command;
        if (!closed) {
          failures.push(`${name}: the session was not closed within ${CLOSE_TIMEOUT_MS} ms`);
          continue;
        }
        const reason = `identity ${name} revoked`;
        const fanOut =
          GATEWAYS > 0
            ? await waitJson(fleetOut, 'revoke', reason, 5_000, fleetMark).catch(() => null)
            : null;
        const applied = await rig.gateway
          .waitForLog(
            (line) => line.msg === 'revocation applied' && line.reason === reason,
            5_000,
            gatewayMark,
          )
          .catch(() => null);
        // pino writes asynchronously: the line may still be on its way.
        await Promise.all(
          rig.controllers.map((controller) =>
            controller.output
              ?.waitFor(
                (line) => line.includes('revocation pushed') && jsonLine(line)?.subject === name,
                3_000,
              )
              .catch(() => null),
          ),
        );
        const pushed = controllerPush(rig, name);
        runs.push({
          device: name,
          startedAt: started,
          closedMs: Number(closed.at) - started,
          auditWrittenMs: null,
          controllerPushMs: pushed.at === null ? null : pushed.at - started,
          linksPushedTo: pushed.links,
          fleetFirstMs: fanOut ? Number(fanOut.firstAt) - started : null,
          fleetLastMs: fanOut ? Number(fanOut.lastAt) - started : null,
          fleetCount: fanOut ? Number(fanOut.count) : 0,
          gatewayAppliedMs: applied ? Number(applied.time) - started : null,
          commandExitMs: commandExit - started,
          queriesBefore: Number(closed.queries),
        });
        const run = runs.at(-1)!;
        console.log(
          `  ${name}: closed after ${run.closedMs.toFixed(1)} ms (push ${fmt(run.controllerPushMs)}, ` +
            `fleet ${run.fleetCount}/${GATEWAYS} ${fmt(run.fleetFirstMs)}–${fmt(run.fleetLastMs)}, ` +
            `gateway ${fmt(run.gatewayAppliedMs)}, command exit ${run.commandExitMs.toFixed(0)} ms; ${run.queriesBefore} queries before)`,
        );
      } catch (error) {
        failures.push(`${name}: ${(error as Error).message.split('\n')[0]}`);
      } finally {
        if (connect) await stop(connect);
      }
    }

    // When each revocation was written: its audit entry's own time.
    const audit = (await admin.admin('audit'))
      .split('\n')
      .map(jsonLine)
      .filter((entry) => entry?.action === 'identity.revoke');
    for (const run of runs) {
      const entry = audit.find((e) => e?.subject === run.device);
      if (entry) run.auditWrittenMs = Number(entry.at) - run.startedAt;
    }
    const resident = {
      controllers: controllerPids(rig).map((pid) => residentMiB(pid).rss),
      gateway: rig.gateway.pid ? residentMiB(rig.gateway.pid).rss : Number.NaN,
      fleet: fleet.pid ? residentMiB(fleet.pid).rss : Number.NaN,
    };
    const baseline: number[] = [];
    for (let i = 0; i < BASELINE_COMMANDS; i++) {
      const started = performance.now();
      await admin.admin('gateway', 'list');
      baseline.push(performance.now() - started);
    }
    // Anything the gateway and controller(s) complained of meanwhile, shown with the figures.
    const complaints = rig.complaints();
    if (complaints.length > 0)
      console.log(
        `warnings and errors logged (${complaints.length}):\n  ${complaints.slice(0, 8).join('\n  ')}`,
      );
    report({ runs, baseline, failures, resident, seconds: (performance.now() - wallStart) / 1000 });
  } finally {
    for (const child of children) await stop(child);
    await rig.destroy();
  }
}

/**
 * The controllers' log line for pushing this device's revocation: the earliest time (with two
 * controllers, each pushes to its own links) and the links it went to, summed over controllers.
 */
function controllerPush(rig: SessionRig, name: string): { at: number | null; links: number } {
  const times: number[] = [];
  let links = 0;
  for (const controller of rig.controllers)
    for (const line of controller.output?.lines() ?? []) {
      if (!line.includes('revocation pushed')) continue;
      const entry = jsonLine(line);
      if (entry?.subject !== name) continue;
      times.push(Number(entry.time));
      links += Number(entry.gateways);
    }
  return { at: times.length === 0 ? null : Math.min(...times), links };
}

function fmt(ms: number | null): string {
  return ms === null ? 'n/a' : `${ms.toFixed(0)}`;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin?.end();
  try {
    process.kill(child.pid, 'SIGTERM');
  } catch {
    return;
  }
  await Promise.race([exited, sleep(3_000)]);
}

/** The serving controllers' pids: the processes whose command line is `… serve --data RIG/controller …`. */
function controllerPids(rig: SessionRig): number[] {
  const data = join(rig.dir, 'controller');
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('serve') && argv.includes(data) && !argv.includes('netns')) pids.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

interface Report {
  runs: Run[];
  /** How long a read-only admin command takes, spawn to exit: the cost of starting one. */
  baseline: number[];
  failures: string[];
  resident: { controllers: number[]; gateway: number; fleet: number };
  seconds: number;
}

function report({ runs, baseline, failures, resident, seconds }: Report): void {
  const rows: Array<[string, Array<number | null>]> = [
    ['revoke command → client connection closed', runs.map((r) => r.closedMs)],
    ['  → revocation in the audit log (command start + write)', runs.map((r) => r.auditWrittenMs)],
    ['  → controller pushed it (its log, whole ms)', runs.map((r) => r.controllerPushMs)],
    ['  → first simulated gateway received it', runs.map((r) => r.fleetFirstMs)],
    ['  → last simulated gateway received it', runs.map((r) => r.fleetLastMs)],
    ['  → real gateway logged it applied (its log, whole ms)', runs.map((r) => r.gatewayAppliedMs)],
    ['  → the admin command exited', runs.map((r) => r.commandExitMs)],
    [
      'audit entry written → client connection closed',
      runs.map((r) => (r.auditWrittenMs === null ? null : r.closedMs - r.auditWrittenMs)),
    ],
    ['a read-only admin command (`gateway list`), spawn → exit', baseline],
  ];
  console.log(
    `\nrevocation, ${runs.length} runs, ${GATEWAYS} simulated gateways + 1 real, ${STORAGE} (ms after the revoke command was spawned):`,
  );
  console.log(
    `${'phase'.padEnd(58)} ${'median'.padStart(8)} ${'p95'.padStart(8)} ${'p99'.padStart(8)} ${'max'.padStart(8)}`,
  );
  const figures: Record<string, { median: number; p95: number; p99: number; max: number; n: number }> = {};
  for (const [label, values] of rows) {
    const samples = values.filter((v): v is number => v !== null && Number.isFinite(v));
    const f = {
      median: percentile(samples, 50),
      p95: percentile(samples, 95),
      p99: percentile(samples, 99),
      max: percentile(samples, 100),
      n: samples.length,
    };
    figures[label.trim()] = f;
    console.log(
      `${label.padEnd(58)} ${f.median.toFixed(1).padStart(8)} ${f.p95.toFixed(1).padStart(8)} ${f.p99.toFixed(1).padStart(8)} ${f.max.toFixed(1).padStart(8)}${f.n < runs.length ? `  (${f.n} samples)` : ''}`,
    );
  }
  const counts = runs.map((r) => r.fleetCount);
  const received = counts.reduce((sum, n) => sum + n, 0);
  console.log(
    `\nsimulated gateways' receipts: ${received}/${runs.length * GATEWAYS} (fewest in one run: ${counts.length ? Math.min(...counts) : 0}); the controller(s) pushed each to ${[...new Set(runs.map((r) => r.linksPushedTo))].join(' or ')} links`,
  );
  const p99 = figures['revoke command → client connection closed']!.p99;
  const met =
    runs.length > 0 && failures.length === 0 && p99 <= TARGET_P99_MS && received === runs.length * GATEWAYS;
  console.log(
    `target p99 ≤ ${TARGET_P99_MS} ms with ${GATEWAYS} gateways linked: ${met ? 'met' : 'NOT met'} (p99 ${p99.toFixed(1)} ms)`,
  );
  console.log(
    `machine load average (1 min) ${LOAD_AT_START.toFixed(1)} at the start, ${loadavg()[0]!.toFixed(1)} at the end, on ${availableParallelism()} cores; resident MiB: controller(s) ${resident.controllers.map((m) => m.toFixed(1)).join(', ')}, gateway ${resident.gateway.toFixed(1)}, fleet of ${GATEWAYS} ${resident.fleet.toFixed(1)}; whole bench ${seconds.toFixed(0)} s`,
  );
  if (failures.length > 0) console.log(`failures:\n  ${failures.join('\n  ')}`);
  if (opts.json)
    writeFileSync(
      opts.json,
      JSON.stringify(
        { storage: STORAGE, gateways: GATEWAYS, runs, failures, figures, received, resident, met },
        null,
        2,
      ),
    );
  if (!met) process.exitCode = 1;
}

await main();
