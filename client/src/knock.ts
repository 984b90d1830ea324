// Sending a knock: one UDP datagram, fire and forget. The gateway never answers — success shows
// only as a port that now accepts connections.

import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { GatewayAddress } from './gateway-address.ts';

export interface ResolvedGateway {
  address: string;
  family: 4 | 6;
  port: number;
}

export async function resolveGateway(gateway: GatewayAddress): Promise<ResolvedGateway> {
  const literal = isIP(gateway.host);
  if (literal) return { address: gateway.host, family: literal as 4 | 6, port: gateway.port };
  try {
    const found = await lookup(gateway.host);
    return { address: found.address, family: found.family as 4 | 6, port: gateway.port };
  } catch (error) {
    throw new Error(`--gateway: cannot resolve "${gateway.host}" (${(error as NodeJS.ErrnoException).code})`);
  }
}

/** The local address this machine would use to reach the gateway: what the gateway will see, absent NAT. */
export async function localAddressToward(gateway: ResolvedGateway): Promise<string> {
  const socket = createSocket(gateway.family === 6 ? 'udp6' : 'udp4');
  try {
    // connect() on UDP picks a route and a source address without sending anything.
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.connect(gateway.port, gateway.address, resolve);
    });
    return socket.address().address;
  } finally {
    socket.close();
  }
}

export async function sendKnock(gateway: ResolvedGateway, packet: Uint8Array): Promise<void> {
  const socket = createSocket(gateway.family === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.send(packet, gateway.port, gateway.address, (error) => (error ? reject(error) : resolve()));
    });
  } catch (error) {
    throw new Error(
      `cannot send the knock to ${gateway.address} port ${gateway.port}: ${(error as Error).message}`,
    );
  } finally {
    socket.close();
  }
}
