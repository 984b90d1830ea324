// The command-line plumbing every Umbra program shares, so they behave alike: `--help` on every
// command, unknown or missing options named together with that command's help, errors as one
// line without a stack trace, and exit codes 0 (done), 1 (failed), 2 (the input was wrong).

import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';

/** The user's input was wrong: exit 2, with the message (which should include the relevant help). */
export class UsageError extends Error {
  override name = 'UsageError';
}

export interface ParsedCommand<T extends ParseArgsOptionsConfig> {
  values: ReturnType<
    typeof parseArgs<{ options: T; args: string[]; strict: true; allowPositionals: true }>
  >['values'] & {
    help?: boolean;
  };
  positionals: string[];
}

/** Parses one command's options (`-h`/`--help` always included); errors carry the command's help. */
export function parseCommand<T extends ParseArgsOptionsConfig>(
  help: string,
  args: string[],
  options: T,
  positionals = 0,
): ParsedCommand<T> {
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: positionals > 0,
    });
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n\n${help}`);
  }
  if (parsed.positionals.length > positionals && !parsed.values.help)
    throw new UsageError(`unexpected argument "${parsed.positionals[positionals]}"\n\n${help}`);
  return parsed as ParsedCommand<T>;
}

/** The value of a required string option, or a UsageError naming it. */
export function required(help: string, values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value === '') throw new UsageError(`missing --${name}\n\n${help}`);
  return value;
}

/**
 * Runs `main` and exits with its code. Errors become one line on stderr, prefixed with the
 * program's name; UsageError and the given input-error classes exit 2, anything else 1.
 */
export function runCli(
  program: string,
  main: (argv: string[]) => Promise<number>,
  inputErrors: ReadonlyArray<abstract new (...args: never[]) => Error> = [],
): void {
  main(process.argv.slice(2)).then(
    (code) => exitWhenFlushed(code),
    (error: unknown) => {
      process.stderr.write(`${program}: ${error instanceof Error ? error.message : String(error)}\n`);
      const input = error instanceof UsageError || inputErrors.some((kind) => error instanceof kind);
      exitWhenFlushed(input ? 2 : 1);
    },
  );
}

/**
 * Exits with `code` once everything written to stdout and stderr has been handed to them. A pipe
 * whose reader is behind takes writes asynchronously, and process.exit() alone drops what is still
 * queued: `umbra-controller audit` piped to a busy reader lost its last entries.
 */
function exitWhenFlushed(code: number): void {
  process.exitCode = code;
  let waiting = 2;
  // A write's callback runs after every write queued before it (or with the stream's error).
  const flushed = () => {
    waiting--;
    if (waiting === 0) process.exit(code);
  };
  process.stdout.write('', flushed);
  process.stderr.write('', flushed);
}

/**
 * The command `argv` names — the longest match among `commands`, so "gateway token create" wins
 * over "gateway" — and the arguments after it. With no arguments, prints the usage to stderr and
 * returns exit code 2; with --help, prints it to stdout and returns 0; an unknown command is a
 * UsageError naming it.
 */
export function pickCommand<C extends string>(
  argv: string[],
  usage: string,
  commands: readonly C[],
): { command: C; args: string[] } | number {
  if (argv.length === 0) {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  if (argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    console.log(usage);
    return 0;
  }
  for (let words = Math.min(argv.length, 3); words > 0; words--) {
    const name = argv.slice(0, words).join(' ');
    if ((commands as readonly string[]).includes(name))
      return { command: name as C, args: argv.slice(words) };
  }
  throw new UsageError(`unknown command "${argv.join(' ')}"\n\n${usage}`);
}

const DURATION = /^(\d{1,9})(s|m|h|d)$/;
const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 } as const;

/** "30s", "10m", "24h", "7d" → seconds; a UsageError naming the option otherwise. */
export function parseDuration(text: string, option: string): number {
  const match = DURATION.exec(text);
  if (!match) throw new UsageError(`--${option} "${text}": expected a duration such as 30s, 10m, 24h or 7d`);
  return Number(match[1]) * UNIT_SECONDS[match[2] as keyof typeof UNIT_SECONDS];
}
