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
// machine it says how busy the CPU was during the run. SQLite runs on a file in a temporary
// directory on the machine's disk (synchronous=FULL, as the controller runs); PostgreSQL is a
// private cluster (controller/src/store/test-postgres.ts) whose fsync is off, so its figure leaves
// out the disk and is the cost of the round trips and the server's work.
//
// Knocks are made by a thread of the bench's own (KnockMaker, below), between timed stretches and
// never during one: making them (an HPKE seal and open, an Ed25519 signature each) costs as much as
// deciding them, and in the deciding thread its garbage would be collected during the timed part and
// counted as the controller's.
//
// "On one core" is meant literally: the bench runs itself again under `taskset -c CPU` (the last CPU
// unless --cpu says which), so every thread of the process (the deciding one, V8's helpers, the
// idle knock maker) shares that one core. --cpu none runs unpinned.
//
// Options: --knocks N (20000)  --identities N (1000)  --concurrency C (256)  --only sqlite|postgresql
//          --cpu N|none  --json FILE

import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { TestPostgres, testing } from '@umbra/controller';
import {
  type DecisionMessage,
  encodeSealedKnock,
  type GatewayKeyPair,
  type Identity,
  SpaReceiver,
  sealKnock,
} from '@umbra/protocol';
import { percentile } from './measure.ts';
import { printHelpAndExit } from './options.ts';

// ---- the knock maker thread

interface KnockMakerData {
  gateway: GatewayKeyPair;
  identities: Identity[];
  access: string;
}

/** In the maker thread: answers each count with that many knocks, packed in one buffer. */
function makeKnocksOnRequest({ gateway, identities, access }: KnockMakerData): void {
  const receiver = new SpaReceiver(Buffer.from(gateway.privateKey));
  const gatewayPublicKey = Buffer.from(gateway.publicKey);
  // Cloned across threads, the raw fields arrive as Uint8Arrays.
  const senders = identities.map((identity) => ({
    ...identity,
    id: Buffer.from(identity.id),
    publicKey: Buffer.from(identity.publicKey),
  }));
  // Knocks per identity carry strictly increasing timestamps, as a client's do, near the clock.
  let clock = 0;
  let next = 0;
  parentPort!.on('message', (count: number) => {
    const knocks: Buffer[] = [];
    for (let index = 0; index < count; index++) {
      clock = Math.max(clock + 1, Date.now());
      const packet = sealKnock({
        gatewayPublicKey,
        identity: senders[next++ % senders.length]!,
        knock: {
          access,
          service: 'db',
          posture: { disk_encryption: 'on', os: 'debian' },
          timestampMs: clock,
        },
      });
      const opened = receiver.open(packet);
      if (!opened.ok) throw new Error(`a bench knock did not open (${opened.reason})`);
      knocks.push(encodeSealedKnock(opened.body, opened.signature));
    }
    const packed = Buffer.concat(knocks);
    const lengths = knocks.map((knock) => knock.length);
    parentPort!.postMessage({ packed, lengths }, [packed.buffer]);
  });
}

/** The bench's handle on its knock maker thread. */
class KnockMaker {
  readonly #worker: Worker;

  constructor(data: KnockMakerData) {
    this.#worker = new Worker(new URL(import.meta.url), { workerData: { knockMaker: data } });
  }

  /** `count` sealed knocks as the gateway forwards them, from the identities in turn. */
  make(count: number): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      this.#worker.once('error', reject);
      this.#worker.once('message', ({ packed, lengths }: { packed: Uint8Array; lengths: number[] }) => {
        this.#worker.off('error', reject);
        const knocks: Buffer[] = [];
        let offset = packed.byteOffset;
        for (const length of lengths) {
          knocks.push(Buffer.from(packed.buffer, offset, length));
          offset += length;
        }
        resolve(knocks);
      });
      this.#worker.postMessage(count);
    });
  }

  close(): Promise<number> {
    return this.#worker.terminate();
  }
}

if (!isMainThread && workerData?.knockMaker !== undefined) makeKnocksOnRequest(workerData.knockMaker);
else await main();

