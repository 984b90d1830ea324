// startProvisioner: everything `umbra-provisioner run` starts, as one call a test rig can drive —
// the LEDs (and the reset button) from a board file, the provisioner with its power-loss recovery,
// the serial server on the console, and the USB stick watcher.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  type ButtonInput,
  type Clock,
  closeSerial,
  loadBoard,
  openBoardButton,
  openGettyPty,
  openSerial,
  resetButtonActions,
  type StatusLeds,
  StatusLeds as StatusLedsClass,
  SysfsLeds,
  watchResetButton,
} from '@umbra/hal';
import { ProvisionerLog } from './log.ts';
import { LinuxNetworkApplier, type NetworkApplier } from './network.ts';
import {
  DEFAULT_TRUST_DIR,
  type EnrollFunction,
  loadTrustedKeys,
  type ProgressEvent,
  ProvisionError,
  Provisioner,
} from './provisioner.ts';
import { BoxIdentity, SerialServer } from './serial-server.ts';
import { KernelConsoleLevel, shareConsole } from './shared-console.ts';
import type { StateRecord } from './state.ts';
import { type UsbBundle, UsbBundleWatcher, type UsbStickError } from './usb/index.ts';

export interface StartProvisionerOptions {
  stateDir: string;
  /** Default STATE_DIR/gateway. */
  gatewayDir?: string;
  /** device:/dev/tpmrm0, swtpm:HOST:PORT or swtpm-unix:PATH. */
  tpm: string;
  /** Provisioning public keys (default /etc/umbra/provisioning-keys/), unless trustedKeys is given. */
  trustDir?: string;
  trustedKeys?: readonly Uint8Array[];
  /** The uplink (default eth0), unless `network` is given. */
  interface?: string;
  network?: NetworkApplier;
  /** Where resolv.conf and umbra/firmware-version are (default /etc). */
  etcDir?: string;
  /** Root of /sys and /proc for the serial number and the LEDs (default /). */
  sysfsRoot?: string;
  /** The console: a device path (opened with @umbra/hal openSerial) or any Duplex. */
  serial?: string | Duplex;
  baudRate?: number;
  /**
   * Share the console with a login getty: its pty's slave is linked here (e.g. /dev/ttyUMBRA0; the
   * getty runs on it), and the port is demultiplexed by the frame magic. Needs socat.
   */
  getty?: string;
  /** Instead of `getty`: the getty's side as any Duplex (tests). */
  gettyTerminal?: Duplex;
  /** Watch this directory of links to block devices for USB sticks (e.g. /dev/disk/by-uuid). */
  usbDir?: string;
  /** Where sticks are mounted (default /run/umbra/usb). */
  usbMountRoot?: string;
  /** A board file (hal/boards/*.json): LEDs under SYSFS_ROOT and the reset button. */
  board?: string;
  /** Instead of a board file (tests). */
  leds?: StatusLeds;
  button?: ButtonInput;
  /** The button's clock (tests step it by hand). */
  clock?: Clock;
  serialNumber?: string;
  firmwareVersion?: string;
  /**
   * How often an enrolled box reads its gateway's counters (GATEWAY_DIR/state/stats.json) to show
   * on the LEDs whether the controller link is up; default 5 s, 0 = never.
   */
  linkCheckMs?: number;
  /**
   * Zero-touch: the controller URL and CA pin the firmware carries. While the box is unprovisioned it
   * asks that controller, every `intervalMs` (default 60 s), to enroll it by a claim for its TPM.
   */
  zeroTouch?: { controllerUrl: string; caPin: string; intervalMs?: number };
  /** Each log line (default: stderr). */
  logSink?: (line: string) => void;
  faultMs?: number;
  // Test hooks.
  verifyController?: (controllerUrl: string) => Promise<void>;
  enroll?: EnrollFunction;
  readEkHash?: () => Promise<string>;
  now?: () => number;
}

