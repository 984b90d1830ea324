// Reading a child's output line by line and waiting for the line that says something happened
// ("listening on", "Added access rule", a JSON result), always with a deadline.

import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';

/** Lines kept per reader: enough for any test's log, bounded so a chatty daemon cannot grow us. */
const MAX_LINES = 20_000;

export interface LineEvent {
  line: string;
  /** Index in the reader's history (counts every line ever seen, also those dropped from memory). */
  index: number;
  /** performance.now() when this process read the line. */
  at: number;
}

type Matcher = RegExp | ((line: string) => boolean);

interface Waiter {
  matches: (line: string) => boolean;
  resolve: (event: LineEvent) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

export class LineReader {
  private readonly kept: LineEvent[] = [];
  private readonly waiters = new Set<Waiter>();
  private partial = '';
  private seen = 0;
  private closedBecause: string | null = null;
  private readonly label: string;

  constructor(label: string, ...streams: Array<Readable | null | undefined>) {
    this.label = label;
    let open = 0;
    for (const stream of streams) {
      if (!stream) continue;
      open++;
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => this.push(chunk));
      stream.on('close', () => {
        open--;
        if (open === 0) this.close('its output closed');
      });
    }
  }

  /** Follows a child's stdout and stderr, interleaved in arrival order. */
  static ofChild(label: string, child: ChildProcess): LineReader {
    return new LineReader(label, child.stdout, child.stderr);
  }

  private push(chunk: string): void {
    const text = this.partial + chunk;
    const parts = text.split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) this.add(line.replace(/\r$/, ''));
  }

  private add(line: string): void {
    const event: LineEvent = { line, index: this.seen++, at: performance.now() };
    this.kept.push(event);
    if (this.kept.length > MAX_LINES) this.kept.shift();
    for (const waiter of this.waiters) {
      if (waiter.matches(line)) {
        this.waiters.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.resolve(event);
      }
    }
  }

  private close(reason: string): void {
    if (this.partial) {
      this.add(this.partial);
      this.partial = '';
    }
    this.closedBecause = reason;
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(
        new Error(`${this.label}: ${reason} before the awaited line; last lines:\n${this.tail(15)}`),
      );
    }
    this.waiters.clear();
  }

  lines(): string[] {
    return this.kept.map((event) => event.line);
  }

  events(): LineEvent[] {
    return [...this.kept];
  }

  /** Number of lines seen so far: pass it as `from` to wait only for lines still to come. */
  get count(): number {
    return this.seen;
  }

  tail(n: number): string {
    return this.kept
      .slice(-n)
      .map((event) => `  ${event.line}`)
      .join('\n');
  }

  /**
   * Resolves with the first line matching, looking first at lines already seen from index `from`
   * (default: all kept). Rejects after `timeoutMs` or when the output closes.
   */
  waitFor(matcher: Matcher, timeoutMs: number, from = 0): Promise<LineEvent> {
    const matches = typeof matcher === 'function' ? matcher : (line: string) => matcher.test(line);
    const earlier = this.kept.find((event) => event.index >= from && matches(event.line));
    if (earlier) return Promise.resolve(earlier);
    if (this.closedBecause) {
      return Promise.reject(
        new Error(
          `${this.label}: ${this.closedBecause}; no line matched ${String(matcher)}; last lines:\n${this.tail(15)}`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        matches,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(
            new Error(
              `${this.label}: no line matched ${String(matcher)} within ${timeoutMs} ms; last lines:\n${this.tail(15)}`,
            ),
          );
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Waits for a line that parses as a JSON object with `key` in it. */
  async waitForJson<T>(key: string, timeoutMs: number, from = 0): Promise<T> {
    const event = await this.waitFor((line) => parseJsonObject(line)?.[key] !== undefined, timeoutMs, from);
    return parseJsonObject(event.line) as T;
  }
}

function parseJsonObject(line: string): Record<string, unknown> | null {
  if (!line.startsWith('{')) return null;
  try {
    const value: unknown = JSON.parse(line);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
