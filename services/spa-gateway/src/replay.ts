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
//
// With a state key (`stateKey`, 32 bytes; the gateway's TPM unseals it under a PCR policy), the
// state is tamper-evident against someone who can write the data partition but lacks the key.
// Two subkeys are derived with HKDF-SHA256 (empty salt): "umbra replay journal v1" and
// "umbra replay snapshot v1". Formats with a key:
//   journal line:  `<identity, 32 hex> <timestamp ms> <HMAC-SHA256(journal subkey, "<identity>
//                  <timestamp>"), first 16 bytes, 32 hex>`
//   snapshot:      the same JSON plus `notBeforeMs` (the floor in force, so a restart in the same
//                  boot keeps it) and `mac`: HMAC-SHA256(snapshot subkey, canonical content), 64
//                  hex, where canonical content is JSON.stringify([version, bootId ?? null,
//                  clean ?? null, notBeforeMs ?? null, identities as [id, mark] pairs sorted by id]).
// A journal line in the right format (or a newline-terminated line in the keyless CRC format)
// whose MAC fails is not applied and is counted (`forgedJournalLines`). Such a line, a snapshot
// without a MAC (written by a keyless gateway: the upgrade to a TPM), or with a MAC that fails
// (edited, or written under another key) makes the state untrusted: `distrust` says why, the
// snapshot's bootId/clean are not believed, and `notBeforeMs` is at least construction time +
// window, so no knock accepted before can be replayed. Marks read from an untrusted snapshot are
// still applied (they can only refuse more). The snapshot written at start carries the new MAC, so
// the state is trusted again at the next start. A missing snapshot with a key (first start, or a
// deleted state) gets the boot-time floor, as without a key. Not detected: removing trailing journal lines,
// or rolling both files back to an earlier authentic pair; that needs a TPM monotonic counter.
// Without a key the format is the one above; a keyless gateway that finds keyed state (a snapshot
// with a `mac`, or MAC-form journal lines) cannot check it and distrusts it the same way.

