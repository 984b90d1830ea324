// Checks made before the gateway touches anything, each failing with what to do about it.

import { existsSync, readdirSync, readFileSync } from 'node:fs';

const CAP_NET_ADMIN = 12;
const CAP_NET_RAW = 13;

export class PreflightError extends Error {
  override name = 'PreflightError';
}

/** Effective capabilities of this process, from /proc (no addon needed). */
function effectiveCapabilities(): bigint {
  const status = readFileSync('/proc/self/status', 'utf8');
  const match = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return match ? BigInt(`0x${match[1]}`) : 0n;
}

export function checkCapabilities(): void {
  if (process.platform !== 'linux')
    throw new PreflightError('umbra-gateway runs on Linux only (it needs nftables and libpcap)');
  const caps = effectiveCapabilities();
  const missing: string[] = [];
  if (!(caps & (1n << BigInt(CAP_NET_RAW)))) missing.push('CAP_NET_RAW (to capture knocks)');
  if (!(caps & (1n << BigInt(CAP_NET_ADMIN)))) missing.push('CAP_NET_ADMIN (to manage nftables)');
  if (missing.length > 0)
    throw new PreflightError(
      `missing capabilities: ${missing.join(', ')}. Run as root, or grant them: ` +
        '`setcap cap_net_raw,cap_net_admin+ep $(command -v node)`, or AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN in a systemd unit',
    );
}

export function checkInterface(name: string, configPath: string): void {
  if (existsSync(`/sys/class/net/${name}`)) return;
  let present = '';
  try {
    present = readdirSync('/sys/class/net').join(', ');
  } catch {}
  throw new PreflightError(
    `${configPath}: interface: "${name}" does not exist on this machine${present ? ` (present: ${present})` : ''}; set interface to the one that faces the clients`,
  );
}
