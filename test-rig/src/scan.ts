// The outsider's view: nmap run inside a namespace against a target, its XML report (`-oX -`)
// reduced to what a darkness test asserts on. Every scan is bounded twice: nmap's own
// --host-timeout, and a kill of the process after the scan kind's wall-clock budget.

import type { HostHandle } from './topology.ts';

export type ScanKind = 'tcp-syn' | 'udp' | 'version' | 'os';

export interface ScanOptions {
  /** nmap -p syntax. Defaults: tcp-syn all 65535 ports, udp UDP_DEFAULT_PORTS, version/os nmap's top 1000. */
  ports?: string;
  /** Force IPv6 (-6); by default chosen from the target's form. */
  ipv6?: boolean;
  /** --min-rate in packets per second; default 20000 for tcp-syn, 5000 otherwise. */
  minRate?: number;
  /** Wall-clock budget for the whole nmap process. */
  timeoutMs?: number;
  /** Appended to nmap's arguments, e.g. ['--reason']. */
  extraArgs?: readonly string[];
}

export interface ScannedPort {
  protocol: string;
  port: number;
  /** open, closed, filtered, unfiltered, open|filtered, closed|filtered */
  state: string;
  reason: string;
  service?: { name: string; product?: string; version?: string };
}

export interface ScanSummary {
  kind: ScanKind;
  target: string;
  argv: string[];
  elapsedMs: number;
  /** Whether nmap considered the host up (with -Pn it always does; the reason says why). */
  hostUp: boolean;
  hostReason: string;
  open: number[];
  closed: number[];
  /** Ports nmap saw no answer from at all (state filtered), counted, also those folded into extraports. */
  filtered: number;
  /** UDP's "no answer" state: open|filtered, counted likewise. */
  openFiltered: number;
  /** Ports per state, listed and folded together. */
  stateCounts: Record<string, number>;
  /** Ports nmap listed individually (it folds large same-state groups into a count). */
  ports: ScannedPort[];
  osMatches: Array<{ name: string; accuracy: number }>;
  /** nmap's XML report. */
  raw: string;
}

/** Common UDP services plus the SPA port, so a scan shows the knock port looks like any other. */
export const UDP_DEFAULT_PORTS = '53,67,69,123,161,500,1194,1701,4500,51820,62201';
export const SPA_PORT = 62201;

interface KindProfile {
  args: string[];
  defaultPorts: string | null;
  minRate: number;
  timeoutMs: number;
}

// Measured against a dark target (everything dropped) in a namespace pair: tcp-syn 6.8 s (all
// 65535 ports at 20000 pps with one retry), udp 1.4 s, version 1.1 s, os 1.7 s.
const PROFILES: Record<ScanKind, KindProfile> = {
  'tcp-syn': { args: ['-sS'], defaultPorts: '-', minRate: 20_000, timeoutMs: 60_000 },
  udp: { args: ['-sU'], defaultPorts: UDP_DEFAULT_PORTS, minRate: 5_000, timeoutMs: 60_000 },
  version: {
    args: ['-sS', '-sV', '--version-intensity', '7'],
    defaultPorts: null,
    minRate: 5_000,
    timeoutMs: 120_000,
  },
  os: { args: ['-sS', '-O', '--max-os-tries', '1'], defaultPorts: null, minRate: 5_000, timeoutMs: 60_000 },
};

/** The nmap argv for a scan, exported so reports can print exactly what ran. */
export function nmapArgv(target: string, kind: ScanKind, options: ScanOptions = {}): string[] {
  const profile = PROFILES[kind];
  const ipv6 = options.ipv6 ?? target.includes(':');
  const ports = options.ports ?? profile.defaultPorts;
  const timeoutMs = options.timeoutMs ?? profile.timeoutMs;
  return [
    'nmap',
    ...(ipv6 ? ['-6'] : []),
    ...profile.args,
    ...(ports === null ? [] : ports === '-' ? ['-p-'] : ['-p', ports]),
    // -Pn: a dark host answers no discovery probe; -n: no DNS, there is none in a namespace.
    '-Pn',
    '-n',
    '--max-retries',
    '1',
    '--min-rate',
    String(options.minRate ?? profile.minRate),
    '--host-timeout',
    `${Math.ceil(timeoutMs / 1000)}s`,
    ...(options.extraArgs ?? []),
    '-oX',
    '-',
    target,
  ];
}

