// What the gateway pipeline needs from a firewall: a base ruleset that drops everything, and
// pinholes — one source address, one protocol, one port, for a few seconds — that expire by
// themselves, so a gateway that dies fails closed.

import { isIP, SocketAddress } from 'node:net';

export type PinholeProtocol = 'tcp' | 'udp';

/** Which flows a pinhole lets in: new flows from `source` to `protocol`/`port`. */
export interface PinholeKey {
  /** IPv4 or IPv6 address in text form; IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4. */
  source: string;
  protocol: PinholeProtocol;
  port: number;
}

export interface PinholeRequest extends PinholeKey {
  ttlSeconds: number;
  /**
   * The conntrack mark new flows through this pinhole get: the session's, so that cut() can stop
   * them later. Without one, flows are not marked (a standalone gateway has no sessions).
   */
  mark?: number;
}

export interface Pinhole extends PinholeRequest {
  /** Whole seconds until the pinhole expires, rounded down, as nft reports it. */
  secondsLeft: number;
}

export interface Firewall {
  /** Installs the base ruleset, or repairs it, keeping the pinholes already open. */
  install(): void;
  /** True when the base ruleset is installed and intact. */
  isInstalled(): boolean;
  /** Opens a pinhole for `ttlSeconds`; opening one that is already open restarts its timeout. */
  open(request: PinholeRequest): void;
  /** Closes a pinhole now; closing one that is not open does nothing. */
  close(pinhole: PinholeKey): void;
  /** The pinholes open now. */
  list(): Pinhole[];
  /**
   * Drops every packet of flows carrying one of these marks, established or not, for
   * `ttlSeconds` — long enough to outlive the flows (both ends give up retransmitting within
   * minutes). This is how a revoked direct-mode flow stops: nothing on the gateway holds it.
   */
  cut(marks: readonly number[], ttlSeconds: number): void;
}

export const MAX_PORT = 65_535;
/** A knock opens a pinhole for seconds; asking for more than a day is a misconfiguration. */
export const MAX_TTL_SECONDS = 86_400;
/** Marks are session numbers; 0 is every unmarked flow, and the top bit is left to others. */
export const MAX_MARK = 2 ** 31 - 1;

export type AddressFamily = 4 | 6;

/** A pinhole key checked and put in the form the kernel will match against. */
export interface CheckedPinholeKey extends PinholeKey {
  family: AddressFamily;
}

const IPV4_MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/;

/** Validates a pinhole key; throws an error naming the field and what it must be. */
export function checkPinholeKey(pinhole: PinholeKey): CheckedPinholeKey {
  const { protocol, port } = pinhole;
  const source = canonicalSource(pinhole.source);
  if (source === undefined) {
    throw new TypeError(
      `pinhole source ${JSON.stringify(pinhole.source)} is not an IPv4 or IPv6 address ` +
        '(text form without a zone index, e.g. 192.0.2.7 or 2001:db8::7)',
    );
  }
  if (protocol !== 'tcp' && protocol !== 'udp') {
    throw new TypeError(`pinhole protocol ${JSON.stringify(protocol)} must be 'tcp' or 'udp'`);
  }
  if (!Number.isInteger(port) || port < 1 || port > MAX_PORT) {
    throw new RangeError(`pinhole port ${port} must be an integer from 1 to ${MAX_PORT}`);
  }
  return { source: source.address, protocol, port, family: source.family };
}

/**
 * The address as the kernel will match it and nft will print it: IPv6 compressed (RFC 5952,
 * like inet_ntop), and IPv4-mapped IPv6 as plain IPv4 — a dual-stack socket reports IPv4 peers
 * as ::ffff:a.b.c.d, but IPv4 packets are matched by pinholes4, where a mapped address in
 * pinholes6 would match nothing.
 */
export function canonicalSource(source: unknown): { address: string; family: AddressFamily } | undefined {
  if (typeof source !== 'string') return undefined;
  const family = isIP(source);
  if (family === 4) return { address: source, family };
  if (family !== 6 || source.includes('%')) return undefined;
  const address = new SocketAddress({ address: source, family: 'ipv6' }).address;
  const mapped = IPV4_MAPPED.exec(address)?.[1];
  return mapped === undefined ? { address, family } : { address: mapped, family: 4 };
}

