// umbra-gateway: the dark gateway's command line.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ParseArgsOptionsConfig } from 'node:util';
import { parseCommand, pickCommand, required as requireOption, runCli } from '@umbra/cli-kit';
import { EnrollmentTokenError, encodeKey } from '@umbra/protocol';
import { pino } from 'pino';
import { ConfigError, type GatewayConfig, loadConfig, loadEnrolledConfig } from './config.ts';
import { enrollGateway } from './enroll.ts';
import { NftablesFirewall } from './firewall/index.ts';
import { STATS_FILE, startGateway } from './gateway.ts';
import { createGatewayKeys, PUBLIC_KEY_FILE } from './keys.ts';
import { checkCapabilities, checkInterface } from './preflight.ts';
import { enrollGatewayWithTpm } from './tpm/attested-enroll.ts';

const USAGE = `umbra-gateway: a Single Packet Authorization gateway that answers nothing until a valid knock

Usage:
  umbra-gateway keygen --dir DIR [--force]   create the gateway key pair; prints the public key
  umbra-gateway enroll --token TOKEN --dir DIR [--tpm ADDRESS] [--controller URL]
                                              enroll with a controller (attested with --tpm)
  umbra-gateway run --dir DIR --interface IF [--config FILE]
                                              run an enrolled gateway, its controller deciding
  umbra-gateway run --config FILE             run a standalone gateway (clients in the file)
  umbra-gateway pinholes (--config FILE | --dir DIR)  print the open pinholes as JSON
  umbra-gateway stats (--config FILE | --dir DIR)     print the running gateway's counters as JSON
  umbra-gateway COMMAND --help                help on one command

The configuration file is described in the README (section "Gateway configuration").`;

const HELP: Record<string, string> = {
  keygen: `Usage: umbra-gateway keygen --dir DIR [--force]

Creates the gateway's X25519 key pair: DIR/gateway.key (private, mode 0600) and DIR/gateway.pub.
Prints the public key, one line of base64, for clients' --gateway-key.
An existing key is kept unless --force is given: enrolled clients know the old public key.`,
  enroll: `Usage: umbra-gateway enroll --token TOKEN --dir DIR [--tpm ADDRESS] [--controller URL]
                            [--firmware-version VERSION]

Enrolls this gateway with the controller the one-time gateway TOKEN names (from \`umbra-controller
gateway token create\`). The controller is recognised by the CA pin the token carries. Makes the
gateway's SPA key (DIR/gateway.key, printed to clients as DIR/gateway.pub) and a TLS key (DIR/tls.key,
mode 0600), and stores the certificate the controller issues (DIR/tls.crt, DIR/ca.crt) with
DIR/enrollment.json. Prints the SPA public key.

Without --tpm the keys are software keys and the gateway is unattested. With --tpm (device:/dev/tpmrm0,
swtpm:HOST:PORT or swtpm-unix:PATH) the enrollment is attested: the TPM's EK certificate must chain to
a manufacturer CA the controller trusts; an attestation key (persistent handle 0x81000002) and the
gateway identity key (0x81000003) are created under the storage key (0x81000001); the attestation key
is proven with MakeCredential/ActivateCredential, and a quote over the boot PCRs (sha256:0-7) with
the controller's nonce is checked against the golden values of --firmware-version (or recorded for an
operator to approve: umbra-controller gateway approve NAME). The TLS key and the replay-state key are
then sealed by the TPM to sha256 PCRs 0,2,4,7 (DIR/keys.sealed; no DIR/tls.key), and DIR/tpm.json
records the TPM. A refusal is printed with the controller's reason.

--controller URL reaches the controller at URL instead of the address in the token (the token's CA
pin still decides whom to trust).`,
  run: `Usage: umbra-gateway run --dir DIR --interface IF [--config FILE]
       umbra-gateway run --config FILE

Installs the nftables base ruleset (table inet umbra: input policy drop), captures knocks on the
interface and opens a pinhole for each one that is allowed. Logs JSON lines on stdout.
Stop with SIGTERM or Ctrl-C: the ruleset stays, and the kernel expires open pinholes by itself.

With --dir (a directory that umbra-gateway enroll filled), the gateway dials its controller over
mutual TLS, sends it each knock to decide, serves tunnels on its TLS listener (tcp/8443 by
default, behind the pinholes), and applies revocations the controller pushes. FILE may add
settings: budget, log, timeWindowSeconds, requireSourceBinding, tunnel.port, tunnel.listen,
controller.failMode (cached: while the controller is away, decide from its last signed policy;
closed: refuse) and controller.advertise (the address clients use; default IF's first address).
State is kept in DIR/state unless FILE sets stateDir.

With --config alone, the gateway is standalone: FILE lists the clients and what each may open.`,
  pinholes: `Usage: umbra-gateway pinholes (--config FILE | --dir DIR)

Prints the pinholes open now as a JSON array of {source, protocol, port, secondsLeft}.`,
  stats: `Usage: umbra-gateway stats (--config FILE | --dir DIR)

Prints the counters the running gateway writes each second to STATE_DIR/stats.json:
accepted knocks, rejections by reason, packets the capture dropped and, for an enrolled
gateway, whether its controller link is up, the policy version and live tunnels.`,
};

