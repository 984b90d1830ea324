// npm run bench:decisions — how many knocks the controller decides per second, with SQLite and with
// PostgreSQL, through the same authorize handler a gateway link calls (in-process: no network, no
// TLS, so the figure is the controller's own work).
//
// Each decision is the whole hot path: the sealed knock's schema, the identity by key id, the Ed25519
// signature over the gateway's key id, time window, replay, source, service and access, the policy
// (a posture requirement and an hours window), and the session and audit entry written durably
// before the answer (batched with the other decisions of the same moment). Knocks are sealed and
// opened beforehand, as the gateway would, so only the controller's side is timed.
//
// Two figures per engine: throughput with C requests in flight (a busy gateway, or many), and the
// latency of one decision at a time (every decision its own commit). The Ed25519 verification every
// decision needs is also timed alone, first: it is most of a decision's cost, and on a shared
// machine it says how busy the CPU was during the run. SQLite runs on a file in a
// temporary directory on the machine's disk (synchronous=FULL, as the controller runs); PostgreSQL
// is a private cluster (controller/src/store/test-postgres.ts) whose fsync is off, so its figure
// leaves out the disk and is the cost of the round trips and the server's work.
//
// Options: --knocks N (20000)  --identities N (1000)  --concurrency C (256)  --only sqlite|postgresql
//          --json FILE

import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startTestPostgres, type TestPostgres, testing } from '@umbra/controller';
import type { DecisionMessage } from '@umbra/protocol';
import { percentile } from './measure.ts';
import { printHelpAndExit } from './options.ts';

const { values: opts } = parseArgs({
  options: {
    knocks: { type: 'string', default: '20000' },
    identities: { type: 'string', default: '1000' },
    concurrency: { type: 'string', default: '256' },
    only: { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) printHelpAndExit(import.meta.url);

const KNOCKS = positive('knocks');
const IDENTITIES = positive('identities');
const CONCURRENCY = positive('concurrency');
const LATENCY_SAMPLES = 500;
const TUNNEL_PORT = 8443;
const SOURCE = '198.51.100.7';
/** Knocks made and decided at a time, so each is decided well inside its ±30 s window. */
const CHUNK = 2_000;

function positive(name: 'knocks' | 'identities' | 'concurrency'): number {
  const value = Number(opts[name]);
  if (!Number.isSafeInteger(value) || value < 1) {
    console.error(`--${name} ${opts[name]}: expected a whole number of 1 or more`);
    process.exit(2);
  }
  return value;
}

/** Microseconds per Ed25519 verification of a knock-sized message, the floor under every decision. */
function ed25519VerifyMicros(): number {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const message = Buffer.alloc(160, 7);
  const signature = sign(null, message, privateKey);
  const rounds = 5_000;
  const started = performance.now();
  for (let index = 0; index < rounds; index++) verify(null, message, publicKey, signature);
  return ((performance.now() - started) / rounds) * 1000;
}

interface EngineResult {
  engine: 'sqlite' | 'postgresql';
  decisions: number;
  seconds: number;
  decisionsPerSecond: number;
  /** Share of one core this process used while deciding (user + system). */
  coreShare: number;
  /**
   * Decisions per second of CPU this process used: what one core of its own would decide. On a
   * shared machine, where the process waits for a core, it is the fairer figure.
   */
  decisionsPerCpuSecond: number;
  latencyMs: { p50: number; p99: number };
  rssMiB: number;
}

type MakeKnock = (count: number) => Buffer[];

async function setUp(controller: testing.TestController): Promise<MakeKnock> {
  const { data } = controller;
  const gateway = await testing.enrollTestGateway(data, 'bench-gw');
  await data.store.createService({ name: 'db', gateway: 'bench-gw', backend: '10.0.0.5:5432' });
  await data.store.createGroup('eng');
  await data.store.addPolicy({
    subject: { kind: 'group', name: 'eng' },
    service: 'db',
    requirements: ['disk_encryption=on'],
    hours: '00:00-24:00',
    maxTtlSeconds: 60,
  });
  const devices: testing.TestDevice[] = [];
  for (let index = 0; index < IDENTITIES; index++)
    devices.push(await testing.enrollTestDevice(data, `device-${index}`, { groups: ['eng'] }));
  const seq = (await data.store.appendAudit({ actor: 'bench', action: 'policy.add', subject: 'bench' })).seq;
  await controller.server.links.views.invalidate(seq);
  // Knocks per identity carry strictly increasing timestamps, as a client's do, near the clock.
  let clock = 0;
  return (count) =>
    Array.from({ length: count }, (_, index) => {
      clock = Math.max(clock + 1, Date.now());
      return testing.knockBytes(devices[index % devices.length]!, gateway, {
        access: `tcp/${TUNNEL_PORT}`,
        service: 'db',
        posture: { disk_encryption: 'on', os: 'debian' },
        timestampMs: clock,
      });
    });
}

async function run(engine: EngineResult['engine'], databaseUrl?: string): Promise<EngineResult> {
  const controller = await testing.startTestController(databaseUrl === undefined ? {} : { databaseUrl });
  try {
    const makeKnocks = await setUp(controller);
    const { authorizer } = controller.server.links;
    const peer = {
      name: 'bench-gw',
      endpoint: { host: '192.0.2.1', spaPort: 62201, tunnelPort: TUNNEL_PORT },
    };
    let id = 0;
    const decideOne = (knock: Buffer): Promise<DecisionMessage> =>
      authorizer.authorize(peer, { t: 'authorize', id: ++id, knock, source: SOURCE });
    const refused = (decision: DecisionMessage) => {
      if (!decision.allow) throw new Error(`${engine}: a bench knock was refused: ${decision.reason}`);
    };

    // One at a time: each decision waits for its own commit.
    const latencies: number[] = [];
    for (const knock of makeKnocks(LATENCY_SAMPLES)) {
      const started = performance.now();
      refused(await decideOne(knock));
      latencies.push(performance.now() - started);
    }

    // Throughput: C in flight, each finished one replaced by the next. Knocks are made a chunk at a
    // time just before they are decided (on a busy machine making them all first could take longer
    // than their ±30 s window); only the deciding is timed.
    let done = 0;
    let seconds = 0;
    let cpuSeconds = 0;
    while (done < KNOCKS) {
      const knocks = makeKnocks(Math.min(CHUNK, KNOCKS - done));
      const cpu0 = process.cpuUsage();
      const started = performance.now();
      let next = 0;
      const worker = async () => {
        while (next < knocks.length) refused(await decideOne(knocks[next++]!));
      };
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, knocks.length) }, worker));
      seconds += (performance.now() - started) / 1000;
      const cpu = process.cpuUsage(cpu0);
      cpuSeconds += (cpu.user + cpu.system) / 1e6;
      done += knocks.length;
    }
    return {
      engine,
      decisions: done,
      seconds,
      decisionsPerSecond: done / seconds,
      coreShare: cpuSeconds / seconds,
      decisionsPerCpuSecond: done / cpuSeconds,
      latencyMs: { p50: percentile(latencies, 50), p99: percentile(latencies, 99) },
      rssMiB: process.memoryUsage().rss / 2 ** 20,
    };
  } finally {
    await controller.close();
  }
}