/** Validates a pinhole request; nftables takes set timeouts in whole seconds in JSON. */
export function checkPinholeRequest(
  request: PinholeRequest,
): CheckedPinholeKey & { ttlSeconds: number; mark?: number } {
  const key = checkPinholeKey(request);
  const { ttlSeconds, mark } = request;
  checkTtl('pinhole ttlSeconds', ttlSeconds);
  if (mark === undefined) return { ...key, ttlSeconds };
  checkMark('pinhole mark', mark);
  return { ...key, ttlSeconds, mark };
}

/** Validates the arguments of Firewall.cut(). */
export function checkCut(marks: readonly number[], ttlSeconds: number): void {
  if (!Array.isArray(marks)) throw new TypeError('cut marks must be an array of integers');
  for (const mark of marks) checkMark('cut mark', mark);
  checkTtl('cut ttlSeconds', ttlSeconds);
}

function checkTtl(name: string, ttlSeconds: number): void {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > MAX_TTL_SECONDS) {
    throw new RangeError(`${name} ${ttlSeconds} must be an integer from 1 to ${MAX_TTL_SECONDS}`);
  }
}

function checkMark(name: string, mark: number): void {
  if (!Number.isInteger(mark) || mark < 1 || mark > MAX_MARK) {
    throw new RangeError(`${name} ${mark} must be an integer from 1 to ${MAX_MARK}`);
  }
}

interface MemoryPinhole {
  request: PinholeRequest;
  expiresAtMs: number;
}

/**
 * A firewall in memory, for unit tests of the gateway pipeline. It keeps the kernel's rules:
 * nothing works before install(), pinholes expire on the clock you inject, and secondsLeft is
 * rounded down like nft reports it.
 */
export class MemoryFirewall implements Firewall {
  #now: () => number;
  #installed = false;
  #pinholes = new Map<string, MemoryPinhole>();
  /** mark → expiry, ms */
  #cutMarks = new Map<number, number>();

  /** @param now milliseconds on any monotonic scale; Date.now by default */
  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  install(): void {
    this.#installed = true;
  }

  isInstalled(): boolean {
    return this.#installed;
  }

  open(request: PinholeRequest): void {
    const checked = checkPinholeRequest(request);
    this.#requireInstalled();
    const { source, protocol, port, ttlSeconds, mark } = checked;
    this.#pinholes.set(keyOf(checked), {
      request:
        mark === undefined
          ? { source, protocol, port, ttlSeconds }
          : { source, protocol, port, ttlSeconds, mark },
      expiresAtMs: this.#now() + ttlSeconds * 1000,
    });
  }

  close(pinhole: PinholeKey): void {
    const checked = checkPinholeKey(pinhole);
    this.#requireInstalled();
    this.#pinholes.delete(keyOf(checked));
  }

  list(): Pinhole[] {
    this.#requireInstalled();
    this.#expire();
    const now = this.#now();
    return [...this.#pinholes.values()].map(({ request, expiresAtMs }) => ({
      ...request,
      secondsLeft: Math.floor((expiresAtMs - now) / 1000),
    }));
  }

  cut(marks: readonly number[], ttlSeconds: number): void {
    checkCut(marks, ttlSeconds);
    this.#requireInstalled();
    for (const mark of marks) this.#cutMarks.set(mark, this.#now() + ttlSeconds * 1000);
  }

  /** Whether a new flow from `source` to `protocol`/`port` would get in now, as the kernel decides. */
  admits(flow: PinholeKey): boolean {
    if (!this.#installed) return true; // no ruleset at all: nothing is filtered
    this.#expire();
    return this.#pinholes.has(keyOf(checkPinholeKey(flow)));
  }

  /** The conntrack mark a new flow would get now (0: unmarked), as the kernel would set it. */
  markOf(flow: PinholeKey): number {
    if (!this.admits(flow)) return 0;
    return this.#pinholes.get(keyOf(checkPinholeKey(flow)))?.request.mark ?? 0;
  }

  /** Whether packets of a flow carrying `mark` are dropped now because of cut(). */
  isCut(mark: number): boolean {
    this.#expire();
    return this.#cutMarks.has(mark);
  }

  #expire(): void {
    const now = this.#now();
    for (const [key, pinhole] of this.#pinholes) {
      if (pinhole.expiresAtMs <= now) this.#pinholes.delete(key);
    }
    for (const [mark, expiresAtMs] of this.#cutMarks) {
      if (expiresAtMs <= now) this.#cutMarks.delete(mark);
    }
  }

  #requireInstalled(): void {
    if (!this.#installed) {
      throw new Error('the firewall has no base ruleset: call install() before opening or closing pinholes');
    }
  }
}

function keyOf({ source, protocol, port }: CheckedPinholeKey): string {
  return `${source}|${protocol}|${port}`;
}
