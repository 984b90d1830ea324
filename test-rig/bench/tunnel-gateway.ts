// Umbra's side of the tunnel benchmark (tunnel.ts), run inside the gateway's namespace: the
// gateway's TunnelListener as the product uses it, with one grant that lets the client's address
// open service `bench` to the benchmark's backend. No knock: the grant is put in place directly,
// so the figures are those of the tunnel alone (knock → pinhole is bench:knock's).
//
//   node tunnel-gateway.ts --port P --dir DIR --source CLIENT_IP --backend HOST:PORT --lifetime S [--workers N]
//
// --workers as the gateway's `tunnel.workers` setting: by default what the gateway picks (two, or
// one on a single core); 0 keeps the TLS in the main thread, as before worker threads.
//
// DIR holds gateway.key, gateway.crt and ca.crt. Prints {"listening":P} when ready; stops on
// SIGTERM or after the lifetime.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultTunnelWorkers, Grants, TunnelListener } from '@umbra/spa-gateway';
import { pino } from 'pino';

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    dir: { type: 'string' },
    source: { type: 'string' },
    backend: { type: 'string' },
    lifetime: { type: 'string', default: '600' },
    workers: { type: 'string' },
  },
});
const { port, dir, source, backend } = values;
if (!port || !dir || !source || !backend) {
  console.error(
    'usage: tunnel-gateway.ts --port P --dir DIR --source IP --backend HOST:PORT [--lifetime S] [--workers N]',
  );
  process.exit(2);
}
const lifetimeSeconds = Number(values.lifetime);
const workers = values.workers === undefined ? defaultTunnelWorkers() : Number(values.workers);

const grants = new Grants();
grants.add({
  sessionId: 'bench-session',
  identity: 'bench',
  keyId: 'bench-key',
  source,
  service: 'bench',
  backend,
  mode: 'tunnel',
  ttlSeconds: lifetimeSeconds + 60,
});
const listener = new TunnelListener({
  host: '0.0.0.0',
  port: Number(port),
  key: readFileSync(join(dir, 'gateway.key'), 'utf8'),
  cert: readFileSync(join(dir, 'gateway.crt'), 'utf8'),
  ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
  grants,
  workers,
  isSerialRevoked: () => false,
  onPosture: () => {},
  onSessionEnded: () => {},
  // The product's level: refusals are warnings, and a benchmark run has none.
  log: pino({ level: 'info' }, pino.destination(2)),
});
await listener.start();
console.log(JSON.stringify({ listening: listener.port }));

const stop = async () => {
  clearTimeout(lifetime);
  await listener.close();
  process.exit(0);
};
const lifetime = setTimeout(stop, lifetimeSeconds * 1000);
process.once('SIGTERM', () => void stop());
