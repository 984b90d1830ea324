// npm run bench:knock — Umbra's gateway against the real fwknopd, side by side in one run.
//
//   1. Knock → first successful TCP connect, N knocks each (default 50): median, p99, ratio.
//   2. A flood of worst-case garbage (right size, right port, wrong MAC) at R packets/s for S
//      seconds (default 100,000/s for 10 s), with a valid knock every 100 ms: the share of valid
//      knocks that opened, and the gateway's CPU and memory.
//
// Topology: two gateways (umbra, fwknop) with the same protected service, a client and a flooder
// on one bridge. fwknopd runs in pcap mode with its default settings and the iptables backend;
// its packets are built by Debian's fwknop client. Both knocks are sent by the same C tool
// (knock-connect.c), which starts its clock when it sends the knock and then tries a fresh TCP
// connect every 100 us. A third row measures that tool against a host with no firewall at all:
// the floor that the network and the tool add to every figure.
//
// The gateway runs as the firmware ships it: the rollup bundle (`npm run build`, run first by
// `npm run bench:knock`), plain JavaScript on Node, so memory figures carry no TypeScript stripping.
//
// Options: --knocks N  --flood-rate R  --flood-seconds S  --only umbra|fwknop  --json FILE

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadIdentityFile } from '@umbra/client';
import { decodeKey, sealKnock } from '@umbra/protocol';
import {
  buildFwknopPacket,
  createClientIdentity,
  type Fwknopd,
  GatewayProcess,
  generateFwknopKeys,
  type HostHandle,
  LineReader,
  nodeTool,
  scratchDir,
  startFwknopd,
  startTcpServer,
  Topology,
} from '../src/index.ts';
import { cpuMeter, percentile, residentMiB } from './measure.ts';
import { printHelpAndExit } from './options.ts';

