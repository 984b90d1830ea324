// Runs Umbra's own programs inside topology hosts, through the same entry points a user runs
// (node_modules/.bin/umbra-gateway and node_modules/.bin/umbra), so the integration tests are
// black-box tests of the CLI contract.

import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecResult, HostHandle } from './topology.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const GATEWAY_BIN = join(REPO_ROOT, 'node_modules/.bin/umbra-gateway');
/** The gateway as the firmware ships it (`npm run build`): plain JavaScript, no type stripping. */
export const GATEWAY_BUNDLE = join(REPO_ROOT, 'firmware/dist/umbra-gateway.mjs');
export const CLIENT_BIN = join(REPO_ROOT, 'node_modules/.bin/umbra');
const SEND_UDP = join(REPO_ROOT, 'test-rig/src/tools/send-udp.ts');

/** The bins start with `#!/usr/bin/env node`: make sure that finds the Node running us. */
export const TOOL_ENV: NodeJS.ProcessEnv = {
  ...process.env,
  PATH: `${dirname(process.execPath)}:${process.env.PATH}`,
};

const READY_MESSAGE = 'gateway dark and listening for knocks';
const READY_TIMEOUT_MS = 15_000;

export interface ClientIdentity {
  name: string;
  file: string;
  publicKey: string;
}

/** A scratch directory removed when the topology is destroyed. */
export function scratchDir(host: HostHandle, label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `umbra-${label}-`));
  host.topology.addCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function runOk(host: HostHandle, argv: string[], timeoutMs = 20_000): Promise<ExecResult> {
  return host.run(argv, { env: TOOL_ENV, timeoutMs });
}

export async function createClientIdentity(
  host: HostHandle,
  dir: string,
  name: string,
): Promise<ClientIdentity> {
  const file = join(dir, `${name}.identity`);
  const result = await runOk(host, [CLIENT_BIN, 'keygen', '--out', file]);
  return { name, file, publicKey: result.stdout.trim() };
}

export interface KnockOptions {
  gateway: string;
  gatewayKey: string;
  identity: ClientIdentity;
  access: string;
  source?: string;
}

function knockArgs(options: KnockOptions): string[] {
  return [
    CLIENT_BIN,
    'knock',
    '--gateway',
    options.gateway,
    '--gateway-key',
    options.gatewayKey,
    '--identity',
    options.identity.file,
    '--access',
    options.access,
    ...(options.source ? ['--source', options.source] : []),
  ];
}

export async function knock(host: HostHandle, options: KnockOptions): Promise<void> {
  await runOk(host, knockArgs(options));
}

/** Builds a knock without sending it (`umbra knock --print`), for replays. */
export async function buildKnock(host: HostHandle, options: KnockOptions): Promise<string> {
  return (await runOk(host, [...knockArgs(options), '--print'])).stdout.trim();
}

/** Sends raw bytes (hex) as one UDP datagram from `host`. */
export async function sendRaw(host: HostHandle, address: string, port: number, hex: string): Promise<void> {
  await runOk(host, [process.execPath, SEND_UDP, address, String(port), hex]);
}

export interface GatewayClientEntry {
  name: string;
  publicKey: string;
  allow: string[];
  ttlSeconds?: number;
}

export interface GatewayOptions {
  clients: GatewayClientEntry[];
  spaPort?: number;
  /** Extra configuration keys, merged last. */
  extra?: Record<string, unknown>;
  /** Run the firmware bundle instead of the workspace's TypeScript (benchmarks measure what ships). */
  bundle?: boolean;
}

export class GatewayProcess {
  readonly host: HostHandle;
  readonly dir: string;
  readonly configPath: string;
  readonly publicKey: string;
  readonly spaPort: number;
  readonly logs: Array<Record<string, unknown>> = [];
  stderr = '';
  private child: ChildProcess | null = null;
  private waiters: Array<() => void> = [];
  private readonly command: string[];
  /** How this gateway is named to `run`, `pinholes` and `stats`: --config FILE, or --dir DIR. */
  private readonly selector: string[];
  private readonly runExtra: string[];

  private constructor(
    host: HostHandle,
    dir: string,
    configPath: string,
    publicKey: string,
    spaPort: number,
    command: string[],
    selector: string[] = ['--config', configPath],
    runExtra: string[] = [],
  ) {
    this.host = host;
    this.command = command;
    this.selector = selector;
    this.runExtra = runExtra;
    this.dir = dir;
    this.configPath = configPath;
    this.publicKey = publicKey;
    this.spaPort = spaPort;
  }

