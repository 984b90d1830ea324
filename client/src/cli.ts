// umbra: the client's command line.

import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { ParseArgsOptionsConfig } from 'node:util';
import { parseCommand, pickCommand, required as requireOption, runCli, UsageError } from '@umbra/cli-kit';
import {
  decodeKey,
  EnrollmentTokenError,
  encodeKey,
  KeyFormatError,
  parseAccess,
  SERVICE_NAME,
  sealKnock,
  TLS_CERT_FILE,
} from '@umbra/protocol';
import { startConnect } from './connect.ts';
import { DeviceError } from './device.ts';
import { enrollDevice, readEnrollment } from './enroll.ts';
import { parseGatewayAddress } from './gateway-address.ts';
import { createIdentityFile, loadIdentityFile } from './identity.ts';
import { localAddressToward, resolveGateway, sendKnock } from './knock.ts';
import { devicePosture } from './posture/device-posture.ts';
import { renewsAfter } from './renewal.ts';

const USAGE = `umbra: the Umbra client

Usage:
  umbra keygen --out FILE [--force]     create a device identity (Ed25519); prints its public key
  umbra knock --gateway HOST[:PORT] --gateway-key KEY --identity FILE --access tcp/PORT [--source ADDR|auto] [--print]
                                        send one knock (Single Packet Authorization)
  umbra posture                         print what this device reports about itself (JSON)
  umbra enroll --token TOKEN [--dir DIR]  enroll this device with a controller (default DIR ~/.umbra)
  umbra connect SERVICE --listen HOST:PORT [--dir DIR]
                                        serve SERVICE on a local port, through its gateway
  umbra status [--dir DIR]              print this device's enrollment as JSON
  umbra COMMAND --help                  help on one command`;

const HELP: Record<string, string> = {
  keygen: `Usage: umbra keygen --out FILE [--force]

Creates a device identity: an Ed25519 key pair written to FILE with mode 0600.
Prints the public key, one line of base64: give it to the gateway's operator (clients[].publicKey).
An existing file is kept unless --force is given.`,
  knock: `Usage: umbra knock --gateway HOST[:PORT] --gateway-key KEY --identity FILE --access PROTO/PORT [options]

Sends one knock: a single UDP datagram, encrypted to the gateway's key and signed by your identity.
The gateway never answers; if the knock is accepted the port opens for your address for a few seconds.
Exits 0 once the knock is sent; prints nothing but errors.

  --gateway HOST[:PORT]   the gateway (default port 62201); IPv6 as [ADDR]:PORT
  --gateway-key KEY       the gateway's public key (base64), or a file holding it (gateway.pub)
  --identity FILE         your identity file, from \`umbra keygen\`
  --access PROTO/PORT     what to open, e.g. tcp/22 or udp/53
  --source ADDR|auto      bind the knock to the address the gateway will see (auto: the local address
                          toward the gateway). Gateways with requireSourceBinding need it; not behind NAT.
  --posture               include this device's posture (see \`umbra posture\`), for policies that require one
  --print                 write the knock as hex on stdout instead of sending it`,
  enroll: `Usage: umbra enroll --token TOKEN [--dir DIR]

Enrolls this device with the controller the one-time TOKEN names (from \`umbra-controller token
create\`). The token carries the controller's URL and its CA's pin: the controller is recognised by
that pin before anything is sent. This device makes its own keys and sends only their public halves.
Writes into DIR (default ~/.umbra, mode 0700): identity (0600; kept if it exists), tls.key (0600),
tls.crt, ca.crt and enrollment.json.`,
  status: `Usage: umbra status [--dir DIR]

Prints this device's enrollment as JSON: identity, controller, certificate serial and expiry, and
from when \`umbra connect\` renews it (a third of its lifetime before it expires).`,
  connect: `Usage: umbra connect SERVICE --listen HOST:PORT [--dir DIR] [options]

Makes SERVICE reachable on HOST:PORT. Asks the controller (with this device's certificate from
DIR, default ~/.umbra) which gateway serves it, then for each local TCP connection knocks if the
last knock is more than a few seconds old and opens one new TLS connection to the gateway's
tunnel (or, for a direct-mode service, one TCP connection to the port the knock opened). A
connection that times out (the pinhole expired, or this machine's address changed) is retried
after a fresh knock, three attempts in all; then the local connection is closed and a line logged.
While running it keeps a control connection to the gateway that reports posture, and renews the
certificate when a third of its lifetime is left. Logs go to stderr; SIGINT or SIGTERM stops it.

  --listen HOST:PORT         the local address to serve on, e.g. 127.0.0.1:5432 ([IPv6]:PORT)
  --dir DIR                  the enrolled device directory (default ~/.umbra)
  --source ADDR|auto         bind knocks to the address the gateway sees (see \`umbra knock --help\`)
  --posture-interval SECONDS how often posture is re-reported (default 60)`,
  posture: `Usage: umbra posture

Prints, as JSON, what this device reports about itself when it knocks with --posture: os, os_name,
os_version, kernel, disk_encryption (whether / is on dm-crypt), firewall (whether a packet filter is
loaded). A fact the platform does not tell is left out, and a policy that requires it refuses.`,
};

