// umbra-tech: the technician's command line (main.ts), with the process's streams and real ports.
// Input errors exit 2; anything else 1 — a port that will not open (SerialError) is the machine's
// state rather than the input, and a box's refusal is returned as 1 by runTech itself.

import { runCli } from '@umbra/cli-kit';
import { EnrollmentTokenError, KeyFormatError, SecretFileError, SiteBundleError } from '@umbra/protocol';
import { runTech } from './main.ts';

runCli('umbra-tech', (argv) => runTech(argv, { stdout: process.stdout, stderr: process.stderr }), [
  EnrollmentTokenError,
  KeyFormatError,
  SecretFileError,
  SiteBundleError,
]);