/** Runs one nmap scan from `host` (normally the outsider) and parses its XML report. */
export async function nmapScan(
  host: HostHandle,
  target: string,
  kind: ScanKind,
  options: ScanOptions = {},
): Promise<ScanSummary> {
  const argv = nmapArgv(target, kind, options);
  const budget = (options.timeoutMs ?? PROFILES[kind].timeoutMs) + 10_000;
  const run = await host.exec(argv, { timeoutMs: budget });
  if (run.timedOut)
    throw new Error(`nmap ${kind} scan of ${target} from ${host.name} killed after ${budget} ms`);
  if (run.code !== 0 || !run.stdout.includes('</nmaprun>')) {
    throw new Error(
      `nmap ${kind} scan of ${target} from ${host.name} failed (exit ${run.code}): ${run.stderr.trim()}\n  argv: ${argv.join(' ')}`,
    );
  }
  return { ...parseNmapXml(run.stdout, kind, target), argv, elapsedMs: run.elapsedMs };
}

/** Reduces nmap's XML report; exported for unit tests on stored reports. */
export function parseNmapXml(
  xml: string,
  kind: ScanKind,
  target: string,
): Omit<ScanSummary, 'argv' | 'elapsedMs'> {
  const ports: ScannedPort[] = [];
  for (const match of xml.matchAll(/<port ([^>]*)>([\s\S]*?)<\/port>/g)) {
    const attrs = attributes(match[1]!);
    const body = match[2]!;
    const state = attributes(/<state ([^>]*)\/?>/.exec(body)?.[1] ?? '');
    const serviceAttrs = /<service ([^>]*)\/?>/.exec(body)?.[1];
    const entry: ScannedPort = {
      protocol: attrs.protocol ?? '',
      port: Number(attrs.portid),
      state: state.state ?? '',
      reason: state.reason ?? '',
    };
    if (serviceAttrs) {
      const service = attributes(serviceAttrs);
      entry.service = { name: service.name ?? '' };
      if (service.product) entry.service.product = service.product;
      if (service.version) entry.service.version = service.version;
    }
    ports.push(entry);
  }
  const stateCounts: Record<string, number> = {};
  for (const port of ports) stateCounts[port.state] = (stateCounts[port.state] ?? 0) + 1;
  for (const match of xml.matchAll(/<extraports ([^>]*)>/g)) {
    const attrs = attributes(match[1]!);
    const state = attrs.state ?? '';
    stateCounts[state] = (stateCounts[state] ?? 0) + Number(attrs.count ?? 0);
  }
  const status = attributes(/<host(?:\s[^>]*)?>\s*<status ([^>]*)\/>/.exec(xml)?.[1] ?? '');
  const osMatches = [...xml.matchAll(/<osmatch ([^>]*)>/g)].map((match) => {
    const attrs = attributes(match[1]!);
    return { name: attrs.name ?? '', accuracy: Number(attrs.accuracy ?? 0) };
  });
  return {
    kind,
    target,
    hostUp: status.state === 'up',
    hostReason: status.reason ?? '',
    open: ports.filter((port) => port.state === 'open').map((port) => port.port),
    closed: ports.filter((port) => port.state === 'closed').map((port) => port.port),
    filtered: stateCounts.filtered ?? 0,
    openFiltered: stateCounts['open|filtered'] ?? 0,
    stateCounts,
    ports,
    osMatches,
    raw: xml,
  };
}

function attributes(text: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const match of text.matchAll(/([\w-]+)="([^"]*)"/g)) result[match[1]!] = decodeEntities(match[2]!);
  return result;
}

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-f]+|#\d+|amp|lt|gt|quot|apos);/gi, (_, entity: string) => {
    if (entity[0] === '#') {
      return String.fromCodePoint(
        entity[1] === 'x' ? Number.parseInt(entity.slice(2), 16) : Number(entity.slice(1)),
      );
    }
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[entity.toLowerCase()] ?? '';
  });
}
