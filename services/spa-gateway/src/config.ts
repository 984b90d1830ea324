// The gateway's configuration file (YAML or JSON), validated at load. Every error names the file
// and the key, and says what would be accepted, so an operator can fix it without reading code.

import type { KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { decodeKey, ed25519PublicKeyObject, identityIdOf, SPA_DEFAULT_PORT } from '@umbra/protocol';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { type AccessRule, parseAccessRule } from './access.ts';
import { MAX_TTL_SECONDS } from './firewall/index.ts';
import { MAX_TUNNEL_WORKERS } from './tunnel/listener.ts';

const accessRule = z.string().refine((text) => parseAccessRule(text) !== null, {
  message:
    'expected PROTOCOL/PORT or PROTOCOL/FIRST-LAST with protocol tcp or udp and ports 1-65535, e.g. "tcp/22"',
});

const publicKey = z.string().refine(
  (text) => {
    try {
      decodeKey(text, 'publicKey');
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected the 44-character base64 public key printed by `umbra keygen`' },
);

const clientSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/, {
      message: 'expected 1-64 letters, digits or ._@- (it appears in logs)',
    }),
    publicKey,
    allow: z.array(accessRule).min(1, { message: 'list at least one access such as "tcp/22"' }),
    ttlSeconds: z.number().int().min(1).max(MAX_TTL_SECONDS).default(30),
    /** Overrides the top-level setting for this client (e.g. on for a device that is never behind NAT). */
    requireSourceBinding: z.boolean().optional(),
  })
  .strict();

const schema = z
  .object({
    // As the kernel allows: 1-15 characters, no '/', ':' or white space, and not "." or "..".
    interface: z.string().regex(/^(?!\.\.?$)[A-Za-z0-9._@-]{1,15}$/, {
      message: 'expected a network interface name such as eth0',
    }),
    spaPort: z.number().int().min(1).max(65535).default(SPA_DEFAULT_PORT),
    keyDir: z.string().min(1),
    stateDir: z.string().min(1),
    timeWindowSeconds: z.number().int().min(1).max(600).default(30),
    requireSourceBinding: z.boolean().default(false),
    budget: z
      .object({
        knocksPerSecond: z.number().positive().max(100000).default(20),
        burst: z.number().int().min(1).max(100000).default(40),
        totalKnocksPerSecond: z.number().positive().max(100000).default(1000),
        totalBurst: z.number().int().min(1).max(100000).default(1000),
      })
      .strict()
      .default({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
        rejectionsPerSecond: z.number().int().min(0).max(10000).default(20),
      })
      .strict()
      .default({}),
    clients: z.array(clientSchema).default([]),
    /** For a gateway enrolled with a controller (`run --dir`): what happens when it cannot answer. */
    controller: z
      .object({
        failMode: z.enum(['cached', 'closed']).default('cached'),
        /** The host or address clients knock and connect to; default the interface's first address. */
        advertise: z.string().min(1).max(253).optional(),
      })
      .strict()
      .default({}),
    /** The TLS listener tunnels arrive at, behind the pinholes like any other port. */
    tunnel: z
      .object({
        port: z.number().int().min(1).max(65535).default(8443),
        listen: z.string().min(1).max(64).default('::'),
        /** Threads doing the tunnels' TLS; 0 does it in the gateway's main thread. Default: min(2, cores). */
        workers: z.number().int().min(0).max(MAX_TUNNEL_WORKERS).optional(),
      })
      .strict()
      .default({}),
    /**
     * The box's hardware watchdog, fed only while the gateway is healthy (its firewall in place, its
     * capture running). Absent: no watchdog (a development machine).
     */
    watchdog: z
      .object({
        device: z.string().min(1).default('/dev/watchdog'),
        intervalSeconds: z.number().int().min(1).max(60).default(5),
      })
      .strict()
      .optional(),
  })
  .strict();

export type RawConfig = z.infer<typeof schema>;

export interface Client {
  name: string;
  identityId: Buffer;
  publicKey: KeyObject;
  allow: AccessRule[];
  ttlSeconds: number;
  /** Refuse this client's knocks unless they name the address they come from. */
  requireSourceBinding: boolean;
}

