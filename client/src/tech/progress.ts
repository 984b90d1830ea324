// What `umbra-tech provision` shows while a box applies a bundle: one line per step.
//
// On a terminal the current step's line is redrawn in place with a spinner (and the box's
// percentage when it gives one); when the next step starts, or the result comes, the line is
// finished with ✓ (or ✗ for the step a refusal ended). Anywhere else (a pipe, a log file) each
// progress message is one plain line, so nothing is redrawn and nothing is lost.

import type { ProgressMessage } from '@umbra/protocol';

export interface ProgressOutput {
  write(text: string): unknown;
}

export interface ProgressDisplayOptions {
  out: ProgressOutput;
  /** Redraw in place with a spinner (stdout is a terminal). */
  tty: boolean;
  /** Spinner frame interval; 0 draws no spinner ticks (tests). */
  spinMs?: number;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const CLEAR_LINE = '\r\x1b[2K';

export class ProgressDisplay {
  readonly #out: ProgressOutput;
  readonly #tty: boolean;
  readonly #spinMs: number;
  #current: ProgressMessage | undefined;
  #frame = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: ProgressDisplayOptions) {
    this.#out = options.out;
    this.#tty = options.tty;
    this.#spinMs = options.spinMs ?? 100;
  }

  /** A progress message from the box. */
  update(progress: ProgressMessage): void {
    if (!this.#tty) {
      this.#out.write(`${plain(progress)}\n`);
      return;
    }
    if (this.#current && this.#current.step !== progress.step) this.#finishLine('✓');
    this.#current = progress;
    this.#draw();
    if (this.#spinMs > 0 && !this.#timer) {
      this.#timer = setInterval(() => {
        this.#frame = (this.#frame + 1) % SPINNER.length;
        this.#draw();
      }, this.#spinMs);
      this.#timer.unref();
    }
  }

  /** The result came: the last step's line is finished (✗ when the box refused). */
  end(ok: boolean): void {
    this.#stopSpinner();
    if (this.#tty && this.#current) this.#finishLine(ok ? '✓' : '✗');
  }

  /** The link failed mid-way: leave the last line as it is and move below it. */
  abort(): void {
    this.#stopSpinner();
    if (this.#tty && this.#current) {
      this.#out.write('\n');
      this.#current = undefined;
    }
  }

  #draw(): void {
    if (this.#current) this.#out.write(`${CLEAR_LINE}${SPINNER[this.#frame]} ${label(this.#current)}`);
  }

  #finishLine(mark: string): void {
    const current = this.#current!;
    this.#out.write(`${CLEAR_LINE}${mark} ${label({ ...current, percent: undefined })}\n`);
    this.#current = undefined;
  }

  #stopSpinner(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Text from the box, made safe for a terminal: control characters (an escape sequence could
 * rewrite the technician's screen) shown as U+FFFD.
 */
export function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '\ufffd');
}

function label(progress: ProgressMessage): string {
  const percent = progress.percent === undefined ? '' : ` ${String(progress.percent).padStart(3)}%`;
  return `${progress.step}: ${printable(progress.text)}${percent}`;
}

function plain(progress: ProgressMessage): string {
  return `[${progress.step}] ${printable(progress.text)}${progress.percent === undefined ? '' : ` (${progress.percent}%)`}`;
}