  /** Creates keys and a configuration in a scratch directory, then starts the gateway and waits until it is dark. */
  static async start(host: HostHandle, options: GatewayOptions): Promise<GatewayProcess> {
    const dir = scratchDir(host, 'gateway');
    const keyDir = join(dir, 'keys');
    const publicKey = (await runOk(host, [GATEWAY_BIN, 'keygen', '--dir', keyDir])).stdout.trim();
    const spaPort = options.spaPort ?? 62201;
    const config = {
      interface: host.ifname,
      spaPort,
      keyDir,
      stateDir: join(dir, 'state'),
      log: { level: 'info', rejectionsPerSecond: 1000 },
      clients: options.clients,
      ...options.extra,
    };
    mkdirSync(join(dir, 'state'), { recursive: true });
    const configPath = join(dir, 'gateway.json');
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    if (options.bundle && !existsSync(GATEWAY_BUNDLE))
      throw new Error(`${GATEWAY_BUNDLE} is missing: run \`npm run build\` first`);
    const command = options.bundle ? [process.execPath, GATEWAY_BUNDLE] : [GATEWAY_BIN];
    const gateway = new GatewayProcess(host, dir, configPath, publicKey, spaPort, command);
    await gateway.launch();
    return gateway;
  }

  /**
   * Starts a gateway enrolled with a controller (`umbra-gateway enroll` filled `dir`):
   * `run --dir DIR --interface IF`, with `extra` settings in a configuration file if given.
   */
  static async startEnrolled(
    host: HostHandle,
    options: { dir: string; extra?: Record<string, unknown> },
  ): Promise<GatewayProcess> {
    const publicKey = readFileSync(join(options.dir, 'gateway.pub'), 'utf8').trim();
    const configPath = join(options.dir, 'settings.json');
    const runExtra: string[] = ['--interface', host.ifname];
    if (options.extra) {
      writeFileSync(configPath, JSON.stringify(options.extra, null, 2));
      runExtra.push('--config', configPath);
    }
    const gateway = new GatewayProcess(
      host,
      options.dir,
      configPath,
      publicKey,
      Number(options.extra?.spaPort ?? 62201),
      [GATEWAY_BIN],
      ['--dir', options.dir],
      runExtra,
    );
    await gateway.launch();
    return gateway;
  }

  /** Starts (or restarts) the process and waits for its ready line. */
  async launch(): Promise<void> {
    const child = this.host.spawn([...this.command, 'run', ...this.selector, ...this.runExtra], {
      env: TOOL_ENV,
    });
    this.child = child;
    let buffered = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          this.logs.push(JSON.parse(line));
        } catch {
          this.logs.push({ msg: line });
        }
        newline = buffered.indexOf('\n');
      }
      for (const wake of this.waiters.splice(0)) wake();
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    const from = this.logs.length;
    await this.waitForLog((line) => line.msg === READY_MESSAGE, READY_TIMEOUT_MS, from).catch(
      (error: Error) => {
        throw new Error(`${error.message}\nstderr: ${this.stderr}`);
      },
    );
  }

  /** Resolves with the first log line (from index `from`) that matches, or rejects after the timeout. */
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs: number,
    from = 0,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolvePromise, reject) => {
      const deadline = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(
          new Error(
            `gateway: no matching log line within ${timeoutMs} ms; last lines: ${JSON.stringify(this.logs.slice(-5))}`,
          ),
        );
      }, timeoutMs);
      const check = () => {
        const found = this.logs.slice(from).find(match);
        if (found) {
          clearTimeout(deadline);
          resolvePromise(found);
          return;
        }
        if (this.child?.exitCode !== null || this.child?.signalCode !== null) {
          clearTimeout(deadline);
          reject(
            new Error(
              `gateway exited (${this.child?.exitCode ?? this.child?.signalCode}); stderr: ${this.stderr}`,
            ),
          );
          return;
        }
        this.waiters.push(check);
      };
      check();
    });
  }

  rejections(reason?: string): Array<Record<string, unknown>> {
    return this.logs.filter((line) => line.msg === 'knock rejected' && (!reason || line.reason === reason));
  }

  async pinholes(): Promise<Array<{ source: string; protocol: string; port: number; secondsLeft: number }>> {
    return JSON.parse((await runOk(this.host, [GATEWAY_BIN, 'pinholes', ...this.selector])).stdout);
  }

  /** The counters the running gateway writes each second (`umbra-gateway stats`). */
  async stats(): Promise<Record<string, unknown>> {
    return JSON.parse((await runOk(this.host, [GATEWAY_BIN, 'stats', ...this.selector])).stdout);
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** SIGTERM and wait for a clean exit. */
  async stop(): Promise<number | null> {
    return this.end('SIGTERM');
  }

  /** kill -9: no chance to clean up, as in a crash or a power cut of the service. */
  async kill9(): Promise<void> {
    await this.end('SIGKILL');
  }

  private end(signal: NodeJS.Signals): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null)
      return Promise.resolve(child?.exitCode ?? null);
    return new Promise((resolvePromise) => {
      child.once('exit', (code) => resolvePromise(code));
      // `ip netns exec` execs the command, so the child's pid is the gateway's own.
      process.kill(child.pid!, signal);
    });
  }
}
