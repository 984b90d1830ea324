// `umbra-tech bundle create` and `umbra-tech key create`: the organisation's provisioning key pair,
// and site bundles signed with it (protocol/src/provisioning/site-bundle.ts).
//
// Every check that can name a command-line option does so here, before createSiteBundle checks
// the fields again: "--token: made for https://a.example/, not for --controller https://b.example/".
// The bundle holds the enrollment token's secret, so it is written like a key: 0600, never
// replacing a file unless told, and nothing here ever prints the token.

import { X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname } from 'node:path';
import { UsageError } from '@umbra/cli-kit';
import {
  createSiteBundle,
  EnrollmentTokenError,
  formatProvisioningPublicKeyLine,
  generateProvisioningKey,
  MAX_DNS_SERVERS,
  MAX_NTP_SERVERS,
  MAX_SITE_BUNDLE_LIFETIME_MS,
  type NetworkSettings,
  type ProvisioningKey,
  parseEnrollmentToken,
  pinOf,
  readProvisioningPrivateKey,
  SecretFileError,
  SiteBundleError,
  writeProvisioningKey,
  writeSecretFile,
} from '@umbra/protocol';

export interface BundleCreateOptions {
  controller: string;
  /** Path of the controller CA's certificate (PEM or DER). */
  ca: string;
  token: string;
  site: string;
  /** "dhcp" or "static:ADDR/PREFIX,GW". */
  network: string;
  vlan?: string;
  dns?: string[];
  ntp?: string[];
  /** Lifetime in seconds (default 7 days). */
  expiresInSeconds?: number;
  signKey: string;
  out: string;
  force?: boolean;
  now?: number;
}

export interface CreatedBundle {
  path: string;
  bytes: number;
  site: string;
  controllerUrl: string;
  network: NetworkSettings;
  keyId: string;
  expiresAt: number;
}

export const DEFAULT_BUNDLE_LIFETIME_SECONDS = 7 * 86_400;

/** "dhcp" or "static:ADDR/PREFIX,GW" (option --network). */
export function parseNetworkOption(
  text: string,
): { mode: 'dhcp' } | { mode: 'static'; address: string; gateway: string } {
  if (text === 'dhcp') return { mode: 'dhcp' };
  const match = /^static:([^,\s]+\/\d{1,3}),([^,\s]+)$/.exec(text);
  if (!match)
    throw new UsageError(
      `--network "${text}": expected dhcp or static:ADDR/PREFIX,GW, e.g. static:192.0.2.10/24,192.0.2.1`,
    );
  return { mode: 'static', address: match[1]!, gateway: match[2]! };
}

/** Repeated options also take comma-separated lists: --dns 192.0.2.53,192.0.2.54. */
function list(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((value) => value.split(','))
    .map((value) => value.trim())
    .filter(Boolean);
}

/** Which option a bundle field comes from, for errors. */
function optionOf(field: string | undefined): string {
  if (!field) return 'the bundle';
  if (field.startsWith('controllerUrl')) return '--controller';
  if (field.startsWith('caPin')) return '--ca';
  if (field.startsWith('enrollmentToken')) return '--token';
  if (field.startsWith('site')) return '--site';
  if (field.startsWith('network.vlan')) return '--vlan';
  if (field.startsWith('network.dns')) return '--dns';
  if (field.startsWith('network.ntp')) return '--ntp';
  if (field.startsWith('network')) return '--network';
  if (field.startsWith('expiresAt') || field.startsWith('createdAt')) return '--expires';
  return field;
}

export function buildNetwork(
  options: Pick<BundleCreateOptions, 'network' | 'vlan' | 'dns' | 'ntp'>,
): NetworkSettings {
  const base = parseNetworkOption(options.network);
  let vlan: number | undefined;
  if (options.vlan !== undefined) {
    vlan = Number(options.vlan);
    if (!/^\d{1,4}$/.test(options.vlan) || vlan < 1 || vlan > 4094)
      throw new UsageError(`--vlan "${options.vlan}": expected a VLAN id from 1 to 4094`);
  }
  const dns = list(options.dns);
  for (const server of dns)
    if (isIP(server) === 0)
      throw new UsageError(`--dns "${server}": expected the IPv4 or IPv6 address of a DNS server`);
  if (dns.length > MAX_DNS_SERVERS)
    throw new UsageError(`--dns: ${dns.length} servers; a bundle holds at most ${MAX_DNS_SERVERS}`);
  const ntp = list(options.ntp);
  if (ntp.length > MAX_NTP_SERVERS)
    throw new UsageError(`--ntp: ${ntp.length} servers; a bundle holds at most ${MAX_NTP_SERVERS}`);
  return { ...base, ...(vlan === undefined ? {} : { vlan }), dns, ntp };
}

function readCaPin(path: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new UsageError(
      `--ca ${path}: cannot read it (${(error as NodeJS.ErrnoException).code}); give the controller's CA certificate (ca.crt in its data directory)`,
    );
  }
  try {
    return pinOf(new X509Certificate(bytes));
  } catch {
    throw new UsageError(
      `--ca ${path}: not a certificate (PEM or DER); give the controller's CA certificate (ca.crt in its data directory)`,
    );
  }
}

