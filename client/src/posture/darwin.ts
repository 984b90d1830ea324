// What a Mac can truthfully say about itself: macOS version (sw_vers), kernel (the Darwin
// release), FileVault (fdesetup), the application firewall (socketfilterfw) and whether a
// password is required once the screen saver starts or the display sleeps (sysadminctl). Each
// tool's answer is matched against the exact sentences it prints; anything else — an error, a
// sentence this code does not know, an answer in progress — leaves the claim out. These tools
// exist only on macOS; the parsers are tested with recorded answers (darwin.test.ts).

import { release as osRelease } from 'node:os';
import { addClaims, type Posture, type Switch, versionText } from './claims.ts';
import { askTool, type CommandRunner } from './command.ts';

export interface DarwinPostureOptions {
  runner: CommandRunner;
  /** The Darwin kernel release (os.release(), e.g. 23.4.0); a parameter so tests can set it. */
  release?: string;
}

export async function darwinPosture(options: DarwinPostureOptions): Promise<Posture> {
  const { runner } = options;
  // Full paths: /usr/sbin is not on every PATH a launch agent gets.
  const [productVersion, fileVault, firewall, screenLock] = await Promise.all([
    askTool(runner, '/usr/bin/sw_vers', ['-productVersion']),
    askTool(runner, '/usr/bin/fdesetup', ['status']),
    askTool(runner, '/usr/libexec/ApplicationFirewall/socketfilterfw', ['--getglobalstate']),
    // sysadminctl logs its answer (NSLog) on stderr.
    askTool(runner, '/usr/sbin/sysadminctl', ['-screenLock', 'status'], 'stderr'),
  ]);
  return addClaims(
    { os: 'macos' },
    {
      os_version: versionText(productVersion),
      kernel: versionText(options.release ?? osRelease()),
      disk_encryption: fileVaultState(fileVault),
      firewall: firewallState(firewall),
      screen_lock: screenLockState(screenLock),
    },
  );
}

/**
 * `fdesetup status`: "FileVault is On." or "FileVault is Off." on the first line. Turned on but
 * waiting for a restart ("FileVault is Off, but will be enabled after the next restart.") is
 * still off. While it encrypts or decrypts a line says "... in progress", and the disk is
 * neither, so the claim is left out.
 */
export function fileVaultState(text: string | undefined): Switch | undefined {
  if (text === undefined || /in progress/i.test(text)) return undefined;
  const first = text.trim().split('\n')[0]!.trim();
  if (first === 'FileVault is On.') return 'on';
  if (first === 'FileVault is Off.' || first.startsWith('FileVault is Off, but will be enabled'))
    return 'off';
  return undefined;
}

/**
 * `socketfilterfw --getglobalstate`: "Firewall is enabled. (State = 1)" or "Firewall is
 * disabled. (State = 0)"; State 2 is "block all incoming", which is on too. Older releases print
 * the sentence alone. When the sentence and the number disagree, the claim is left out.
 */
export function firewallState(text: string | undefined): Switch | undefined {
  if (text === undefined) return undefined;
  const words = /Firewall is (enabled|disabled)\./.exec(text)?.[1];
  const state = /\(State = (\d+)\)/.exec(text)?.[1];
  const byWords = words === 'enabled' ? 'on' : words === 'disabled' ? 'off' : undefined;
  const byState = state === '0' ? 'off' : state === '1' || state === '2' ? 'on' : undefined;
  if (state !== undefined && byState === undefined) return undefined;
  if (byWords && byState && byWords !== byState) return undefined;
  return byState ?? byWords;
}

/**
 * `sysadminctl -screenLock status`, after NSLog's date and process prefix: "screenLock delay is
 * immediate", "screenLock delay is 300 seconds" (a password is asked that long after the screen
 * saver starts: on) or "screenLock is off". Any other line, or two that disagree, leaves it out.
 */
export function screenLockState(text: string | undefined): Switch | undefined {
  if (text === undefined) return undefined;
  const found = new Set<Switch | 'unknown'>();
  for (const line of text.split('\n')) {
    const said = /\bscreenLock (.*)$/.exec(line.trim())?.[1]?.trim();
    if (said === undefined) continue;
    if (said === 'delay is immediate' || /^delay is \d+ seconds?$/.test(said)) found.add('on');
    else if (said === 'is off') found.add('off');
    else found.add('unknown');
  }
  if (found.size !== 1) return undefined;
  const [state] = found;
  return state === 'unknown' ? undefined : state;
}
