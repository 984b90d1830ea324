// umbra-tech: the technician's command line. Makes the organisation's provisioning key and site
// bundles, and talks to an unprovisioned box over its serial console (box-link.ts).
//
// Exit codes: 0 done; 1 failed (the box refused, the link failed, the port would not open);
// 2 the input was wrong (an option, a file). cli.ts runs runTech with the process's streams and
// the real serial port; tests run it with captured output and an in-memory port.

import { readFileSync, statSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { ParseArgsOptionsConfig } from 'node:util';
import { parseCommand, parseDuration, pickCommand, UsageError } from '@umbra/cli-kit';
import { closeSerial, openSerial, SerialError } from '@umbra/hal';
import {
  type BoxHello,
  ProvisioningLinkError,
  type ResultMessage,
  SITE_BUNDLE_MAX_BYTES,
} from '@umbra/protocol';
import { BoxLink, type BoxLinkOptions, DEFAULT_STEP_TIMEOUT_MS } from './box-link.ts';
import { bundleSummary, createBundleFile, createKeyFiles } from './bundle.ts';
import { HELP, USAGE } from './help.ts';
import { ProgressDisplay, printable } from './progress.ts';

export interface OpenedPort {
  stream: Duplex;
  close(): Promise<void>;
}

export interface TechIo {
  stdout: { write(text: string): unknown; isTTY?: boolean };
  stderr: { write(text: string): unknown };
  /** Opens the serial port; the real one by default. */
  openPort?: (path: string, baudRate: number) => Promise<OpenedPort>;
  /** Session timings and versions (tests inject short timeouts). */
  link?: Omit<BoxLinkOptions, 'port'>;
  /** Spinner interval on a terminal (0: none). */
  spinMs?: number;
  now?: () => number;
}

export const DEFAULT_BAUD = 115200;
const COMMANDS = ['bundle create', 'key create', 'provision', 'status', 'logs'] as const;
type Command = (typeof COMMANDS)[number];

async function openRealPort(path: string, baudRate: number): Promise<OpenedPort> {
  const stream = await openSerial({ path, baudRate });
  return { stream, close: () => closeSerial(stream) };
}

export async function runTech(argv: string[], io: TechIo): Promise<number> {
  const picked = pickCommand<Command>(argv, USAGE, COMMANDS);
  if (typeof picked === 'number') return picked;
  const { command, args } = picked;
  const help = HELP[command];
  const parse = <T extends ParseArgsOptionsConfig>(options: T) => parseCommand(help, args, options).values;
  const required = (values: Record<string, unknown>, name: string, hint: string): string => {
    const value = values[name];
    if (typeof value !== 'string' || value === '')
      throw new UsageError(`missing --${name}: ${hint}\n\n${help}`);
    return value;
  };
  const out = (line: string) => io.stdout.write(`${line}\n`);

  if (command === 'key create') {
    const values = parse({ out: { type: 'string' } });
    if (values.help) return printHelp(io, help);
    const created = await createKeyFiles(
      required(values, 'out', 'where to write the private key, e.g. --out provisioning.key'),
    );
    out(
      `wrote ${created.privatePath} (private, mode 0600: keep it safe, it signs site bundles) and ${created.publicPath}`,
    );
    out(`provisioning key ${created.keyId}; the firmware's trusted key line: ${created.publicLine}`);
    return 0;
  }

  if (command === 'bundle create') {
    const values = parse({
      controller: { type: 'string' },
      ca: { type: 'string' },
      token: { type: 'string' },
      site: { type: 'string' },
      network: { type: 'string' },
      vlan: { type: 'string' },
      dns: { type: 'string', multiple: true },
      ntp: { type: 'string', multiple: true },
      expires: { type: 'string' },
      'sign-key': { type: 'string' },
      out: { type: 'string' },
      force: { type: 'boolean' },
    });
    if (values.help) return printHelp(io, help);
    const created = await createBundleFile({
      controller: required(values, 'controller', "the controller's https URL"),
      ca: required(values, 'ca', "the controller's CA certificate file (ca.crt)"),
      token: required(values, 'token', 'a gateway token (umbra-controller gateway token create)'),
      site: required(values, 'site', 'the site name, e.g. --site "Lyon office"'),
      network: required(values, 'network', 'dhcp or static:ADDR/PREFIX,GW'),
      vlan: values.vlan,
      dns: values.dns,
      ntp: values.ntp,
      expiresInSeconds: values.expires === undefined ? undefined : parseDuration(values.expires, 'expires'),
      signKey: required(values, 'sign-key', 'the provisioning private key (umbra-tech key create)'),
      out: required(values, 'out', 'where to write the bundle, e.g. --out lyon.bundle'),
      force: values.force === true,
      now: io.now?.(),
    });
    out(bundleSummary(created));
    return 0;
  }

  const portOptions = { port: { type: 'string' }, baud: { type: 'string' } } as const;

  if (command === 'provision') {
    const values = parse({ ...portOptions, bundle: { type: 'string' }, timeout: { type: 'string' } });
    if (values.help) return printHelp(io, help);
    const { port, baud } = portValues(values, required);
    const bundlePath = required(values, 'bundle', 'the site bundle file (umbra-tech bundle create)');
    const bundle = readBundle(bundlePath);
    const stepTimeoutMs =
      values.timeout === undefined
        ? DEFAULT_STEP_TIMEOUT_MS
        : parseDuration(values.timeout, 'timeout') * 1000;
    return withBox(io, port, baud, async (link) => {
      showHello(io, link.hello);
      out(`sending ${bundlePath} (${bundle.length} bytes)`);
      const display = new ProgressDisplay({
        out: io.stdout,
        tty: io.stdout.isTTY === true,
        spinMs: io.spinMs,
      });
      let result: ResultMessage;
      try {
        result = await link.apply(bundle, (progress) => display.update(progress), stepTimeoutMs);
      } catch (error) {
        display.abort();
        throw error;
      }
      display.end(result.ok);
      if (result.ok) {
        out(`done: box ${link.hello.serialNumber} applied the site bundle`);
        return 0;
      }
      io.stderr.write(
        `umbra-tech: the box refused: ${result.error.code}: ${printable(result.error.message)}\n` +
          `umbra-tech: ${refusalHint(result.error.code, port)}\n`,
      );
      return 1;
    });
  }

  if (command === 'status') {
    const values = parse(portOptions);
    if (values.help) return printHelp(io, help);
    const { port, baud } = portValues(values, required);
    return withBox(io, port, baud, async (link) => {
      const { t: _type, ...hello } = link.hello;
      out(JSON.stringify(hello, null, 2));
      return 0;
    });
  }

  const values = parse({ ...portOptions, lines: { type: 'string' } });
  if (values.help) return printHelp(io, help);
  const { port, baud } = portValues(values, required);
  let lines: number | undefined;
  if (values.lines !== undefined) {
    lines = Number(values.lines);
    if (!/^\d{1,3}$/.test(values.lines) || lines < 1 || lines > 100)
      throw new UsageError(`--lines "${values.lines}": expected a number of lines from 1 to 100`);
  }
  return withBox(io, port, baud, async (link) => {
    for (const line of await link.logs(lines)) out(printable(line));
    return 0;
  });
}

function portValues(
  values: { port?: string; baud?: string },
  required: (values: Record<string, unknown>, name: string, hint: string) => string,
): { port: string; baud: number } {
  const port = required(values, 'port', "the serial port the box's console is on, e.g. --port /dev/ttyUSB0");
  if (!/^\/\S+$/.test(port))
    throw new UsageError(`--port "${port}": expected the serial device's absolute path, e.g. /dev/ttyUSB0`);
  let baud = DEFAULT_BAUD;
  if (values.baud !== undefined) {
    baud = Number(values.baud);
    if (!/^\d{2,7}$/.test(values.baud) || baud < 50 || baud > 4_000_000)
      throw new UsageError(
        `--baud "${values.baud}": expected a speed such as 115200 (the box's console runs at 115200)`,
      );
  }
  return { port, baud };
}

function readBundle(path: string): Buffer {
  let size: number;
  try {
    size = statSync(path).size;
  } catch (error) {
    throw new UsageError(
      `--bundle ${path}: cannot read it (${(error as NodeJS.ErrnoException).code}); create one with umbra-tech bundle create`,
    );
  }
  if (size === 0 || size > SITE_BUNDLE_MAX_BYTES)
    throw new UsageError(
      `--bundle ${path}: ${size} bytes; a site bundle is 1 to ${SITE_BUNDLE_MAX_BYTES} — is this the file umbra-tech bundle create wrote?`,
    );
  return readFileSync(path);
}

async function withBox(
  io: TechIo,
  port: string,
  baud: number,
  talk: (link: BoxLink) => Promise<number>,
): Promise<number> {
  let opened: OpenedPort;
  try {
    opened = await (io.openPort ?? openRealPort)(port, baud);
  } catch (error) {
    if (error instanceof SerialError) throw new SerialError(`--port: ${error.message}`, { cause: error });
    throw error;
  }
  let link: BoxLink | undefined;
  try {
    link = await BoxLink.connect(opened.stream, {
      ...io.link,
      port,
      onWarning: (message) => io.stderr.write(`umbra-tech: ${printable(message)}\n`),
    });
    return await talk(link);
  } catch (error) {
    if (error instanceof ProvisioningLinkError && error.code === 'timeout')
      throw new ProvisioningLinkError(
        'timeout',
        `${error.message}; the box stopped answering — see its log with umbra-tech logs --port ${port}, and try again`,
        error,
      );
    throw error;
  } finally {
    link?.close();
    await opened.close().catch(() => {});
  }
}

function showHello(io: TechIo, hello: BoxHello): void {
  const lines = [
    `box ${hello.serialNumber}, firmware ${hello.firmwareVersion}, state ${hello.state}`,
    `EK hash ${hello.ekHash}`,
  ];
  if (hello.lastError)
    lines.push(`last attempt failed: ${hello.lastError.code}: ${printable(hello.lastError.message)}`);
  if (hello.state === 'enrolled')
    lines.push('note: this box is already enrolled; it takes a new bundle only after a factory reset');
  io.stdout.write(`${lines.join('\n')}\n`);
}

/** What to do about a refusal, by the box's code (the site bundle's codes, then the provisioner's). */
export function refusalHint(code: string, port: string): string {
  switch (code) {
    case 'unknown-key':
      return "sign the bundle with your organisation's provisioning key, the one whose public half is in this box's firmware";
    case 'bad-signature':
      return 'the bundle was altered after signing or signed with another key; create it again with umbra-tech bundle create';
    case 'expired':
      return 'create a new bundle with umbra-tech bundle create (--expires sets its lifetime)';
    case 'malformed':
    case 'too-large':
      return 'is --bundle the file umbra-tech bundle create wrote? create it again';
    case 'busy':
      return 'the box is applying another bundle (from a USB stick or another session); wait, check umbra-tech status, then try again';
    case 'already-provisioned':
      return 'the box is enrolled already; to provision it again, factory-reset it first (hold its reset button 10 s)';
    case 'invalid-field':
      return 'create the bundle again with the field the box names corrected';
    default:
      return `the box is left as it was; see its log with umbra-tech logs --port ${port}, fix the cause and run provision again`;
  }
}

function printHelp(io: TechIo, help: string): number {
  io.stdout.write(`${help}\n`);
  return 0;
}
