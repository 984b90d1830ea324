// Access rules: what a client may ask the gateway to open. "tcp/22", "udp/53", "tcp/10000-10999".

export type Protocol = 'tcp' | 'udp';

export interface AccessRule {
  protocol: Protocol;
  fromPort: number;
  toPort: number;
}

// Ports without leading zeros, as the knock's own access field is written (`tcp/22`, never `tcp/022`).
const RULE = /^(tcp|udp)\/([1-9]\d{0,4})(?:-([1-9]\d{0,4}))?$/;

/** Parses one rule, or returns null; the caller names the field in its error. */
export function parseAccessRule(text: string): AccessRule | null {
  const match = RULE.exec(text);
  if (!match) return null;
  const fromPort = Number(match[2]);
  const toPort = match[3] === undefined ? fromPort : Number(match[3]);
  if (fromPort < 1 || toPort > 65535 || toPort < fromPort) return null;
  return { protocol: match[1] as Protocol, fromPort, toPort };
}

export function allows(rules: readonly AccessRule[], protocol: Protocol, port: number): boolean {
  for (const rule of rules) {
    if (rule.protocol === protocol && port >= rule.fromPort && port <= rule.toPort) return true;
  }
  return false;
}
