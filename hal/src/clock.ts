// Time, injected: the button's hold timer, the console's preamble hold-back and the watchdog's feed
// loop all run on a Clock, so their tests step time by hand instead of sleeping.

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds on a monotonic scale; only differences mean anything. */
  now(): number;
  /** Runs `fn` once after `ms`. A timer never keeps the process alive by itself. */
  after(ms: number, fn: () => void): Timer;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  after(ms, fn) {
    const handle = setTimeout(fn, ms);
    handle.unref();
    return { cancel: () => clearTimeout(handle) };
  },
};

interface Pending {
  readonly at: number;
  readonly order: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** A clock that moves only when told to; timers due in a step run in time order. */
export class ManualClock implements Clock {
  #now: number;
  #order = 0;
  #pending: Pending[] = [];

  constructor(start = 0) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  after(ms: number, fn: () => void): Timer {
    const pending: Pending = { at: this.#now + Math.max(0, ms), order: this.#order++, fn, cancelled: false };
    this.#pending.push(pending);
    return {
      cancel: () => {
        pending.cancelled = true;
      },
    };
  }

  /** Moves time forward by `ms`, running every timer that falls due, including ones set on the way. */
  advance(ms: number): void {
    const until = this.#now + ms;
    for (;;) {
      const next = this.#nextDue(until);
      if (!next) break;
      this.#pending.splice(this.#pending.indexOf(next), 1);
      this.#now = next.at;
      next.fn();
    }
    this.#now = until;
  }

  /** Timers set and not yet run or cancelled. */
  get pendingCount(): number {
    return this.#pending.filter((p) => !p.cancelled).length;
  }

  #nextDue(until: number): Pending | undefined {
    this.#pending = this.#pending.filter((p) => !p.cancelled);
    let next: Pending | undefined;
    for (const p of this.#pending) {
      if (p.at > until) continue;
      if (!next || p.at < next.at || (p.at === next.at && p.order < next.order)) next = p;
    }
    return next;
  }
}
