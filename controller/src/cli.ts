// umbra-controller: the controller's administration commands. Every change is recorded in the audit
// log with the CLI as its actor; a serving controller reads the log and pushes what changed to its
// gateways. Revoking, disabling and the attestation records (EK roots, golden PCR values, approving
// and releasing gateways) write the change and its audit entry in one transaction; the other
// commands' steps are separate store calls for now (a crash between them can leave, say, a token
// without its audit line).

import { readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { parseCommand, parseDuration, pickCommand, required, runCli, UsageError } from '@umbra/cli-kit';
import { parseEkRoots } from './attestation/ek-roots.ts';
import { AttestationFileError } from './attestation/errors.ts';
import { parsePcrFile, pickPcrBank } from './attestation/pcr-file.ts';
import { createEnrollmentToken } from './ca/index.ts';
import { type DataDir, DataDirError, initDataDir, openDataDir } from './data-dir.ts';
import { LINK_PING_INTERVAL_MS } from './link/link-server.ts';
import { type EkRoot, type FirmwarePcrs, type Gateway, type Store, StoreError } from './store/index.ts';

const ACTOR = 'cli';
/** Four ping intervals (LINK_PING_INTERVAL_MS): a live link is marked seen at every one. */
const CONNECTED_WITHIN_MS = 4 * LINK_PING_INTERVAL_MS;
const DEFAULT_TOKEN_TTL = '24h';

const USAGE = `umbra-controller: identities, policy and the certificate authority of an Umbra perimeter

Every command takes --data DIR; a controller whose records live in PostgreSQL also takes
--database postgres://USER@HOST/DB (init with it to choose PostgreSQL; never stored on disk).

Usage:
  umbra-controller init --data DIR --url https://HOST:PORT [--name NAME] [--time-zone ZONE] [--database URL]
  umbra-controller token create --data DIR --identity NAME [--group G ...] [--ttl 24h]
  umbra-controller gateway token create --data DIR --name GW [--ttl 24h]
  umbra-controller service add --data DIR --name NAME --gateway GW --backend HOST:PORT [--mode tunnel|direct]
  umbra-controller policy add --data DIR (--identity NAME | --group G) --service NAME
                              [--require KEY=VALUE ...] [--ttl 30s] [--hours 08:00-18:00] [--days mon-fri]
  umbra-controller identity list --data DIR
  umbra-controller identity revoke NAME --data DIR
  umbra-controller identity disable NAME --data DIR
  umbra-controller identity enable NAME --data DIR
  umbra-controller certificate revoke SERIAL --data DIR
  umbra-controller gateway list --data DIR         gateways, their endpoints and links, as JSON
  umbra-controller gateway revoke NAME --data DIR  a stolen or retired gateway: its link is cut
  umbra-controller gateway approve NAME --data DIR the PCRs it attested become its golden values
  umbra-controller gateway release NAME --data DIR take a gateway out of quarantine
  umbra-controller gateway claim --ek-hash H --site SITE [--name NAME] --data DIR
                                                   a box with that TPM may enroll without a token
  umbra-controller gateway claims --data DIR       the claims, used or not, as JSON
  umbra-controller ekca add FILE --data DIR        trust TPM manufacturers' CA certificates for EKs
  umbra-controller ekca list --data DIR
  umbra-controller ekca remove FINGERPRINT --data DIR
  umbra-controller firmware pcrs add VERSION FILE --data DIR [--bank sha256]
  umbra-controller firmware pcrs list --data DIR
  umbra-controller firmware pcrs remove VERSION --data DIR
  umbra-controller sessions --data DIR             open sessions, as JSON
  umbra-controller audit --data DIR [--after SEQ]  the audit log, as JSON lines
  umbra-controller serve --data DIR --listen HOST:PORT [--database URL]
  umbra-controller COMMAND --help`;

const HELP = {
  init: `Usage: umbra-controller init --data DIR --url https://HOST:PORT [--name NAME] [--time-zone ZONE]

Creates the controller in DIR (a new or empty directory, mode 0700): the database, a private CA
(ECDSA P-256; the key in DIR/ca/ca.key, mode 0600) and DIR/controller.json with the URL and the
CA's pin, which every enrollment token carries. Prints the CA pin.
  --time-zone ZONE   the IANA time zone policies' --hours and --days are read in, e.g.
                     Europe/Berlin (default UTC); kept as timeZone in controller.json`,
  'token create': `Usage: umbra-controller token create --data DIR --identity NAME [--group G ...] [--ttl 24h]

Prints a one-time enrollment token for the device identity NAME (created if new) in the given
groups (created if new). The token carries the controller's URL and CA pin, so \`umbra enroll\`
needs nothing else. Only a hash of its secret is stored. It expires after --ttl (default 24h).`,
  'gateway token create': `Usage: umbra-controller gateway token create --data DIR --name GW [--ttl 24h]

Prints a one-time enrollment token for the gateway GW (created if new), for \`umbra-gateway enroll\`.`,
  'service add': `Usage: umbra-controller service add --data DIR --name NAME --gateway GW --backend HOST:PORT [--mode tunnel|direct]

Adds a service behind gateway GW. tunnel (the default): clients reach the backend through the
gateway's mutual-TLS tunnel. direct: the pinhole opens the backend's port itself, as fwknop does.`,
  'policy add': `Usage: umbra-controller policy add --data DIR (--identity NAME | --group G) --service NAME [options]

Lets an identity, or every member of a group, reach a service.
  --require KEY=VALUE   a posture the device must report (repeatable): KEY=VALUE, KEY!=VALUE,
                        KEY>=VERSION, KEY<=VERSION, e.g. disk_encryption=on, os_version>=13.2
  --ttl 30s             the longest a pinhole lasts (default 30s, at most 24h)
  --hours 08:00-18:00   only between these times (22:00-06:00 crosses midnight)
  --days mon-fri        only on these days`,
  'identity list': `Usage: umbra-controller identity list --data DIR

Prints the identities as JSON.`,
  'identity revoke': `Usage: umbra-controller identity revoke NAME --data DIR

Revokes the identity and every certificate issued to it, closes its sessions, and records it in
the audit log, all in one transaction. For a user or service, the devices it owns are revoked with
it. A serving controller pushes the revocation to every connected gateway, which removes the
pinholes and closes the tunnels of the revoked devices. Prints the revoked certificate serials as
JSON.`,
  'identity disable': `Usage: umbra-controller identity disable NAME --data DIR

Shuts the identity out until \`identity enable\`: its knocks are refused, its sessions closed, and
connected gateways told to end them. Disabling a user or service shuts out the devices it owns.
Unlike revoke, nothing is lost: certificates and enrollment stay.`,
  'identity enable': `Usage: umbra-controller identity enable NAME --data DIR

Lets a disabled identity (and, for a user or service, its devices) knock again.`,
  'certificate revoke': `Usage: umbra-controller certificate revoke SERIAL --data DIR

Revokes one certificate (SERIAL in hex, as the audit log's enroll and renew entries show it).
Gateways refuse it for tunnels from then on; the identity itself stays enrolled.`,
  'gateway list': `Usage: umbra-controller gateway list --data DIR

Prints the gateways as JSON: name, status, where clients reach it (endpoint, from its link's hello),
whether its link is up (connected: it said hello, has not disconnected, and answered a ping within
the last minute), when it was last seen, and its attestation: unattested (software keys),
awaiting-approval (it attested PCR values nothing golden matched), approved, or quarantined (with
the reason; its knocks are refused).`,
  'gateway approve': `Usage: umbra-controller gateway approve NAME --data DIR

Approves the gateway NAME, which is awaiting approval: the PCR values its TPM attested become its
golden values, which every later attestation must match. Check them first (gateway list shows them)
against a box you trust. Refused in any other state: an unattested gateway has nothing to approve,
a quarantined one is released first. Prints the gateway's state and golden values as JSON.`,
  'gateway release': `Usage: umbra-controller gateway release NAME --data DIR

Takes the gateway NAME out of quarantine: the controller decides its knocks again. It becomes
approved when the PCR values it last attested are its golden values, awaiting approval when they
differ (approve them with \`gateway approve\` if the change was yours, such as a firmware update),
unattested when it never attested. Prints the gateway's new state as JSON.`,
  'gateway claim': `Usage: umbra-controller gateway claim --ek-hash H --site SITE [--name NAME] --data DIR

Zero-touch enrollment: the box whose TPM has the endorsement key with SHA-256 hash H (its SPKI; the
box shows it in its provisioning hello, and \`gateway list\` shows it for enrolled ones) may enroll
as the gateway NAME without a token, once, when its firmware carries this controller's URL and CA
pin and it gets network by DHCP. Its enrollment is attested as with a token: the EK must chain to a
CA added with \`ekca add\`, and its PCRs are checked against the golden values of its firmware.
NAME defaults to SITE in lower case with spaces as dashes; the gateway is created if it does not
exist. Audited (gateway.claim). Prints the claim as JSON.`,
  'gateway claims': `Usage: umbra-controller gateway claims --data DIR

Prints the zero-touch claims as JSON: EK hash, gateway, site, when made and when used (null until the
box enrolled).`,
  'ekca add': `Usage: umbra-controller ekca add FILE --data DIR

Trusts the CA certificates in FILE for the endorsement-key (EK) certificates of gateways' TPMs: the
TPM manufacturers' roots or intermediates you trust (PEM, one or more certificates; or one DER
certificate). Each must be a CA (basicConstraints cA=true). A certificate already trusted refuses
the whole file. Each addition is audited (ekca.add). Prints what was added as JSON.`,
  'ekca list': `Usage: umbra-controller ekca list --data DIR

Prints the trusted EK CA certificates as JSON: subject, issuer, SHA-256 fingerprint, notAfter and
when it was added.`,
  'ekca remove': `Usage: umbra-controller ekca remove FINGERPRINT --data DIR

Stops trusting the EK CA certificate with this SHA-256 fingerprint (hex, colons allowed, as
\`ekca list\` prints it). Audited (ekca.remove). Gateways already enrolled stay enrolled.`,
  'firmware pcrs add': `Usage: umbra-controller firmware pcrs add VERSION FILE --data DIR [--bank BANK]

Records golden PCR values for firmware VERSION: a gateway that attests this version with these
values is approved without an operator. FILE is \`tpm2_pcrread\` output from a box you trust
(e.g. \`tpm2_pcrread sha256:0,1,2,3,4,5,6,7 > FILE\`) or JSON { "sha256": { "0": "HEX", ... } }.
Banks sha1, sha256 and sha384; PCRs 0 to 23.
  --bank BANK   the bank to record when FILE gives several (default: the strongest it gives)
Audited (firmware.pcrs.add). Prints what was recorded as JSON.`,
  'firmware pcrs list': `Usage: umbra-controller firmware pcrs list --data DIR

Prints the golden PCR values per firmware version as JSON.`,
  'firmware pcrs remove': `Usage: umbra-controller firmware pcrs remove VERSION --data DIR

Forgets the golden PCR values of firmware VERSION. Audited (firmware.pcrs.remove). Gateways already
approved keep their own golden values.`,
  'gateway revoke': `Usage: umbra-controller gateway revoke NAME --data DIR

Revokes the gateway NAME (a box that was stolen or retired): its link to the controller is closed
at once and refused from then on, and it can never enroll again under that name. The controller
decides no more knocks for it (a box left running with failMode cached keeps deciding from its last
signed policy until it is switched off). Enroll a replacement with a new gateway token.`,
  sessions: `Usage: umbra-controller sessions --data DIR [--all]

Prints the open sessions (with --all, closed ones too) as JSON.`,
  audit: `Usage: umbra-controller audit --data DIR [--after SEQ]

Prints the audit log as JSON lines, oldest first, from after sequence number SEQ.`,
  serve: `Usage: umbra-controller serve --data DIR --listen HOST:PORT [--attest-interval SECONDS]

Serves the controller in the foreground (TLS 1.3, a certificate from its own CA for the host in its
URL), logging JSON lines: enrollment for devices (\`umbra enroll\`) and gateways (\`umbra-gateway
enroll\`); the gateway link (wss://HOST:PORT/v1/link, mutual TLS), which decides every knock and
pushes policy and revocations; the client API (service lookup, certificate renewal). Changes made
by the other commands, or by another controller sharing the database, reach the gateways within
50 ms (SQLite) or at once (PostgreSQL, LISTEN/NOTIFY). Stop it with SIGTERM or Ctrl-C.

Gateways enrolled with a TPM (\`umbra-gateway enroll --tpm\`) must sign each link with their TPM
identity key and are re-attested when they link and then every --attest-interval seconds (default
600): a fresh nonce, a quote over the boot PCRs, compared with the gateway's golden values. A quote
that does not verify or PCRs that drifted quarantine the gateway (its knocks are refused, an ALERT
line is logged, the audit log says why) until \`umbra-controller gateway release NAME\`.`,
} as const;

type Command = keyof typeof HELP;
const COMMANDS = Object.keys(HELP) as Command[];

async function withData<T>(
  values: Record<string, unknown>,
  help: string,
  work: (data: DataDir) => Promise<T>,
): Promise<T> {
  const data = await openDataDir(required(help, values, 'data'), values.database as string | undefined);
  try {
    return await work(data);
  } finally {
    await data.store.close();
  }
}

async function createToken(
  data: DataDir,
  kind: 'identity' | 'gateway',
  subjectName: string,
  groups: string[],
  ttlSeconds: number,
): Promise<string> {
  const { token, secretHash } = createEnrollmentToken({
    url: data.settings.url,
    pin: data.settings.caPin,
    kind,
  });
  const now = Date.now();
  await data.store.createEnrollmentToken({
    tokenHash: secretHash,
    kind,
    subjectName,
    groups,
    expiresAt: now + ttlSeconds * 1000,
  });
  await data.store.appendAudit({
    actor: ACTOR,
    action: `${kind === 'gateway' ? 'gateway.' : ''}token.create`,
    subject: subjectName,
    details: { groups, expiresAt: new Date(now + ttlSeconds * 1000).toISOString() },
  });
  return token;
}

async function ensureGroups(store: Store, names: string[]): Promise<void> {
  const existing = new Set((await store.listGroups()).map((group) => group.name));
  for (const name of names) {
    if (existing.has(name)) continue;
    await store.createGroup(name);
    process.stderr.write(`umbra-controller: created group ${name}\n`);
  }
}

async function main(argv: string[]): Promise<number> {
  const picked = pickCommand(argv, USAGE, COMMANDS);
  if (typeof picked === 'number') return picked;
  const { command, args: rest } = picked;
  const help = HELP[command];
  const data = { data: { type: 'string' }, database: { type: 'string' } } as const;

  switch (command) {
    case 'init': {
      const { values } = parseCommand(help, rest, {
        ...data,
        url: { type: 'string' },
        name: { type: 'string' },
        'time-zone': { type: 'string' },
      });
      if (values.help) return show(help);
      const created = await initDataDir(
        required(help, values, 'data'),
        required(help, values, 'url'),
        values.name ?? `Umbra CA ${hostname()}`.slice(0, 64),
        values.database,
        values['time-zone'],
      );
      await created.store.appendAudit({
        actor: ACTOR,
        action: 'init',
        subject: created.settings.url,
        details: {},
      });
      await created.store.close();
      console.log(created.settings.caPin);
      return 0;
    }
    case 'token create': {
      const { values } = parseCommand(help, rest, {
        ...data,
        identity: { type: 'string' },
        group: { type: 'string', multiple: true },
        ttl: { type: 'string' },
      });
      if (values.help) return show(help);
      const name = required(help, values, 'identity');
      const groups = values.group ?? [];
      const ttlSeconds = parseDuration(values.ttl ?? DEFAULT_TOKEN_TTL, 'ttl');
      const token = await withData(values, help, async ({ store, ...rest }) => {
        await ensureGroups(store, groups);
        const identity = await store.getIdentityByName(name);
        if (!identity) await store.createIdentity({ name, kind: 'device', groups });
        else if (identity.revokedAt !== null)
          throw new UsageError(`--identity ${name}: this identity is revoked`);
        else if (identity.publicKey !== null)
          throw new UsageError(
            `--identity ${name}: this identity is already enrolled; a device enrolls once (revoke it and enroll a new identity to replace the device)`,
          );
        else
          for (const group of groups)
            if (!identity.groups.includes(group)) await store.addToGroup(name, group);
        return createToken({ store, ...rest }, 'identity', name, groups, ttlSeconds);
      });
      console.log(token);
      return 0;
    }
    case 'gateway token create': {
      const { values } = parseCommand(help, rest, {
        ...data,
        name: { type: 'string' },
        ttl: { type: 'string' },
      });
      if (values.help) return show(help);
      const name = required(help, values, 'name');
      const ttlSeconds = parseDuration(values.ttl ?? DEFAULT_TOKEN_TTL, 'ttl');
      const token = await withData(values, help, async (dir) => {
        if (!(await dir.store.getGatewayByName(name))) await dir.store.createGateway({ name });
        return createToken(dir, 'gateway', name, [], ttlSeconds);
      });
      console.log(token);
      return 0;
    }
    case 'service add': {
      const { values } = parseCommand(help, rest, {
        ...data,
        name: { type: 'string' },
        gateway: { type: 'string' },
        backend: { type: 'string' },
        mode: { type: 'string' },
      });
      if (values.help) return show(help);
      const input = {
        name: required(help, values, 'name'),
        gateway: required(help, values, 'gateway'),
        backend: required(help, values, 'backend'),
        mode: (values.mode ?? 'tunnel') as 'tunnel' | 'direct',
      };
      const service = await withData(values, help, async ({ store }) => {
        const created = await store.createService(input);
        await store.appendAudit({ actor: ACTOR, action: 'service.add', subject: input.name, details: input });
        return created;
      });
      console.log(JSON.stringify(service, null, 2));
      return 0;
    }
    case 'policy add': {
      const { values } = parseCommand(help, rest, {
        ...data,
        identity: { type: 'string' },
        group: { type: 'string' },
        service: { type: 'string' },
        require: { type: 'string', multiple: true },
        ttl: { type: 'string' },
        hours: { type: 'string' },
        days: { type: 'string' },
      });
      if (values.help) return show(help);
      if ((values.identity === undefined) === (values.group === undefined))
        throw new UsageError(`give exactly one of --identity NAME or --group G\n\n${help}`);
      const subject =
        values.identity !== undefined
          ? { kind: 'identity' as const, name: values.identity }
          : { kind: 'group' as const, name: values.group! };
      const input = {
        subject,
        service: required(help, values, 'service'),
        requirements: values.require ?? [],
        hours: values.hours,
        days: values.days,
        maxTtlSeconds: values.ttl === undefined ? undefined : parseDuration(values.ttl, 'ttl'),
      };
      const policy = await withData(values, help, async ({ store }) => {
        const added = await store.addPolicy(input);
        await store.appendAudit({
          actor: ACTOR,
          action: 'policy.add',
          subject: `${subject.kind}:${subject.name}`,
          details: { ...input, policy: added.id },
        });
        return added;
      });
      console.log(JSON.stringify(policy, null, 2));
      return 0;
    }
    case 'identity list': {
      const { values } = parseCommand(help, rest, data);
      if (values.help) return show(help);
      console.log(
        JSON.stringify(await withData(values, help, ({ store }) => store.listIdentities()), null, 2),
      );
      return 0;
    }
    case 'identity revoke': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const name = identityName(positionals, help);
      const change = await withData(values, help, async ({ store }) => {
        await requireIdentity(store, name);
        return store.revokeIdentityWithDevices(name, Date.now(), ACTOR);
      });
      const devices = change.identities.slice(1).map((identity) => identity.name);
      if (devices.length > 0)
        process.stderr.write(`umbra-controller: revoked ${name}'s devices too: ${devices.join(', ')}\n`);
      console.log(JSON.stringify({ identity: name, revokedCertificates: change.serials }, null, 2));
      return 0;
    }
    case 'identity disable':
    case 'identity enable': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const name = identityName(positionals, help);
      const disabled = command === 'identity disable';
      const change = await withData(values, help, async ({ store }) => {
        await requireIdentity(store, name);
        return store.setIdentityDisabledWithDevices(name, disabled, Date.now(), ACTOR);
      });
      console.log(
        JSON.stringify(
          {
            identity: name,
            disabled,
            devices: change.identities.slice(1).map((identity) => identity.name),
            closedSessions: change.sessions,
          },
          null,
          2,
        ),
      );
      return 0;
    }
    case 'certificate revoke': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const serial = positionals[0];
      if (!serial) throw new UsageError(`missing the certificate's SERIAL\n\n${help}`);
      const change = await withData(values, help, ({ store }) =>
        store.revokeCertificateWithAudit(serial, Date.now(), ACTOR),
      );
      if (change.serials.length === 0)
        process.stderr.write(`umbra-controller: certificate ${serial.toLowerCase()} was already revoked\n`);
      console.log(
        JSON.stringify(
          { serial: serial.toLowerCase(), identity: change.identities[0]?.name ?? null },
          null,
          2,
        ),
      );
      return 0;
    }
    case 'gateway revoke': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const name = positionals[0];
      if (!name) throw new UsageError(`missing the gateway's NAME\n\n${help}`);
      const gateway = await withData(values, help, ({ store }) =>
        store.revokeGateway(name, Date.now(), ACTOR),
      );
      console.log(JSON.stringify({ gateway: gateway.name, status: gateway.status }, null, 2));
      return 0;
    }
    case 'gateway approve':
    case 'gateway release': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const name = positionals[0];
      if (!name) throw new UsageError(`missing the gateway's NAME\n\n${help}`);
      const gateway = await withData(values, help, ({ store }) =>
        command === 'gateway approve'
          ? store.approveGateway(name, Date.now(), ACTOR)
          : store.releaseGateway(name, Date.now(), ACTOR),
      );
      const { state, golden } = gateway.attestation;
      console.log(JSON.stringify({ gateway: gateway.name, attestation: state, golden }, null, 2));
      return 0;
    }
    case 'gateway claim': {
      const { values } = parseCommand(help, rest, {
        ...data,
        'ek-hash': { type: 'string' },
        site: { type: 'string' },
        name: { type: 'string' },
      });
      if (values.help) return show(help);
      const ekHash = required(help, values, 'ek-hash').toLowerCase();
      const site = required(help, values, 'site');
      const name = values.name ?? site.trim().toLowerCase().replace(/\s+/g, '-');
      const claim = await withData(values, help, async ({ store }) => {
        if (!(await store.getGatewayByName(name))) await store.createGateway({ name });
        return store.addGatewayClaim({ ekHash, gateway: name, site }, Date.now(), ACTOR);
      });
      console.log(JSON.stringify({ ...claim, createdAt: isoOrNull(claim.createdAt) }, null, 2));
      return 0;
    }
    case 'gateway claims': {
      const { values } = parseCommand(help, rest, data);
      if (values.help) return show(help);
      const claims = await withData(values, help, ({ store }) => store.listGatewayClaims());
      console.log(
        JSON.stringify(
          claims.map((claim) => ({
            ...claim,
            createdAt: isoOrNull(claim.createdAt),
            usedAt: isoOrNull(claim.usedAt),
          })),
          null,
          2,
        ),
      );
      return 0;
    }
    case 'ekca add': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const file = positionals[0];
      if (!file) throw new UsageError(`missing the FILE of CA certificates\n\n${help}`);
      const roots = parseEkRoots(await readInput(file), file);
      const now = Date.now();
      const added = await withData(values, help, ({ store }) =>
        store.addEkRoots(roots, now, ACTOR).catch((error: unknown) => {
          const index = /^roots\[(\d+)\]$/.exec(error instanceof StoreError ? (error.field ?? '') : '');
          if (error instanceof StoreError && error.code === 'duplicate' && index) {
            const root = roots[Number(index[1])]!;
            throw new AttestationFileError(
              `${file}: certificate ${Number(index[1]) + 1} of ${roots.length} ("${root.subject}", ` +
                `SHA-256 ${root.fingerprint}) is already trusted or listed twice; nothing was added ` +
                '(remove it from the file, or see umbra-controller ekca list)',
            );
          }
          throw error;
        }),
      );
      for (const root of added)
        if (root.notAfter <= now)
          process.stderr.write(
            `umbra-controller: warning: "${root.subject}" expired on ${isoOrNull(root.notAfter)}\n`,
          );
      console.log(JSON.stringify(added.map(ekRootListing), null, 2));
      return 0;
    }
    case 'ekca list': {
      const { values } = parseCommand(help, rest, data);
      if (values.help) return show(help);
      const roots = await withData(values, help, ({ store }) => store.listEkRoots());
      console.log(JSON.stringify(roots.map(ekRootListing), null, 2));
      return 0;
    }
    case 'ekca remove': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const fingerprint = positionals[0];
      if (!fingerprint) throw new UsageError(`missing the certificate's FINGERPRINT\n\n${help}`);
      const removed = await withData(values, help, ({ store }) =>
        store.removeEkRoot(fingerprint, Date.now(), ACTOR),
      );
      console.log(JSON.stringify({ removed: ekRootListing(removed) }, null, 2));
      return 0;
    }
    case 'firmware pcrs add': {
      const { values, positionals } = parseCommand(help, rest, { ...data, bank: { type: 'string' } }, 2);
      if (values.help) return show(help);
      const [version, file] = positionals;
      if (!version || !file) throw new UsageError(`missing the firmware VERSION or the FILE\n\n${help}`);
      const sets = parsePcrFile((await readInput(file)).toString('utf8'), file);
      const golden = pickPcrBank(sets, file, values.bank);
      if (sets.length > 1)
        process.stderr.write(
          `umbra-controller: recording the ${golden.bank} values of ${file} (it also gives ` +
            `${sets.flatMap((set) => (set === golden ? [] : [set.bank])).join(', ')}; choose with --bank)\n`,
        );
      const added = await withData(values, help, ({ store }) =>
        store.addFirmwarePcrs({ version, ...golden }, Date.now(), ACTOR),
      );
      console.log(JSON.stringify(firmwareListing(added), null, 2));
      return 0;
    }
    case 'firmware pcrs list': {
      const { values } = parseCommand(help, rest, data);
      if (values.help) return show(help);
      const golden = await withData(values, help, ({ store }) => store.listFirmwarePcrs());
      console.log(JSON.stringify(golden.map(firmwareListing), null, 2));
      return 0;
    }
    case 'firmware pcrs remove': {
      const { values, positionals } = parseCommand(help, rest, data, 1);
      if (values.help) return show(help);
      const version = positionals[0];
      if (!version) throw new UsageError(`missing the firmware VERSION\n\n${help}`);
      const removed = await withData(values, help, ({ store }) =>
        store.removeFirmwarePcrs(version, Date.now(), ACTOR),
      );
      console.log(JSON.stringify({ removed: firmwareListing(removed) }, null, 2));
      return 0;
    }
    case 'gateway list': {
      const { values } = parseCommand(help, rest, data);
      if (values.help) return show(help);
      const gateways = await withData(values, help, ({ store }) => store.listGateways());
      const now = Date.now();
      console.log(
        JSON.stringify(
          gateways.map((gateway) => ({
            name: gateway.name,
            status: gateway.status,
            endpoint: gateway.endpoint,
            connected: isConnected(gateway, now),
            connectedAt: isoOrNull(gateway.connectedAt),
            lastSeenAt: isoOrNull(gateway.lastSeenAt),
            attestation: gateway.attestation.state,
            ...(gateway.attestation.quarantineReason === null
              ? {}
              : { quarantineReason: gateway.attestation.quarantineReason }),
            firmwareVersion: gateway.attestation.firmwareVersion,
            // The TPM it enrolled with (SHA-256 of its EK's public key), null for software keys.
            ekHash: gateway.tpm?.ekHash ?? null,
            attestedPcrs: gateway.attestation.pcrs,
            goldenPcrs: gateway.attestation.golden,
          })),
          null,
          2,
        ),
      );
      return 0;
    }
    case 'sessions': {
      const { values } = parseCommand(help, rest, { ...data, all: { type: 'boolean' } });
      if (values.help) return show(help);
      const sessions = await withData(values, help, ({ store }) =>
        store.listSessions(values.all ? {} : { open: true }),
      );
      console.log(JSON.stringify(sessions, null, 2));
      return 0;
    }
    case 'serve': {
      const { values } = parseCommand(help, rest, {
        ...data,
        listen: { type: 'string' },
        'attest-interval': { type: 'string' },
      });
      if (values.help) return show(help);
      const { host, port } = parseListen(required(help, values, 'listen'));
      const attestSeconds = Number(values['attest-interval'] ?? 600);
      if (!Number.isInteger(attestSeconds) || attestSeconds < 1 || attestSeconds > 86_400)
        throw new UsageError(
          `--attest-interval: expected whole seconds from 1 to 86400, got "${values['attest-interval']}"`,
        );
      const opened = await openDataDir(required(help, values, 'data'), values.database);
      // Loaded here: the HTTPS server, the link and their dependencies would slow every admin
      // command's start, and a revocation's time counts from the command.
      const { startServer } = await import('./api/server.ts');
      const server = await startServer(opened, host, port, { attestIntervalMs: attestSeconds * 1000 });
      await new Promise<void>((resolve) => {
        const stop = () => {
          server.close().then(resolve, resolve);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await opened.store.close();
      return 0;
    }
    case 'audit': {
      const { values } = parseCommand(help, rest, { ...data, after: { type: 'string' } });
      if (values.help) return show(help);
      const after = values.after === undefined ? 0 : Number(values.after);
      if (!Number.isSafeInteger(after) || after < 0)
        throw new UsageError(`--after "${values.after}": expected a sequence number`);
      await withData(values, help, async ({ store }) => {
        // Pages of 1000, so a long log streams instead of being held in memory at once.
        for (let last = after; ; ) {
          const page = await store.listAudit(last, 1000);
          for (const entry of page) process.stdout.write(`${JSON.stringify(entry)}\n`);
          if (page.length < 1000) break;
          last = page.at(-1)!.seq;
        }
      });
      return 0;
    }
  }
}

function identityName(positionals: string[], help: string): string {
  const name = positionals[0];
  if (!name) throw new UsageError(`missing the identity's NAME\n\n${help}`);
  return name;
}

async function requireIdentity(store: Store, name: string): Promise<void> {
  if (!(await store.getIdentityByName(name)))
    throw new UsageError(`identity "${name}" does not exist (umbra-controller identity list)`);
}

/**
 * Up: said hello, has not disconnected since, and was seen within a few ping intervals (a controller
 * that died cannot record the disconnect; its silence tells).
 */
function isConnected(gateway: Gateway, now: number): boolean {
  const { connectedAt, disconnectedAt, lastSeenAt } = gateway;
  if (connectedAt === null || lastSeenAt === null) return false;
  if (disconnectedAt !== null && disconnectedAt >= connectedAt) return false;
  return now - lastSeenAt <= CONNECTED_WITHIN_MS;
}

/** A file the operator named; a read failure names it. */
async function readInput(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    throw new AttestationFileError(
      `${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? error})`,
    );
  }
}

function ekRootListing(root: EkRoot) {
  return {
    subject: root.subject,
    issuer: root.issuer,
    fingerprint: root.fingerprint,
    notAfter: isoOrNull(root.notAfter),
    added: isoOrNull(root.addedAt),
  };
}

function firmwareListing(golden: FirmwarePcrs) {
  return { version: golden.version, bank: golden.bank, pcrs: golden.pcrs, added: isoOrNull(golden.addedAt) };
}

function isoOrNull(time: number | null): string | null {
  return time === null ? null : new Date(time).toISOString();
}

/** HOST:PORT or [IPv6]:PORT, as --listen takes it. */
function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65535)
    throw new UsageError(`--listen "${text}": expected HOST:PORT or [IPv6]:PORT, e.g. 0.0.0.0:8443`);
  return { host: match[1] ?? match[2]!, port };
}

function show(help: string): number {
  console.log(help);
  return 0;
}

runCli('umbra-controller', main, [DataDirError, StoreError, AttestationFileError]);
