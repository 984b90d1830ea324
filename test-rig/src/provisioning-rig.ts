// Issue 5's proofs on the real programs: a box in a namespace running `umbra-provisioner run`, a
// technician's `umbra-tech` on the other end of a socat pty pair, a controller in its own namespace,
// swtpm for the box's TPM, a fake sysfs tree for the LEDs, and FAT images on loop devices for USB
// sticks. Everything started here is ended by its pid, and everything made is removed by destroy().
//
//   ctl       ── `umbra-controller serve` (controller.umbra.test:8444)
//   box       ── `umbra-provisioner run`, then `umbra-gateway run --dir STATE/gateway`
//   outsider  ── scans
//
// The box's eth0 starts without its IPv4 address (the Topology gives every host one; the rig
// flushes it), so the address the site bundle gives it is the only one it gets.

import { type ChildProcess, execFile, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFakeLedTree, readFakeLed } from '@umbra/hal';
import { closePtyPairs, ptyPair as halPtyPair } from '@umbra/hal/testing';
import { type Swtpm, startSwtpm } from '@umbra/tpm2/testing';
import { CONTROLLER_BIN, ControllerProcess } from './controller.ts';
import { trustSwtpm } from './session-rig.ts';
import type { Host } from './topology.ts';
import { Topology } from './topology.ts';
import { REPO_ROOT, TOOL_ENV } from './umbra.ts';

export const PROVISIONER_BIN = join(REPO_ROOT, 'node_modules/.bin/umbra-provisioner');
export const TECH_BIN = join(REPO_ROOT, 'node_modules/.bin/umbra-tech');
export const CONTROLLER_NAME = 'controller.umbra.test';
export const CONTROLLER_PORT = 8444;
export const CONTROLLER_URL = `https://${CONTROLLER_NAME}:${CONTROLLER_PORT}`;
/** What the site bundle gives the box (its Topology address, .11, is flushed at start). */
export const BOX_ADDRESS = '192.0.2.50';
export const FIRMWARE_VERSION = '1.0.0';
export const BOX_SERIAL = 'UMB-TEST-0001';
/** The fake board's LED names (a board file written by the rig, without a button: see below). */
export const LEDS = { status: 'box:green:status', fault: 'box:red:fault', activity: 'box:green:activity' };

export interface ProvisioningRig {
  topology: Topology;
  dir: string;
  ctl: Host;
  box: Host;
  outsider: Host;
  controller: ControllerProcess;
  swtpm: Swtpm;
  /** The organisation's provisioning key (umbra-tech key create), and the firmware's trust dir. */
  signKey: string;
  trustDir: string;
  /** The controller's CA certificate. */
  caFile: string;
  sysfsRoot: string;
  etcDir: string;
  stateDir: string;
  usbDir: string;
  boardFile: string;
  configFile: string;
  destroy(): Promise<void>;
  /** Registers a cleanup run by destroy() (before the namespaces go). */
  onDestroy(cleanup: () => void | Promise<void>): void;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program of ours (outside any namespace: the technician's laptop), bounded. */
export function runTool(argv: string[], timeoutMs = 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { env: TOOL_ENV, timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error ? Number((error as { code?: unknown }).code ?? 1) : 0;
      resolve({ code: Number.isNaN(code) ? 1 : code, stdout, stderr });
    });
  });
}

export function tech(args: string[], timeoutMs = 90_000): Promise<RunResult> {
  return runTool([TECH_BIN, ...args], timeoutMs);
}

function resolveIn(host: Host, topology: Topology, name: string, address: string): void {
  const dir = `/etc/netns/${host.netns}`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'hosts'), `127.0.0.1 localhost\n::1 localhost\n${address} ${name}\n`);
  topology.addCleanup(() => rmSync(dir, { recursive: true, force: true }));
}

