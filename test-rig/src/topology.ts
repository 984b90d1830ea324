// Whole networks built inside a test and torn down after it, in the spirit of Tailscale's natlab:
// every host is a network namespace with one interface, eth0, plugged into a bridge that lives in a
// namespace of its own, so nothing of a topology ever touches the machine's root namespace.
//
// Cleanup is the point of this file. A topology registers itself in a process-wide registry the
// moment its first namespace exists; `destroy()`, the process's 'exit' event and SIGINT/SIGTERM/SIGHUP
// all remove what is still alive. Only namespaces this process created are ever deleted: other test
// processes on the same machine build their own, and there is deliberately no "sweep stale" helper.

import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';

/** Every namespace name starts with this, so `ip netns list` shows what belongs to the rig. */
export const NETNS_PREFIX = 'umb-';
/** The interface every host sees. */
export const HOST_IFNAME = 'eth0';
/** The bridge inside the switch namespace. */
export const BRIDGE_IFNAME = 'br0';

/** RFC 5737 TEST-NET-1: documentation addresses, never routed. Host i gets .(10+i). */
const IPV4_PREFIX = '192.0.2.';
const IPV4_PREFIX_LENGTH = 24;
/** RFC 3849 documentation prefix. Host i gets ::(10+i), written in decimal digits to mirror IPv4. */
const IPV6_PREFIX = '2001:db8::';
const IPV6_PREFIX_LENGTH = 64;
const FIRST_HOST_OCTET = 10;
const MAX_HOSTS = 200;

const HOST_NAME = /^[a-z][a-z0-9]{0,11}$/;
const TOPOLOGY_NAME = /^[a-z][a-z0-9-]{0,31}$/;

const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
const DEFAULT_KILL_GRACE_MS = 2_000;
/** How long `ip` itself may take to build or remove a topology before we give up. */
const IP_COMMAND_TIMEOUT_MS = 15_000;
const RUN_NETNS = '/run/netns';

export interface TopologyOptions {
  /** A label for messages; namespaces are named by a unique id, not by this. */
  name?: string;
  /** Host names: lowercase letters and digits, at most 12 characters, unique. */
  hosts: readonly string[];
}

export interface ExecOptions {
  /** Kill the command (SIGKILL to its process group) after this long; default 30 s. */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code, or null when a signal ended the command. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Wall time from spawn to exit, including `ip netns exec` itself (~2 ms). */
  elapsedMs: number;
}

export interface HostSpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdio?: SpawnOptions['stdio'];
}

