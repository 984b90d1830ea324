// A whole Umbra deployment in namespaces, built the way an operator builds one, with the real CLIs:
//
//   ctl (and ctl2) ── controller(s): `umbra-controller serve`, SQLite or a shared PostgreSQL
//   gateway        ── `umbra-gateway run --dir`, enrolled with a gateway token
//   client         ── `umbra enroll` / `umbra connect`, psql
//   outsider       ── never given anything; scans
//   backend        ── a real PostgreSQL server, reachable only over a link from the gateway
//
// Hosts share one bridge (192.0.2.0/24); the backend leaves it and sits on its own veth to the
// gateway (198.51.100.0/24), so the only way to it is through the gateway. The controllers answer
// to one name, controller.umbra.test, which each host resolves through its own /etc/netns hosts
// file — how the test sends the gateway to one controller and the client to the other.

import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestPostgres, type TestPostgres } from '@umbra/controller';
import { openTransport, TPM_ALG, TPM_RC, Tpm, TpmError } from '@umbra/tpm2';
import { type Swtpm, startSwtpm } from '@umbra/tpm2/testing';
import { CONTROLLER_BIN, ControllerProcess } from './controller.ts';
import { LineReader } from './lines.ts';
import type { Host } from './topology.ts';
import { Topology } from './topology.ts';
import { CLIENT_BIN, GATEWAY_BIN, GatewayProcess, TOOL_ENV } from './umbra.ts';

export const CONTROLLER_NAME = 'controller.umbra.test';
export const CONTROLLER_PORT = 8444;
export const BACKEND_ADDRESS = '198.51.100.2';
const GATEWAY_BACKEND_ADDRESS = '198.51.100.1';
export const BACKEND_PORT = 5432;
const CONNECT_READY_MS = 15_000;
/** pino's level for warn; error and fatal are above it. */
const WARN_LEVEL = 40;

/** The level of a pino JSON line, or NaN for any other line. */
function pinoLevel(line: string): number {
  try {
    return Number((JSON.parse(line) as { level?: unknown }).level);
  } catch {
    return Number.NaN;
  }
}

export interface SessionRigOptions {
  /** `postgres`: the controllers' records in a PostgreSQL on ctl, and a second controller on ctl2. */
  storage: 'sqlite' | 'postgres';
  /** Extra gateway settings (e.g. controller.failMode). */
  gatewaySettings?: Record<string, unknown>;
  /**
   * Enroll the gateway with a TPM: a swtpm on a Unix socket (reachable from the gateway's namespace),
   * its EK CA added with `ekca add`, its boot PCRs recorded as firmware FIRMWARE_VERSION's golden
   * values with `firmware pcrs add`, and the controllers re-attesting every `attestIntervalSeconds`.
   */
  tpm?: { attestIntervalSeconds: number };
}

/** The firmware version an attested rig's gateway reports, whose golden PCRs the rig records. */
export const FIRMWARE_VERSION = '1.0.0';

export interface UmbraConnect {
  child: ChildProcess;
  output: LineReader;
  port: number;
}

export interface SessionRig {
  topology: Topology;
  dir: string;
  controllers: ControllerProcess[];
  /** The controller admin commands go through (the first). */
  admin: ControllerProcess;
  gateway: GatewayProcess;
  backend: TestPostgres;
  storage?: TestPostgres;
  /** The gateway's TPM, when the rig was built with `tpm`. */
  swtpm?: Swtpm;
  /** Enrolls a device on the client host; returns its directory. */
  enrollDevice(name: string, groups: string[]): Promise<string>;
  /** `service add`: the service NAME (default db) is the backend's PostgreSQL, through the gateway, tunnel mode. */
  addDatabaseService(name?: string): Promise<void>;
  /** Warnings and errors the gateway and the controllers logged so far, a line each, for reports. */
  complaints(): string[];
  /** `umbra connect SERVICE --listen 127.0.0.1:PORT --dir DEVICE` on the client host, once it says it listens. */
  startConnect(device: string, service: string, port: number): Promise<UmbraConnect>;
  destroy(): Promise<void>;
}

/** Points `name` at `address` for every process in `host`'s namespace (ip netns exec bind-mounts it). */
function resolveIn(host: Host, topology: Topology, name: string, address: string): void {
  const dir = `/etc/netns/${host.netns}`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'hosts'), `127.0.0.1 localhost\n::1 localhost\n${address} ${name}\n`);
  topology.addCleanup(() => rmSync(dir, { recursive: true, force: true }));
}

