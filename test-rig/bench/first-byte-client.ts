// The client half of the first-byte benchmark (first-byte.ts runs it in the client host). It uses
// the device directory `umbra enroll` made and the client library, as `umbra connect` does: the
// service's route from the controller, a knock sealed to the gateway's key, then the TLS tunnel
// with the device's certificate and ALPN umbra-svc/SERVICE.
//
// Each sample knocks from its own source address (first-byte.ts adds them to the interface), so
// every sample meets a closed port and a fresh decision by the controller; a source that already
// had a pinhole would connect before the knock was even decided. The clock starts when the knock is
// sent. A fresh TCP connect is started every ATTEMPT_INTERVAL_MS (each abandoned after
// ATTEMPT_TIMEOUT_MS, since a dropped SYN is retried by the kernel only after a second) until one
// completes; TLS runs over that connection; then PostgreSQL's SSLRequest goes through the tunnel
// and the clock stops at the first byte of its answer ('N').
//
// Usage: node first-byte-client.ts CONFIG.json   Stdout, one JSON object a line:
//   {"route":{...}}  {"sample":I,"source":A,"sealMs":..,"connectMs":..,"tlsMs":..,"firstByteMs":..,"totalMs":..,"answer":"N"}
//   {"failed":I,"source":A,"error":TEXT}  {"done":N}

import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls, type TLSSocket } from 'node:tls';
import {
  fetchServiceRoute,
  gatewayIdentityCheck,
  linuxPosture,
  loadDevice,
  serviceAlpn,
} from '@umbra/client';
import { decodeKey, sealKnock } from '@umbra/protocol';

export interface FirstByteConfig {
  /** Instead of knocks: plain TCP straight to this backend, `count` times (run in the gateway host). */
  floor?: { host: string; port: number; count: number };
  dir: string;
  service: string;
  /** One source address per sample, already on this host's interface. */
  sources: string[];
  /** Pause between samples. */
  spacingMs: number;
}

const ATTEMPT_INTERVAL_MS = 1;
const ATTEMPT_TIMEOUT_MS = 20;
const SAMPLE_TIMEOUT_MS = 3_000;
/** PostgreSQL's SSLRequest: length 8, code 80877103. The server answers one byte, 'S' or 'N'. */
const SSL_REQUEST = Buffer.from([0x00, 0x00, 0x00, 0x08, 0x04, 0xd2, 0x16, 0x2f]);

const emit = (value: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(value)}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const round = (ms: number) => Math.round(ms * 1000) / 1000;

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FirstByteConfig;
if (config.floor) await floor(config.floor);

/** The floor: what PostgreSQL itself takes, from the gateway, with no knock and no tunnel. */
async function floor({ host, port, count }: { host: string; port: number; count: number }): Promise<never> {
  for (let index = 0; index < count; index++) {
    const started = performance.now();
    const socket = connectTcp({ host, port });
    socket.setNoDelay(true);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      const connected = performance.now();
      const answer = await new Promise<string>((resolve, reject) => {
        socket.once('data', (chunk: Buffer) => resolve(chunk.subarray(0, 1).toString('latin1')));
        socket.once('end', () => reject(new Error('closed before any byte came back')));
        socket.write(SSL_REQUEST);
      });
      const answered = performance.now();
      emit({
        floor: index,
        connectMs: round(connected - started),
        firstByteMs: round(answered - connected),
        answer,
      });
    } catch (error) {
      emit({ failed: index, source: host, error: (error as Error).message });
    } finally {
      socket.destroy();
    }
    await sleep(config.spacingMs);
  }
  emit({ done: count });
  process.exit(0);
}

const device = loadDevice(config.dir);
const route = await fetchServiceRoute(device.controller, config.service, device.credentials);
if (route.mode !== 'tunnel')
  throw new Error(`service ${config.service} is in ${route.mode} mode, not tunnel`);
