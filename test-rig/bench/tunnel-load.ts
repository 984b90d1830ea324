// The load generator of the tunnel benchmark (tunnel.ts), run inside the client's namespace. It
// opens TLS connections the way `umbra connect` does (client/src/tunnel-dial.ts: TLS 1.3, the
// client certificate, the controller's CA, one ALPN protocol umbra-svc/bench, the gateway
// recognised by umbra://gateway/gw), to whichever server it is told: Umbra's TunnelListener or
// stunnel. Both get the same client, so the difference measured is the server's.
//
//   node tunnel-load.ts --dir DIR     (DIR holds client.key, client.crt and ca.crt)
//
// Commands come one JSON object a line on stdin; each answer is one JSON line on stdout:
//   {"op":"setup","host":H,"port":P,"alpn":bool,"count":N,"concurrency":C}
//       N connections, C at a time: connect + handshake + the first byte echoed by the backend,
//       each timed from connect() to the echo. → {"samples":[ms...],"failures":F,"cipher":...}
//   {"op":"throughput","host":H,"port":P,"alpn":bool,"streams":S,"direction":"down"|"up",
//    "warmupMs":W,"seconds":D}
//       S connections at once, each downloading from (or uploading to) the backend as fast as it
//       goes; the bytes that arrived in D seconds after W ms of warm-up. → {"bytes":B,"seconds":D}
// Every command is bounded: per-connection timeouts, and a deadline on the whole command.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect, type TLSSocket } from 'node:tls';
import { parseArgs } from 'node:util';
import { gatewayIdentityCheck, serviceAlpn } from '@umbra/client';

const { values } = parseArgs({ options: { dir: { type: 'string' } } });
if (!values.dir) {
  console.error('usage: tunnel-load.ts --dir DIR');
  process.exit(2);
}
const credentials = {
  key: readFileSync(join(values.dir, 'client.key'), 'utf8'),
  cert: readFileSync(join(values.dir, 'client.crt'), 'utf8'),
  ca: readFileSync(join(values.dir, 'ca.crt'), 'utf8'),
};
const ALPN = serviceAlpn('bench');
const CONNECT_TIMEOUT_MS = 5_000;
const COMMAND_DEADLINE_MS = 60_000;
const ACK_BYTES = 64 * 1024; // tunnel-backend.c acknowledges every 64 KiB of an upload
const UPLOAD_BLOCK = Buffer.alloc(256 * 1024, 0x5a);

interface Target {
  host: string;
  port: number;
  /** Whether the server must agree to the ALPN protocol (Umbra does; stunnel has no ALPN). */
  alpn: boolean;
}

/** One TLS connection like dialTunnel's; resolves at secureConnect. */
function dial(target: Target): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: target.host,
      port: target.port,
      key: credentials.key,
      cert: credentials.cert,
      ca: credentials.ca,
      ALPNProtocols: [ALPN],
      minVersion: 'TLSv1.3',
      checkServerIdentity: gatewayIdentityCheck('gw'),
    });
    const timer = setTimeout(
      () => fail(new Error(`no TLS connection within ${CONNECT_TIMEOUT_MS} ms`)),
      CONNECT_TIMEOUT_MS,
    );
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      socket.off('error', fail);
      socket.on('error', () => socket.destroy());
      if (target.alpn && socket.alpnProtocol !== ALPN) {
        fail(new Error(`the server did not agree to ${ALPN}`));
        return;
      }
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

/** Waits for the socket to close, at most `ms`, then destroys it. */
function closed(socket: TLSSocket, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (socket.closed) return resolve();
    const timer = setTimeout(() => {
      socket.destroy();
      resolve();
    }, ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** connect() → handshake → 'e' and one byte written → that byte back. */
async function oneSetup(target: Target): Promise<{ ms: number; cipher: string }> {
  const started = performance.now();
  const socket = await dial(target);
  try {
    const ms = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no echo within 5 s')), CONNECT_TIMEOUT_MS);
      socket.once('data', () => {
        clearTimeout(timer);
        resolve(performance.now() - started);
      });
      socket.once('close', () => reject(new Error('closed before the echo')));
      socket.write('ex');
    });
    const group = (socket.getEphemeralKeyInfo() as { name?: string } | null)?.name ?? '';
    const cipher = `${socket.getProtocol()} ${socket.getCipher().name} ${group}`;
    return { ms, cipher };
  } finally {
    socket.end();
    await closed(socket, 1_000);
  }
}

async function setup(target: Target, count: number, concurrency: number) {
  const samples: number[] = [];
  let failures = 0;
  let cipher = '';
  const errors = new Map<string, number>();
  let next = 0;
  const deadline = performance.now() + COMMAND_DEADLINE_MS;
  const worker = async () => {
    while (next < count && performance.now() < deadline) {
      next++;
      try {
        const result = await oneSetup(target);
        samples.push(result.ms);
        cipher = result.cipher;
      } catch (error) {
        failures++;
        const message = (error as Error).message;
        errors.set(message, (errors.get(message) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { samples, failures, cipher, errors: Object.fromEntries(errors) };
}

async function throughput(
  target: Target,
  streams: number,
  direction: 'down' | 'up',
  warmupMs: number,
  seconds: number,
) {
  const sockets = await Promise.all(Array.from({ length: streams }, () => dial(target)));
  let counted = 0; // bytes downloaded, or upload acknowledgements × 64 KiB
  let broken = 0;
  for (const socket of sockets) {
    socket.once('close', () => broken++);
    if (direction === 'down') {
      socket.on('data', (chunk: Buffer) => {
        counted += chunk.length;
      });
      socket.write('d');
    } else {
      socket.on('data', (chunk: Buffer) => {
        counted += chunk.length * ACK_BYTES;
      });
      socket.write('u');
      let stopped = false;
      const pump = () => {
        while (!stopped && !socket.destroyed) {
          if (!socket.write(UPLOAD_BLOCK)) return; // resumes on 'drain'
        }
      };
      socket.on('drain', pump);
      socket.once('close', () => {
        stopped = true;
      });
      pump();
    }
  }
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  await sleep(warmupMs);
  const from = counted;
  const started = performance.now();
  await sleep(seconds * 1000);
  const bytes = counted - from;
  const elapsed = (performance.now() - started) / 1000;
  const brokenDuring = broken;
  for (const socket of sockets) socket.destroy();
  return { bytes, seconds: elapsed, broken: brokenDuring };
}

type Command =
  | ({ op: 'setup'; count: number; concurrency: number } & Target)
  | ({
      op: 'throughput';
      streams: number;
      direction: 'down' | 'up';
      warmupMs: number;
      seconds: number;
    } & Target);

async function run(command: Command): Promise<unknown> {
  const target = { host: command.host, port: command.port, alpn: command.alpn };
  if (command.op === 'setup') {
    return setup(target, Math.min(command.count, 10_000), Math.min(command.concurrency, 256));
  }
  return throughput(
    target,
    Math.min(command.streams, 256),
    command.direction,
    Math.min(command.warmupMs, 10_000),
    Math.min(command.seconds, 30),
  );
}

console.log(JSON.stringify({ ready: true }));
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  try {
    console.log(JSON.stringify({ result: await run(JSON.parse(line) as Command) }));
  } catch (error) {
    console.log(JSON.stringify({ result: { error: (error as Error).message } }));
  }
}
