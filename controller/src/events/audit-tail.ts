// The audit log as an event stream. Admin commands are separate processes and several controllers
// may share one PostgreSQL, so a change reaches the process that serves a gateway only through what
// they all share: every change is an audit entry, and every serving process follows the log from
// where it stood when it started.
//
// The store says when the log may have grown (at once for this process's appends, and for everyone's
// on PostgreSQL through LISTEN/NOTIFY); a poll at the store's pace covers the rest (SQLite written
// by another process, a notification lost while the listening connection was down). Reads never
// overlap and never skip: each resumes after the last seq it delivered.

import type { AuditEntry, AuditWatch, Store } from '../store/index.ts';

const PAGE = 1_000;

export interface AuditTailOptions {
  /** Deliver entries after this seq; default: the log's end when the tail starts. */
  from?: number;
  /** Called with each page of new entries, in order. It should not throw; if it does, the error is logged. */
  onEntries: (entries: AuditEntry[]) => void;
  onError: (error: unknown) => void;
}

export class AuditTail {
  readonly #store: Store;
  readonly #options: AuditTailOptions;
  #position: number;
  #watch: AuditWatch | null = null;
  #poll: NodeJS.Timeout | null = null;
  #reading = false;
  #again = false;
  #closed = false;

  private constructor(store: Store, position: number, options: AuditTailOptions) {
    this.#store = store;
    this.#position = position;
    this.#options = options;
  }

  static async start(store: Store, options: AuditTailOptions): Promise<AuditTail> {
    const tail = new AuditTail(store, options.from ?? (await store.lastAuditSeq()), options);
    tail.#watch = await store.watchAudit(() => tail.wake());
    tail.#poll = setInterval(() => tail.wake(), tail.#watch.pollMs);
    tail.#poll.unref();
    return tail;
  }

  /** The seq of the last entry delivered. */
  get position(): number {
    return this.#position;
  }

  /** Reads what is new now (a read under way reads again when it finishes). */
  wake(): void {
    if (this.#closed) return;
    if (this.#reading) {
      this.#again = true;
      return;
    }
    this.#reading = true;
    void this.#read();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#poll) clearInterval(this.#poll);
    await this.#watch?.close();
  }

  async #read(): Promise<void> {
    try {
      do {
        this.#again = false;
        for (;;) {
          const page = await this.#store.listAudit(this.#position, PAGE);
          if (page.length === 0 || this.#closed) break;
          this.#position = page.at(-1)!.seq;
          try {
            this.#options.onEntries(page);
          } catch (error) {
            this.#options.onError(error);
          }
          if (page.length < PAGE) break;
        }
      } while (this.#again && !this.#closed);
    } catch (error) {
      // The next wake or poll tries again from the same position.
      this.#options.onError(error);
    } finally {
      this.#reading = false;
    }
  }
}
