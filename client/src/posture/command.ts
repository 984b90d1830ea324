// Some posture facts are only told by a platform's own tools (fdesetup, netsh, gsettings), so
// readers ask through this small interface: the real runner starts the program directly — never a
// shell, so no argument is ever interpreted — with a short timeout and bounded output, and tests
// hand readers canned answers instead (fake-command.ts).

import { execFile } from 'node:child_process';

export interface CommandResult {
  /** The exit code; null when the program could not start, was killed, or ran out of time. */
  code: number | null;
  stdout: string;
  /** Some tools answer on stderr (macOS's sysadminctl logs its answer there). */
  stderr: string;
}

export interface CommandRunner {
  /** Never rejects: a missing program or a timeout is a result with code null. */
  run(file: string, args: readonly string[]): Promise<CommandResult>;
}

export interface ExecRunnerOptions {
  timeoutMs?: number;
  maxOutputBytes?: number;
}

/** Long enough for fdesetup or manage-bde on a busy machine; short enough not to hold a knock. */
const DEFAULT_TIMEOUT_MS = 2000;
/** Every answer we parse is a few lines; anything larger is not an answer we understand. */
const DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024;

export function execRunner(options: ExecRunnerOptions = {}): CommandRunner {
  const timeout = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxBuffer = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
  return {
    run(file, args) {
      return new Promise((resolve) => {
        execFile(
          file,
          [...args],
          { timeout, maxBuffer, encoding: 'utf8', windowsHide: true, shell: false },
          (error, stdout, stderr) => {
            // A non-zero exit is still an answer (its output may say why); anything else is none.
            const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
            resolve({ code: error?.killed ? null : code, stdout: stdout ?? '', stderr: stderr ?? '' });
          },
        );
      });
    },
  };
}

/** What a tool printed when it succeeded; a tool that is missing, fails or times out tells nothing. */
export async function askTool(
  runner: CommandRunner,
  file: string,
  args: readonly string[],
  stream: 'stdout' | 'stderr' = 'stdout',
): Promise<string | undefined> {
  const result = await runner.run(file, args);
  return result.code === 0 ? result[stream] : undefined;
}