export async function buildProvisioningRig(): Promise<ProvisioningRig> {
  const topology = await Topology.create({ name: 'provisioning', hosts: ['ctl', 'box', 'outsider'] });
  const dir = mkdtempSync(join(tmpdir(), 'umbra-provisioning-'));
  const cleanups: Array<() => void | Promise<void>> = [];
  let swtpm: Swtpm | undefined;
  const destroy = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) {
      try {
        await cleanup();
      } catch {
        // keep going: the rest must still be removed
      }
    }
    await swtpm?.stop();
    await topology.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const ctl = topology.host('ctl');
    const box = topology.host('box');
    const outsider = topology.host('outsider');
    for (const host of topology.hosts()) resolveIn(host, topology, CONTROLLER_NAME, ctl.ipv4);
    // The box has not been given an address yet: only the link (and its IPv6 documentation address).
    await box.run(['ip', '-4', 'addr', 'flush', 'dev', box.ifname]);

    const data = join(dir, 'controller');
    await ctl.run([CONTROLLER_BIN, 'init', '--data', data, '--url', CONTROLLER_URL], { env: TOOL_ENV });
    const controller = await ControllerProcess.start(ctl, { data, listen: `${ctl.ipv4}:${CONTROLLER_PORT}` });

    swtpm = await startSwtpm({ transport: 'unix' });
    await trustSwtpm(controller, swtpm, dir, FIRMWARE_VERSION);

    // The organisation's provisioning key; its public half is what the firmware trusts.
    const signKey = join(dir, 'org-provisioning.key');
    const made = await tech(['key', 'create', '--out', signKey]);
    if (made.code !== 0) throw new Error(`umbra-tech key create: ${made.stderr}`);
    const trustDir = join(dir, 'firmware/provisioning-keys');
    mkdirSync(trustDir, { recursive: true });
    writeFileSync(join(trustDir, 'org.pub'), readFileSync(`${signKey}.pub`));

    // The box's "firmware": /etc (firmware version, resolv.conf), its board file and configuration.
    const etcDir = join(dir, 'etc');
    mkdirSync(join(etcDir, 'umbra'), { recursive: true });
    writeFileSync(join(etcDir, 'umbra/firmware-version'), `${FIRMWARE_VERSION}\n`);
    writeFileSync(join(etcDir, 'resolv.conf'), 'nameserver 198.51.100.53\n');
    const sysfsRoot = join(dir, 'sysfs');
    await createFakeLedTree(sysfsRoot, {
      [LEDS.status]: { maxBrightness: 1 },
      [LEDS.fault]: { maxBrightness: 1 },
      [LEDS.activity]: { maxBrightness: 1 },
    });
    // No button in the board file: onoff watches the real /sys/class/gpio, which this machine lacks
    // and which cannot be rooted at a fake tree (hal/README.md); the factory reset goes through the
    // provisioner's button wiring with a MemoryButton instead (provisioning.test.ts).
    const boardFile = join(dir, 'board.json');
    writeFileSync(
      boardFile,
      JSON.stringify({ board: 'test-box', description: 'the rig box: fake LEDs, no button', leds: LEDS }),
    );
    const configFile = join(dir, 'provisioner.json');
    writeFileSync(
      configFile,
      JSON.stringify({ firmwareVersion: FIRMWARE_VERSION, serialNumber: BOX_SERIAL }),
    );
    const stateDir = join(dir, 'state');
    mkdirSync(stateDir, { recursive: true });
    const usbDir = join(dir, 'by-uuid');
    mkdirSync(usbDir, { recursive: true });

    return {
      topology,
      dir,
      ctl,
      box,
      outsider,
      controller,
      swtpm,
      signKey,
      trustDir,
      caFile: join(data, 'ca/ca.crt'),
      sysfsRoot,
      etcDir,
      stateDir,
      usbDir,
      boardFile,
      configFile,
      destroy,
      onDestroy: (cleanup) => cleanups.push(cleanup),
    };
  } catch (error) {
    await destroy();
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// The serial cable.

export interface PtyPair {
  laptop: string;
  box: string;
  stop(): Promise<void>;
}

/** A linked pair of ptys from socat (@umbra/hal's test helper), stopped with the rig. */
export async function ptyPair(): Promise<PtyPair> {
  const [laptop, box] = await halPtyPair();
  return { laptop, box, stop: closePtyPairs };
}

function endChild(child: ChildProcess, signal: NodeJS.Signals, pid = child.pid): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !pid) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }, 5_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    try {
      process.kill(pid, signal);
    } catch {
      clearTimeout(timer);
      resolve();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The box's provisioner.

export interface ProvisionerStartOptions {
  serial?: string;
  usb?: boolean;
  /**
   * Run under `strace` holding every write of STATE/provisioner.json for this long (a delay injected
   * at the exit of the rename that lands it): the provisioner stays in the step it just recorded, so
   * a kill -9 can be aimed at any step without a hook in the provisioner.
   */
  holdStateWritesMs?: number;
  /** Another configuration file than the rig's (which sets firmwareVersion and serialNumber). */
  configFile?: string;
}

export class BoxProvisioner {
  readonly rig: ProvisioningRig;
  readonly child: ChildProcess;
  lines: string[] = [];
  private waiters: Array<() => void> = [];

  private constructor(rig: ProvisioningRig, child: ChildProcess) {
    this.rig = rig;
    this.child = child;
    let buffered = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      const parts = buffered.split('\n');
      buffered = parts.pop() ?? '';
      this.lines.push(...parts);
      for (const wake of this.waiters.splice(0)) wake();
    });
    child.stdout!.resume();
    child.once('exit', () => {
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  static async start(rig: ProvisioningRig, options: ProvisionerStartOptions): Promise<BoxProvisioner> {
    const argv = [
      PROVISIONER_BIN,
      'run',
      '--state-dir',
      rig.stateDir,
      '--sysfs-root',
      rig.sysfsRoot,
      '--tpm',
      rig.swtpm.address,
      '--trust-dir',
      rig.trustDir,
      '--etc-dir',
      rig.etcDir,
      '--interface',
      rig.box.ifname,
      '--board',
      rig.boardFile,
      '--config',
      options.configFile ?? rig.configFile,
      ...(options.serial ? ['--serial', options.serial] : []),
      ...(options.usb ? ['--usb-dir', rig.usbDir] : []),
    ];
    const wrapped = options.holdStateWritesMs
      ? [
          'strace',
          '-qq',
          '-f',
          '-o',
          '/dev/null',
          '-P',
          join(rig.stateDir, 'provisioner.json'),
          '-e',
          'trace=rename,renameat,renameat2',
          '-e',
          `inject=rename,renameat,renameat2:delay_exit=${options.holdStateWritesMs * 1000}`,
          ...argv,
        ]
      : argv;
    const child = rig.box.spawn(wrapped, { env: TOOL_ENV });
    const box = new BoxProvisioner(rig, child);
    await box.waitForLine(options.usb ? /watching .* for USB sticks/ : /serving provisioning on/, 20_000);
    return box;
  }

  /** The provisioner's own pid (under strace, the traced child's). */
  get pid(): number {
    const pid = this.child.pid!;
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    if (comm !== 'strace') return pid;
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/);
    return Number(children[0]);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  waitForLine(pattern: RegExp, timeoutMs: number, from = 0): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        reject(
          new Error(`provisioner: no line matching ${pattern} in ${timeoutMs} ms; last: ${this.tail()}`),
        );
      }, timeoutMs);
      const check = () => {
        const found = this.lines.slice(from).find((line) => pattern.test(line));
        if (found !== undefined) {
          clearTimeout(timer);
          resolve(found);
        } else if (!this.running) {
          clearTimeout(timer);
          reject(
            new Error(`provisioner exited (${this.child.exitCode ?? this.child.signalCode}): ${this.tail()}`),
          );
        } else this.waiters.push(check);
      };
      check();
    });
  }

  tail(n = 12): string {
    return this.lines.slice(-n).join('\n');
  }

  /** kill -9: a power cut, as far as the provisioner can tell. */
  async kill9(): Promise<void> {
    const exited = new Promise<void>((resolve) => {
      if (!this.running) resolve();
      else this.child.once('exit', () => resolve());
    });
    process.kill(this.pid, 'SIGKILL');
    await Promise.race([exited, sleep(5_000)]);
    if (this.running) await endChild(this.child, 'SIGKILL');
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    await endChild(this.child, 'SIGTERM', this.pid);
  }
}

