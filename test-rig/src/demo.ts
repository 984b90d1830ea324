// The end-to-end demo (`bash scripts/demo.sh`): a gateway, a client and an outsider in throwaway
// network namespaces. The outsider finds nothing; the client knocks, connects, and the pinhole
// expires on its own. Everything is torn down at the end, also on Ctrl-C.

import { parseArgs } from 'node:util';
import {
  type ClientIdentity,
  createClientIdentity,
  GatewayProcess,
  knock,
  nmapScan,
  startTcpServer,
  Topology,
  tcpProbe,
  UDP_DEFAULT_PORTS,
} from './index.ts';
import { scratchDir } from './umbra.ts';

const { values } = parseArgs({
  options: { help: { type: 'boolean', short: 'h' }, ttl: { type: 'string', default: '10' } },
});
if (values.help) {
  console.log(`Usage: bash scripts/demo.sh [--ttl SECONDS]

Builds three network namespaces on a private bridge (192.0.2.0/24, 2001:db8::/64):
gateway (a protected service on tcp/8080 behind Umbra), client (an enrolled identity) and
outsider (nobody). Shows the outsider's nmap scans finding nothing, the client's knock and
connection, the outsider still finding nothing, and the pinhole expiring after --ttl seconds
(default 10). Needs root; removes everything it made when it ends.`);
  process.exit(0);
}
const TTL_SECONDS = Number(values.ttl);
if (!Number.isInteger(TTL_SECONDS) || TTL_SECONDS < 2 || TTL_SECONDS > 120) {
  console.error('--ttl: expected whole seconds from 2 to 120');
  process.exit(2);
}
if (process.getuid?.() !== 0) {
  console.error('the demo builds network namespaces and needs root: run it as root (bash scripts/demo.sh)');
  process.exit(1);
}

const SERVICE_PORT = 8080;
const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
let step = 0;
const say = (text: string) => console.log(`\n${bold(`[${++step}] ${text}`)}`);
const detail = (text: string) => console.log(`    ${text}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function scan(topo: Topology, label: string): Promise<void> {
  const outsider = topo.host('outsider');
  const target = topo.host('gateway').ipv4;
  const syn = await nmapScan(outsider, target, 'tcp-syn');
  detail(
    `nmap -sS -p- ${target} (${label}): ${describe(syn.stateCounts)} (${(syn.elapsedMs / 1000).toFixed(1)} s)`,
  );
  const udp = await nmapScan(outsider, target, 'udp');
  detail(`nmap -sU -p ${UDP_DEFAULT_PORTS} ${target}: ${describe(udp.stateCounts)}`);
}

function describe(counts: Record<string, number>): string {
  return Object.entries(counts)
    .map(([state, n]) => `${n} ${state}`)
    .join(', ');
}

async function tryConnect(topo: Topology, who: 'client' | 'outsider'): Promise<string> {
  const probe = await tcpProbe(topo.host(who), topo.host('gateway').ipv4, SERVICE_PORT, {
    timeoutMs: 1500,
    readBanner: true,
  });
  if (probe.result === 'connected')
    return `connected in ${probe.ms.toFixed(1)} ms; the service says "${probe.banner ?? ''}"`;
  if (probe.result === 'timeout') return 'no answer at all (no SYN-ACK, no reset) within 1.5 s';
  return probe.result;
}

async function main(): Promise<void> {
  const topo = await Topology.create({ name: 'demo', hosts: ['gateway', 'client', 'outsider'] });
  try {
    const gw = topo.host('gateway');
    const client = topo.host('client');
    console.log(bold('Umbra demo: a gateway that answers nothing until a valid knock'));
    detail(`gateway  ${gw.ipv4}  ${gw.ipv6}  (protected service on tcp/${SERVICE_PORT})`);
    detail(`client   ${client.ipv4}  ${client.ipv6}  (holds an enrolled identity)`);
    detail(`outsider ${topo.host('outsider').ipv4}  ${topo.host('outsider').ipv6}  (holds nothing)`);

    say('Set up: a client identity, the protected service, and the gateway');
    const identity: ClientIdentity = await createClientIdentity(client, scratchDir(client, 'demo'), 'alice');
    detail(`umbra keygen --out alice.identity  →  ${identity.publicKey}`);
    await startTcpServer(gw, { port: SERVICE_PORT, banner: 'hello from the protected service' });
    const gateway = await GatewayProcess.start(gw, {
      clients: [
        {
          name: 'alice',
          publicKey: identity.publicKey,
          allow: [`tcp/${SERVICE_PORT}`],
          ttlSeconds: TTL_SECONDS,
        },
      ],
    });
    detail(`umbra-gateway run --config gateway.json  (gateway key ${gateway.publicKey})`);
    detail(`alice may open tcp/${SERVICE_PORT} for ${TTL_SECONDS} s`);

    say('The outsider scans the gateway');
    await scan(topo, 'before any knock');

    say(`The client tries tcp/${SERVICE_PORT} without knocking`);
    detail(await tryConnect(topo, 'client'));

    say('The client knocks: one UDP datagram, encrypted and signed');
    const from = gateway.logs.length;
    await knock(client, {
      gateway: gw.ipv4,
      gatewayKey: gateway.publicKey,
      identity,
      access: `tcp/${SERVICE_PORT}`,
    });
    detail(
      `umbra knock --gateway ${gw.ipv4} --gateway-key ${gateway.publicKey.slice(0, 8)}… --identity alice.identity --access tcp/${SERVICE_PORT}`,
    );
    const opened = await gateway.waitForLog((line) => line.msg === 'pinhole opened', 5000, from);
    detail(
      `gateway: pinhole opened for ${opened.source} ${opened.access}, ${opened.latencyMs} ms after the knock arrived`,
    );
    detail(`client: ${await tryConnect(topo, 'client')}`);
    for (const pinhole of await gateway.pinholes())
      detail(
        `umbra-gateway pinholes: ${pinhole.source} ${pinhole.protocol}/${pinhole.port}, ${pinhole.secondsLeft} s left`,
      );

    say('Meanwhile the outsider tries the same port, and scans again');
    detail(`outsider: ${await tryConnect(topo, 'outsider')}`);
    await scan(topo, 'while the client is in');

    say(`The pinhole expires after ${TTL_SECONDS} s: the kernel removes it, even if the gateway were dead`);
    const left = Math.max(0, ...(await gateway.pinholes()).map((p) => p.secondsLeft));
    await sleep((left + 1.2) * 1000);
    detail(`umbra-gateway pinholes: ${JSON.stringify(await gateway.pinholes())}`);
    detail(`client: ${await tryConnect(topo, 'client')}`);

    say('What the gateway logged (JSON lines; rejections carry the source and the reason)');
    for (const line of gateway.logs
      .filter((l) => l.msg !== 'gateway dark and listening for knocks')
      .slice(-4))
      detail(
        JSON.stringify({
          msg: line.msg,
          source: line.source,
          identity: line.identity,
          access: line.access,
          reason: line.reason,
        }),
      );
    await gateway.stop();
  } finally {
    await topo.destroy();
    console.log('\nDone: namespaces and processes removed.');
  }
}

await main();
