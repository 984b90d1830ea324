// Anti-replay for knocks. A knock is fresh when its timestamp is inside the window around our
// clock, later than every knock this identity made before, made after this machine booted, and
// its nonce has not been seen in the window. Accepted knocks are recorded before their pinhole
// opens, so a restarted gateway accepts no packet it accepted (or could have accepted) before.
//
// Persistence sits on the knock's critical path, so it is a snapshot plus a journal. An accepted
// knock appends one checksummed line to `replay.journal` with a single write(): once write()
// returns, the line is in the kernel's page cache and survives the process being killed. It is
// not fsynced per knock (that costs ~0.5 ms on a cold CPU). Only a power cut or a kernel crash
// loses page cache, and those reboot the machine; the snapshot records which boot wrote it and
// whether the gateway stopped cleanly (with everything synced). After a reboot that was not
// clean, lines may be missing, so knocks stamped before boot time + window are refused: any knock
// accepted before the crash carried a timestamp at most (its arrival + window), which is earlier.
// A line torn by a power cut fails its checksum and is ignored. At start, at a clean stop and
// every JOURNAL_LIMIT lines, the marks are written to `replay.json` atomically (temporary file,
// fsync, rename, directory fsync) and the journal starts again.

import { closeSync, fdatasyncSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { writeFileAtomic } from './atomic-file.ts';
import { bootId, bootTimeMs } from './boot-time.ts';

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
  /** Knocks made at or before this time are refused. Default: boot time + window after an unclean reboot, else 0. */
  notBeforeMs?: number;
}

interface Snapshot {
  version: number;
  identities: Record<string, number>;
  /** The boot during which the gateway last wrote the snapshot. */
  bootId?: string;
  /** Written by a clean stop: the journal was folded in and synced. */
  clean?: boolean;
}

export class ReplayGuard {
  private readonly snapshotPath: string;
  private readonly journalPath: string;
  private readonly windowMs: number;
  private readonly now: () => number;
  readonly notBeforeMs: number;
  private readonly bootId: string;
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
    this.bootId = bootId();
    const previous = this.loadSnapshot();
    this.replayJournal();
    // Only the same boot (page cache intact) or a clean stop proves no journal line was lost.
    const provenComplete = previous !== null && (previous.bootId === this.bootId || previous.clean === true);
    this.notBeforeMs = options.notBeforeMs ?? (provenComplete ? 0 : bootTimeMs() + this.windowMs);
    // Fold what was loaded into a fresh snapshot, so the journal starts empty and stays short.
    this.compact(false);
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
    if (++this.journalLines >= JOURNAL_LIMIT) this.compact(false);
  }

  /** A clean stop: folds the journal into a synced snapshot marked clean, so the next start needs no floor. */
  close(): void {
    closeSync(this.journal);
    this.compact(true);
  }

  private evictNonces(now: number): void {
    for (const [nonce, expiry] of this.nonces) {
      if (expiry > now && this.nonces.size <= MAX_NONCES) break;
      this.nonces.delete(nonce);
    }
  }

  /**
   * Writes every mark to the snapshot, then empties the journal; a crash in between only repeats
   * marks. Marks are never pruned by age: a clock stepped forward and back again must not make
   * an old knock fresh. There is at most one per client that ever knocked successfully.
   */
  private compact(clean: boolean): void {
    const snapshot: Snapshot = {
      version: STATE_VERSION,
      identities: Object.fromEntries(this.lastSeen),
      bootId: this.bootId,
      clean,
    };
    writeFileAtomic(this.snapshotPath, `${JSON.stringify(snapshot)}\n`);
    const journal = openSync(this.journalPath, 'a', 0o600);
    try {
      ftruncateSync(journal, 0);
      fdatasyncSync(journal);
    } finally {
      closeSync(journal);
    }
    this.journalLines = 0;
  }

  private loadSnapshot(): Snapshot | null {
    const text = readIfPresent(this.snapshotPath);
    if (text === null) return null;
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
    return state as Snapshot;
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