export interface BoxStatus {
  state: string;
  step: string;
  at: string;
  site?: { name: string; controllerUrl: string; source: string };
  lastError?: { code: string; message: string; at: string };
  history: Array<{ state: string; step: string; at: string }>;
}

/** `umbra-provisioner status --state-dir`: the state file as JSON. */
export async function boxStatus(rig: ProvisioningRig): Promise<BoxStatus> {
  const result = await rig.box.run([PROVISIONER_BIN, 'status', '--state-dir', rig.stateDir], {
    env: TOOL_ENV,
    timeoutMs: 20_000,
  });
  return JSON.parse(result.stdout) as BoxStatus;
}

/** The state file itself, read directly (quick enough to poll while a step is held). */
export function stateFile(rig: ProvisioningRig): BoxStatus | undefined {
  try {
    return JSON.parse(readFileSync(join(rig.stateDir, 'provisioner.json'), 'utf8')) as BoxStatus;
  } catch {
    return undefined;
  }
}

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// LEDs: which status pattern the fake sysfs tree shows (hal/README.md's table).

export async function ledPattern(sysfsRoot: string): Promise<string> {
  const [status, fault, activity] = await Promise.all([
    readFakeLed(sysfsRoot, LEDS.status),
    readFakeLed(sysfsRoot, LEDS.fault),
    readFakeLed(sysfsRoot, LEDS.activity),
  ]);
  const off = (led: typeof status) => led.trigger === 'none' && led.brightness === 0;
  const on = (led: typeof status) => led.trigger === 'none' && led.brightness > 0;
  const timer = (led: typeof status, onMs: number, offMs: number) =>
    led.trigger === 'timer' && led.delayOn === onMs && led.delayOff === offMs;
  if (status.trigger === 'heartbeat' && off(fault)) return 'booting';
  if (timer(status, 1000, 1000) && off(fault) && activity.trigger === 'heartbeat')
    return 'awaiting-provisioning';
  if (timer(status, 100, 100) && off(fault)) return 'provisioning';
  if (on(status) && off(fault)) return 'enrolled-dark';
  if (off(status) && on(fault)) return 'fault';
  if (timer(status, 50, 50) && timer(fault, 50, 50)) return 'factory-reset';
  if (timer(status, 250, 250) && timer(fault, 250, 250)) return 'identify';
  return `unknown (status ${JSON.stringify(status)}, fault ${JSON.stringify(fault)})`;
}

