// The box's network, applied from a site bundle transactionally: snapshot what is there (the caller
// persists the snapshot before anything changes, so a power cut can roll back), apply, verify that
// the controller can be reached, and roll back to the snapshot on any failure.
//
// `LinuxNetworkApplier` drives one interface with `ip` (optionally inside a network namespace, for
// tests): address and prefix, default route, an 802.1Q sub-interface IF.VID when the bundle names a
// VLAN, resolv.conf (written atomically under a configurable etc dir) for DNS, and DHCP through
// `udhcpc` or `dhclient`. `MemoryNetworkApplier` is the same in memory, for unit tests.

import { execFile } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { connect, isIP } from 'node:net';
import { delimiter, join } from 'node:path';
import type { NetworkSettings } from '@umbra/protocol';
import { writeFileAtomic } from '@umbra/protocol';
import { z } from 'zod';

export type { NetworkSettings };

export const NetworkSnapshotSchema = z
  .object({
    interface: z.string().min(1).max(15),
    links: z.array(
      z
        .object({
          name: z.string().min(1).max(15),
          up: z.boolean(),
          /** Global-scope addresses, ADDRESS/PREFIX. */
          addresses: z.array(z.string()),
          vlan: z.object({ parent: z.string(), id: z.number().int() }).strict().optional(),
        })
        .strict(),
    ),
    /** Default routes of the main table, every interface's (a new default route replaces one). */
    defaultRoutes: z.array(
      z
        .object({
          family: z.union([z.literal(4), z.literal(6)]),
          gateway: z.string().optional(),
          dev: z.string(),
          metric: z.number().int().optional(),
        })
        .strict(),
    ),
    /** resolv.conf's contents, or null when there was none. */
    resolvConf: z.string().nullable(),
    /** ntp.conf's contents, or null when there was none (absent in snapshots from before NTP was applied). */
    ntpConf: z.string().nullable().optional(),
  })
  .strict();

/** What the network was: enough to put it back. */
export type NetworkSnapshot = z.infer<typeof NetworkSnapshotSchema>;
export type LinkSnapshot = NetworkSnapshot['links'][number];
export type RouteSnapshot = NetworkSnapshot['defaultRoutes'][number];

export interface NetworkApplier {
  /** The interface the bundle's settings go on (the uplink). */
  readonly interface: string;
  current(): Promise<NetworkSnapshot>;
  apply(settings: NetworkSettings): Promise<void>;
  rollback(previous: NetworkSnapshot): Promise<void>;
}

export type NetworkErrorCode = 'network-failed' | 'controller-unreachable' | 'dhcp-unavailable';

export class NetworkError extends Error {
  override name = 'NetworkError';
  readonly code: NetworkErrorCode;
  constructor(code: NetworkErrorCode, message: string, cause?: unknown) {
    super(message, { cause });
    this.code = code;
  }
}

/** The device the settings go on: the interface, or its VLAN sub-interface. */
export function deviceFor(iface: string, settings: NetworkSettings): string {
  return settings.vlan === undefined ? iface : `${iface}.${settings.vlan}`;
}

/** Whether `snapshot` shows `settings` applied to `iface` (after a restart: is the network still there?). */
export function isApplied(snapshot: NetworkSnapshot, settings: NetworkSettings): boolean {
  const dev = deviceFor(snapshot.interface, settings);
  const link = snapshot.links.find((l) => l.name === dev);
  if (!link?.up) return false;
  if (settings.mode === 'dhcp') return link.addresses.length > 0;
  return (
    link.addresses.includes(settings.address) &&
    snapshot.defaultRoutes.some((r) => r.dev === dev && r.gateway === settings.gateway)
  );
}

export interface NetworkTransactionOptions {
  /** Persists the snapshot; runs before anything changes. */
  beforeChange(previous: NetworkSnapshot): void | Promise<void>;
  /** Throws when the controller cannot be reached over the new network. */
  verify(): Promise<void>;
}

/**
 * Snapshot → persist → apply → verify; any failure rolls back to the snapshot and is rethrown (with
 * the rollback's own failure added to the message if it fails too). Returns the snapshot.
 */
export async function applyNetworkTransaction(
  applier: NetworkApplier,
  settings: NetworkSettings,
  options: NetworkTransactionOptions,
): Promise<NetworkSnapshot> {
  const previous = await applier.current();
  await options.beforeChange(previous);
  try {
    await applier.apply(settings);
    await options.verify();
  } catch (error) {
    try {
      await applier.rollback(previous);
    } catch (rollbackError) {
      const code = error instanceof NetworkError ? error.code : 'network-failed';
      throw new NetworkError(
        code,
        `${(error as Error).message}; rolling the network back failed too: ${(rollbackError as Error).message}`,
        error,
      );
    }
    throw error;
  }
  return previous;
}