const parse = <T extends ParseArgsOptionsConfig>(command: string, args: string[], options: T) =>
  parseCommand(HELP[command]!, args, options).values;
const required = (command: string, values: Record<string, unknown>, name: string) =>
  requireOption(HELP[command]!, values, name);

async function main(argv: string[]): Promise<number> {
  const picked = pickCommand(argv, USAGE, Object.keys(HELP));
  if (typeof picked === 'number') return picked;
  const { command, args } = picked;

  if (command === 'enroll') {
    const values = parse(command, args, {
      token: { type: 'string' },
      dir: { type: 'string' },
      tpm: { type: 'string' },
      controller: { type: 'string' },
      'firmware-version': { type: 'string' },
    });
    if (values.help) return help(command);
    const dir = required(command, values, 'dir');
    const token = required(command, values, 'token');
    if (values.tpm === undefined && values['firmware-version'] !== undefined)
      throw new ConfigError('--firmware-version goes with --tpm: only an attested enrollment quotes PCRs');
    const enrollment =
      values.tpm === undefined
        ? await enrollGateway(token, dir, values.controller)
        : await enrollGatewayWithTpm(token, dir, {
            tpm: values.tpm,
            ...(values.controller ? { controllerUrl: values.controller } : {}),
            ...(values['firmware-version'] ? { firmwareVersion: values['firmware-version'] } : {}),
            progress: (step) => process.stderr.write(`umbra-gateway: ${step}\n`),
          });
    process.stderr.write(
      `umbra-gateway: enrolled as ${enrollment.gateway} with ${enrollment.controller}; certificate valid until ${enrollment.notAfter}\n`,
    );
    if ('attestation' in enrollment)
      process.stderr.write(
        enrollment.attestation === 'approved'
          ? 'umbra-gateway: attested: the boot PCRs match the golden values of this firmware\n'
          : `umbra-gateway: attested, awaiting approval: its knocks are refused until an operator runs \`umbra-controller gateway approve ${enrollment.gateway}\`\n`,
      );
    console.log(readFileSync(join(dir, PUBLIC_KEY_FILE), 'utf8').trim());
    return 0;
  }

  if (command === 'keygen') {
    const values = parse(command, args, { dir: { type: 'string' }, force: { type: 'boolean' } });
    if (values.help) return help(command);
    const keys = await createGatewayKeys(required(command, values, 'dir'), values.force === true);
    console.log(encodeKey(keys.publicKey));
    return 0;
  }

  const values = parse(command, args, {
    config: { type: 'string' },
    dir: { type: 'string' },
    interface: { type: 'string' },
  });
  if (values.help) return help(command);
  let config: GatewayConfig;
  if (values.dir !== undefined) {
    // stats and pinholes need only the state directory; the interface does not matter to them.
    const iface = command === 'run' ? required(command, values, 'interface') : 'lo';
    config = loadEnrolledConfig({ dir: values.dir, interface: iface, file: values.config });
  } else {
    if (values.interface !== undefined)
      throw new ConfigError('--interface goes with --dir; a standalone gateway reads it from --config FILE');
    config = loadConfig(required(command, values, 'config'));
  }

  if (command === 'stats') {
    const path = join(config.stateDir, STATS_FILE);
    try {
      process.stdout.write(readFileSync(path, 'utf8'));
    } catch {
      throw new Error(`${path}: no stats yet; is the gateway running with this configuration?`);
    }
    return 0;
  }

  checkCapabilities();
  const firewall = new NftablesFirewall();
  if (command === 'pinholes') {
    console.log(JSON.stringify(firewall.list(), null, 2));
    return 0;
  }

  checkInterface(config.interface, config.path);
  const log = pino({ level: config.log.level, base: { service: 'umbra-gateway' } });
  const gateway = await startGateway(config, { log, firewall });
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'stopping; the firewall stays and pinholes expire on their own');
      gateway.stop().then(resolve, resolve);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}

function help(command: string): number {
  console.log(HELP[command]);
  return 0;
}

runCli('umbra-gateway', main, [ConfigError, EnrollmentTokenError]);
