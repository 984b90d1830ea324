// The provisioner's state machine, persisted in STATE_DIR/provisioner.json:
//
//   unprovisioned → provisioning → enrolling → enrolled
//
// Every transition is one atomic write (writeFileAtomic, @umbra/protocol) recording the state, the step being run and
// the time, so after a power cut the file says exactly where the box stopped; Provisioner.open()
// resumes or rolls back from there (README.md, "Power loss"). The site bundle itself (it carries the
// enrollment token's secret) is kept beside it in site-bundle.cbor, mode 0600, while it is needed.

import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PROVISIONING_STATES, type ProvisioningState, writeFileAtomic } from '@umbra/protocol';
import { z } from 'zod';
import { NetworkSnapshotSchema } from './network.ts';

export const STATE_FILE = 'provisioner.json';
export const BUNDLE_FILE = 'site-bundle.cbor';
export const STATE_VERSION = 1;
/** Transitions kept in the file's history, newest last. */
export const HISTORY_LIMIT = 32;

/** The steps a technician sees in progress messages, in order. */
export const PROVISIONING_STEPS = [
  'verify-bundle',
  'network',
  'enroll-tpm',
  'enroll-controller',
  'done',
] as const;
export type ProvisioningStep = (typeof PROVISIONING_STEPS)[number];
/** Steps recorded in the file besides those: the box's own housekeeping. */
export type RecordedStep = ProvisioningStep | 'initial' | 'rollback' | 'factory-reset';

const failure = z
  .object({ code: z.string().min(1).max(48), message: z.string().min(1).max(512), at: z.string() })
  .strict();

const siteSchema = z
  .object({
    name: z.string(),
    controllerUrl: z.string(),
    keyId: z.string(),
    source: z.string(),
    /** The bundle's network settings (protocol NetworkSettings), checked when the bundle was opened. */
    network: z.record(z.unknown()),
  })
  .strict();

export const StateRecordSchema = z
  .object({
    version: z.literal(STATE_VERSION),
    state: z.enum(PROVISIONING_STATES),
    step: z.enum(['initial', 'rollback', 'factory-reset', ...PROVISIONING_STEPS]),
    /** When this state and step began (ISO 8601). */
    at: z.string(),
    site: siteSchema.optional(),
    /** The network as it was before this attempt changed it: what a rollback restores. */
    previousNetwork: NetworkSnapshotSchema.optional(),
    lastError: failure.optional(),
    history: z
      .array(z.object({ state: z.enum(PROVISIONING_STATES), step: z.string(), at: z.string() }).strict())
      .max(HISTORY_LIMIT),
  })
  .strict();

export type StateRecord = z.infer<typeof StateRecordSchema>;
export type SiteRecord = z.infer<typeof siteSchema>;
export type LastError = z.infer<typeof failure>;

/** provisioner.json cannot be used: the message names the file and what is wrong. */
export class StateFileError extends Error {
  override name = 'StateFileError';
}

export interface StateChange {
  state: ProvisioningState;
  step: RecordedStep;
  /** Fields to set; `undefined` removes one. */
  site?: SiteRecord | undefined;
  previousNetwork?: StateRecord['previousNetwork'] | undefined;
  lastError?: LastError | undefined;
}

export class StateStore {
  readonly dir: string;
  readonly path: string;
  readonly #now: () => number;
  #record: StateRecord;

  private constructor(dir: string, record: StateRecord, now: () => number) {
    this.dir = dir;
    this.path = join(dir, STATE_FILE);
    this.#record = record;
    this.#now = now;
  }

  /** Reads STATE_DIR/provisioner.json; a box that has none is unprovisioned (nothing is written yet). */
  static load(dir: string, now: () => number = Date.now): StateStore {
    const path = join(dir, STATE_FILE);
    if (!existsSync(path)) {
      const at = new Date(now()).toISOString();
      return new StateStore(
        dir,
        { version: 1, state: 'unprovisioned', step: 'initial', at, history: [] },
        now,
      );
    }
    return new StateStore(dir, parseStateFile(readFileSync(path, 'utf8'), path), now);
  }

  get record(): StateRecord {
    return this.#record;
  }

  get state(): ProvisioningState {
    return this.#record.state;
  }

  /** Records a transition with an atomic write; returns the new record. */
  transition(change: StateChange): StateRecord {
    const at = new Date(this.#now()).toISOString();
    const next: StateRecord = { ...this.#record, state: change.state, step: change.step, at };
    for (const key of ['site', 'previousNetwork', 'lastError'] as const) {
      if (!(key in change)) continue;
      if (change[key] === undefined) delete next[key];
      else (next as Record<string, unknown>)[key] = change[key];
    }
    next.history = [...this.#record.history, { state: change.state, step: change.step, at }].slice(
      -HISTORY_LIMIT,
    );
    const checked = StateRecordSchema.parse(next);
    writeFileAtomic(this.path, `${JSON.stringify(checked, null, 2)}\n`, 0o600);
    this.#record = checked;
    return checked;
  }

  /** The error to record with `code` and `message`, stamped now. */
  error(code: string, message: string): LastError {
    return { code, message: message.slice(0, 512) || code, at: new Date(this.#now()).toISOString() };
  }

  get bundlePath(): string {
    return join(this.dir, BUNDLE_FILE);
  }

  saveBundle(bytes: Uint8Array): void {
    writeFileAtomic(this.bundlePath, bytes, 0o600);
  }

  readBundle(): Buffer | undefined {
    return existsSync(this.bundlePath) ? readFileSync(this.bundlePath) : undefined;
  }

  removeBundle(): void {
    rmSync(this.bundlePath, { force: true });
  }
}

export function parseStateFile(text: string, path: string): StateRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new StateFileError(
      `${path} is corrupt: not JSON (${(error as Error).message}); move it aside to start unprovisioned`,
    );
  }
  const parsed = StateRecordSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new StateFileError(
      `${path} is corrupt: ${issue?.path.join('.') || '(root)'}: ${issue?.message}; move it aside to start unprovisioned`,
    );
  }
  return parsed.data;
}

/** The state as `umbra-provisioner status` prints it (never the bundle or its token). */
export function readStatus(dir: string): StateRecord {
  return StateStore.load(dir).record;
}