/** Polls the fake LEDs and records each pattern shown, in order, until stopped. */
export class LedRecorder {
  readonly seen: string[] = [];
  private stopped = false;
  private loop: Promise<void>;

  constructor(sysfsRoot: string, everyMs = 15) {
    this.loop = (async () => {
      while (!this.stopped) {
        try {
          const pattern = await ledPattern(sysfsRoot);
          if (this.seen.at(-1) !== pattern) this.seen.push(pattern);
        } catch {
          // a file being rewritten: read again
        }
        await sleep(everyMs);
      }
    })();
  }

  async stop(): Promise<string[]> {
    this.stopped = true;
    await this.loop;
    // Between two patterns the files are briefly a mix of both: drop those, then repeats.
    return this.seen
      .filter((p) => !p.startsWith('unknown'))
      .filter((p, i, all) => i === 0 || all[i - 1] !== p);
  }
}

// ---------------------------------------------------------------------------------------------
// USB sticks: FAT images on loop devices, "inserted" by a link in the provisioner's --usb-dir.

export interface UsbStick {
  image: string;
  device: string;
  link: string;
  remove(): void;
}

export function makeFatStick(
  rig: ProvisioningRig,
  label: string,
  files: Record<string, Buffer | string>,
): UsbStick {
  const image = join(rig.dir, `${label}.img`);
  const must = (argv: string[]) => {
    const result = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 20_000 });
    if (result.status !== 0) throw new Error(`${argv.join(' ')}: ${result.stderr || result.error}`);
    return result.stdout;
  };
  must(['truncate', '-s', '8M', image]);
  must(['mkfs.vfat', '-n', label, image]);
  for (const [name, contents] of Object.entries(files)) {
    const source = join(rig.dir, `stick-${label}-${name}`);
    writeFileSync(source, contents);
    must(['mcopy', '-i', image, source, `::${name}`]);
  }
  const device = must(['losetup', '--find', '--show', image]).trim();
  let removed = false;
  const link = join(rig.usbDir, `${label}-${Date.now()}`);
  const remove = () => {
    if (removed) return;
    removed = true;
    rmSync(link, { force: true });
    spawnSync('losetup', ['-d', device], { timeout: 10_000 });
  };
  rig.onDestroy(remove);
  return {
    image,
    device,
    link,
    remove,
  };
}

export function insertStick(stick: UsbStick): void {
  symlinkSync(stick.device, stick.link);
}

/** Files on a FAT image (mdir -b), and one file's text (mtype). */
export function stickFiles(image: string): string[] {
  const result = spawnSync('mdir', ['-b', '-i', image, '::'], { encoding: 'utf8', timeout: 10_000 });
  return result.stdout
    .split('\n')
    .map((line) => line.trim().replace(/^::\/?/, ''))
    .filter(Boolean);
}

export function stickFile(image: string, name: string): string {
  const result = spawnSync('mtype', ['-i', image, `::${name}`], { encoding: 'utf8', timeout: 10_000 });
  if (result.status !== 0) throw new Error(`mtype ${name}: ${result.stderr}`);
  return result.stdout;
}

/** The box's IPv4 addresses on eth0 and default routes, to compare before and after. */
export async function boxNetwork(rig: ProvisioningRig): Promise<{ addresses: string[]; routes: string[] }> {
  const addr = await rig.box.run(['ip', '-4', '-o', 'addr', 'show', 'dev', rig.box.ifname]);
  const route = await rig.box.run(['ip', '-4', 'route', 'show', 'default']);
  return {
    addresses: addr.stdout
      .split('\n')
      .map((line) => line.match(/inet (\S+)/)?.[1])
      .filter((a): a is string => Boolean(a)),
    routes: route.stdout.split('\n').filter(Boolean),
  };
}

export function existsIn(dir: string, name: string): boolean {
  return existsSync(join(dir, name));
}