async function main(): Promise<void> {
  const { values: opts } = parseArgs({
    options: {
      knocks: { type: 'string', default: '20000' },
      identities: { type: 'string', default: '1000' },
      concurrency: { type: 'string', default: '256' },
      only: { type: 'string' },
      cpu: { type: 'string' },
      json: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (opts.help) printHelpAndExit(import.meta.url);
  const pinnedTo = pinToOneCpu(opts.cpu);

  // Loaded here, not at the top: the maker thread needs none of the controller.
  const { startTestPostgres, testing } = await import('@umbra/controller');

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

  /**
   * Microseconds per Ed25519 verification of a knock-sized message, the floor under every decision:
   * elapsed, and of this thread's CPU (on a busy machine the elapsed time includes waiting for it).
   */
  function ed25519VerifyMicros(): { wall: number; cpu: number } {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const message = Buffer.alloc(160, 7);
    const signature = sign(null, message, privateKey);
    const rounds = 5_000;
    const cpu0 = process.threadCpuUsage();
    const started = performance.now();
    for (let index = 0; index < rounds; index++) verify(null, message, publicKey, signature);
    const wall = ((performance.now() - started) / rounds) * 1000;
    const cpu = process.threadCpuUsage(cpu0);
    return { wall, cpu: (cpu.user + cpu.system) / rounds };
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

  async function setUp(controller: testing.TestController): Promise<KnockMaker> {
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
    const seq = (await data.store.appendAudit({ actor: 'bench', action: 'policy.add', subject: 'bench' }))
      .seq;
    await controller.server.links.views.invalidate(seq);
    return new KnockMaker({
      gateway: gateway.spa,
      identities: devices.map((device) => device.identity),
      access: `tcp/${TUNNEL_PORT}`,
    });
  }

  async function run(engine: EngineResult['engine'], databaseUrl?: string): Promise<EngineResult> {
    const controller = await testing.startTestController(databaseUrl === undefined ? {} : { databaseUrl });
    let maker: KnockMaker | undefined;
    try {
      maker = await setUp(controller);
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
      for (const knock of await maker.make(LATENCY_SAMPLES)) {
        const started = performance.now();
        refused(await decideOne(knock));
        latencies.push(performance.now() - started);
      }

      // Throughput: C in flight, each finished one replaced by the next. Knocks are made a chunk at a
      // time just before they are decided (on a busy machine making them all first could take longer
      // than their ±30 s window); only the deciding is timed, and the maker thread is idle meanwhile.
      let done = 0;
      let seconds = 0;
      let cpuSeconds = 0;
      while (done < KNOCKS) {
        const knocks = await maker.make(Math.min(CHUNK, KNOCKS - done));
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
      await maker?.close();
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
    `\nController decisions (${IDENTITIES} identities, ${CONCURRENCY} in flight, Node ${process.version}, ` +
      `${pinnedTo === null ? 'not pinned' : `all threads on CPU ${pinnedTo}`}):\n`,
  );
  console.log('engine       decisions/s   core   per CPU-second   one at a time p50 / p99   RSS');
  for (const result of results)
    console.log(
      `${result.engine.padEnd(12)} ${result.decisionsPerSecond.toFixed(0).padStart(11)}   ${(result.coreShare * 100).toFixed(0).padStart(3)}%   ` +
        `${result.decisionsPerCpuSecond.toFixed(0).padStart(14)}   ` +
        `${result.latencyMs.p50.toFixed(2).padStart(8)} / ${result.latencyMs.p99.toFixed(2)} ms       ${result.rssMiB.toFixed(0)} MiB`,
    );
  console.log(
    `\nEd25519 verify alone: ${verifyMicros.wall.toFixed(0)} µs, ${verifyMicros.cpu.toFixed(0)} µs of CPU ` +
      `(a ceiling of ${(1e6 / verifyMicros.cpu).toFixed(0)} per CPU-second)`,
  );
  for (const result of results)
    console.log(
      `${result.engine}: ${(1e6 / result.decisionsPerCpuSecond).toFixed(0)} µs of CPU per decision, ` +
        `${(1e6 / result.decisionsPerCpuSecond - verifyMicros.cpu).toFixed(0)} µs of it beside the signature`,
    );
  const sqlite = results.find((result) => result.engine === 'sqlite');
  if (sqlite)
    console.log(
      `target ≥ 5,000/s with SQLite on one core: ${sqlite.decisionsPerSecond >= 5_000 ? 'met' : 'NOT met'} ` +
        `(${sqlite.decisionsPerSecond.toFixed(0)}/s measured, ${sqlite.decisionsPerCpuSecond.toFixed(0)} per CPU-second)`,
    );
  if (opts.json)
    writeFileSync(
      opts.json,
      `${JSON.stringify({ ed25519VerifyMicros: verifyMicros.wall, ed25519VerifyCpuMicros: verifyMicros.cpu, results }, null, 2)}\n`,
    );
}

/**
 * The CPU this process runs on alone, re-running it under taskset first if it is not pinned yet
 * (this call then exits with the pinned run's status); null when asked not to pin or there is one CPU.
 */
function pinToOneCpu(option: string | undefined): string | null {
  if (option === 'none') return null;
  const pinned = process.env.UMBRA_BENCH_CPU;
  if (pinned !== undefined) return pinned;
  if (availableParallelism() === 1) return null;
  const cpu = option ?? String(cpus().length - 1);
  if (!/^\d+$/.test(cpu)) {
    console.error(`--cpu ${cpu}: expected a CPU number or none`);
    process.exit(2);
  }
  const args = [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)];
  const run = spawnSync('taskset', ['-c', cpu, process.execPath, ...args], {
    stdio: 'inherit',
    env: { ...process.env, UMBRA_BENCH_CPU: cpu },
  });
  if (run.error !== undefined) {
    console.error(`taskset -c ${cpu}: ${run.error.message} (--cpu none measures without pinning)`);
    process.exit(2);
  }
  process.exit(run.status ?? 1);
}
