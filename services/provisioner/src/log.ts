// The provisioner's own log: lines kept in memory for logs-request (bounded), appended to
// STATE_DIR/provisioner.log (rotated to provisioner.log.1 past a size) and echoed to a sink (stderr on
// a box). Nothing secret is ever logged: bundles and tokens are never written here.

import { appendFileSync, existsSync, readFileSync, renameSync, statSync } from 'node:fs';
import { LOG_LINE_MAX_CHARS } from '@umbra/protocol';

export const LOG_FILE = 'provisioner.log';
export const LOG_MEMORY_LINES = 500;
export const LOG_FILE_MAX_BYTES = 256 * 1024;

export type LogLevel = 'info' | 'warn' | 'error';

export class ProvisionerLog {
  readonly #lines: string[] = [];
  readonly #path: string | undefined;
  readonly #sink: ((line: string) => void) | undefined;
  readonly #now: () => number;

  constructor(options: { path?: string; sink?: (line: string) => void; now?: () => number } = {}) {
    this.#path = options.path;
    this.#sink = options.sink;
    this.#now = options.now ?? Date.now;
    if (this.#path && existsSync(this.#path)) {
      // The tail of the previous run's log, so a technician sees what happened before a power cut.
      const previous = readFileSync(this.#path, 'utf8').split('\n').filter(Boolean);
      this.#lines.push(...previous.slice(-LOG_MEMORY_LINES));
    }
  }

  info(message: string): void {
    this.write('info', message);
  }

  warn(message: string): void {
    this.write('warn', message);
  }

  error(message: string): void {
    this.write('error', message);
  }

  write(level: LogLevel, message: string): void {
    const line = `${new Date(this.#now()).toISOString()} ${level} ${message.replace(/[\r\n]+/g, ' ')}`;
    this.#lines.push(line);
    if (this.#lines.length > LOG_MEMORY_LINES) this.#lines.splice(0, this.#lines.length - LOG_MEMORY_LINES);
    this.#sink?.(line);
    if (!this.#path) return;
    try {
      if (existsSync(this.#path) && statSync(this.#path).size > LOG_FILE_MAX_BYTES)
        renameSync(this.#path, `${this.#path}.1`);
      appendFileSync(this.#path, `${line}\n`, { mode: 0o600 });
    } catch {
      // A full or read-only data partition must not stop provisioning; the memory copy remains.
    }
  }

  /** The last `count` lines, each cut to what a logs message carries. */
  tail(count: number): string[] {
    return this.#lines
      .slice(-Math.max(0, count))
      .map((line) => (line.length > LOG_LINE_MAX_CHARS ? `${line.slice(0, LOG_LINE_MAX_CHARS - 1)}…` : line));
  }
}