export async function buildSessionRig(options: SessionRigOptions): Promise<SessionRig> {
  const two = options.storage === 'postgres';
  const topology = await Topology.create({
    name: `session-${options.storage}`,
    hosts: ['ctl', ...(two ? ['ctl2'] : []), 'gateway', 'client', 'outsider', 'backend'],
  });
  const dir = mkdtempSync(join(tmpdir(), 'umbra-session-'));
  topology.addCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const started: TestPostgres[] = [];
  let swtpm: Swtpm | undefined;
  const destroy = async () => {
    // The servers first: one running in a namespace must not outlive it.
    for (const server of started) await server.stop();
    await swtpm?.stop();
    await topology.destroy();
  };
  try {
    const ctl = topology.host('ctl');
    const gw = topology.host('gateway');
    const client = topology.host('client');
    const backendHost = topology.host('backend');

    // The backend leaves the bridge for a private link to the gateway.
    await gw.run([
      'ip',
      'link',
      'add',
      'bk0',
      'type',
      'veth',
      'peer',
      'name',
      'bk1',
      'netns',
      backendHost.netns,
    ]);
    await gw.run(['ip', 'addr', 'add', `${GATEWAY_BACKEND_ADDRESS}/24`, 'dev', 'bk0']);
    await gw.run(['ip', 'link', 'set', 'bk0', 'up']);
    await backendHost.run(['ip', 'link', 'set', backendHost.ifname, 'down']);
    await backendHost.run(['ip', 'addr', 'add', `${BACKEND_ADDRESS}/24`, 'dev', 'bk1']);
    await backendHost.run(['ip', 'link', 'set', 'bk1', 'up']);
    const backend = await startTestPostgres({
      netns: backendHost.netns,
      listenAddress: BACKEND_ADDRESS,
      trustedNetworks: [`${GATEWAY_BACKEND_ADDRESS}/32`],
      port: BACKEND_PORT,
    });
    started.push(backend);

    let storage: TestPostgres | undefined;
    if (two) {
      storage = await startTestPostgres({
        netns: ctl.netns,
        listenAddress: ctl.ipv4,
        trustedNetworks: ['192.0.2.0/24'],
      });
      started.push(storage);
    }

    // Everyone finds "the controller" by name; the gateway is sent to the last controller, the
    // client and the admin to the first, so with two an event must cross between them.
    const controllerHosts = two ? [ctl, topology.host('ctl2')] : [ctl];
    for (const host of topology.hosts()) resolveIn(host, topology, CONTROLLER_NAME, ctl.ipv4);
    resolveIn(gw, topology, CONTROLLER_NAME, controllerHosts.at(-1)!.ipv4);

    const data = join(dir, 'controller');
    const database = storage?.url;
    await ctl.run(
      [
        CONTROLLER_BIN,
        'init',
        '--data',
        data,
        '--url',
        `https://${CONTROLLER_NAME}:${CONTROLLER_PORT}`,
        ...(database ? ['--database', database] : []),
      ],
      { env: TOOL_ENV },
    );
    const controllers: ControllerProcess[] = [];
    for (const host of controllerHosts)
      controllers.push(
        await ControllerProcess.start(host, {
          data,
          listen: `${host.ipv4}:${CONTROLLER_PORT}`,
          database,
          ...(options.tpm ? { attestIntervalSeconds: options.tpm.attestIntervalSeconds } : {}),
        }),
      );
    const admin = controllers[0]!;

    // The gateway: token, enrollment over the network, then run with the controller deciding.
    const gatewayToken = (await admin.admin('gateway', 'token', 'create', '--name', 'branch1')).trim();
    const gatewayDir = join(dir, 'gateway');
    const tpmArgs: string[] = [];
    if (options.tpm) {
      swtpm = await startSwtpm({ transport: 'unix' });
      await trustSwtpm(admin, swtpm, dir, FIRMWARE_VERSION);
      tpmArgs.push('--tpm', swtpm.address, '--firmware-version', FIRMWARE_VERSION);
    }
    await gw.run([GATEWAY_BIN, 'enroll', '--token', gatewayToken, '--dir', gatewayDir, ...tpmArgs], {
      env: TOOL_ENV,
    });
    const gateway = await GatewayProcess.startEnrolled(gw, {
      dir: gatewayDir,
      extra: { log: { level: 'info', rejectionsPerSecond: 1000 }, ...options.gatewaySettings },
    });
    await gateway.waitForLog((line) => line.msg === 'policy snapshot installed', 15_000);

    const enrollDevice = async (name: string, groups: string[]): Promise<string> => {
      const token = (
        await admin.admin('token', 'create', '--identity', name, ...groups.flatMap((g) => ['--group', g]))
      ).trim();
      const device = join(dir, `device-${name}`);
      await client.run([CLIENT_BIN, 'enroll', '--token', token, '--dir', device], { env: TOOL_ENV });
      return device;
    };

    const addDatabaseService = async (name = 'db'): Promise<void> => {
      await admin.admin(
        'service',
        'add',
        '--name',
        name,
        '--gateway',
        'branch1',
        '--backend',
        `${BACKEND_ADDRESS}:${BACKEND_PORT}`,
      );
    };

    const startConnect = async (device: string, service: string, port: number): Promise<UmbraConnect> => {
      const child = client.spawn(
        [CLIENT_BIN, 'connect', service, '--listen', `127.0.0.1:${port}`, '--dir', device],
        { env: TOOL_ENV },
      );
      const output = LineReader.ofChild(`umbra connect ${service} (${device})`, child);
      await output.waitFor(/reachable at/, CONNECT_READY_MS);
      return { child, output, port };
    };

    const complaints = (): string[] => [
      ...gateway.logs
        .filter((line) => Number(line.level) >= WARN_LEVEL)
        .map((line) => `gateway: ${JSON.stringify(line)}`),
      ...controllers.flatMap((controller) =>
        (controller.output?.lines() ?? [])
          .filter((line) => Number(pinoLevel(line)) >= WARN_LEVEL)
          .map((line) => `controller: ${line}`),
      ),
    ];

    return {
      topology,
      dir,
      complaints,
      controllers,
      admin,
      gateway,
      backend,
      storage,
      ...(swtpm ? { swtpm } : {}),
      enrollDevice,
      addDatabaseService,
      startConnect,
      destroy,
    };
  } catch (error) {
    await destroy();
    throw error;
  }
}

