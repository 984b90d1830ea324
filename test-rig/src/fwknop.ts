// The anchor Umbra is measured against: Debian's fwknopd 2.6.10 in pcap mode with its defaults and
// the iptables backend, and knocks made by Debian's fwknop client. Everything the daemon writes (pid,
// digest cache, run dir, its two config files) lives in a private temp dir, and it runs only inside a
// topology's namespace, so neither /etc/fwknop nor /var/run of the machine is ever touched.
//
// Behaviour of 2.6.10 worth knowing, found by running it:
// - Foreground mode logs to stderr. A grant reads
//   "Added access rule to FWKNOP_INPUT for 192.0.2.11 -> 0.0.0.0/0 tcp/8080, expires at 1795240889";
//   readiness is "Starting fwknopd main event loop."; expiry "Removed rule 1 from FWKNOP_INPUT with
//   expire time of ..."; a refused port "One or more requested protocol/ports was denied per access.conf."
// - OPEN_PORTS takes single proto/port entries only: "tcp/10000-10999" is read as tcp/10000, and a
//   knock for tcp/10005 is denied. Without OPEN_PORTS every requested port is granted.
// - Its defaults (fwknopd -D): PCAP_FILTER "udp port 62201", PCAP_LOOP_SLEEP 100000 µs,
//   PCAP_DISPATCH_COUNT 100, FW_ACCESS_TIMEOUT 30 s, FIREWALL_EXE /usr/sbin/iptables (nft-based here).
// - Each grant forks iptables several times (-C checks, -A), and on exit it flushes its chains.

import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LineEvent, LineReader } from './lines.ts';
import type { HostHandle } from './topology.ts';

export const FWKNOP_SPA_PORT = 62201;
export const FWKNOP_CHAIN = 'FWKNOP_INPUT';

export interface FwknopKeys {
  /** 32 random bytes, base64: the Rijndael key, as `fwknop --key-gen` makes. */
  keyBase64: string;
  /** 64 random bytes, base64: the HMAC-SHA256 key. */
  hmacKeyBase64: string;
}

/** Fresh keys of the sizes `fwknop --key-gen` prints (which would also write ~/.fwknoprc). */
export function generateFwknopKeys(): FwknopKeys {
  return { keyBase64: randomBytes(32).toString('base64'), hmacKeyBase64: randomBytes(64).toString('base64') };
}

// ---------------------------------------------------------------------------------------------
// Darkness with iptables, the way an fwknop deployment does it (and as Umbra's nftables base set).

const DARK_IPV4 = `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
COMMIT
`;

// IPv6 neighbour discovery stays open: like ARP it is link-local, and IPv6 does not work without it.
const DARK_IPV6 = `*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT
-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -j ACCEPT
COMMIT
`;

/** INPUT policy DROP with loopback and established flows accepted, for IPv4 and IPv6, in `host`. */
export async function darkenWithIptables(host: HostHandle): Promise<void> {
  await host.run(['iptables-restore'], { input: DARK_IPV4, timeoutMs: 10_000 });
  await host.run(['ip6tables-restore'], { input: DARK_IPV6, timeoutMs: 10_000 });
}

// ---------------------------------------------------------------------------------------------
// The daemon.

export interface FwknopdOptions {
  keys?: FwknopKeys;
  /**
   * Ports a knock may open, e.g. ['tcp/8080', 'tcp/10000-10999']. Single entries go to OPEN_PORTS.
   * fwknopd 2.6.10 has no port ranges, so if any entry is a range OPEN_PORTS is left out and every
   * requested port is granted (see `openPortsEnforced`). Default: no OPEN_PORTS.
   */
  openPorts?: readonly string[];
  /** Seconds a grant lasts (access.conf FW_ACCESS_TIMEOUT); fwknopd's default is 30. */
  fwAccessTimeoutS?: number;
  /** Interface to sniff inside the namespace; default the host's eth0. */
  ifname?: string;
  /** Make the host dark with iptables first (INPUT DROP); default true. */
  darken?: boolean;
  /** fwknopd -v: logs every iptables command and decoded packet; default false. */
  verbose?: boolean;
  /** Extra fwknopd.conf lines (name → value). Leave empty to measure the defaults. */
  extraConfig?: Readonly<Record<string, string>>;
  /** Extra access.conf lines for the single stanza. */
  extraAccess?: Readonly<Record<string, string>>;
  readyTimeoutMs?: number;
}

export interface FwknopGrant {
  source: string;
  proto: string;
  port: number;
  /** Unix seconds, from the rule's `_exp_` comment. */
  expiresAt: number;
}

export interface FwknopGrantLog {
  event: LineEvent;
  chain: string;
  source: string;
  destination: string;
  /** As logged, e.g. ['tcp/8080'] or ['tcp/10005', 'tcp/8080']. */
  access: string[];
  expiresAt: number;
}

