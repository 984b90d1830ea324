// What a Windows device can truthfully say about itself: Windows version and kernel (both the
// NT release, e.g. 10.0.22631 — Windows 11 is 10.0 with a build of 22000 or more), BitLocker on
// the system drive (manage-bde), Windows Firewall on every profile (netsh) and whether the
// screen locks by itself (registry). manage-bde and netsh print localised sentences; only the
// English ones are read, so on other display languages those claims are left out rather than
// guessed, as they are when manage-bde refuses a user without administrator rights. These tools
// exist only on Windows; the parsers are tested with recorded answers (windows.test.ts).

import { release as osRelease } from 'node:os';
import { addClaims, type Posture, type Switch, versionText } from './claims.ts';
import { askTool, type CommandRunner } from './command.ts';

export interface WindowsPostureOptions {
  runner: CommandRunner;
  /** os.release(), e.g. 10.0.22631; a parameter so tests can set it. */
  release?: string;
  /** SystemRoot (where System32 is) and SystemDrive (the drive BitLocker must protect). */
  env: Record<string, string | undefined>;
}

const USER_DESKTOP = 'HKCU\\Control Panel\\Desktop';
const POLICY_DESKTOP = 'HKCU\\Software\\Policies\\Microsoft\\Windows\\Control Panel\\Desktop';
const SYSTEM_POLICIES = 'HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Policies\\System';

export async function windowsPosture(options: WindowsPostureOptions): Promise<Posture> {
  const { runner, env } = options;
  // Full paths, so a program of the same name earlier on PATH is not the one asked.
  const system32 = `${env.SystemRoot ?? 'C:\\Windows'}\\System32`;
  const drive = /^[A-Za-z]:$/.test(env.SystemDrive ?? '') ? env.SystemDrive! : 'C:';
  const [bitLocker, firewall, userDesktop, policyDesktop, systemPolicies] = await Promise.all([
    askTool(runner, `${system32}\\manage-bde.exe`, ['-status', drive]),
    askTool(runner, `${system32}\\netsh.exe`, ['advfirewall', 'show', 'allprofiles', 'state']),
    askTool(runner, `${system32}\\reg.exe`, ['query', USER_DESKTOP]),
    askTool(runner, `${system32}\\reg.exe`, ['query', POLICY_DESKTOP]),
    askTool(runner, `${system32}\\reg.exe`, ['query', SYSTEM_POLICIES, '/v', 'InactivityTimeoutSecs']),
  ]);
  const version = versionText(options.release ?? osRelease());
  return addClaims(
    { os: 'windows' },
    {
      os_version: version,
      kernel: version,
      disk_encryption: bitLockerState(bitLocker),
      firewall: firewallState(firewall),
      screen_lock: screenLockState(
        registryValues(userDesktop),
        registryValues(policyDesktop),
        registryValues(systemPolicies),
      ),
    },
  );
}

/**
 * `manage-bde -status C:`: one "Protection Status:    Protection On" (or Off) line. Off covers
 * a drive that is not encrypted and one whose protectors are suspended (its key is in the clear);
 * "Protection Unknown" (a locked volume) and any other answer leave the claim out.
 */
export function bitLockerState(text: string | undefined): Switch | undefined {
  if (text === undefined) return undefined;
  const states = [...text.matchAll(/^\s*Protection Status:\s*Protection (\S+)\s*$/gm)].map((m) => m[1]);
  if (states.length !== 1) return undefined;
  return states[0] === 'On' ? 'on' : states[0] === 'Off' ? 'off' : undefined;
}

/**
 * `netsh advfirewall show allprofiles state`: a "State   ON" or "State   OFF" line under each of
 * the domain, private and public profiles. On only when all three are on, since the profile in
 * use changes with the network; off when any is off. Fewer or more than three lines (a localised
 * or garbled answer) leave the claim out. A third-party firewall switches Windows Firewall off,
 * and is then reported as off: it cannot be told apart from none.
 */
export function firewallState(text: string | undefined): Switch | undefined {
  if (text === undefined) return undefined;
  const states = [...text.matchAll(/^State\s+(ON|OFF)\s*$/gm)].map((m) => m[1]);
  if (states.length !== 3) return undefined;
  return states.every((state) => state === 'ON') ? 'on' : 'off';
}

/** `reg query` value lines: "    NAME    REG_SZ    DATA", under the key's own heading only. */
export function registryValues(text: string | undefined): Map<string, string> {
  const values = new Map<string, string>();
  if (text === undefined) return values;
  let headings = 0;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (/^HKEY_/.test(line)) {
      // Subkeys are listed after the values as further HKEY_ lines; their values are not ours.
      if (++headings > 1) break;
      continue;
    }
    const match = /^\s+(\S+)\s+(REG_[A-Z_]+)\s*(.*)$/.exec(line);
    if (match) values.set(match[1]!.toLowerCase(), match[3]!.trim());
  }
  return values;
}

/**
 * The screen locks by itself when a password-protected screen saver starts after a timeout
 * (ScreenSaveActive 1, ScreenSaverIsSecure 1, ScreenSaveTimeOut above 0, a screen saver chosen;
 * group policy's values take precedence over the user's), or when the machine inactivity limit
 * (InactivityTimeoutSecs) is set. Otherwise the claim is left out, not reported off: Windows can
 * also lock through sleep with sign-in on wake, dynamic lock or device management, none of which
 * the registry reliably tells.
 */
export function screenLockState(
  user: Map<string, string>,
  policy: Map<string, string>,
  system: Map<string, string>,
): Switch | undefined {
  if (registryNumber(system.get('inactivitytimeoutsecs')) > 0) return 'on';
  const value = (name: string) => policy.get(name) ?? user.get(name);
  const secure =
    value('screensaveactive') === '1' &&
    value('screensaverissecure') === '1' &&
    registryNumber(value('screensavetimeout')) > 0 &&
    (value('scrnsave.exe') ?? '') !== '';
  return secure ? 'on' : undefined;
}

/** REG_SZ numbers are decimal text, REG_DWORD ones 0x hex; anything else counts as 0. */
function registryNumber(text: string | undefined): number {
  if (text === undefined) return 0;
  if (/^0x[0-9a-f]+$/i.test(text)) return Number.parseInt(text.slice(2), 16);
  return /^\d+$/.test(text) ? Number(text) : 0;
}