/**
 * Has the controller trust `swtpm` as a box of `firmwareVersion`: its EK CA added (`ekca add`) and
 * its boot PCRs as they are now recorded as that firmware's golden values (`firmware pcrs add`).
 * The files are written in `dir`.
 */
/** The swtpm's local CA, root and issuer, as an operator's `ekca add FILE` reads them. */
export function ekCaBundle(swtpm: Swtpm): Buffer {
  return Buffer.concat([readFileSync(swtpm.rootCaCert), readFileSync(swtpm.issuerCert)]);
}

export async function trustSwtpm(
  admin: ControllerProcess,
  swtpm: Swtpm,
  dir: string,
  firmwareVersion: string,
): Promise<void> {
  const roots = join(dir, 'ek-ca.pem');
  writeFileSync(roots, ekCaBundle(swtpm));
  await admin.admin('ekca', 'add', roots);
  const golden = join(dir, 'golden-pcrs.json');
  writeFileSync(golden, JSON.stringify({ sha256: await bootPcrs(swtpm.address) }));
  await admin.admin('firmware', 'pcrs', 'add', firmwareVersion, golden);
}

/** SHA-256 PCRs 0-7 as the TPM holds them now, index → hex: what an operator records from a good box. */
export async function bootPcrs(address: string): Promise<Record<string, string>> {
  const tpm = await startedTpm(address);
  try {
    const read = await tpm.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7] }]);
    return Object.fromEntries(
      [...(read.banks.get(TPM_ALG.SHA256) ?? [])].map(([index, digest]) => [
        String(index),
        Buffer.from(digest).toString('hex'),
      ]),
    );
  } finally {
    await tpm.close();
  }
}

/** Extends a boot PCR, as booting other firmware would have. */
export async function extendBootPcr(address: string, pcr: number): Promise<void> {
  const tpm = await startedTpm(address);
  try {
    await tpm.pcrExtend(pcr, [{ hash: TPM_ALG.SHA256, digest: Buffer.alloc(32, 0x42) }]);
  } finally {
    await tpm.close();
  }
}

/** The TPM at `address`, started as a platform's firmware would have (a fresh swtpm is not). */
async function startedTpm(address: string): Promise<Tpm> {
  const tpm = new Tpm(openTransport(address));
  await tpm.startup().catch((error: unknown) => {
    if (!(error instanceof TpmError && error.base === TPM_RC.INITIALIZE)) throw error;
  });
  return tpm;
}
