// A CommandRunner for unit tests: canned results keyed by the exact command line, so a test says
// what each tool answers on the platform it pretends to be. A command without an answer behaves
// like a program that is not installed. The real tools cannot run on the Linux machine the tests
// run on, so every parser is tested this way.

import type { CommandResult, CommandRunner } from './command.ts';

export type CannedAnswer = string | Partial<CommandResult>;

export interface FakeRunner extends CommandRunner {
  /** Every command line run, in order, for tests that check what was (not) asked. */
  readonly ran: string[];
}

export function fakeRunner(answers: Record<string, CannedAnswer>): FakeRunner {
  const ran: string[] = [];
  return {
    ran,
    async run(file, args) {
      const line = [file, ...args].join(' ');
      ran.push(line);
      const answer = answers[line];
      if (answer === undefined) return { code: null, stdout: '', stderr: '' };
      if (typeof answer === 'string') return { code: 0, stdout: answer, stderr: '' };
      return { code: 0, stdout: '', stderr: '', ...answer };
    },
  };
}
