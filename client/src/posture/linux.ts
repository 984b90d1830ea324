// What a Linux device can truthfully say about itself, for policies that require a posture:
// OS, OS version, kernel, whether the root filesystem is encrypted, whether a firewall is loaded.
// Every reading comes from a file under a configurable root (/ by default), so tests run against
// a fake tree; a fact the platform does not tell is left out rather than guessed, and a policy
// that requires it then refuses (a missing claim never meets a requirement). Screen lock is a
// desktop setting, not a file the kernel shows, so it is read separately (linux-screen-lock.ts).

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Posture } from './claims.ts';

export type { Posture } from './claims.ts';

export interface LinuxPostureOptions {
  /** Where /etc, /proc and /sys are; '/' on a real device. */
  root?: string;
}

export function linuxPosture(options: LinuxPostureOptions = {}): Posture {
  const root = options.root ?? '/';
  const posture: Posture = { os: 'linux' };
  const release = osRelease(root);
  if (release.ID) posture.os_name = release.ID;
  if (release.VERSION_ID) posture.os_version = release.VERSION_ID;
  const kernel = read(root, 'proc/sys/kernel/osrelease')?.trim();
  if (kernel) posture.kernel = kernel;
  const encrypted = rootIsEncrypted(root);
  if (encrypted !== undefined) posture.disk_encryption = encrypted ? 'on' : 'off';
  const firewall = firewallLoaded(root);
  if (firewall !== undefined) posture.firewall = firewall ? 'on' : 'off';
  return posture;
}

function read(root: string, path: string): string | undefined {
  try {
    return readFileSync(join(root, path), 'utf8');
  } catch {
    return undefined;
  }
}

/** /etc/os-release (or /usr/lib/os-release), KEY=value lines with optional quotes. */
function osRelease(root: string): Record<string, string> {
  const text = read(root, 'etc/os-release') ?? read(root, 'usr/lib/os-release') ?? '';
  const fields: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^([A-Z_]+)=("?)(.*)\2$/.exec(line.trim());
    if (match) fields[match[1]!] = match[3]!;
  }
  return fields;
}

/**
 * Whether the device behind / is a dm-crypt mapping, or sits on one (LVM on LUKS): follow the
 * root mount's device through /sys/block/NAME/slaves, looking for a dm uuid starting CRYPT-.
 * Undefined when the root device cannot be found (containers, overlay roots).
 */
function rootIsEncrypted(root: string): boolean | undefined {
  const mounts = read(root, 'proc/self/mounts') ?? '';
  const device = mounts
    .split('\n')
    .map((line) => line.split(' '))
    .find((fields) => fields[1] === '/')?.[0];
  if (!device?.startsWith('/dev/')) return undefined;
  const name = blockName(root, device.slice('/dev/'.length));
  if (!name) return undefined;
  return isCryptOrOnCrypt(root, name, 0);
}

/** /dev/mapper/x → dm-N, /dev/sda2 → sda2 (a partition's entry is under its disk in /sys/class/block). */
function blockName(root: string, devName: string): string | undefined {
  if (devName.startsWith('mapper/')) {
    const mapped = devName.slice('mapper/'.length);
    for (const entry of list(root, 'sys/block')) {
      if (read(root, `sys/block/${entry}/dm/name`)?.trim() === mapped) return entry;
    }
    return undefined;
  }
  return list(root, 'sys/class/block').includes(devName) ? devName : undefined;
}

function isCryptOrOnCrypt(root: string, name: string, depth: number): boolean {
  if (depth > 8) return false;
  if (read(root, `sys/class/block/${name}/dm/uuid`)?.startsWith('CRYPT-')) return true;
  return list(root, `sys/class/block/${name}/slaves`).some((slave) =>
    isCryptOrOnCrypt(root, slave, depth + 1),
  );
}

function list(root: string, path: string): string[] {
  try {
    return readdirSync(join(root, path));
  } catch {
    return [];
  }
}

/**
 * Whether a packet filter is loaded: nftables tables or iptables rules show up as loaded kernel
 * modules. Without privileges a process cannot list rulesets, but it can read /proc/modules.
 * Undefined when /proc/modules is unreadable (a kernel without modules tells us nothing).
 */
function firewallLoaded(root: string): boolean | undefined {
  const modules = read(root, 'proc/modules');
  if (modules === undefined) return undefined;
  return /^(nf_tables|ip_tables|ip6_tables|iptable_filter) /m.test(modules);
}