const { values: opts } = parseArgs({
  options: {
    knocks: { type: 'string', default: '50' },
    'flood-rate': { type: 'string', default: '100000' },
    'flood-seconds': { type: 'string', default: '10' },
    only: { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) printHelpAndExit(import.meta.url);
const KNOCKS = boundedInt('knocks', opts.knocks!, 1, 1000);
const FLOOD_RATE = boundedInt('flood-rate', opts['flood-rate']!, 1, 1_000_000);
const FLOOD_SECONDS = boundedInt('flood-seconds', opts['flood-seconds']!, 1, 60);
const KNOCK_INTERVAL_MS = 100;
const LATENCY_PORT = 10000; // knock i opens LATENCY_PORT + i: each measurement needs a port not yet open
const FLOOD_PORT = 20000;
const FLOOD_KNOCKS = Math.floor((FLOOD_SECONDS * 1000) / KNOCK_INTERVAL_MS);
const GRANT_SECONDS = 120; // longer than a phase, so every grant can be counted at its end
const SPA_PORT = 62201;

function boundedInt(name: string, text: string, min: number, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`--${name}: expected an integer from ${min} to ${max}, got ${text}`);
    process.exit(2);
  }
  return n;
}

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const ports = (base: number, n: number) => Array.from({ length: n }, (_, i) => base + i);

interface Contender {
  name: 'umbra' | 'fwknop';
  host: HostHandle;
  /** The gateway's own figure for each opened pinhole: kernel receive → pinhole, where it logs one. */
  processingMs?: () => number[];
  pid: () => number;
  /** A fresh knock (bytes) that asks for tcp/port. */
  makeKnock: (port: number) => Promise<Buffer>;
  /** Ports granted to the client right now. */
  openPorts: () => Promise<Set<number>>;
  garbageShape: 'spa1' | 'base64';
  stop: () => Promise<void>;
}

/** Builds one of the C tools beside this file into `dir`. */
function compileTool(dir: string, name: string): string {
  const binary = join(dir, name);
  const source = new URL(`./${name}.c`, import.meta.url).pathname;
  const cc = spawnSync('cc', ['-O2', '-Wall', '-o', binary, source], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cannot compile ${source} (is a C compiler installed?): ${cc.stderr}`);
  return binary;
}

async function setUpUmbra(topo: Topology): Promise<Contender> {
  const host = topo.host('umbra');
  const client = topo.host('client');
  const identity = await createClientIdentity(client, scratchDir(client, 'bench'), 'bench');
  const gateway = await GatewayProcess.start(host, {
    clients: [
      { name: 'bench', publicKey: identity.publicKey, allow: ['tcp/10000-29999'], ttlSeconds: GRANT_SECONDS },
    ],
    // The product's defaults for logging (rejections rate limited to 20 lines a second). The
    // per-source budget is raised from its default of 20 knocks/s: the benchmark knocks from one
    // address faster than any person would.
    extra: {
      log: { level: 'info', rejectionsPerSecond: 20 },
      budget: { knocksPerSecond: 1000, burst: 1000 },
    },
    bundle: true,
  });
  const loaded = loadIdentityFile(identity.file);
  const gatewayKey = decodeKey(gateway.publicKey, 'gateway key');
  let lastTimestamp = 0;
  return {
    name: 'umbra',
    host,
    pid: () => gateway.pid!,
    processingMs: () =>
      gateway.logs.filter((line) => line.msg === 'pinhole opened').map((line) => Number(line.latencyMs)),
    makeKnock: async (port) => {
      lastTimestamp = Math.max(Date.now(), lastTimestamp + 1);
      return sealKnock({
        gatewayPublicKey: gatewayKey,
        identity: loaded,
        knock: { access: `tcp/${port}`, timestampMs: lastTimestamp },
      });
    },
    openPorts: async () =>
      new Set((await gateway.pinholes()).filter((p) => p.source === client.ipv4).map((p) => p.port)),
    garbageShape: 'spa1',
    stop: async () => {
      await gateway.stop();
    },
  };
}

async function setUpFwknop(topo: Topology): Promise<Contender> {
  const host = topo.host('fwknop');
  const client = topo.host('client');
  const keys = generateFwknopKeys();
  const daemon: Fwknopd = await startFwknopd(host, {
    keys,
    openPorts: [...ports(LATENCY_PORT, KNOCKS), ...ports(FLOOD_PORT, FLOOD_KNOCKS)].map((p) => `tcp/${p}`),
    fwAccessTimeoutS: GRANT_SECONDS,
  });
  return {
    name: 'fwknop',
    host,
    pid: () => daemon.pid,
    makeKnock: async (port) =>
      Buffer.from(
        await buildFwknopPacket(client, { destination: host.ipv4, access: `tcp/${port}`, keys }),
        'ascii',
      ),
    openPorts: async () =>
      new Set((await daemon.grants()).filter((g) => g.source === client.ipv4).map((g) => g.port)),
    garbageShape: 'base64',
    stop: () => daemon.stop(),
  };
}

interface LatencyResult {
  samples: number[];
  failures: number;
  median: number;
  p95: number;
  p99: number;
  rssMiB: number;
  /** Umbra logs, per pinhole, the time from the kernel's receive timestamp to the pinhole. */
  gatewayMedian?: number;
  gatewayP99?: number;
}

const CONNECT_INTERVAL_US = 100;
const ATTEMPT_MS = 5;
const DEADLINE_MS = 3000;

async function measureLatency(
  topo: Topology,
  target: HostHandle,
  makeKnock: (port: number) => Promise<Buffer>,
  knockConnect: string,
  pid?: number,
): Promise<LatencyResult> {
  const client = topo.host('client');
  const samples: number[] = [];
  let failures = 0;
  for (let i = 0; i < KNOCKS; i++) {
    const port = LATENCY_PORT + i;
    const knock = (await makeKnock(port)).toString('hex');
    const argv = [
      knockConnect,
      target.ipv4,
      SPA_PORT,
      port,
      knock,
      CONNECT_INTERVAL_US,
      ATTEMPT_MS,
      DEADLINE_MS,
    ];
    const run = await client.run(argv.map(String), { timeoutMs: DEADLINE_MS + 5000 });
    const result = JSON.parse(run.stdout) as { ok: boolean; elapsedMs: number };
    if (result.ok) samples.push(result.elapsedMs);
    else failures++;
    await sleep(20);
  }
  return {
    samples,
    failures,
    median: percentile(samples, 50),
    p95: percentile(samples, 95),
    p99: percentile(samples, 99),
    rssMiB: pid ? residentMiB(pid).rss : Number.NaN,
  };
}

interface FloodResult {
  garbageSent: number;
  garbageRate: number;
  validSent: number;
  validOpened: number;
  openedShare: number;
  coreShare: number;
  rssMiB: number;
  peakRssMiB: number;
}

async function measureFlood(topo: Topology, contender: Contender, flooder: string): Promise<FloodResult> {
  const client = topo.host('client');
  const target = contender.host.ipv4;
  // Knocks are built before the flood, so building them costs the flood nothing.
  const knocks: Buffer[] = [];
  for (let i = 0; i < FLOOD_KNOCKS; i++) knocks.push(await contender.makeKnock(FLOOD_PORT + i));
  const garbageSize = knocks[0]!.length;

  const sender = client.spawn(nodeTool('udp-sender.ts', [target, SPA_PORT]), {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const senderOutput = LineReader.ofChild('udp-sender', sender);
  await senderOutput.waitForJson('ready', 10_000);

  const meter = cpuMeter(contender.pid());
  const flood = topo
    .host('flooder')
    .exec(
      [
        flooder,
        target,
        String(SPA_PORT),
        String(FLOOD_RATE),
        String(FLOOD_SECONDS),
        String(garbageSize),
        contender.garbageShape,
      ],
      {
        timeoutMs: (FLOOD_SECONDS + 10) * 1000,
      },
    );
  const start = performance.now();
  for (let i = 0; i < FLOOD_KNOCKS; i++) {
    const due = start + 50 + i * KNOCK_INTERVAL_MS;
    await sleep(Math.max(0, due - performance.now()));
    sender.stdin!.write(`${knocks[i]!.toString('hex')}\n`);
  }
  const flooded = await flood;
  const cpu = meter();
  sender.stdin!.end();
  if (flooded.code !== 0) throw new Error(`the flooder failed: ${flooded.stderr}`);
  const { garbageSentRate, garbageSent } = (() => {
    const report = JSON.parse(flooded.stdout) as { sent: number; rate: number };
    return { garbageSent: report.sent, garbageSentRate: report.rate };
  })();
  // fwknopd works through its backlog after the flood ends: give it the time a user would.
  await sleep(3000);
  const memory = residentMiB(contender.pid());
  const open = await contender.openPorts();
  const validOpened = ports(FLOOD_PORT, FLOOD_KNOCKS).filter((port) => open.has(port)).length;
  return {
    garbageSent,
    garbageRate: garbageSentRate,
    validSent: FLOOD_KNOCKS,
    validOpened,
    openedShare: validOpened / FLOOD_KNOCKS,
    coreShare: cpu.coreShare,
    rssMiB: memory.rss,
    peakRssMiB: memory.peak,
  };
}

const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'umbra-bench-'));
  const topo = await Topology.create({ name: 'bench', hosts: ['umbra', 'fwknop', 'client', 'flooder'] });
  topo.addCleanup(() => rmSync(work, { recursive: true, force: true }));
  try {
    const flooder = compileTool(work, 'flood');
    const knockConnect = compileTool(work, 'knock-connect');
    const servicePorts = [...ports(LATENCY_PORT, KNOCKS), ...ports(FLOOD_PORT, FLOOD_KNOCKS)];
    const contenders: Contender[] = [];
    for (const name of ['umbra', 'fwknop'] as const) {
      if (opts.only && opts.only !== name) continue;
      await startTcpServer(topo.host(name), { port: servicePorts, banner: 'service' });
      contenders.push(name === 'umbra' ? await setUpUmbra(topo) : await setUpFwknop(topo));
    }
    const results: Record<string, { latency: LatencyResult; flood?: FloodResult }> = {};
    await startTcpServer(topo.host('flooder'), { port: ports(LATENCY_PORT, KNOCKS), banner: 'service' });
    log(`floor: ${KNOCKS} connects to a host with no firewall`);
    results.floor = {
      latency: await measureLatency(topo, topo.host('flooder'), async () => Buffer.alloc(200), knockConnect),
    };
    for (const contender of contenders) {
      log(`${contender.name}: ${KNOCKS} knocks, knock → first connect`);
      const latency = await measureLatency(
        topo,
        contender.host,
        contender.makeKnock,
        knockConnect,
        contender.pid(),
      );
      log(
        `${contender.name}: median ${fmt(latency.median)} ms, p99 ${fmt(latency.p99)} ms, ${latency.failures} failed`,
      );
      const processing = contender.processingMs?.();
      if (processing?.length) {
        latency.gatewayMedian = percentile(processing, 50);
        latency.gatewayP99 = percentile(processing, 99);
        log(
          `${contender.name}: its own time, kernel receive → pinhole: median ${fmt(latency.gatewayMedian)} ms, p99 ${fmt(latency.gatewayP99)} ms`,
        );
      }
      log(
        `${contender.name}: flood of ${FLOOD_RATE}/s for ${FLOOD_SECONDS} s with a valid knock every ${KNOCK_INTERVAL_MS} ms`,
      );
      const flood = await measureFlood(topo, contender, flooder);
      log(
        `${contender.name}: ${flood.validOpened}/${flood.validSent} valid knocks opened, CPU ${fmt(flood.coreShare * 100, 0)}% of a core`,
      );
      results[contender.name] = { latency, flood };
      await contender.stop();
    }
    report(results);
    if (opts.json) writeFileSync(opts.json, JSON.stringify(results, null, 2));
  } finally {
    await topo.destroy();
  }
}

function report(results: Record<string, { latency: LatencyResult; flood?: FloodResult }>): void {
  const rows = Object.entries(results);
  console.log(`\n### Knock → first TCP connect (${KNOCKS} knocks each)\n`);
  console.log(
    "| gateway | median ms | p95 ms | p99 ms | failed | gateway's own median / p99 ms | resident MiB |",
  );
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const [name, { latency: l }] of rows)
    console.log(
      `| ${name === 'floor' ? 'no firewall (floor)' : name} | ${fmt(l.median)} | ${fmt(l.p95)} | ${fmt(l.p99)} | ${l.failures} | ${l.gatewayMedian === undefined ? '' : `${fmt(l.gatewayMedian)} / ${fmt(l.gatewayP99!)}`} | ${fmt(l.rssMiB, 1)} |`,
    );
  const umbra = results.umbra?.latency;
  const fwknop = results.fwknop?.latency;
  if (umbra && fwknop)
    console.log(
      `\nfwknopd / Umbra: median ${fmt(fwknop.median / umbra.median, 1)}×, p99 ${fmt(fwknop.p99 / umbra.p99, 1)}×`,
    );
  console.log(
    `\n### Flood: worst-case garbage at ${FLOOD_RATE}/s for ${FLOOD_SECONDS} s, a valid knock every ${KNOCK_INTERVAL_MS} ms\n`,
  );
  console.log(
    '| gateway | garbage sent (rate/s) | valid knocks opened | share | gateway CPU (of one core) | resident MiB (peak) |',
  );
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const [name, { flood: f }] of rows)
    if (f)
      console.log(
        `| ${name} | ${f.garbageSent} (${fmt(f.garbageRate, 0)}) | ${f.validOpened}/${f.validSent} | ${fmt(f.openedShare * 100, 0)}% | ${fmt(f.coreShare * 100, 0)}% | ${fmt(f.rssMiB, 1)} (${fmt(f.peakRssMiB, 1)}) |`,
      );
}

await main();
