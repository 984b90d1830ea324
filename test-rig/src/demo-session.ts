// The end-to-end demo (`bash scripts/demo.sh`): a whole Umbra perimeter in throwaway network
// namespaces — a controller, an enrolled gateway, a PostgreSQL server behind it, a client and an
// outsider — driven with the same commands an operator and a user type. Everything is torn down at
// the end, also on Ctrl-C.

import type { ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { LineReader } from './lines.ts';
import { nmapScan } from './scan.ts';
import {
  BACKEND_ADDRESS,
  BACKEND_PORT,
  buildSessionRig,
  extendBootPcr,
  FIRMWARE_VERSION,
  type SessionRig,
} from './session-rig.ts';

/** Short, so that the demo shows a re-attestation catching a drift within seconds (default: 600 s). */
const ATTEST_INTERVAL_SECONDS = 2;

import { TOOL_ENV } from './umbra.ts';

const { values } = parseArgs({ options: { help: { type: 'boolean', short: 'h' } }, strict: true });
if (values.help) {
  console.log(`Usage: bash scripts/demo.sh            the perimeter: controller, gateway, tunnels, revocation
       bash scripts/demo.sh --standalone   the dark gateway alone, with a policy file (no controller)

Builds network namespaces on a private bridge (192.0.2.0/24): a controller (umbra-controller serve),
a gateway enrolled with it (umbra-gateway run --dir), a PostgreSQL server reachable only through the
gateway, a client and an outsider. Shows the outsider finding nothing, a device enrolling and
reaching PostgreSQL with psql through \`umbra connect\`, a device without a policy refused (and the
reason in the audit log), and a revocation closing a live psql session. Needs root; removes
everything it made when it ends.`);
  process.exit(0);
}
if (process.getuid?.() !== 0) {
  console.error('the demo builds network namespaces and needs root: run it as root (bash scripts/demo.sh)');
  process.exit(1);
}

const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
let step = 0;
const say = (text: string) => console.log(`\n${bold(`[${++step}] ${text}`)}`);
const detail = (text: string) => console.log(`    ${text}`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let rig: SessionRig | undefined;
const children: ChildProcess[] = [];

async function main(): Promise<void> {
  say(
    'Building the perimeter: controller, gateway (enrolled with a one-time token and its TPM), client, outsider, backend',
  );
  rig = await buildSessionRig({ storage: 'sqlite', tpm: { attestIntervalSeconds: ATTEST_INTERVAL_SECONDS } });
  const gatewayAddress = rig.topology.host('gateway').ipv4;
  detail(`controller  ${rig.topology.host('ctl').ipv4}:8444   umbra-controller serve`);
  detail(
    `gateway     ${gatewayAddress}          umbra-gateway run --dir … --interface eth0 (dark, linked to the controller)`,
  );
  detail(`backend     ${BACKEND_ADDRESS}:${BACKEND_PORT}   PostgreSQL, on a private link behind the gateway`);
  const [attested] = JSON.parse(await rig.admin.admin('gateway', 'list')) as GatewayListing[];
  detail(
    `$ umbra-gateway enroll --token umbra1.… --tpm ${rig.swtpm?.address ?? '?'} --firmware-version ${FIRMWARE_VERSION}`,
  );
  detail(
    `attestation: ${attested?.attestation} (EK ${attested?.ekHash?.slice(0, 16)}…: the EK certificate chains to the ` +
      'TPM maker CA added with ekca add, the AK was proven with MakeCredential, the boot PCRs match the golden values)',
  );

  say('The operator publishes the service and a policy');
  const admin = (...args: string[]) => {
    detail(`$ umbra-controller ${args.join(' ')}`);
    return rig!.admin.admin(...args);
  };
  const alice = await rig.enrollDevice('alice', ['staff']);
  detail(
    '$ umbra enroll --token umbra1.… --dir ~/.umbra   (alice, group staff: her keys never leave her device)',
  );
  const bob = await rig.enrollDevice('bob', ['contractors']);
  detail('$ umbra enroll --token umbra1.… --dir ~/.umbra   (bob, group contractors)');
  await admin(
    'service',
    'add',
    '--name',
    'db',
    '--gateway',
    'branch1',
    '--backend',
    `${BACKEND_ADDRESS}:${BACKEND_PORT}`,
  );
  await admin('policy', 'add', '--group', 'staff', '--service', 'db', '--ttl', '30s');

  say(`The outsider scans the gateway: nothing answers`);
  const scan = await nmapScan(rig.topology.host('outsider'), gatewayAddress, 'tcp-syn');
  detail(
    `nmap -sS -p- ${gatewayAddress}: ${JSON.stringify(scan.stateCounts)} (${(scan.elapsedMs / 1000).toFixed(1)} s)`,
  );

  const client = rig.topology.host('client');
  const forward = async (dir: string, port: number) => {
    children.push((await rig!.startConnect(dir, 'db', port)).child);
  };
  const psql = (port: number, sql: string) =>
    client.exec(
      ['psql', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-XAtc', sql],
      {
        env: { ...TOOL_ENV, PGCONNECT_TIMEOUT: '5' },
        timeoutMs: 20_000,
      },
    );

  say('alice: umbra connect db --listen 127.0.0.1:15432, then psql through it');
  await forward(alice, 15_432);
  const version = await psql(15_432, 'select version()');
  detail(
    version.code === 0
      ? `psql: ${version.stdout.trim().slice(0, 60)}…`
      : `psql failed: ${version.stderr.trim()}`,
  );
  const opened = rig.gateway.logs.find((line) => line.msg === 'pinhole opened');
  if (opened)
    detail(
      `gateway: pinhole for ${opened.source} → tcp/8443 opened ${opened.latencyMs} ms after the knock, decided by the controller`,
    );

  say('bob has no policy for db: his knock is refused, nothing opens');
  await forward(bob, 15_433);
  const refused = await psql(15_433, 'select 1');
  detail(`psql: ${refused.code === 0 ? 'connected?!' : refused.stderr.trim().split('\n')[0]}`);
  const audit = (await rig.admin.admin('audit'))
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line));
  const denial = audit.reverse().find((entry) => entry.action === 'knock' && entry.decision === 'deny');
  if (denial) detail(`audit: ${denial.decision} — ${denial.reason}`);

  say('alice keeps psql open; the operator revokes her');
  const session = client.spawn(
    ['psql', '-h', '127.0.0.1', '-p', '15432', '-U', 'postgres', '-d', 'postgres', '-XAt'],
    {
      env: TOOL_ENV,
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  children.push(session);
  const output = LineReader.ofChild('psql', session);
  session.stdin!.write("select 'live session';\n");
  await output.waitFor(/live session/, 15_000);
  detail('psql: live session');
  const closed = new Promise<number>((resolve) => session.once('exit', () => resolve(performance.now())));
  const started = performance.now();
  const revoking = admin('identity', 'revoke', 'alice');
  const poke = setInterval(() => session.stdin!.writable && session.stdin!.write('select 1;\n'), 50);
  const ended = await Promise.race([closed, sleep(10_000).then(() => Number.NaN)]);
  clearInterval(poke);
  await revoking;
  detail(
    Number.isFinite(ended)
      ? `alice's psql session was closed ${Math.round(ended - started)} ms after the revoke command started`
      : 'the session was not closed within 10 s',
  );

  say(
    "The gateway's boot state changes (PCR 7 extended, as other firmware would): the controller quarantines it",
  );
  await extendBootPcr(rig.swtpm!.address, 7);
  const deadline = Date.now() + (ATTEST_INTERVAL_SECONDS + 10) * 1000;
  let listing: GatewayListing | undefined;
  while (Date.now() < deadline) {
    [listing] = JSON.parse(await rig.admin.admin('gateway', 'list')) as GatewayListing[];
    if (listing?.attestation === 'quarantined') break;
    await sleep(250);
  }
  detail(
    listing?.attestation === 'quarantined'
      ? `gateway list: quarantined — ${listing.quarantineReason}; no knock through it opens anything until \`gateway release\``
      : `gateway list: still ${listing?.attestation} after ${ATTEST_INTERVAL_SECONDS + 10} s`,
  );

  say('Done: tearing everything down');
}

interface GatewayListing {
  attestation: string;
  quarantineReason?: string;
  ekHash: string | null;
}

async function cleanup(): Promise<void> {
  for (const child of children) if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGTERM');
  await rig?.destroy();
}

main().then(
  () => cleanup(),
  async (error: unknown) => {
    console.error(`demo failed: ${(error as Error).message}`);
    await cleanup();
    process.exitCode = 1;
  },
);
