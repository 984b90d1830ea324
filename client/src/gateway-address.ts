// Parses HOST[:PORT] as a user types it: "gw.example.net", "gw:62201", "192.0.2.1:62201",
// "[2001:db8::1]:62201", or a bare IPv6 address "2001:db8::1".

import { isIP } from 'node:net';
import { SPA_DEFAULT_PORT } from '@umbra/protocol';

export interface GatewayAddress {
  host: string;
  port: number;
}

export function parseGatewayAddress(text: string): GatewayAddress {
  const fail = (why: string): never => {
    throw new Error(`--gateway "${text}": ${why}; expected HOST, HOST:PORT or [IPv6]:PORT`);
  };
  let host = text;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
    if (isIP(host) !== 6) fail('brackets must hold an IPv6 address');
  } else if (isIP(text) === 6) {
    host = text;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon >= 0) {
      host = text.slice(0, colon);
      portText = text.slice(colon + 1);
    }
  }
  if (host === '') fail('no host');
  let port = SPA_DEFAULT_PORT;
  if (portText !== undefined) {
    port = Number(portText);
    if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) fail('the port must be 1-65535');
  }
  return { host, port };
}