const verifyMicros = ed25519VerifyMicros();
const results: EngineResult[] = [];
if (opts.only === undefined || opts.only === 'sqlite') results.push(await run('sqlite'));
if (opts.only === undefined || opts.only === 'postgresql') {
  let postgres: TestPostgres | undefined;
  try {
    postgres = await startTestPostgres();
    results.push(await run('postgresql', postgres.url));
  } finally {
    await postgres?.stop();
  }
}

console.log(
  `\nController decisions (${IDENTITIES} identities, ${CONCURRENCY} in flight, Node ${process.version}):\n`,
);
console.log('engine       decisions/s   core   per CPU-second   one at a time p50 / p99   RSS');
for (const result of results)
  console.log(
    `${result.engine.padEnd(12)} ${result.decisionsPerSecond.toFixed(0).padStart(11)}   ${(result.coreShare * 100).toFixed(0).padStart(3)}%   ` +
      `${result.decisionsPerCpuSecond.toFixed(0).padStart(14)}   ` +
      `${result.latencyMs.p50.toFixed(2).padStart(8)} / ${result.latencyMs.p99.toFixed(2)} ms       ${result.rssMiB.toFixed(0)} MiB`,
  );
console.log(
  `\nEd25519 verify alone: ${verifyMicros.toFixed(0)} µs (a ceiling of ${(1e6 / verifyMicros).toFixed(0)}/s on one core)`,
);
const sqlite = results.find((result) => result.engine === 'sqlite');
if (sqlite)
  console.log(
    `target ≥ 5,000/s with SQLite on one core: ${sqlite.decisionsPerSecond >= 5_000 ? 'met' : 'NOT met'} ` +
      `(${sqlite.decisionsPerSecond.toFixed(0)}/s measured, ${sqlite.decisionsPerCpuSecond.toFixed(0)} per CPU-second)`,
  );
if (opts.json)
  writeFileSync(opts.json, `${JSON.stringify({ ed25519VerifyMicros: verifyMicros, results }, null, 2)}\n`);
