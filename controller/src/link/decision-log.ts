// Every decision is written before it is answered: an allowed knock's session must exist when the
// gateway reports on it, and every decision must be in the audit log with its reason. One commit per
// knock would cap the controller at what the disk can fsync (a few hundred a second with SQLite's
// synchronous=FULL); so decisions made in the same turn of the event loop are written together in
// one transaction (group commit) and each waits for its batch.

import type { DecisionBatch, NewAuditEntry, NewSession, Store } from '../store/index.ts';

/** One transaction stays short, and one failure taints few decisions. */
const MAX_BATCH = 1_000;

export interface DecisionRecord {
  /** The session an allowed knock opens. */
  session?: NewSession;
  audit: NewAuditEntry;
}

interface Pending {
  record: DecisionRecord;
  resolve: () => void;
  reject: (error: unknown) => void;
}

export class DecisionLog {
  readonly #store: Store;
  #queue: Pending[] = [];
  /** From the first record of a batch until the queue is empty again. */
  #active = false;
  #idle: Promise<void> = Promise.resolve();

  constructor(store: Store) {
    this.#store = store;
  }

  /** Resolves once the record is committed; rejects if it could not be written. */
  record(record: DecisionRecord): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ record, resolve, reject });
      if (this.#active) return;
      this.#active = true;
      // setImmediate, not a microtask: it runs after the I/O callbacks of this turn, so every knock
      // that arrived together joins the batch.
      this.#idle = new Promise((idle) => setImmediate(() => void this.#drain().then(idle)));
    });
  }

  /** Waits until everything recorded so far is written (or failed). */
  async flushed(): Promise<void> {
    while (this.#active) await this.#idle;
  }

  async #drain(): Promise<void> {
    try {
      // Records that arrive while a batch is written make the next batch.
      while (this.#queue.length > 0) await this.#write(this.#queue.splice(0, MAX_BATCH));
    } finally {
      this.#active = false;
    }
  }

  async #write(batch: Pending[]): Promise<void> {
    try {
      await this.#store.recordDecisions(toBatch(batch));
      for (const pending of batch) pending.resolve();
    } catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error);
        return;
      }
      // One bad record (a session for a service deleted meanwhile) must not sink the others.
      for (const pending of batch) {
        try {
          await this.#store.recordDecisions(toBatch([pending]));
          pending.resolve();
        } catch (single) {
          pending.reject(single);
        }
      }
    }
  }
}

function toBatch(pending: Pending[]): DecisionBatch {
  const batch: DecisionBatch = { sessions: [], audit: [] };
  for (const { record } of pending) {
    if (record.session !== undefined) batch.sessions.push(record.session);
    batch.audit.push(record.audit);
  }
  return batch;
}