import { createHmac, createSecretKey, hkdfSync, type KeyObject, timingSafeEqual } from 'node:crypto';
import { closeSync, fdatasyncSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { writeFileAtomic } from '@umbra/protocol';
import { bootId, bootTimeMs } from './boot-time.ts';

export type Freshness = 'fresh' | 'time-window' | 'replay';

/** Bounds the nonce cache so a flood of valid knocks cannot grow memory without limit. */
const MAX_NONCES = 65536;
const SNAPSHOT_FILE = 'replay.json';
const JOURNAL_FILE = 'replay.journal';
const JOURNAL_LIMIT = 4096;
const STATE_VERSION = 1;
const JOURNAL_LINE = /^([0-9a-f]{32}) (\d{1,16}) ([0-9a-f]{8})$/;
const KEYED_JOURNAL_LINE = /^([0-9a-f]{32}) (\d{1,16}) ([0-9a-f]{32})$/;
const STATE_KEY_BYTES = 32;
const JOURNAL_KEY_INFO = 'umbra replay journal v1';
const SNAPSHOT_KEY_INFO = 'umbra replay snapshot v1';

export interface ReplayGuardOptions {
  stateDir: string;
  windowMs: number;
  now?: () => number;
  /** Knocks made at or before this time are refused. Default: boot time + window after an unclean reboot, else 0. */
  notBeforeMs?: number;
  /**
   * 32 bytes (unsealed by the TPM): MACs the journal and the snapshot instead of CRC-32, and state
   * whose MAC fails is not trusted (see `distrust`). Never logged nor put in an error message.
   */
  stateKey?: Uint8Array;
}

interface StateKeys {
  journal: KeyObject;
  snapshot: KeyObject;
}

interface Snapshot {
  version: number;
  identities: Record<string, number>;
  /** The boot during which the gateway last wrote the snapshot. */
  bootId?: string;
  /** Written by a clean stop: the journal was folded in and synced. */
  clean?: boolean;
  /** With a key: the floor in force when it was written. */
  notBeforeMs?: number;
  /** With a key: HMAC-SHA256 of the canonical content, hex. */
  mac?: string;
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
  private readonly keys: StateKeys | null;
  /**
   * Why the state found at start was not trusted (a message naming the file, for the log), or null.
   * When set, `notBeforeMs` is at least the construction time + window.
   */
  readonly distrust: string | null;
  /** Journal lines found at start in the right format whose MAC (or, without a key, whose form) failed. */
  readonly forgedJournalLines: number;

  constructor(options: ReplayGuardOptions) {
    this.snapshotPath = join(options.stateDir, SNAPSHOT_FILE);
    this.journalPath = join(options.stateDir, JOURNAL_FILE);
    this.windowMs = options.windowMs;
    this.now = options.now ?? Date.now;
    this.keys = options.stateKey === undefined ? null : deriveKeys(options.stateKey);
    this.bootId = bootId();
    const startMs = this.now();
    const previous = this.loadSnapshot();
    const forged = this.replayJournal();
    this.forgedJournalLines = forged;
    const reasons: string[] = [];
    if (previous?.distrust) reasons.push(previous.distrust);
    if (forged > 0)
      reasons.push(
        this.keys
          ? `${this.journalPath}: ${forged} line(s) whose MAC fails were ignored: the file was edited, or written under another state key`
          : `${this.journalPath}: ${forged} line(s) written with a state key were ignored: this gateway has no state key to check them`,
      );
    this.distrust =
      reasons.length === 0
        ? null
        : `${reasons.join('; ')}. The replay state is not trusted: knocks stamped before ${new Date(startMs + this.windowMs).toISOString()} ` +
          'are refused. If the gateway did not just move to (or from) a TPM-sealed state key, check who can write the state directory. ' +
          'The state is rewritten under the current key, so nothing needs to be done to clear this.';
    const trusted = this.distrust === null;
    // Only the same boot (page cache intact) or a clean stop proves no journal line was lost.
    const provenComplete =
      trusted &&
      previous !== null &&
      (previous.snapshot.bootId === this.bootId || previous.snapshot.clean === true);
    let notBeforeMs = options.notBeforeMs ?? (provenComplete ? 0 : bootTimeMs() + this.windowMs);
    if (this.keys) {
      // A floor a previous run wrote (after a distrust or an unclean reboot) outlives a restart.
      const kept = trusted ? previous?.snapshot.notBeforeMs : undefined;
      if (Number.isSafeInteger(kept)) notBeforeMs = Math.max(notBeforeMs, kept as number);
      // No snapshot at all (a first start, or deleted state) gets only the boot-time floor above:
      // state deleted offline is followed by a boot, whose floor refuses every knock made before
      // it; deleting it under a running gateway takes root on the box, which holds the unsealed
      // keys anyway. A freshly enrolled gateway must not refuse its first window of knocks.
    }
    // Any knock accepted before carried a timestamp at most its arrival + window, so at most this.
    if (!trusted) notBeforeMs = Math.max(notBeforeMs, startMs + this.windowMs);
    this.notBeforeMs = notBeforeMs;
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
    const seal = this.keys ? journalMac(this.keys.journal, entry) : checksum(entry);
    writeSync(this.journal, `${entry} ${seal}\n`);
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
    if (this.keys) {
      snapshot.notBeforeMs = this.notBeforeMs;
      snapshot.mac = snapshotMac(this.keys.snapshot, snapshot);
    }
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

  /** The snapshot, and why it is not trusted (null when it is). */
  private loadSnapshot(): { snapshot: Snapshot; distrust: string | null } | null {
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
    const snapshot = state as Snapshot;
    let distrust: string | null = null;
    if (this.keys) {
      if (typeof snapshot.mac !== 'string')
        distrust = `${this.snapshotPath} has no MAC: it was written without a state key (expected once, when moving to a TPM) or edited`;
      else if (!macEquals(snapshot.mac, snapshotMac(this.keys.snapshot, snapshot)))
        distrust = `${this.snapshotPath}: its MAC fails: it was edited, or written under another state key`;
    } else if (snapshot.mac !== undefined) {
      distrust = `${this.snapshotPath} was written with a state key and this gateway has none to check it`;
    }
    // Marks are applied even from an untrusted snapshot: a mark can only refuse more knocks.
    for (const [id, last] of Object.entries(identities)) {
      if (/^[0-9a-f]{32}$/.test(id) && Number.isSafeInteger(last)) this.raise(id, last as number);
    }
    return { snapshot, distrust };
  }

  /** Applies the journal; returns how many lines in the right format failed their MAC. */
  private replayJournal(): number {
    const text = readIfPresent(this.journalPath);
    if (!text) return 0;
    const lines = text.split('\n');
    let forged = 0;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      // Only the last line can be torn, and it then has no newline.
      const complete = i < lines.length - 1;
      if (this.keys) {
        const match = KEYED_JOURNAL_LINE.exec(line);
        if (match) {
          // A torn line never has a whole MAC: a whole line whose MAC fails was forged.
          if (macEquals(match[3]!, journalMac(this.keys.journal, `${match[1]} ${match[2]}`)))
            this.raise(match[1]!, Number(match[2]));
          else forged++;
        } else if (complete && JOURNAL_LINE.test(line)) {
          forged++; // a keyless line in a keyed journal; a torn keyed line would have no newline
        }
        continue;
      }
      const match = JOURNAL_LINE.exec(line);
      // A line that fails its checksum was torn by a power cut before its pinhole opened.
      if (!match || checksum(`${match[1]} ${match[2]}`) !== match[3]) {
        if (complete && KEYED_JOURNAL_LINE.test(line)) forged++;
        continue;
      }
      this.raise(match[1]!, Number(match[2]));
    }
    return forged;
  }

  private raise(id: string, timestampMs: number): void {
    if (timestampMs > (this.lastSeen.get(id) ?? -1)) this.lastSeen.set(id, timestampMs);
  }
}

function deriveKeys(stateKey: Uint8Array): StateKeys {
  if (!(stateKey instanceof Uint8Array) || stateKey.length !== STATE_KEY_BYTES)
    throw new Error(
      `ReplayGuard: the state key must be ${STATE_KEY_BYTES} bytes, got ${stateKey instanceof Uint8Array ? stateKey.length : typeof stateKey}`,
    );
  const derive = (info: string) =>
    createSecretKey(Buffer.from(hkdfSync('sha256', stateKey, new Uint8Array(0), info, 32)));
  return { journal: derive(JOURNAL_KEY_INFO), snapshot: derive(SNAPSHOT_KEY_INFO) };
}

/** HMAC-SHA256 of a journal entry, truncated to 128 bits. */
function journalMac(key: KeyObject, entry: string): string {
  return createHmac('sha256', key).update(entry).digest('hex').slice(0, 32);
}

function snapshotMac(key: KeyObject, snapshot: Snapshot): string {
  const identities = Object.entries(snapshot.identities).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const canonical = JSON.stringify([
    snapshot.version,
    snapshot.bootId ?? null,
    snapshot.clean ?? null,
    snapshot.notBeforeMs ?? null,
    identities,
  ]);
  return createHmac('sha256', key).update(canonical).digest('hex');
}

/** Constant-time comparison of hex MACs (the length is not secret). */
function macEquals(found: string, expected: string): boolean {
  const a = Buffer.from(found, 'utf8');
  const b = Buffer.from(expected, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
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
