// umbra-provisioner: the box's provisioner on the command line.

import { existsSync, readFileSync } from 'node:fs';
import { parseCommand, pickCommand, runCli, UsageError } from '@umbra/cli-kit';
import { z } from 'zod';
import { DEFAULT_TRUST_DIR } from './provisioner.ts';
import { startProvisioner } from './start.ts';
import { readStatus } from './state.ts';

export const DEFAULT_CONFIG_FILE = '/etc/umbra/provisioner.json';

const USAGE = `umbra-provisioner: takes a signed site bundle over the serial console or from a USB stick, applies
the network, enrolls the gateway with its TPM, and shows the state on the LEDs

Usage:
  umbra-provisioner run --serial DEV --state-dir DIR --sysfs-root DIR --tpm SPEC [--usb-dir DIR]
                        [--interface IF] [--trust-dir DIR] [--etc-dir DIR] [--board FILE]
                                              run the provisioner
  umbra-provisioner status --state-dir DIR    print the state as JSON
  umbra-provisioner COMMAND --help            help on one command

Defaults come from ${DEFAULT_CONFIG_FILE} when it exists (README.md, "Configuration").`;

const HELP = {
  run: `Usage: umbra-provisioner run --serial DEV --state-dir DIR --sysfs-root DIR --tpm SPEC [--usb-dir DIR]
                             [--interface IF] [--trust-dir DIR] [--etc-dir DIR] [--board FILE]
                             [--gateway-dir DIR] [--getty LINK] [--config FILE]

Serves the provisioning protocol on the serial console DEV (115200 baud; --baud-rate to change), and
with --usb-dir watches that directory of links to block devices (e.g. /dev/disk/by-uuid) for USB
sticks carrying a *.umbra-bundle file. A bundle must be signed by one of the provisioning public keys
in --trust-dir (default ${DEFAULT_TRUST_DIR}). The network settings go on --interface (default
eth0; resolv.conf under --etc-dir, default /etc); the gateway is enrolled with the TPM SPEC
(device:/dev/tpmrm0, swtpm:HOST:PORT or swtpm-unix:PATH) into --gateway-dir (default
STATE_DIR/gateway). State is kept in STATE_DIR/provisioner.json; a power cut at any step resumes or
rolls back at the next start. --board FILE (hal/boards/*.json) names the LEDs, found under
SYSFS_ROOT/sys/class/leds, and the reset button. With --getty LINK (e.g. /dev/ttyUMBRA0) the console
is shared with a login getty running on a pty linked at LINK: the provisioning frames are told apart
by their magic (needs socat). Logs go to stderr and STATE_DIR/provisioner.log.
Stop with SIGTERM or Ctrl-C.

Options not given come from --config FILE (default ${DEFAULT_CONFIG_FILE}, if present).`,
  status: `Usage: umbra-provisioner status --state-dir DIR [--config FILE]

Prints STATE_DIR/provisioner.json as JSON: the state (unprovisioned, provisioning, enrolling,
enrolled), the step and its time, the site, the last error and the recent transitions. The site
bundle and its enrollment token are never printed.`,
} as const;