function checkToken(text: string, controllerUrl: string, caPin: string): void {
  let token: ReturnType<typeof parseEnrollmentToken>;
  try {
    token = parseEnrollmentToken(text);
  } catch (error) {
    // The token parser's messages never quote the secret.
    throw new UsageError(
      `--token: ${error instanceof EnrollmentTokenError ? error.message : 'not an enrollment token'}`,
    );
  }
  if (token.kind !== 'gateway')
    throw new UsageError(
      `--token: an ${token.kind} token; a box needs a gateway token (umbra-controller gateway token create --name GW)`,
    );
  if (token.url !== controllerUrl)
    throw new UsageError(
      `--token: made for controller ${token.url}, not for --controller ${controllerUrl}; use the token's controller URL or a token from this controller`,
    );
  if (token.pin !== caPin)
    throw new UsageError(
      '--token: carries another CA pin than the certificate in --ca; give the CA certificate of the controller that made the token',
    );
}

function readSignKey(path: string): ProvisioningKey {
  return readProvisioningPrivateKey(path, `--sign-key ${path}`);
}

/** Builds, signs and writes a site bundle (0600); returns what the summary line shows. */
export async function createBundleFile(options: BundleCreateOptions): Promise<CreatedBundle> {
  if (!URL.canParse(options.controller) || new URL(options.controller).protocol !== 'https:')
    throw new UsageError(
      `--controller "${options.controller}": expected the controller's https URL, e.g. https://controller.example:8443`,
    );
  const controllerUrl = new URL(options.controller).href;
  const caPin = readCaPin(options.ca);
  checkToken(options.token, controllerUrl, caPin);
  const network = buildNetwork(options);
  const lifetimeMs = (options.expiresInSeconds ?? DEFAULT_BUNDLE_LIFETIME_SECONDS) * 1000;
  if (lifetimeMs <= 0 || lifetimeMs > MAX_SITE_BUNDLE_LIFETIME_MS)
    throw new UsageError(
      `--expires: at most ${MAX_SITE_BUNDLE_LIFETIME_MS / 86_400_000}d; a bundle is for the install at hand`,
    );
  const key = readSignKey(options.signKey);
  const createdAt = options.now ?? Date.now();
  const expiresAt = createdAt + lifetimeMs;
  let bundle: Buffer;
  try {
    bundle = createSiteBundle(
      {
        controllerUrl,
        caPin,
        enrollmentToken: options.token.trim(),
        site: options.site,
        network,
        createdAt,
        expiresAt,
      },
      key.privateKey,
    );
  } catch (error) {
    if (error instanceof SiteBundleError && error.code === 'invalid-field')
      throw new UsageError(`${optionOf(error.field)}: ${error.message}`);
    throw error;
  }
  await writeBundleFile(options.out, bundle, options.force === true);
  return {
    path: options.out,
    bytes: bundle.length,
    site: options.site,
    controllerUrl,
    network,
    keyId: key.keyId,
    expiresAt,
  };
}

export function describeNetwork(network: NetworkSettings): string {
  const parts: string[] = [
    network.mode === 'dhcp' ? 'dhcp' : `static ${network.address} via ${network.gateway}`,
  ];
  if (network.vlan !== undefined) parts.push(`vlan ${network.vlan}`);
  if (network.dns.length > 0) parts.push(`dns ${network.dns.join(',')}`);
  if (network.ntp.length > 0) parts.push(`ntp ${network.ntp.join(',')}`);
  return parts.join(', ');
}

/** The one line `bundle create` prints: nothing secret. */
export function bundleSummary(created: CreatedBundle): string {
  return `wrote ${created.path} (${created.bytes} bytes, mode 0600): site "${created.site}", controller ${created.controllerUrl}, network ${describeNetwork(created.network)}, signed by provisioning key ${created.keyId}, expires ${new Date(created.expiresAt).toISOString()}`;
}

export interface CreatedKey {
  privatePath: string;
  publicPath: string;
  keyId: string;
  /** The public key as the firmware configuration's one line of base64. */
  publicLine: string;
}

/** Makes the organisation's provisioning key pair: FILE (0600) and FILE.pub. */
export async function createKeyFiles(out: string): Promise<CreatedKey> {
  const publicPath = `${out}.pub`;
  // Checked first so a refusal leaves no half-made pair behind; writeProvisioningKey still refuses
  // to replace either file should one appear meanwhile.
  for (const path of [out, publicPath])
    if (existsSync(path))
      throw new UsageError(
        `--out ${out}: ${path} already exists; a provisioning key is never replaced — choose another --out, or move the old pair away`,
      );
  const key = generateProvisioningKey();
  await writeProvisioningKey(key, { privateKey: out, publicKey: publicPath });
  return {
    privatePath: out,
    publicPath,
    keyId: key.keyId,
    publicLine: formatProvisioningPublicKeyLine(key.publicKey),
  };
}

/**
 * Writes the bundle's bytes readable by the owner only from the first byte (it holds the token's
 * secret), never half a bundle, and not over an existing file unless `overwrite` (writeSecretFile);
 * its refusals are worded for --out.
 */
async function writeBundleFile(path: string, bytes: Buffer, overwrite: boolean): Promise<void> {
  try {
    await writeSecretFile(path, bytes, { overwrite });
  } catch (error) {
    if (!(error instanceof SecretFileError)) throw error;
    const code = error.code;
    const why =
      code === 'EEXIST'
        ? 'it exists; give another --out, or --force to replace it'
        : code === 'ENOENT'
          ? `directory ${dirname(path)} does not exist; create it first`
          : code === 'EACCES' || code === 'EPERM'
            ? `no permission to create files in ${dirname(path)}`
            : `cannot write it (${code ?? error.message})`;
    throw new SecretFileError(`--out ${path}: ${why}`, code, error);
  }
}