export interface Fwknopd {
  readonly host: HostHandle;
  readonly keys: FwknopKeys;
  /** The private dir holding fwknopd.conf, access.conf and run/. */
  readonly dir: string;
  readonly argv: readonly string[];
  readonly pid: number;
  readonly openPortsEnforced: boolean;
  /** When the daemon logged that its main loop started (performance.now()). */
  readonly readyAt: number;
  logLines(): string[];
  /** Lines seen so far: pass as `from` to wait only for what comes after. */
  logCount(): number;
  waitForLog(
    matcher: RegExp | ((line: string) => boolean),
    timeoutMs: number,
    from?: number,
  ): Promise<LineEvent>;
  /** Waits for an "Added access rule" line for `source` (and `access`, e.g. 'tcp/8080', if given). */
  waitForGrant(
    match: { source?: string; access?: string },
    timeoutMs: number,
    from?: number,
  ): Promise<FwknopGrantLog>;
  /** Current rules in FWKNOP_INPUT (`iptables -S FWKNOP_INPUT` in the namespace). */
  grants(): Promise<FwknopGrant[]>;
  /** SIGTERM by pid (fwknopd then flushes its chains), SIGKILL after 5 s, then the temp dir goes. */
  stop(): Promise<void>;
}

const GRANT_LINE = /^Added access rule to (\S+) for (\S+) -> (\S+) (\S+), expires at (\d+)/;
const READY_LINE = /Starting fwknopd main event loop/;
const STOP_GRACE_MS = 5_000;

/** Parses an "Added access rule" log line; null for any other line. */
export function parseGrantLine(line: string): Omit<FwknopGrantLog, 'event'> | null {
  const match = GRANT_LINE.exec(line);
  if (!match) return null;
  return {
    chain: match[1]!,
    source: match[2]!,
    destination: match[3]!,
    access: match[4]!.split(','),
    expiresAt: Number(match[5]),
  };
}

function configLines(entries: Readonly<Record<string, string>>, terminator: string): string {
  return Object.entries(entries)
    .map(([name, value]) => `${name.padEnd(24)}${value}${terminator}\n`)
    .join('');
}

/** Starts fwknopd in the foreground inside `host` and resolves once its main loop runs. */
export async function startFwknopd(host: HostHandle, options: FwknopdOptions = {}): Promise<Fwknopd> {
  const keys = options.keys ?? generateFwknopKeys();
  const ifname = options.ifname ?? host.ifname;
  if (options.darken ?? true) await darkenWithIptables(host);

  const dir = mkdtempSync(join(tmpdir(), 'umbra-fwknopd-'));
  let removed = false;
  const removeDir = () => {
    if (removed) return;
    removed = true;
    rmSync(dir, { recursive: true, force: true });
  };
  host.topology.addCleanup(removeDir);
  const runDir = join(dir, 'run');
  const files = {
    config: join(dir, 'fwknopd.conf'),
    access: join(dir, 'access.conf'),
    pid: join(runDir, 'fwknopd.pid'),
    digest: join(runDir, 'digest.cache'),
  };

  // fwknopd.conf: only the interface and private paths; everything else stays at its default.
  const config = {
    PCAP_INTF: ifname,
    FWKNOP_RUN_DIR: runDir,
    FWKNOP_CONF_DIR: dir,
    FWKNOP_PID_FILE: files.pid,
    DIGEST_FILE: files.digest,
    ...options.extraConfig,
  };
  const openPorts = options.openPorts ?? [];
  const openPortsEnforced =
    openPorts.length > 0 && openPorts.every((entry) => /^(tcp|udp)\/\d+$/.test(entry));
  const access: Record<string, string> = {
    SOURCE: 'ANY',
    KEY_BASE64: keys.keyBase64,
    HMAC_KEY_BASE64: keys.hmacKeyBase64,
  };
  if (openPortsEnforced) access.OPEN_PORTS = openPorts.join(', ');
  if (options.fwAccessTimeoutS !== undefined) access.FW_ACCESS_TIMEOUT = String(options.fwAccessTimeoutS);
  Object.assign(access, options.extraAccess);
  // fwknopd refuses config files others can read.
  writeFileSync(files.config, configLines(config, ';'), { mode: 0o600 });
  writeFileSync(files.access, configLines(access, ''), { mode: 0o600 });
  chmodSync(files.config, 0o600);
  chmodSync(files.access, 0o600);

  const argv = [
    'fwknopd',
    '-f',
    ...(options.verbose ? ['-v'] : []),
    '-c',
    files.config,
    '-a',
    files.access,
    '-i',
    ifname,
    '-d',
    files.digest,
    '-p',
    files.pid,
    '-r',
    runDir,
  ];
  const child = host.spawn(argv);
  const log = LineReader.ofChild(`fwknopd on ${host.name}`, child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let ready: LineEvent;
  try {
    ready = await log.waitFor(READY_LINE, options.readyTimeoutMs ?? 10_000);
  } catch (error) {
    child.kill('SIGKILL');
    removeDir();
    throw new Error(
      `fwknopd did not start in ${host.name}: ${(error as Error).message}\n  argv: ${argv.join(' ')}`,
    );
  }

  let stopping: Promise<void> | null = null;
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = new Promise<'timeout'>((resolve) =>
        setTimeout(() => resolve('timeout'), STOP_GRACE_MS).unref(),
      );
      if ((await Promise.race([exited, timer])) === 'timeout') {
        child.kill('SIGKILL');
        await exited;
      }
    }
    removeDir();
  };

  return {
    host,
    keys,
    dir,
    argv,
    pid: child.pid!,
    openPortsEnforced,
    readyAt: ready.at,
    logLines: () => log.lines(),
    logCount: () => log.count,
    waitForLog: (matcher, timeoutMs, from) => log.waitFor(matcher, timeoutMs, from),
    async waitForGrant(match, timeoutMs, from) {
      const wanted = (line: string) => {
        const grant = parseGrantLine(line);
        return (
          grant !== null &&
          (match.source === undefined || grant.source === match.source) &&
          (match.access === undefined || grant.access.includes(match.access))
        );
      };
      const event = await log.waitFor(wanted, timeoutMs, from);
      return { event, ...parseGrantLine(event.line)! };
    },
    async grants() {
      const run = await host.exec(['iptables', '-t', 'filter', '-S', FWKNOP_CHAIN], { timeoutMs: 10_000 });
      if (run.code !== 0) return []; // No chain: fwknopd is not running.
      return parseFwknopRules(run.stdout);
    },
    stop: () => {
      stopping ??= stop();
      return stopping;
    },
  };
}

