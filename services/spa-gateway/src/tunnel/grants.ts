// What knocks earned: one grant per session, saying which identity may open which service from
// which address until when. The tunnel listener asks it before it proxies anything; the gateway
// adds grants as knocks are admitted and sweeps them as they expire.
//
// A grant is for opening connections. A tunnel established under it lives on after it expires,
// until it ends or is revoked; grants only decide who gets in next.

import { canonicalSource } from '../firewall/index.ts';

export interface Grant {
  sessionId: string;
  identity: string;
  keyId: string;
  /** The knock's source address, canonical (IPv4-mapped IPv6 as plain IPv4). */
  source: string;
  service: string;
  /** HOST:PORT, [IPv6]:PORT for an IPv6 literal. */
  backend: string;
  mode: 'tunnel' | 'direct';
  /** The flows' conntrack mark, from 1 to 2^31-1, unique among live grants. */
  mark: number;
  expiresAtMs: number;
}

export type GrantRequest = Omit<Grant, 'mark' | 'expiresAtMs'> & { ttlSeconds: number };

/** Why a grant left: its time ran out (sweep) or someone removed it (remove). */
export type GrantRemoval = 'expired' | 'removed';

const MAX_MARK = 2 ** 31 - 1;

export class Grants {
  #now: () => number;
  #bySession = new Map<string, Grant>();
  /** source|identity → grants, for the tunnel's one lookup per connection. */
  #byPeer = new Map<string, Set<Grant>>();
  #marks = new Set<number>();
  #nextMark = 1;
  #observers = new Set<(grant: Grant, why: GrantRemoval) => void>();

  /** @param now milliseconds on any monotonic scale; Date.now by default */
  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  /** Adds a grant; the same sessionId again refreshes its expiry and keeps its mark. */
  add(request: GrantRequest): Grant {
    const { ttlSeconds, ...fields } = request;
    if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) {
      throw new RangeError(`grant ttlSeconds ${ttlSeconds} must be a positive number of seconds`);
    }
    const source = canonicalSource(fields.source)?.address;
    if (source === undefined) {
      throw new TypeError(`grant source ${JSON.stringify(fields.source)} is not an IPv4 or IPv6 address`);
    }
    const expiresAtMs = this.#now() + ttlSeconds * 1000;
    const held = this.#bySession.get(fields.sessionId);
    if (held !== undefined) this.#unindex(held);
    const grant: Grant = { ...fields, source, mark: held?.mark ?? this.#allocateMark(), expiresAtMs };
    this.#bySession.set(grant.sessionId, grant);
    const peer = peerKey(source, grant.identity);
    const peers = this.#byPeer.get(peer) ?? new Set<Grant>();
    this.#byPeer.set(peer, peers.add(grant));
    return grant;
  }

  /** The unexpired tunnel grant that lets `identity` open `service` from `source`, if any. */
  findForConnection(source: string, identity: string, service: string): Grant | undefined {
    return this.#find(source, identity, (grant) => grant.mode === 'tunnel' && grant.service === service);
  }

  /** An unexpired grant of any service for `identity` from `source`: enough for the control channel. */
  findAnyForConnection(source: string, identity: string): Grant | undefined {
    return this.#find(source, identity, () => true);
  }

  bySession(sessionId: string): Grant | undefined {
    return this.#bySession.get(sessionId);
  }

  byKeyIds(keyIds: Iterable<string>): Grant[] {
    const wanted = new Set(keyIds);
    if (wanted.size === 0) return [];
    return [...this.#bySession.values()].filter((grant) => wanted.has(grant.keyId));
  }

  remove(sessionId: string): Grant | undefined {
    const grant = this.#bySession.get(sessionId);
    if (grant === undefined) return undefined;
    this.#drop(grant, 'removed');
    return grant;
  }

  /** Removes grants expired before now and returns them (the caller reports sessions closed when no connection uses them). */
  sweep(): Grant[] {
    const now = this.#now();
    const expired = [...this.#bySession.values()].filter((grant) => grant.expiresAtMs <= now);
    for (const grant of expired) this.#drop(grant, 'expired');
    return expired;
  }

  all(): Grant[] {
    return [...this.#bySession.values()];
  }

  /**
   * Calls `observer` after each grant leaves, by sweep() or remove(). The tunnel listener uses it
   * to end a tunnel session once its grant is gone and its last connection closed. Returns a
   * function that stops the calls.
   */
  onRemoved(observer: (grant: Grant, why: GrantRemoval) => void): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  #find(source: string, identity: string, fits: (grant: Grant) => boolean): Grant | undefined {
    const address = canonicalSource(source)?.address;
    if (address === undefined) return undefined;
    const now = this.#now();
    let best: Grant | undefined;
    for (const grant of this.#byPeer.get(peerKey(address, identity)) ?? []) {
      if (grant.expiresAtMs <= now || !fits(grant)) continue;
      if (best === undefined || grant.expiresAtMs > best.expiresAtMs) best = grant;
    }
    return best;
  }

  #drop(grant: Grant, why: GrantRemoval): void {
    this.#bySession.delete(grant.sessionId);
    this.#unindex(grant);
    this.#marks.delete(grant.mark);
    for (const observer of this.#observers) observer(grant, why);
  }

  #unindex(grant: Grant): void {
    const key = peerKey(grant.source, grant.identity);
    const peers = this.#byPeer.get(key);
    peers?.delete(grant);
    if (peers?.size === 0) this.#byPeer.delete(key);
  }

  /** The next mark no live grant holds; wraps around, so marks of long-gone sessions come back. */
  #allocateMark(): number {
    if (this.#marks.size >= MAX_MARK) throw new Error('every conntrack mark is in use by a live grant');
    while (this.#marks.has(this.#nextMark)) this.#nextMark = (this.#nextMark % MAX_MARK) + 1;
    const mark = this.#nextMark;
    this.#nextMark = (mark % MAX_MARK) + 1;
    this.#marks.add(mark);
    return mark;
  }
}

function peerKey(source: string, identity: string): string {
  return `${source}|${identity}`;
}