const ConfigSchema = z
  .object({
    serial: z.string().min(1).optional(),
    baudRate: z.number().int().positive().optional(),
    stateDir: z.string().min(1).optional(),
    gatewayDir: z.string().min(1).optional(),
    sysfsRoot: z.string().min(1).optional(),
    etcDir: z.string().min(1).optional(),
    tpm: z.string().min(1).optional(),
    usbDir: z.string().min(1).optional(),
    usbMountRoot: z.string().min(1).optional(),
    interface: z.string().min(1).max(15).optional(),
    trustDir: z.string().min(1).optional(),
    board: z.string().min(1).optional(),
    getty: z.string().min(1).optional(),
    serialNumber: z.string().min(1).optional(),
    firmwareVersion: z.string().min(1).optional(),
    /** The firmware's controller, for zero-touch enrollment by a claim (see the README). */
    zeroTouch: z
      .object({
        controllerUrl: z.string().url().startsWith('https://'),
        caPin: z.string().regex(/^sha256\/[A-Za-z0-9+/]{43}=$/),
        intervalSeconds: z.number().int().min(1).max(86_400).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type ProvisionerConfig = z.infer<typeof ConfigSchema>;

export class ConfigFileError extends Error {
  override name = 'ConfigFileError';
}

/** The defaults file; absent is empty unless it was named explicitly. */
export function loadConfigFile(path: string | undefined): ProvisionerConfig {
  const file = path ?? DEFAULT_CONFIG_FILE;
  if (!existsSync(file)) {
    if (path) throw new ConfigFileError(`${file}: no such file`);
    return {};
  }
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConfigFileError(`${file}: not JSON (${(error as Error).message})`);
  }
  const parsed = ConfigSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigFileError(`${file}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return parsed.data;
}

const RUN_OPTIONS = {
  serial: { type: 'string' },
  'baud-rate': { type: 'string' },
  'state-dir': { type: 'string' },
  'gateway-dir': { type: 'string' },
  'sysfs-root': { type: 'string' },
  'etc-dir': { type: 'string' },
  tpm: { type: 'string' },
  'usb-dir': { type: 'string' },
  interface: { type: 'string' },
  'trust-dir': { type: 'string' },
  board: { type: 'string' },
  getty: { type: 'string' },
  config: { type: 'string' },
} as const;

async function run(args: string[]): Promise<number> {
  const { values } = parseCommand(HELP.run, args, RUN_OPTIONS);
  if (values.help) {
    console.log(HELP.run);
    return 0;
  }
  const config = loadConfigFile(values.config);
  const pick = (flag: keyof typeof RUN_OPTIONS, key: keyof ProvisionerConfig) =>
    (values[flag] as string | undefined) ?? (config[key] as string | undefined);
  const need = (flag: keyof typeof RUN_OPTIONS, key: keyof ProvisionerConfig) => {
    const value = pick(flag, key);
    if (!value)
      throw new UsageError(`missing --${flag} (or "${key}" in the configuration file)\n\n${HELP.run}`);
    return value;
  };
  const serial = pick('serial', 'serial');
  const usbDir = pick('usb-dir', 'usbDir');
  if (!serial && !usbDir) throw new UsageError(`missing --serial (or --usb-dir)\n\n${HELP.run}`);
  let baudRate = config.baudRate;
  if (values['baud-rate'] !== undefined) {
    baudRate = Number(values['baud-rate']);
    if (!Number.isInteger(baudRate) || baudRate <= 0)
      throw new UsageError(
        `--baud-rate "${values['baud-rate']}": expected a positive integer\n\n${HELP.run}`,
      );
  }
  const handle = await startProvisioner({
    stateDir: need('state-dir', 'stateDir'),
    gatewayDir: pick('gateway-dir', 'gatewayDir'),
    sysfsRoot: pick('sysfs-root', 'sysfsRoot') ?? '/',
    etcDir: pick('etc-dir', 'etcDir'),
    tpm: need('tpm', 'tpm'),
    serial,
    baudRate,
    usbDir,
    usbMountRoot: config.usbMountRoot,
    interface: pick('interface', 'interface'),
    trustDir: pick('trust-dir', 'trustDir'),
    board: pick('board', 'board'),
    getty: pick('getty', 'getty'),
    serialNumber: config.serialNumber,
    firmwareVersion: config.firmwareVersion,
    ...(config.zeroTouch
      ? {
          zeroTouch: {
            controllerUrl: config.zeroTouch.controllerUrl,
            caPin: config.zeroTouch.caPin,
            ...(config.zeroTouch.intervalSeconds
              ? { intervalMs: config.zeroTouch.intervalSeconds * 1000 }
              : {}),
          },
        }
      : {}),
  });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await handle.stop();
  return 0;
}

async function status(args: string[]): Promise<number> {
  const { values } = parseCommand(HELP.status, args, {
    'state-dir': { type: 'string' },
    config: { type: 'string' },
  } as const);
  if (values.help) {
    console.log(HELP.status);
    return 0;
  }
  const stateDir = values['state-dir'] ?? loadConfigFile(values.config).stateDir;
  if (!stateDir) throw new UsageError(`missing --state-dir\n\n${HELP.status}`);
  console.log(JSON.stringify(readStatus(stateDir), null, 2));
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const picked = pickCommand(argv, USAGE, ['run', 'status'] as const);
  if (typeof picked === 'number') return picked;
  return picked.command === 'run' ? run(picked.args) : status(picked.args);
}

runCli('umbra-provisioner', main, [ConfigFileError]);