emit({ route });
const gatewayKey = decodeKey(route.gateway.spaPublicKey, `the SPA key of gateway ${route.gateway.name}`);
const gatewayAddress = route.gateway.host;
const posture = linuxPosture();

function sendKnockFrom(source: string, packet: Buffer): Promise<void> {
  const socket = createSocket('udp4');
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address: source, port: 0 }, () =>
      socket.send(packet, route.gateway.spaPort, gatewayAddress, (error) =>
        error ? reject(error) : resolve(),
      ),
    );
  }).finally(() => socket.close());
}

/** TCP connects from `source`, a fresh attempt every millisecond, until one completes. */
function connectWhenOpen(source: string, deadline: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const pending = new Set<Socket>();
    let settled = false;
    const finish = (winner: Socket | null, error?: Error) => {
      if (settled) return;
      settled = true;
      clearInterval(ticker);
      for (const socket of pending) if (socket !== winner) socket.destroy();
      if (winner) resolve(winner);
      else reject(error);
    };
    const attempt = () => {
      if (performance.now() > deadline) return finish(null, new Error('no TCP connection within 3 s'));
      const socket = connectTcp({
        host: gatewayAddress,
        port: route.gateway.tunnelPort,
        localAddress: source,
      });
      pending.add(socket);
      const abandon = setTimeout(() => {
        pending.delete(socket);
        socket.destroy();
      }, ATTEMPT_TIMEOUT_MS);
      socket.once('connect', () => {
        clearTimeout(abandon);
        pending.delete(socket);
        finish(socket);
      });
      socket.once('error', () => {
        clearTimeout(abandon);
        pending.delete(socket);
        socket.destroy();
      });
    };
    const ticker = setInterval(attempt, ATTEMPT_INTERVAL_MS);
    attempt();
  });
}

function handshake(socket: Socket): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const tls = connectTls({
      socket,
      key: device.credentials.key,
      cert: device.credentials.cert,
      ca: device.credentials.ca,
      ALPNProtocols: [serviceAlpn(config.service)],
      minVersion: 'TLSv1.3',
      checkServerIdentity: gatewayIdentityCheck(route.gateway.name),
    });
    tls.once('error', reject);
    tls.once('secureConnect', () => {
      if (tls.alpnProtocol !== serviceAlpn(config.service)) {
        tls.destroy();
        reject(new Error(`the gateway did not agree to ${serviceAlpn(config.service)}`));
        return;
      }
      tls.setNoDelay(true);
      resolve(tls);
    });
  });
}

function firstByte(tls: TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    tls.once('data', (chunk: Buffer) => resolve(chunk.subarray(0, 1).toString('latin1')));
    tls.once('error', reject);
    tls.once('end', () => reject(new Error('the tunnel ended before any byte came back')));
    tls.write(SSL_REQUEST);
  });
}

let done = 0;
for (const [index, source] of config.sources.entries()) {
  let socket: Socket | undefined;
  try {
    const sealing = performance.now();
    const packet = sealKnock({
      gatewayPublicKey: gatewayKey,
      identity: device.identity,
      knock: {
        access: route.access,
        service: route.service,
        claimedSource: source,
        posture: Object.keys(posture).length > 0 ? posture : undefined,
      },
    });
    const sent = performance.now();
    await sendKnockFrom(source, packet);
    socket = await connectWhenOpen(source, sent + SAMPLE_TIMEOUT_MS);
    const connected = performance.now();
    const tls = await handshake(socket);
    socket = tls;
    const secured = performance.now();
    const answer = await firstByte(tls);
    const answered = performance.now();
    emit({
      sample: index,
      source,
      sealMs: round(sent - sealing),
      connectMs: round(connected - sent),
      tlsMs: round(secured - connected),
      firstByteMs: round(answered - secured),
      totalMs: round(answered - sent),
      answer,
    });
    done++;
  } catch (error) {
    emit({ failed: index, source, error: (error as Error).message });
  } finally {
    socket?.destroy();
  }
  await sleep(config.spacingMs);
}
emit({ done });
process.exit(0);