/**
 * Resolves the controller URL's host and opens a TCP connection to its port within `timeoutMs`:
 * the network is only kept if the controller can be reached over it.
 */
export async function verifyControllerReachable(controllerUrl: string, timeoutMs = 10_000): Promise<void> {
  const url = new URL(controllerUrl);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || 443);
  const deadline = Date.now() + timeoutMs;
  let address = host;
  if (isIP(host) === 0) {
    try {
      address = (await withTimeout(lookup(host), timeoutMs, `resolving ${host}`)).address;
    } catch (error) {
      throw new NetworkError(
        'controller-unreachable',
        `cannot resolve the controller's host ${host}: ${(error as Error).message}; check the bundle's DNS servers`,
        error,
      );
    }
  }
  const left = Math.max(1, deadline - Date.now());
  await new Promise<void>((resolve, reject) => {
    const socket = connect({ host: address, port });
    const fail = (why: string) => {
      socket.destroy();
      reject(
        new NetworkError(
          'controller-unreachable',
          `cannot reach the controller at ${host}:${port}${address !== host ? ` (${address})` : ''}: ${why}; check the address, gateway and VLAN in the bundle`,
        ),
      );
    };
    const timer = setTimeout(() => fail(`no answer within ${left} ms`), left);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.end();
      resolve();
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      fail(error.message);
    });
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** ntp.conf as BusyBox ntpd (and ntpd, chrony's `server` lines) read it: one server per line. */
function ntpConfText(ntp: readonly string[]): string {
  return `# written by umbra-provisioner from the site bundle\n${ntp.map((n) => `server ${n} iburst\n`).join('')}`;
}

function resolvConfText(dns: readonly string[]): string {
  return `# written by umbra-provisioner from the site bundle\n${dns.map((d) => `nameserver ${d}\n`).join('')}`;
}

// ---------------------------------------------------------------------------------------------------
// In memory

export interface MemoryNetworkOptions {
  interface?: string;
  initial?: Partial<Omit<NetworkSnapshot, 'interface'>>;
  /**
   * Called at each stage of apply ('start', 'half-applied') and rollback ('rollback'): a test may
   * throw (a failure) or never resolve (a power cut).
   */
  hook?: (stage: 'start' | 'half-applied' | 'rollback', settings?: NetworkSettings) => Promise<void> | void;
}

export class MemoryNetworkApplier implements NetworkApplier {
  readonly interface: string;
  #state: NetworkSnapshot;
  readonly #hook: NonNullable<MemoryNetworkOptions['hook']>;
  /** Every apply and rollback, in order. */
  readonly calls: { op: 'apply' | 'rollback'; settings?: NetworkSettings }[] = [];

  constructor(options: MemoryNetworkOptions = {}) {
    this.interface = options.interface ?? 'eth0';
    this.#state = NetworkSnapshotSchema.parse({
      interface: this.interface,
      links: options.initial?.links ?? [{ name: this.interface, up: false, addresses: [] }],
      defaultRoutes: options.initial?.defaultRoutes ?? [],
      resolvConf: options.initial?.resolvConf ?? null,
      ntpConf: options.initial?.ntpConf ?? null,
    });
    this.#hook = options.hook ?? (() => {});
  }

  /** The network now (a copy). */
  get state(): NetworkSnapshot {
    return structuredClone(this.#state);
  }

  async current(): Promise<NetworkSnapshot> {
    return this.state;
  }

  async apply(settings: NetworkSettings): Promise<void> {
    this.calls.push({ op: 'apply', settings });
    await this.#hook('start', settings);
    const dev = deviceFor(this.interface, settings);
    const parent = this.#state.links.find((l) => l.name === this.interface);
    if (parent) parent.up = true;
    let link = this.#state.links.find((l) => l.name === dev);
    if (!link) {
      link = { name: dev, up: true, addresses: [], vlan: { parent: this.interface, id: settings.vlan ?? 0 } };
      this.#state.links.push(link);
    }
    link.up = true;
    link.addresses = settings.mode === 'static' ? [settings.address] : ['192.0.2.100/24'];
    await this.#hook('half-applied', settings);
    const family = settings.mode === 'static' && isIP(settings.gateway) === 6 ? 6 : 4;
    this.#state.defaultRoutes = this.#state.defaultRoutes.filter((r) => r.family !== family);
    this.#state.defaultRoutes.push({
      family,
      dev,
      gateway: settings.mode === 'static' ? settings.gateway : '192.0.2.1',
    });
    if (settings.dns.length > 0) this.#state.resolvConf = resolvConfText(settings.dns);
    if (settings.ntp.length > 0) this.#state.ntpConf = ntpConfText(settings.ntp);
  }

  async rollback(previous: NetworkSnapshot): Promise<void> {
    this.calls.push({ op: 'rollback' });
    await this.#hook('rollback');
    this.#state = structuredClone(previous);
  }
}

