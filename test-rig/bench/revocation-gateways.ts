// A fleet of simulated gateways for the revocation benchmark (revocation.ts starts it inside a rig
// host, so it reaches the controller over the bridge as a real gateway would). Each one enrolls
// with its own one-time gateway token through the real API (enrollGateway, as `umbra-gateway
// enroll` does), then holds a real link: mutual TLS WebSocket with its certificate, hello, the
// signed snapshot in answer, and after that it only listens (ws answers the controller's pings).
// What it reports is when each revocation reached it, so the benchmark can count the fan-out and
// time the controller's part.
//
// Usage: node revocation-gateways.ts CONFIG.json   (written by revocation.ts)
// Stdout, one JSON object a line:
//   {"enrolled":N,"ms":T}  {"linked":N,"ms":T}
//   {"revoke":REASON,"count":K,"firstAt":EPOCH_MS,"lastAt":EPOCH_MS}  once all N have it, or 3 s after the first
//   {"lost":NAME,"code":C}  a link that closed while it should be up
//   {"error":TEXT}
// Bounded: it exits by itself when its stdin closes, or after CONFIG.lifetimeMs.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';
import {
  CA_CERT_FILE,
  checkControllerIdentity,
  decodeToGateway,
  encodeLinkMessage,
  LINK_MAX_MESSAGE_BYTES,
  LINK_PATH,
  LINK_VERSION,
  TLS_CERT_FILE,
  TLS_KEY_FILE,
} from '@umbra/protocol';
import { enrollGateway } from '@umbra/spa-gateway';
import WebSocket from 'ws';

export interface FleetConfig {
  /** One gateway token each, from `umbra-controller gateway token create`. */
  tokens: string[];
  /** Where each gateway keeps its enrollment (a subdirectory per gateway). */
  dir: string;
  /** Controller addresses to link to, round robin (two controllers sharing PostgreSQL). */
  controllers: string[];
  port: number;
  /** The name the controller's certificate carries (we dial by address). */
  servername: string;
  /** What each gateway tells the controller in hello. */
  endpoint: { host: string; spaPort: number; tunnelPort: number };
  lifetimeMs: number;
}

const ENROLL_CONCURRENCY = 8;
const LINK_TIMEOUT_MS = 30_000;
/** A revocation not seen by every gateway this long after the first one saw it is reported as is. */
const FAN_OUT_WAIT_MS = 3_000;

const epochMs = () => performance.timeOrigin + performance.now();
const emit = (value: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(value)}\n`);

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FleetConfig;
const lifetime = setTimeout(() => {
  emit({ error: `lifetime of ${config.lifetimeMs} ms reached; exiting` });
  process.exit(0);
}, config.lifetimeMs);
lifetime.unref();
process.stdin.resume();
process.stdin.on('end', () => shutdown());
process.stdin.on('close', () => shutdown());

const sockets: WebSocket[] = [];
let stopping = false;

function shutdown(): void {
  if (stopping) return;
  stopping = true;
  for (const socket of sockets) socket.terminate();
  process.exit(0);
}

/** Receipts per revocation reason: how many gateways, first and last arrival. */
const receipts = new Map<string, { count: number; firstAt: number; lastAt: number; timer: NodeJS.Timeout }>();

function received(reason: string, at: number): void {
  let entry = receipts.get(reason);
  if (!entry) {
    entry = { count: 0, firstAt: at, lastAt: at, timer: setTimeout(() => report(reason), FAN_OUT_WAIT_MS) };
    receipts.set(reason, entry);
  }
  entry.count++;
  entry.lastAt = Math.max(entry.lastAt, at);
  if (entry.count === config.tokens.length) report(reason);
}

function report(reason: string): void {
  const entry = receipts.get(reason);
  if (!entry) return;
  clearTimeout(entry.timer);
  receipts.delete(reason);
  emit({ revoke: reason, count: entry.count, firstAt: entry.firstAt, lastAt: entry.lastAt });
}

async function enrollAll(): Promise<Array<{ name: string; dir: string }>> {
  const enrolled: Array<{ name: string; dir: string }> = [];
  let next = 0;
  const worker = async () => {
    while (next < config.tokens.length) {
      const index = next++;
      const dir = join(config.dir, `gw${index}`);
      const record = await enrollGateway(config.tokens[index]!, dir);
      enrolled[index] = { name: record.gateway, dir };
    }
  };
  await Promise.all(Array.from({ length: ENROLL_CONCURRENCY }, worker));
  return enrolled;
}

/** Opens one link and resolves when its snapshot arrived. */
function link(gateway: { name: string; dir: string }, controller: string): Promise<void> {
  const read = (file: string) => readFileSync(join(gateway.dir, file), 'utf8');
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`wss://${controller}:${config.port}${LINK_PATH}`, {
      key: read(TLS_KEY_FILE),
      cert: read(TLS_CERT_FILE),
      ca: read(CA_CERT_FILE),
      minVersion: 'TLSv1.3',
      // By address, so the name to check is the controller's, not the address dialled.
      checkServerIdentity: ((_host: string, certificate: PeerCertificate) =>
        checkControllerIdentity(config.servername, certificate)) as unknown as undefined,
      handshakeTimeout: LINK_TIMEOUT_MS,
      maxPayload: LINK_MAX_MESSAGE_BYTES,
      perMessageDeflate: false,
    });
    sockets.push(socket);
    socket.binaryType = 'nodebuffer';
    let snapshot = false;
    const timer = setTimeout(
      () => reject(new Error(`${gateway.name}: no snapshot within 30 s`)),
      LINK_TIMEOUT_MS,
    );
    socket.on('open', () => {
      socket.send(
        encodeLinkMessage({
          t: 'hello',
          version: LINK_VERSION,
          snapshotVersion: null,
          endpoint: config.endpoint,
        }),
        { binary: true },
      );
    });
    socket.on('message', (data: Buffer) => {
      const at = epochMs();
      const message = decodeToGateway(data);
      if (message.t === 'revoke') received(message.reason, at);
      else if (message.t === 'snapshot' && !snapshot) {
        snapshot = true;
        clearTimeout(timer);
        resolve();
      }
    });
    socket.on('unexpected-response', (_request, response) => {
      clearTimeout(timer);
      reject(new Error(`${gateway.name}: the controller answered ${response.statusCode}`));
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`${gateway.name}: ${error.message}`));
    });
    socket.on('close', (code) => {
      if (!stopping) emit({ lost: gateway.name, code });
    });
  });
}

try {
  const started = performance.now();
  const gateways = await enrollAll();
  emit({ enrolled: gateways.length, ms: Math.round(performance.now() - started) });
  const linking = performance.now();
  await Promise.all(
    gateways.map((gateway, index) => link(gateway, config.controllers[index % config.controllers.length]!)),
  );
  emit({ linked: gateways.length, ms: Math.round(performance.now() - linking) });
} catch (error) {
  emit({ error: (error as Error).message });
  shutdown();
}