/** What helpers (net, capture, scan, fwknop) need from a host. */
export interface HostHandle {
  readonly name: string;
  readonly netns: string;
  readonly ifname: string;
  readonly ipv4: string;
  readonly ipv6: string;
  readonly topology: Topology;
  exec(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** Like exec, but rejects unless the command exits 0; the error carries its stderr. */
  run(argv: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  spawn(argv: readonly string[], options?: HostSpawnOptions): ChildProcess;
}

export class TopologyError extends Error {
  override name = 'TopologyError';
}

// ---------------------------------------------------------------------------------------------
// Process-wide registry: whatever is alive when the process ends is removed synchronously.

const live = new Set<Topology>();
let handlersInstalled = false;

function onExit(): void {
  for (const topology of live) topology.destroySync();
}

function onSignal(signal: NodeJS.Signals): void {
  onExit();
  uninstallHandlers();
  // Re-raise so the process still dies of the signal, unless someone else also listens for it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

const signalHandlers: Array<[NodeJS.Signals, () => void]> = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map(
  (signal) => [signal, () => onSignal(signal)],
);

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', onExit);
  for (const [signal, handler] of signalHandlers) process.on(signal, handler);
}

function uninstallHandlers(): void {
  if (!handlersInstalled) return;
  handlersInstalled = false;
  process.removeListener('exit', onExit);
  for (const [signal, handler] of signalHandlers) process.removeListener(signal, handler);
}

function register(topology: Topology): void {
  live.add(topology);
  installHandlers();
}

function unregister(topology: Topology): void {
  live.delete(topology);
  if (live.size === 0) uninstallHandlers();
}

/** Topologies of this process that are not destroyed yet. */
export function liveTopologies(): Topology[] {
  return [...live];
}

// ---------------------------------------------------------------------------------------------

let topologyCounter = 0;

/** A short id no namespace on the machine uses yet: random, so concurrent processes do not collide. */
function freshId(): string {
  const taken = existsSync(RUN_NETNS) ? readdirSync(RUN_NETNS) : [];
  for (let attempt = 0; attempt < 16; attempt++) {
    const id = randomBytes(3).toString('hex');
    if (!taken.some((name) => name.startsWith(`${NETNS_PREFIX}${id}-`))) return id;
  }
  throw new TopologyError('could not find an unused namespace id in 16 tries; is /run/netns full?');
}

interface IpResult {
  code: number | null;
  stderr: string;
}

/** Runs `ip [-n NETNS] -batch -` with the given lines: one process for many changes. */
function ipBatch(lines: readonly string[], netns?: string, force = false): Promise<IpResult> {
  const args = [...(netns ? ['-n', netns] : []), ...(force ? ['-force'] : []), '-batch', '-'];
  return new Promise((resolve) => {
    const child = spawn('ip', args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), IP_COMMAND_TIMEOUT_MS);
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', (error) => {
      clearTimeout(timer);
      resolve({ code: -1, stderr: `${stderr}${error.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
    child.stdin!.end(`${lines.join('\n')}\n`);
  });
}

function childAlive(child: ChildProcess): boolean {
  return child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

/** Signals the child's whole process group (we start every child as a group leader). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (!childAlive(child)) return;
  try {
    process.kill(-child.pid!, signal);
  } catch {
    try {
      process.kill(child.pid!, signal);
    } catch {
      // Already gone.
    }
  }
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (!childAlive(child)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.removeListener('exit', done);
      resolve(false);
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', done);
  });
}

export class Host implements HostHandle {
  readonly name: string;
  readonly netns: string;
  readonly ifname = HOST_IFNAME;
  readonly ipv4: string;
  readonly ipv6: string;
  readonly ipv4PrefixLength = IPV4_PREFIX_LENGTH;
  readonly ipv6PrefixLength = IPV6_PREFIX_LENGTH;
  readonly topology: Topology;

  constructor(topology: Topology, name: string, index: number) {
    this.topology = topology;
    this.name = name;
    this.netns = `${NETNS_PREFIX}${topology.id}-${name}`;
    this.ipv4 = `${IPV4_PREFIX}${FIRST_HOST_OCTET + index}`;
    this.ipv6 = `${IPV6_PREFIX}${FIRST_HOST_OCTET + index}`;
  }

  /** Starts `argv` inside this host's namespace, in a process group of its own, tracked for destroy(). */
  spawn(argv: readonly string[], options: HostSpawnOptions = {}): ChildProcess {
    if (argv.length === 0) throw new TopologyError(`${this.name}: spawn needs a command`);
    return this.topology.track(
      spawn('ip', ['netns', 'exec', this.netns, ...argv], {
        env: options.env ?? process.env,
        cwd: options.cwd,
        stdio: options.stdio ?? ['ignore', 'pipe', 'pipe'],
        detached: true,
      }),
    );
  }

  async exec(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const started = performance.now();
    const child = this.spawn(argv, {
      env: options.env,
      cwd: options.cwd,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    return new Promise((resolve) => {
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      let spawnError = '';
      const timer = setTimeout(() => {
        timedOut = true;
        signalGroup(child, 'SIGKILL');
      }, timeoutMs);
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        stdout += chunk;
      });
      child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
      });
      child.on('error', (error) => {
        spawnError = error.message;
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({
          stdout,
          stderr: spawnError ? `${stderr}${spawnError}` : stderr,
          code: spawnError ? -1 : code,
          signal,
          timedOut,
          elapsedMs: performance.now() - started,
        });
      });
      if (options.input !== undefined) child.stdin!.end(options.input);
    });
  }

  async run(argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const result = await this.exec(argv, options);
    if (result.code !== 0) {
      const why = result.timedOut
        ? `timed out after ${options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS} ms`
        : `exited ${result.code ?? result.signal}`;
      throw new TopologyError(
        `${this.name} (${this.netns}): \`${argv.join(' ')}\` ${why}: ${result.stderr.trim() || result.stdout.trim()}`,
      );
    }
    return result;
  }
}

export class Topology {
  /** Unique among the namespaces on this machine when created; part of every namespace name. */
  readonly id: string;
  readonly name: string;
  /** The namespace that holds the bridge, so the root namespace never sees a topology. */
  readonly switchNetns: string;
  readonly bridge = BRIDGE_IFNAME;
  private readonly byName = new Map<string, Host>();
  private readonly children = new Set<ChildProcess>();
  private readonly cleanups: Array<() => void> = [];
  private destroyed = false;
  private destroying: Promise<void> | null = null;

  private constructor(name: string, hostNames: readonly string[]) {
    topologyCounter++;
    this.id = freshId();
    this.name = name;
    this.switchNetns = `${NETNS_PREFIX}${this.id}-sw`;
    hostNames.forEach((hostName, index) => {
      this.byName.set(hostName, new Host(this, hostName, index));
    });
  }

  /**
   * Builds namespaces, bridge, veths and addresses with four-ish `ip -batch` processes. IPv6 addresses
   * are added with `nodad`, so they are usable at once.
   */
  static async create(options: TopologyOptions): Promise<Topology> {
    const name = options.name ?? `topology${topologyCounter + 1}`;
    if (!TOPOLOGY_NAME.test(name)) {
      throw new TopologyError(`topology name ${JSON.stringify(name)}: use lowercase letters, digits and '-'`);
    }
    const hostNames = options.hosts;
    if (hostNames.length === 0 || hostNames.length > MAX_HOSTS) {
      throw new TopologyError(
        `topology ${name}: hosts must list 1 to ${MAX_HOSTS} names, got ${hostNames.length}`,
      );
    }
    const seen = new Set<string>();
    for (const hostName of hostNames) {
      if (!HOST_NAME.test(hostName) || hostName === 'sw') {
        throw new TopologyError(
          `topology ${name}: host name ${JSON.stringify(hostName)} must be 1-12 lowercase letters or digits, starting with a letter, and not 'sw'`,
        );
      }
      if (seen.has(hostName))
        throw new TopologyError(`topology ${name}: host name ${hostName} appears twice`);
      seen.add(hostName);
    }

    const topology = new Topology(name, hostNames);
    register(topology);
    try {
      await topology.build();
    } catch (error) {
      await topology.destroy();
      throw error;
    }
    return topology;
  }

  private async build(): Promise<void> {
    const hosts = this.hosts();
    const sw = this.switchNetns;
    // Root namespace: only namespace creation and veth pairs whose ends are created directly in
    // their target namespaces, so no interface ever appears in the root namespace.
    const root = [
      `netns add ${sw}`,
      ...hosts.map((host) => `netns add ${host.netns}`),
      ...hosts.map(
        (host, i) => `link add p${i} netns ${sw} type veth peer name ${HOST_IFNAME} netns ${host.netns}`,
      ),
    ];
    await this.ipOrThrow(root);

    // The switch: no IPv6 addresses of its own (addrgenmode none), so it never sends a packet; no
    // multicast snooping, so neighbour discovery floods like ARP does; STP off, so ports forward at once.
    const switchLines = [
      `link add ${BRIDGE_IFNAME} type bridge stp_state 0 forward_delay 0 mcast_snooping 0`,
      `link set ${BRIDGE_IFNAME} addrgenmode none`,
      ...hosts.flatMap((_, i) => [
        `link set p${i} addrgenmode none`,
        `link set p${i} master ${BRIDGE_IFNAME} up`,
      ]),
      `link set ${BRIDGE_IFNAME} up`,
    ];
    await this.ipOrThrow(switchLines, sw);
    // Order matters for IPv6: an address added while eth0 has no carrier waits a random 0-1 s
    // (rtr_solicit_delay) after carrier comes up before it leaves the tentative state, nodad or not,
    // and a tentative address answers no neighbour solicitation. With the switch port already up,
    // eth0 has carrier as soon as it is up, and a nodad address added then is usable at once.
    const hostLines = (host: Host) => [
      'link set lo up',
      `link set ${HOST_IFNAME} up`,
      `addr add ${host.ipv4}/${IPV4_PREFIX_LENGTH} dev ${HOST_IFNAME}`,
      `addr add ${host.ipv6}/${IPV6_PREFIX_LENGTH} dev ${HOST_IFNAME} nodad`,
    ];
    await Promise.all(hosts.map((host) => this.ipOrThrow(hostLines(host), host.netns)));
  }

  private async ipOrThrow(lines: readonly string[], netns?: string): Promise<void> {
    const result = await ipBatch(lines, netns);
    if (result.code !== 0) {
      throw new TopologyError(
        `topology ${this.name}: ip ${netns ? `-n ${netns} ` : ''}-batch failed (exit ${result.code}): ${result.stderr.trim()}\n  lines: ${lines.join(' | ')}`,
      );
    }
  }

  host(name: string): Host {
    const host = this.byName.get(name);
    if (!host) {
      throw new TopologyError(
        `topology ${this.name}: no host ${JSON.stringify(name)}; hosts are ${[...this.byName.keys()].join(', ')}`,
      );
    }
    return host;
  }

  hosts(): Host[] {
    return [...this.byName.values()];
  }

  /** Every namespace this topology made, the switch first. */
  namespaces(): string[] {
    return [this.switchNetns, ...this.hosts().map((host) => host.netns)];
  }

  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** Registers a child so destroy() and process exit end it. Host.spawn does this for you. */
  track(child: ChildProcess): ChildProcess {
    if (this.destroyed || this.destroying) {
      signalGroup(child, 'SIGKILL');
      throw new TopologyError(`topology ${this.name} is destroyed; cannot start another process in it`);
    }
    this.children.add(child);
    const forget = () => this.children.delete(child);
    child.once('exit', forget);
    child.once('error', forget);
    return child;
  }

  /** A synchronous cleanup (remove a temp dir, say) run at destroy and at process exit, once. */
  addCleanup(cleanup: () => void): void {
    this.cleanups.push(cleanup);
  }

  /** SIGTERM to every tracked process group, SIGKILL after `graceMs`, then the namespaces go. Idempotent. */
  destroy(graceMs = DEFAULT_KILL_GRACE_MS): Promise<void> {
    if (this.destroyed) return Promise.resolve();
    this.destroying ??= this.destroyAsync(graceMs);
    return this.destroying;
  }

  private async destroyAsync(graceMs: number): Promise<void> {
    const children = [...this.children];
    for (const child of children) signalGroup(child, 'SIGTERM');
    const exited = await Promise.all(children.map((child) => waitForExit(child, graceMs)));
    const stubborn = children.filter((_, i) => !exited[i]);
    for (const child of stubborn) signalGroup(child, 'SIGKILL');
    await Promise.all(stubborn.map((child) => waitForExit(child, 1_000)));
    if (this.destroyed) return; // destroySync ran meanwhile (process exit).
    this.runCleanups();
    await ipBatch(
      this.namespaces().map((netns) => `netns del ${netns}`),
      undefined,
      true,
    );
    this.destroyed = true;
    unregister(this);
  }

  /** For process exit: everything synchronous, no grace. */
  destroySync(): void {
    if (this.destroyed) return;
    for (const child of this.children) signalGroup(child, 'SIGKILL');
    this.runCleanups();
    spawnSync('ip', ['-force', '-batch', '-'], {
      input: `${this.namespaces()
        .map((netns) => `netns del ${netns}`)
        .join('\n')}\n`,
      stdio: ['pipe', 'ignore', 'ignore'],
      timeout: IP_COMMAND_TIMEOUT_MS,
    });
    this.destroyed = true;
    unregister(this);
  }

  private runCleanups(): void {
    for (const cleanup of this.cleanups.splice(0)) {
      try {
        cleanup();
      } catch {
        // A cleanup must not stop the namespaces from going.
      }
    }
  }
}

/** Namespaces on the machine whose names start with the rig's prefix (any process's), for checks. */
export function listRigNamespaces(): string[] {
  const result = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: IP_COMMAND_TIMEOUT_MS });
  return (result.stdout ?? '')
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name.startsWith(NETNS_PREFIX));
}