// ---------------------------------------------------------------------------------------------------
// Linux

export interface LinuxNetworkOptions {
  /** The uplink, e.g. eth0. */
  interface: string;
  /** Where resolv.conf is written (default /etc). */
  etcDir?: string;
  /** Run every `ip` inside this network namespace (tests). */
  netns?: string;
  /** The DHCP client to use; found on PATH by default (udhcpc, then dhclient). */
  dhcpClient?: string;
  dhcpTimeoutMs?: number;
  commandTimeoutMs?: number;
}

interface IpLink {
  ifname: string;
  flags?: string[];
  link?: string;
  linkinfo?: { info_kind?: string; info_data?: { id?: number } };
}
interface IpAddr {
  ifname: string;
  addr_info?: { local: string; prefixlen: number; scope: string; family: string }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  metric?: number;
}

export class LinuxNetworkApplier implements NetworkApplier {
  readonly interface: string;
  readonly #etcDir: string;
  readonly #netns: string | undefined;
  readonly #dhcpClient: string | undefined;
  readonly #dhcpTimeoutMs: number;
  readonly #timeoutMs: number;

  constructor(options: LinuxNetworkOptions) {
    this.interface = options.interface;
    this.#etcDir = options.etcDir ?? '/etc';
    this.#netns = options.netns;
    this.#dhcpClient = options.dhcpClient;
    this.#dhcpTimeoutMs = options.dhcpTimeoutMs ?? 30_000;
    this.#timeoutMs = options.commandTimeoutMs ?? 10_000;
  }

