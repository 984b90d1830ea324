// Argument parsing shared by the helper scripts, which run as separate processes inside a namespace
// (a Node process cannot enter a network namespace in-process). Errors go to stderr with exit 2.

export function fail(usage: string, message: string): never {
  process.stderr.write(`${message}\nusage: ${usage}\n`);
  process.exit(2);
}

export function intArg(
  usage: string,
  name: string,
  text: string | undefined,
  min: number,
  max: number,
): number {
  const value = Number(text);
  if (text === undefined || !Number.isInteger(value) || value < min || value > max) {
    fail(usage, `${name}: expected an integer from ${min} to ${max}, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** `--name value` options after the positional arguments. */
export function options(
  usage: string,
  args: readonly string[],
  known: readonly string[],
): Map<string, string> {
  const result = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const name = arg.replace(/^--/, '');
    if (!arg.startsWith('--') || !known.includes(name)) fail(usage, `unknown option ${JSON.stringify(arg)}`);
    const value = args[i + 1];
    if (value === undefined) fail(usage, `${arg} needs a value`);
    result.set(name, value);
    i++;
  }
  return result;
}

/** Wall-clock time in ms with sub-ms resolution, comparable across processes on one machine. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

export function emit(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}
