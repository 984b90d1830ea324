// `umbra-controller` inside a topology host: its admin commands, and `serve` as a process the test
// can kill -9 and start again, as an operator's controller crashes and comes back.

import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { LineReader } from './lines.ts';
import type { HostHandle } from './topology.ts';
import { REPO_ROOT, TOOL_ENV } from './umbra.ts';

export const CONTROLLER_BIN = join(REPO_ROOT, 'node_modules/.bin/umbra-controller');
const READY = /Server listening/;
const READY_TIMEOUT_MS = 20_000;

export interface ControllerOptions {
  /** The data directory (CA, settings), shared by controllers that share a database. */
  data: string;
  /** HOST:PORT to listen on, inside the host's namespace. */
  listen: string;
  /** postgres://… when the records live in PostgreSQL. */
  database?: string;
  /** `serve --attest-interval`: how often TPM gateways are re-attested (default 600 s). */
  attestIntervalSeconds?: number;
}

export class ControllerProcess {
  readonly host: HostHandle;
  readonly options: ControllerOptions;
  private child: ChildProcess | null = null;
  output: LineReader | null = null;

  private constructor(host: HostHandle, options: ControllerOptions) {
    this.host = host;
    this.options = options;
  }

  static async start(host: HostHandle, options: ControllerOptions): Promise<ControllerProcess> {
    const controller = new ControllerProcess(host, options);
    await controller.launch();
    return controller;
  }

  /** The admin command line for these options, e.g. `admin('identity', 'revoke', 'alice')`. */
  adminArgs(...args: string[]): string[] {
    return [
      CONTROLLER_BIN,
      ...args,
      '--data',
      this.options.data,
      ...(this.options.database ? ['--database', this.options.database] : []),
    ];
  }

  /** Runs an admin command in this controller's host; rejects with its stderr unless it exits 0. */
  async admin(...args: string[]): Promise<string> {
    return (await this.host.run(this.adminArgs(...args), { env: TOOL_ENV })).stdout;
  }

  async launch(): Promise<void> {
    const { data, listen, database, attestIntervalSeconds } = this.options;
    const child = this.host.spawn(
      [
        CONTROLLER_BIN,
        'serve',
        '--data',
        data,
        '--listen',
        listen,
        ...(database ? ['--database', database] : []),
        ...(attestIntervalSeconds ? ['--attest-interval', String(attestIntervalSeconds)] : []),
      ],
      { env: TOOL_ENV },
    );
    this.child = child;
    this.output = LineReader.ofChild(`controller ${listen}`, child);
    await this.output.waitFor(READY, READY_TIMEOUT_MS);
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** kill -9, as a crash: no goodbye to the gateways. */
  kill9(): Promise<void> {
    return this.end('SIGKILL');
  }

  stop(): Promise<void> {
    return this.end('SIGTERM');
  }

  private end(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      child.once('exit', () => resolve());
      // `ip netns exec` execs the command, so the child's pid is the controller's own.
      process.kill(child.pid!, signal);
    });
  }
}