  get ntpConfPath(): string {
    return join(this.#etcDir, 'ntp.conf');
  }

  get resolvConfPath(): string {
    return join(this.#etcDir, 'resolv.conf');
  }

  async current(): Promise<NetworkSnapshot> {
    const links = JSON.parse(await this.#ip(['-d', '-j', 'link', 'show'])) as IpLink[];
    const ours = links.filter(
      (l) => l.ifname === this.interface || (l.link === this.interface && l.linkinfo?.info_kind === 'vlan'),
    );
    if (!ours.some((l) => l.ifname === this.interface))
      throw new NetworkError('network-failed', `no network interface ${this.interface}${this.#where()}`);
    const addrs = JSON.parse(await this.#ip(['-j', 'addr', 'show'])) as IpAddr[];
    const routes: RouteSnapshot[] = [];
    for (const family of [4, 6] as const) {
      const list = JSON.parse(await this.#ip([`-${family}`, '-j', 'route', 'show', 'default'])) as IpRoute[];
      for (const r of list)
        if (r.dev)
          routes.push({
            family,
            dev: r.dev,
            ...(r.gateway ? { gateway: r.gateway } : {}),
            ...(r.metric !== undefined ? { metric: r.metric } : {}),
          });
    }
    return {
      interface: this.interface,
      links: ours.map((l) => ({
        name: l.ifname,
        up: l.flags?.includes('UP') ?? false,
        addresses: (addrs.find((a) => a.ifname === l.ifname)?.addr_info ?? [])
          .filter((a) => a.scope === 'global')
          .map((a) => `${a.local}/${a.prefixlen}`),
        ...(l.ifname !== this.interface
          ? { vlan: { parent: this.interface, id: l.linkinfo?.info_data?.id ?? 0 } }
          : {}),
      })),
      defaultRoutes: routes,
      resolvConf: existsSync(this.resolvConfPath) ? readFileSync(this.resolvConfPath, 'utf8') : null,
      ntpConf: existsSync(this.ntpConfPath) ? readFileSync(this.ntpConfPath, 'utf8') : null,
    };
  }

  async apply(settings: NetworkSettings): Promise<void> {
    const dev = deviceFor(this.interface, settings);
    const dhcp = settings.mode === 'dhcp' ? this.#findDhcpClient() : undefined;
    await this.#ip(['link', 'set', this.interface, 'up']);
    if (settings.vlan !== undefined) {
      const exists = await this.#ip(['link', 'show', dev]).then(
        () => true,
        () => false,
      );
      if (!exists)
        await this.#ip([
          'link',
          'add',
          'link',
          this.interface,
          'name',
          dev,
          'type',
          'vlan',
          'id',
          String(settings.vlan),
        ]);
      await this.#ip(['link', 'set', dev, 'up']);
    }
    await this.#ip(['addr', 'flush', 'dev', dev, 'scope', 'global']);
    if (settings.mode === 'static') {
      await this.#ip(['addr', 'add', settings.address, 'dev', dev]);
      const family = isIP(settings.gateway) === 6 ? '-6' : '-4';
      await this.#ip([family, 'route', 'replace', 'default', 'via', settings.gateway, 'dev', dev]);
    } else if (dhcp) {
      await this.#runDhcp(dhcp, dev);
    }
    if (settings.dns.length > 0) {
      mkdirSync(this.#etcDir, { recursive: true });
      writeFileAtomic(this.resolvConfPath, resolvConfText(settings.dns), 0o644);
    }
    if (settings.ntp.length > 0) {
      mkdirSync(this.#etcDir, { recursive: true });
      writeFileAtomic(this.ntpConfPath, ntpConfText(settings.ntp), 0o644);
    }
  }

  async rollback(previous: NetworkSnapshot): Promise<void> {
    const now = await this.current();
    // VLAN sub-interfaces this attempt added go; those that were there stay.
    for (const link of now.links)
      if (link.vlan && !previous.links.some((p) => p.name === link.name))
        await this.#ip(['link', 'del', link.name]);
    for (const link of previous.links) {
      if (link.vlan && !now.links.some((n) => n.name === link.name))
        await this.#ip([
          'link',
          'add',
          'link',
          link.vlan.parent,
          'name',
          link.name,
          'type',
          'vlan',
          'id',
          String(link.vlan.id),
        ]);
      await this.#ip(['addr', 'flush', 'dev', link.name, 'scope', 'global']);
      await this.#ip(['link', 'set', link.name, link.up ? 'up' : 'down']);
      for (const address of link.addresses) await this.#ip(['addr', 'add', address, 'dev', link.name]);
    }
    // Default routes: exactly the previous ones (flushing addresses removed some already).
    const after = await this.current();
    for (const route of after.defaultRoutes)
      await this.#ip([`-${route.family}`, 'route', 'del', 'default', ...routeArgs(route)]).catch(() => {});
    for (const route of previous.defaultRoutes)
      await this.#ip([`-${route.family}`, 'route', 'replace', 'default', ...routeArgs(route)]);
    if (previous.resolvConf === null) rmSync(this.resolvConfPath, { force: true });
    else writeFileAtomic(this.resolvConfPath, previous.resolvConf, 0o644);
    if (previous.ntpConf === null) rmSync(this.ntpConfPath, { force: true });
    else if (previous.ntpConf !== undefined) writeFileAtomic(this.ntpConfPath, previous.ntpConf, 0o644);
  }

  #findDhcpClient(): string {
    if (this.#dhcpClient) return this.#dhcpClient;
    for (const name of ['udhcpc', 'dhclient'])
      for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter))
        if (dir && existsSync(join(dir, name))) return join(dir, name);
    throw new NetworkError(
      'dhcp-unavailable',
      'the bundle asks for DHCP but neither udhcpc nor dhclient is installed on this box; use static addressing or add a DHCP client to the firmware',
    );
  }

  /** Takes one lease and returns: udhcpc quits once it has one; dhclient -1 tries once. */
  async #runDhcp(client: string, dev: string): Promise<void> {
    const args = client.endsWith('udhcpc') ? ['-i', dev, '-f', '-q', '-n', '-t', '5'] : ['-1', dev];
    const argv = this.#netns ? ['ip', 'netns', 'exec', this.#netns, client, ...args] : [client, ...args];
    try {
      await run(argv, this.#dhcpTimeoutMs);
    } catch (error) {
      throw new NetworkError('network-failed', `no DHCP lease on ${dev}: ${(error as Error).message}`, error);
    }
  }

  async #ip(args: string[]): Promise<string> {
    const argv = ['ip', ...(this.#netns ? ['-n', this.#netns] : []), ...args];
    try {
      return await run(argv, this.#timeoutMs);
    } catch (error) {
      throw new NetworkError('network-failed', (error as Error).message, error);
    }
  }

  #where(): string {
    return this.#netns ? ` in network namespace ${this.#netns}` : '';
  }
}

function routeArgs(route: RouteSnapshot): string[] {
  return [
    ...(route.gateway ? ['via', route.gateway] : []),
    'dev',
    route.dev,
    ...(route.metric !== undefined ? ['metric', String(route.metric)] : []),
  ];
}

function run(argv: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error)
        reject(
          new Error(`\`${argv.join(' ')}\` failed: ${stderr.trim() || error.message}`, { cause: error }),
        );
      else resolve(stdout);
    });
  });
}