const parse = <T extends ParseArgsOptionsConfig>(command: string, args: string[], options: T) =>
  parseCommand(HELP[command]!, args, options).values;
const required = (command: string, values: Record<string, unknown>, name: string) =>
  requireOption(HELP[command]!, values, name);

/** The key itself, or the first line of a file that holds it. */
function readGatewayKey(text: string): Buffer {
  const fromFile = !/^[A-Za-z0-9+/]{43}=$/.test(text) && existsSync(text);
  const keyText = fromFile ? readFileSync(text, 'utf8').trim() : text;
  return decodeKey(keyText, fromFile ? `--gateway-key file ${text}` : '--gateway-key');
}

async function main(argv: string[]): Promise<number> {
  const picked = pickCommand(argv, USAGE, Object.keys(HELP));
  if (typeof picked === 'number') return picked;
  const { command, args } = picked;

  if (command === 'keygen') {
    const values = parse(command, args, { out: { type: 'string' }, force: { type: 'boolean' } });
    if (values.help) return help(command);
    const identity = await createIdentityFile(required(command, values, 'out'), values.force === true);
    console.log(encodeKey(identity.publicKey));
    return 0;
  }

  if (command === 'enroll') {
    const values = parse(command, args, { token: { type: 'string' }, dir: { type: 'string' } });
    if (values.help) return help(command);
    const dir = values.dir ?? defaultDir();
    const enrollment = await enrollDevice(required(command, values, 'token'), dir);
    console.log(
      `enrolled as ${enrollment.identity} with ${enrollment.controller}; certificate valid until ${enrollment.notAfter}`,
    );
    return 0;
  }

  if (command === 'status') {
    const values = parse(command, args, { dir: { type: 'string' } });
    if (values.help) return help(command);
    const dir = values.dir ?? defaultDir();
    const enrollment = readEnrollment(dir);
    const certificate = new X509Certificate(readFileSync(join(dir, TLS_CERT_FILE)));
    const notAfter = new Date(certificate.validTo);
    console.log(
      JSON.stringify(
        {
          ...enrollment,
          certificate: {
            serial: certificate.serialNumber.toLowerCase(),
            notAfter: notAfter.toISOString(),
            expiresInSeconds: Math.round((notAfter.getTime() - Date.now()) / 1000),
            renewsAfter: renewsAfter({ notBefore: new Date(certificate.validFrom), notAfter }).toISOString(),
          },
        },
        null,
        2,
      ),
    );
    return 0;
  }

  if (command === 'connect') {
    const { values, positionals } = parseCommand(
      HELP[command]!,
      args,
      {
        listen: { type: 'string' },
        dir: { type: 'string' },
        source: { type: 'string' },
        'posture-interval': { type: 'string' },
      },
      1,
    );
    if (values.help) return help(command);
    const service = positionals[0];
    if (service === undefined || !SERVICE_NAME.test(service))
      throw new UsageError(
        `${service === undefined ? 'SERVICE is missing' : `SERVICE "${service}" is not a service name`}\n\n${HELP[command]}`,
      );
    const listen = parseListen(required(command, values, 'listen'));
    if (values.source !== undefined && values.source !== 'auto' && !isIP(values.source))
      throw new UsageError(`--source "${values.source}": expected an IPv4 or IPv6 address, or auto`);
    const interval = values['posture-interval'];
    const seconds = interval === undefined ? undefined : Number(interval);
    if (seconds !== undefined && !(Number.isInteger(seconds) && seconds >= 1 && seconds <= 86_400))
      throw new UsageError(`--posture-interval "${interval}": expected whole seconds from 1 to 86400`);
    const log = (line: string) => process.stderr.write(`umbra: ${line}\n`);
    const running = await startConnect({
      dir: values.dir ?? defaultDir(),
      service,
      listen,
      source: values.source,
      postureIntervalMs: seconds === undefined ? undefined : seconds * 1000,
      log,
    });
    const shown = running.listening.host.includes(':')
      ? `[${running.listening.host}]`
      : running.listening.host;
    log(`${service} reachable at ${shown}:${running.listening.port} through ${running.route.gateway.name}`);
    const signal = await new Promise<string>((resolve) => {
      process.once('SIGINT', () => resolve('SIGINT'));
      process.once('SIGTERM', () => resolve('SIGTERM'));
    });
    log(`${signal}: stopping`);
    await running.close();
    return 0;
  }

  if (command === 'posture') {
    const values = parse(command, args, {});
    if (values.help) return help(command);
    console.log(JSON.stringify(await devicePosture(), null, 2));
    return 0;
  }

  const values = parse(command, args, {
    gateway: { type: 'string' },
    'gateway-key': { type: 'string' },
    identity: { type: 'string' },
    access: { type: 'string' },
    source: { type: 'string' },
    posture: { type: 'boolean' },
    print: { type: 'boolean' },
  });
  if (values.help) return help(command);
  const gatewayAddress = parseGatewayAddress(required(command, values, 'gateway'));
  const gatewayKey = readGatewayKey(required(command, values, 'gateway-key'));
  const access = required(command, values, 'access');
  if (!parseAccess(access))
    throw new UsageError(
      `--access "${access}": expected PROTO/PORT with PROTO tcp or udp and PORT 1-65535, e.g. tcp/22`,
    );
  const identity = loadIdentityFile(required(command, values, 'identity'));

  const source = values.source;
  const needsRoute = !values.print || source === 'auto';
  const gateway = needsRoute ? await resolveGateway(gatewayAddress) : undefined;
  let claimedSource: string | undefined;
  if (source === 'auto') claimedSource = await localAddressToward(gateway!);
  else if (source !== undefined) {
    if (!isIP(source))
      throw new UsageError(`--source "${source}": expected an IPv4 or IPv6 address, or auto`);
    claimedSource = source;
  }

  const posture = values.posture ? await devicePosture() : undefined;
  const packet = sealKnock({
    gatewayPublicKey: gatewayKey,
    identity,
    knock: { access, claimedSource, posture },
  });
  if (values.print) {
    console.log(packet.toString('hex'));
    return 0;
  }
  await sendKnock(gateway!, packet);
  return 0;
}

/** HOST:PORT or [IPv6]:PORT for --listen; port 0 picks a free one. */
function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  const host = match?.[1] ?? match?.[2];
  if (host === undefined || !(port >= 0 && port <= 65_535))
    throw new UsageError(`--listen "${text}": expected HOST:PORT, e.g. 127.0.0.1:5432, or [::1]:5432`);
  return { host, port };
}

function defaultDir(): string {
  return join(homedir(), '.umbra');
}

function help(command: string): number {
  console.log(HELP[command]);
  return 0;
}

runCli('umbra', main, [EnrollmentTokenError, KeyFormatError, DeviceError]);
