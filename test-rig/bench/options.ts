// What every benchmark script's command line shares: --help prints the script's header comment
// (its first paragraph, which says what it measures and its options), and number options are
// checked against a range, exiting 2 with a message that names the option.

import { readFileSync } from 'node:fs';

/** Prints the header comment of the script at `moduleUrl` (its import.meta.url) and exits 0. */
export function printHelpAndExit(moduleUrl: string): never {
  console.log(
    readFileSync(new URL(moduleUrl), 'utf8')
      .split('\n\n')[0]!
      .replace(/^\/\/ ?/gm, ''),
  );
  process.exit(0);
}

/** The option's value as a whole number in [min, max]; otherwise says so and exits 2. */
export function wholeOption(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    console.error(`--${name} ${text}: expected a whole number from ${min} to ${max}`);
    process.exit(2);
  }
  return value;
}