export interface GatewayConfig extends Omit<RawConfig, 'clients'> {
  /** The file it came from, for messages. */
  path: string;
  clients: Client[];
  /** Set for a gateway run by a controller: the directory `umbra-gateway enroll` filled. */
  enrollmentDir?: string;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(path: string): GatewayConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(
      `${path}: cannot read the configuration: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  return parseConfig(text, path);
}

export function parseConfig(text: string, path: string): GatewayConfig {
  return parseDocument(parseText(text, path), path);
}

function parseText(text: string, path: string): unknown {
  try {
    // YAML 1.2 is a superset of JSON, so one parser reads both.
    return parseYaml(text, { prettyErrors: true, uniqueKeys: true }) ?? {};
  } catch (error) {
    throw new ConfigError(`${path}: not valid YAML or JSON: ${(error as Error).message.split('\n')[0]}`);
  }
}

/**
 * The configuration of a gateway enrolled with a controller: `run --dir DIR --interface IF`, with
 * an optional file adding settings (budget, log, controller.failMode, tunnel). Keys and state live
 * in DIR; who may knock comes from the controller, so the file may not list clients.
 */
export function loadEnrolledConfig(options: {
  dir: string;
  interface: string;
  file?: string;
}): GatewayConfig {
  const dir = resolve(options.dir);
  let document: Record<string, unknown> = {};
  let path = `--dir ${options.dir}`;
  if (options.file) {
    path = options.file;
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (error) {
      throw new ConfigError(
        `${path}: cannot read the configuration: ${(error as NodeJS.ErrnoException).code ?? error}`,
      );
    }
    const parsed = parseText(text, path);
    if (typeof parsed !== 'object' || Array.isArray(parsed))
      throw new ConfigError(`${path}: (top level): expected a mapping of settings`);
    document = parsed as Record<string, unknown>;
    for (const key of ['clients', 'keyDir', 'interface'])
      if (key in document)
        throw new ConfigError(
          `${path}: ${key}: not allowed with --dir (${key === 'clients' ? 'who may knock comes from the controller' : key === 'interface' ? 'give --interface' : 'the keys are in --dir'})`,
        );
  }
  const config = parseDocument(
    { stateDir: join(dir, 'state'), ...document, interface: options.interface, keyDir: dir },
    path,
  );
  return { ...config, enrollmentDir: dir };
}

function parseDocument(document: unknown, path: string): GatewayConfig {
  const result = schema.safeParse(document);
  if (!result.success) {
    const lines = result.error.issues.map((issue) => `${path}: ${keyPath(issue.path)}: ${describe(issue)}`);
    throw new ConfigError(lines.join('\n'));
  }
  const raw = result.data;
  const base = dirname(resolve(path));
  const clients = raw.clients.map((client) => ({
    name: client.name,
    identityId: identityIdOf(decodeKey(client.publicKey, 'publicKey')),
    publicKey: ed25519PublicKeyObject(decodeKey(client.publicKey, 'publicKey')),
    allow: client.allow.map((rule) => parseAccessRule(rule)!),
    ttlSeconds: client.ttlSeconds,
    requireSourceBinding: client.requireSourceBinding ?? raw.requireSourceBinding,
  }));
  const seenNames = new Map<string, number>();
  const seenKeys = new Map<string, number>();
  raw.clients.forEach((client, i) => {
    const sameName = seenNames.get(client.name);
    if (sameName !== undefined)
      throw new ConfigError(
        `${path}: clients[${i}].name: "${client.name}" is already used by clients[${sameName}]`,
      );
    const sameKey = seenKeys.get(client.publicKey);
    if (sameKey !== undefined)
      throw new ConfigError(
        `${path}: clients[${i}].publicKey: the same key is already given to clients[${sameKey}]`,
      );
    seenNames.set(client.name, i);
    seenKeys.set(client.publicKey, i);
  });
  return {
    ...raw,
    path,
    keyDir: resolve(base, raw.keyDir),
    stateDir: resolve(base, raw.stateDir),
    clients,
  };
}

function keyPath(path: readonly (string | number)[]): string {
  if (path.length === 0) return '(top level)';
  return path
    .map((part, i) => (typeof part === 'number' ? `[${part}]` : i === 0 ? String(part) : `.${String(part)}`))
    .join('');
}

function describe(issue: z.ZodIssue): string {
  if (issue.code === 'unrecognized_keys')
    return `unknown key(s) ${issue.keys.join(', ')}; see the README for the keys`;
  if (issue.code === 'invalid_type' && issue.received === 'undefined') return 'missing: this key is required';
  if (issue.code === 'invalid_type') return `expected ${issue.expected}, got ${issue.received}`;
  return issue.message;
}