/** Parses `iptables -S FWKNOP_INPUT` output into grants. */
export function parseFwknopRules(text: string): FwknopGrant[] {
  const grants: FwknopGrant[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`-A ${FWKNOP_CHAIN} `)) continue;
    const source = /-s (\S+?)(?:\/32)? /.exec(line)?.[1];
    const proto = /-p (\S+) /.exec(line)?.[1];
    const port = /--dport (\d+)/.exec(line)?.[1];
    const expiresAt = /_exp_(\d+)/.exec(line)?.[1];
    if (source && proto && port) {
      grants.push({ source, proto, port: Number(port), expiresAt: Number(expiresAt ?? 0) });
    }
  }
  return grants;
}

// ---------------------------------------------------------------------------------------------
// The client.

export interface FwknopKnockOptions {
  /** The fwknopd host's address (-D). */
  destination: string;
  /** What to open (-A), e.g. 'tcp/8080' or ['tcp/8080', 'tcp/10001']. */
  access: string | readonly string[];
  keys: FwknopKeys;
  /** The address to grant (-a); default the knocking host's IPv4 address. */
  allowIp?: string;
  /** SPA destination port (-p); default 62201. */
  serverPort?: number;
  timeoutMs?: number;
  extraArgs?: readonly string[];
}

export interface FwknopKnock {
  argv: string[];
  /** performance.now() when the client process was spawned and when it exited. */
  startedAt: number;
  exitedAt: number;
  /** Wall time of one client invocation, `ip netns exec` included. */
  elapsedMs: number;
  stdout: string;
  stderr: string;
}

/** The client's argv. --no-rc-file and --no-save-args keep it away from ~/.fwknoprc and ~/.fwknop.run. */
export function fwknopArgv(options: FwknopKnockOptions, allowIp: string): string[] {
  const access = typeof options.access === 'string' ? options.access : options.access.join(',');
  return [
    'fwknop',
    '-A',
    access,
    '-a',
    allowIp,
    '-D',
    options.destination,
    ...(options.serverPort ? ['-p', String(options.serverPort)] : []),
    '--use-hmac',
    '--key-base64-rijndael',
    options.keys.keyBase64,
    '--key-base64-hmac',
    options.keys.hmacKeyBase64,
    '--no-rc-file',
    '--no-save-args',
    ...(options.extraArgs ?? []),
  ];
}

/** HOME for the client: nothing there to read, and nowhere it could write. */
const CLIENT_ENV = { ...process.env, HOME: '/nonexistent-umbra-fwknop-home' };

/** Sends one SPA packet with Debian's fwknop client from inside `host`. */
export async function fwknopKnock(host: HostHandle, options: FwknopKnockOptions): Promise<FwknopKnock> {
  const argv = fwknopArgv(options, options.allowIp ?? host.ipv4);
  const startedAt = performance.now();
  const run = await host.run(argv, { timeoutMs: options.timeoutMs ?? 10_000, env: CLIENT_ENV });
  const exitedAt = performance.now();
  return {
    argv,
    startedAt,
    exitedAt,
    elapsedMs: exitedAt - startedAt,
    stdout: run.stdout,
    stderr: run.stderr,
  };
}

/**
 * The UDP payload the client would send (its "Final SPA Data"), built with `fwknop -T` (test mode:
 * nothing sent) inside `host`, for replay and flood tests.
 */
export async function buildFwknopPacket(host: HostHandle, options: FwknopKnockOptions): Promise<string> {
  const argv = [...fwknopArgv(options, options.allowIp ?? host.ipv4), '-T'];
  const run = await host.run(argv, { timeoutMs: options.timeoutMs ?? 10_000, env: CLIENT_ENV });
  const packet = /Final SPA Data: (\S+)/.exec(run.stdout)?.[1];
  if (!packet)
    throw new Error(`fwknop -T in ${host.name} printed no "Final SPA Data": ${run.stdout}${run.stderr}`);
  return packet;
}