export interface ProvisionerHandle {
  readonly provisioner: Provisioner;
  readonly identity: BoxIdentity;
  state(): StateRecord;
  /** Stops the serial server, the USB watcher and the button; waits for a bundle being applied. */
  stop(): Promise<void>;
}

export async function startProvisioner(options: StartProvisionerOptions): Promise<ProvisionerHandle> {
  const etcDir = options.etcDir ?? '/etc';
  const sysfsRoot = options.sysfsRoot ?? '/';
  const log = new ProvisionerLog({
    path: join(options.stateDir, 'provisioner.log'),
    sink: options.logSink ?? ((line) => process.stderr.write(`${line}\n`)),
    now: options.now,
  });
  const board = options.board ? await loadBoard(options.board) : undefined;
  const leds =
    options.leds ??
    (board
      ? await StatusLedsClass.open(new SysfsLeds({ root: sysfsRoot }), board.leds, {
          onError: (error) => log.warn(`LEDs: ${(error as Error).message}`),
        })
      : undefined);
  const identity = new BoxIdentity({
    sysfsRoot,
    etcDir,
    serialNumber: options.serialNumber,
    firmwareVersion: options.firmwareVersion,
    tpm: options.tpm,
    readEkHash: options.readEkHash,
    log: (message) => log.warn(message),
  });
  const provisioner = await Provisioner.open({
    stateDir: options.stateDir,
    gatewayDir: options.gatewayDir,
    trustedKeys: options.trustedKeys ?? loadTrustedKeys(options.trustDir ?? DEFAULT_TRUST_DIR),
    network: options.network ?? new LinuxNetworkApplier({ interface: options.interface ?? 'eth0', etcDir }),
    tpm: options.tpm,
    leds,
    // What the hello reports (ETC/umbra/firmware-version, else the configured one) is what the
    // controller's golden PCRs are looked up by.
    firmwareVersion: identity.firmwareVersion === 'unknown' ? undefined : identity.firmwareVersion,
    verifyController: options.verifyController,
    enroll: options.enroll,
    log,
    faultMs: options.faultMs,
    now: options.now,
  });
  log.info(`started in state ${provisioner.state}`);
  const stops: (() => Promise<void>)[] = [];
  try {
    const button = options.button ?? (board ? openBoardButton(board) : undefined);
    if (button && leds) {
      watchResetButton(
        button,
        resetButtonActions(leds, () => provisioner.factoryReset(), {
          onError: (error) => log.error(`reset button: ${(error as Error).message}`),
        }),
        undefined,
        options.clock,
      );
      stops.push(() => button.close());
    }

    if (options.serial !== undefined) {
      const port = typeof options.serial === 'string' ? options.serial : 'console';
      const stream =
        typeof options.serial === 'string'
          ? await openSerial({ path: options.serial, baudRate: options.baudRate ?? 115200 })
          : options.serial;
      if (typeof options.serial === 'string')
        stops.push(() => closeSerial(stream as Parameters<typeof closeSerial>[0]));
      let sessionStream: Duplex = stream;
      let onQuiet: (() => void) | undefined;
      if (options.getty !== undefined || options.gettyTerminal !== undefined) {
        let terminal = options.gettyTerminal;
        if (!terminal) {
          const pty = await openGettyPty(options.getty as string);
          stops.push(() => pty.close());
          terminal = pty.terminal;
        }
        const link = shareConsole(stream, terminal, new KernelConsoleLevel(sysfsRoot));
        stops.push(async () => link.close());
        sessionStream = link.stream;
        onQuiet = link.endSession;
        log.info(`sharing ${port} with the getty${options.getty ? ` on ${options.getty}` : ''}`);
      }
      const server = new SerialServer(sessionStream, { provisioner, identity, port, onQuiet });
      log.info(`serving provisioning on ${port}`);
      stops.push(() => server.close());
    }

    if (options.usbDir) {
      const watcher = new UsbBundleWatcher({
        watchDir: options.usbDir,
        ...(options.usbMountRoot ? { mountRoot: options.usbMountRoot } : {}),
        onBundle: (stick) => applyFromStick(provisioner, identity, stick),
        onError: (error: UsbStickError) => {
          void provisioner.reportError(error.code, `USB stick ${error.source}: ${error.message}`);
        },
        log: (level, message) => {
          if (level !== 'debug') log.write(level, message);
        },
      });
      await watcher.start();
      log.info(`watching ${options.usbDir} for USB sticks`);
      stops.push(() => watcher.stop());
    }
    const linkCheckMs = options.linkCheckMs ?? 5_000;
    if (linkCheckMs > 0) {
      const statsPath = join(provisioner.gatewayDir, 'state', 'stats.json');
      let last: boolean | undefined;
      const timer = setInterval(() => {
        const linked = gatewayLinked(statsPath);
        if (linked === undefined || provisioner.state !== 'enrolled') {
          last = undefined;
          return;
        }
        if (linked === last) return;
        last = linked;
        void provisioner.showControllerLink(linked);
      }, linkCheckMs);
      timer.unref();
      stops.push(async () => clearInterval(timer));
    }

    if (options.zeroTouch) {
      const zeroTouch = options.zeroTouch;
      let timer: NodeJS.Timeout | undefined;
      let stopped = false;
      const attempt = async () => {
        if (stopped || provisioner.state !== 'unprovisioned') return;
        const enrolled = await provisioner.enrollByClaim(zeroTouch).catch(() => false);
        if (!enrolled && !stopped) timer = setTimeout(attempt, zeroTouch.intervalMs ?? 60_000);
      };
      timer = setTimeout(attempt, 0);
      log.info(`zero-touch: will ask ${zeroTouch.controllerUrl} for a claim while unprovisioned`);
      stops.push(async () => {
        stopped = true;
        clearTimeout(timer);
      });
    }
  } catch (error) {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    throw error;
  }

  let stopping: Promise<void> | undefined;
  return {
    provisioner,
    identity,
    state: () => provisioner.record,
    stop: () => {
      stopping ??= (async () => {
        for (const stop of stops.reverse())
          await stop().catch((e) => log.warn(`stopping: ${(e as Error).message}`));
        await provisioner.idle();
      })();
      return stopping;
    },
  };
}

