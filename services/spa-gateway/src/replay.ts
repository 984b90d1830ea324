// Anti-replay for knocks. A knock is fresh when its timestamp is inside the window around our
// clock, later than every knock this identity made before, made after this machine booted, and
// its nonce has not been seen in the window. Accepted knocks are recorded before their pinhole
// opens, so a restarted gateway accepts no packet it accepted (or could have accepted) before.
//
// Persistence sits on the knock's critical path, so it is a snapshot plus a journal. An accepted
// knock appends one checksummed line to `replay.journal` with a single write(): once write()
// returns the line is in the kernel's page cache and survives the process being killed. It is
// not fsynced per knock (that costs ~0.5 ms on a cold CPU): the only events that lose page cache
// are a power cut or a kernel crash, and those also wipe every pinhole and reboot the machine;
// knocks made before the boot are refused by the boot-time floor, so no lost line can be
// replayed. A line torn by a power cut fails its checksum and is ignored. Every JOURNAL_LIMIT
// lines, and at start, the marks are written to `replay.json` atomically (temporary file, fsync,
// rename, directory fsync) and the journal starts again.

import { closeSync, fdatasyncSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { writeFileAtomic } from './atomic-file.ts';
import { bootTimeMs } from './boot-time.ts';

export type Freshness = 'fresh' | 'time-window' | 'replay';

/** Bounds the nonce cache so a flood of valid knocks cannot grow memory without limit. */
const MAX_NONCES = 65536;
const SNAPSHOT_FILE = 'replay.json';
const JOURNAL_FILE = 'replay.journal';
const JOURNAL_LIMIT = 4096;
const STATE_VERSION = 1;
const JOURNAL_LINE = /^([0-9a-f]{32}) (\d{1,16}) ([0-9a-f]{8})$/;

export interface ReplayGuardOptions {
  stateDir: string;
  windowMs: number;
  now?: () => number;
  /** Knocks made at or before this time are refused; default: when this machine booted. */
  notBeforeMs?: number;
}

export class ReplayGuard {
  private readonly snapshotPath: string;
  private readonly journalPath: string;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly notBeforeMs: number;
  /** identity id (hex) → last accepted timestamp (ms). */
  private readonly lastSeen = new Map<string, number>();
  /** nonce (hex) → expiry (ms), in insertion order. */
  private readonly nonces = new Map<string, number>();
  private journal: number;
  private journalLines = 0;

  constructor(options: ReplayGuardOptions) {
    this.snapshotPath = join(options.stateDir, SNAPSHOT_FILE);
    this.journalPath = join(options.stateDir, JOURNAL_FILE);
    this.windowMs = options.windowMs;
    this.now = options.now ?? Date.now;
    this.notBeforeMs = options.notBeforeMs ?? bootTimeMs();
    this.loadSnapshot();
    this.replayJournal();
    // Fold what was loaded into a fresh snapshot, so the journal starts empty and stays short.
    this.compact();
    this.journal = openSync(this.journalPath, 'a', 0o600);
  }

  /** Checks without recording: call `record` once the knock is allowed. */
  check(identityHex: string, timestampMs: number, nonceHex: string): Freshness {
    const now = this.now();
    if (timestampMs < now - this.windowMs || timestampMs > now + this.windowMs) return 'time-window';
    if (timestampMs <= this.notBeforeMs) return 'replay';
    const last = this.lastSeen.get(identityHex);
    if (last !== undefined && timestampMs <= last) return 'replay';
    const expiry = this.nonces.get(nonceHex);
    if (expiry !== undefined && expiry > now) return 'replay';
    return 'fresh';
  }

  /** Records and persists an accepted knock. Throws if the state cannot be written: fail closed. */
  record(identityHex: string, timestampMs: number, nonceHex: string): void {
    const now = this.now();
    const entry = `${identityHex} ${timestampMs}`;
    writeSync(this.journal, `${entry} ${checksum(entry)}\n`);
    this.lastSeen.set(identityHex, timestampMs);
    this.nonces.delete(nonceHex);
    this.nonces.set(nonceHex, now + 2 * this.windowMs);
    this.evictNonces(now);
    if (++this.journalLines >= JOURNAL_LIMIT) this.compact();
  }

  close(): void {
    closeSync(this.journal);
  }

  private evictNonces(now: number): void {
    for (const [nonce, expiry] of this.nonces) {
      if (expiry > now && this.nonces.size <= MAX_NONCES) break;
      this.nonces.delete(nonce);
    }
  }

  /** Writes every live mark to the snapshot, then empties the journal. A crash in between only repeats marks. */
  private compact(): void {
    const now = this.now();
    const identities: Record<string, number> = {};
    for (const [id, last] of this.lastSeen) {
      // A mark older than the window can never matter again: any knock at or below it is stale.
      if (last >= now - this.windowMs) identities[id] = last;
      else this.lastSeen.delete(id);
    }
    writeFileAtomic(this.snapshotPath, `${JSON.stringify({ version: STATE_VERSION, identities })}\n`);
    const journal = openSync(this.journalPath, 'a', 0o600);
    try {
      ftruncateSync(journal, 0);
      fdatasyncSync(journal);
    } finally {
      closeSync(journal);
    }
    this.journalLines = 0;
  }

  private loadSnapshot(): void {
    const text = readIfPresent(this.snapshotPath);
    if (text === null) return;
    let state: unknown;
    try {
      state = JSON.parse(text);
    } catch {
      throw new Error(
        `${this.snapshotPath}: the replay state is corrupt. Knocks made in the last window could be replayed if it were ignored; ` +
          'wait for the time window to pass, then delete the file and restart.',
      );
    }
    const identities = (state as { identities?: unknown })?.identities;
    if (
      (state as { version?: unknown })?.version !== STATE_VERSION ||
      typeof identities !== 'object' ||
      !identities
    )
      throw new Error(`${this.snapshotPath}: unknown replay state format; expected version ${STATE_VERSION}`);
    for (const [id, last] of Object.entries(identities)) {
      if (/^[0-9a-f]{32}$/.test(id) && Number.isSafeInteger(last)) this.raise(id, last as number);
    }
  }

  private replayJournal(): void {
    const text = readIfPresent(this.journalPath);
    if (!text) return;
    for (const line of text.split('\n')) {
      const match = JOURNAL_LINE.exec(line);
      // A line that fails its checksum was torn by a power cut before its pinhole opened.
      if (!match || checksum(`${match[1]} ${match[2]}`) !== match[3]) continue;
      this.raise(match[1]!, Number(match[2]));
    }
  }

  private raise(id: string, timestampMs: number): void {
    if (timestampMs > (this.lastSeen.get(id) ?? -1)) this.lastSeen.set(id, timestampMs);
  }
}

function checksum(text: string): string {
  return crc32(text).toString(16).padStart(8, '0');
}

function readIfPresent(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${path}: cannot read the replay state: ${(error as Error).message}`);
  }
}
