// Anti-replay for knocks. A knock is fresh when its timestamp is inside the window around our
// clock, later than every knock this identity made before, and its nonce has not been seen in
// the window. The per-identity high-water marks are persisted before a pinhole opens, so a
// restarted gateway accepts no packet it accepted (or could have accepted) before.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './atomic-file.ts';

export type Freshness = 'fresh' | 'time-window' | 'replay';

/** Bounds the nonce cache so a flood of valid knocks cannot grow memory without limit. */
const MAX_NONCES = 65536;
const STATE_FILE = 'replay.json';
const STATE_VERSION = 1;

export interface ReplayGuardOptions {
  stateDir: string;
  windowMs: number;
  now?: () => number;
}

export class ReplayGuard {
  private readonly path: string;
  private readonly windowMs: number;
  private readonly now: () => number;
  /** identity id (hex) → last accepted timestamp (ms). */
  private readonly lastSeen = new Map<string, number>();
  /** nonce (hex) → expiry (ms); insertion order is expiry order, since timestamps only grow per entry. */
  private readonly nonces = new Map<string, number>();

  constructor(options: ReplayGuardOptions) {
    this.path = join(options.stateDir, STATE_FILE);
    this.windowMs = options.windowMs;
    this.now = options.now ?? Date.now;
    this.load();
  }

  /** Checks without recording: call `record` once the knock is allowed. */
  check(identityHex: string, timestampMs: number, nonceHex: string): Freshness {
    const now = this.now();
    if (timestampMs < now - this.windowMs || timestampMs > now + this.windowMs) return 'time-window';
    const last = this.lastSeen.get(identityHex);
    if (last !== undefined && timestampMs <= last) return 'replay';
    const expiry = this.nonces.get(nonceHex);
    if (expiry !== undefined && expiry > now) return 'replay';
    return 'fresh';
  }

  /** Records and persists an accepted knock. Throws if the state cannot be written: fail closed. */
  record(identityHex: string, timestampMs: number, nonceHex: string): void {
    const now = this.now();
    this.lastSeen.set(identityHex, timestampMs);
    this.nonces.delete(nonceHex);
    this.nonces.set(nonceHex, now + 2 * this.windowMs);
    this.evictNonces(now);
    this.persist(now);
  }

  private evictNonces(now: number): void {
    for (const [nonce, expiry] of this.nonces) {
      if (expiry > now && this.nonces.size <= MAX_NONCES) break;
      this.nonces.delete(nonce);
    }
  }

  private persist(now: number): void {
    // A mark older than the window can never matter again: any knock at or below it is stale.
    const identities: Record<string, number> = {};
    for (const [id, last] of this.lastSeen) {
      if (last >= now - this.windowMs) identities[id] = last;
      else this.lastSeen.delete(id);
    }
    writeFileAtomic(this.path, `${JSON.stringify({ version: STATE_VERSION, identities })}\n`);
  }

  private load(): void {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new Error(`${this.path}: cannot read the replay state: ${(error as Error).message}`);
    }
    let state: unknown;
    try {
      state = JSON.parse(text);
    } catch {
      throw new Error(
        `${this.path}: the replay state is corrupt. Knocks made in the last window could be replayed if it were ignored; ` +
          'wait for the time window to pass, then delete the file and restart.',
      );
    }
    const identities = (state as { identities?: unknown })?.identities;
    if ((state as { version?: unknown })?.version !== STATE_VERSION || typeof identities !== 'object' || !identities)
      throw new Error(`${this.path}: unknown replay state format; expected version ${STATE_VERSION}`);
    for (const [id, last] of Object.entries(identities)) {
      if (/^[0-9a-f]{32}$/.test(id) && Number.isSafeInteger(last)) this.lastSeen.set(id, last as number);
    }
  }
}