/** A bundle from a stick: applied like one over serial; the outcome written back as a report file. */
export async function applyFromStick(
  provisioner: Provisioner,
  identity: BoxIdentity,
  stick: UsbBundle,
): Promise<void> {
  const lines = [
    'umbra-provisioner report',
    `box: ${identity.serialNumber} (firmware ${identity.firmwareVersion})`,
    `bundle: ${stick.fileName} on ${stick.source} (${stick.device})`,
    `started: ${new Date().toISOString()}`,
  ];
  try {
    await provisioner.apply(stick.bundle, {
      source: `USB stick ${stick.source}`,
      progress: (event: ProgressEvent) => lines.push(`${event.step}: ${event.text}`),
    });
    lines.push('result: ok (enrolled; the gateway is dark)');
  } catch (error) {
    const failure =
      error instanceof ProvisionError ? error : new ProvisionError('internal-error', String(error));
    lines.push(`result: error ${failure.code}: ${failure.message}`);
  }
  lines.push(`finished: ${new Date().toISOString()}`, '');
  try {
    await stick.writeReport(lines.join('\n'));
  } catch (error) {
    provisioner.log.warn(`the report could not be written to ${stick.source}: ${(error as Error).message}`);
  }
}

/** Whether the gateway's stats say its controller link is up; undefined when it has written none. */
export function gatewayLinked(statsPath: string): boolean | undefined {
  try {
    const stats = JSON.parse(readFileSync(statsPath, 'utf8')) as { controller?: { linked?: unknown } };
    return typeof stats.controller?.linked === 'boolean' ? stats.controller.linked : undefined;
  } catch {
    return undefined;
  }
}
