// A worker thread running one TunnelServer on the tunnel port (shared with the other workers by
// reusePort). It does the TLS and the proxying; every decision — admission, posture, what a
// revocation closes — is the main thread's, asked and told by message. Nothing here holds a grant
// or a revocation list, so there is nothing to mirror and nothing to drift.

import { parentPort, workerData } from 'node:worker_threads';
import type { Posture } from './listener.ts';
import {
  type ConnectionRequest,
  type RefusalFields,
  TunnelServer,
  type TunnelServerOptions,
  type Verdict,
} from './tunnel-server.ts';

/** Main thread → worker. */
export type ToWorker =
  | { t: 'verdict'; request: number; verdict: Verdict }
  | { t: 'destroy'; ids: number[] }
  | { t: 'close' };

/** Worker → main thread. */
export type FromWorker =
  | { t: 'listening'; port: number }
  | { t: 'failed'; message: string }
  | { t: 'admit'; request: number; connection: ConnectionRequest }
  | { t: 'posture'; id: number; posture: Posture }
  | { t: 'closed'; id: number; bytesIn: number; bytesOut: number }
  | { t: 'refused'; reason: string; fields: RefusalFields }
  | { t: 'error'; message: string }
  | { t: 'stopped' };

if (parentPort !== null) {
  const port = parentPort;
  const send = (message: FromWorker) => port.postMessage(message);
  const pending = new Map<number, (verdict: Verdict) => void>();
  let nextRequest = 1;

  const server = new TunnelServer(workerData as TunnelServerOptions, {
    admit: (connection) =>
      new Promise<Verdict>((resolve) => {
        const request = nextRequest++;
        pending.set(request, resolve);
        send({ t: 'admit', request, connection });
      }),
    posture: (id, posture) => send({ t: 'posture', id, posture }),
    closed: (id, bytes) => send({ t: 'closed', id, ...bytes }),
    refused: (reason, fields) => send({ t: 'refused', reason, fields }),
    error: (error) => send({ t: 'error', message: error.message }),
  });

  port.on('message', (message: ToWorker) => {
    switch (message.t) {
      case 'verdict':
        pending.get(message.request)?.(message.verdict);
        pending.delete(message.request);
        break;
      case 'destroy':
        server.destroy(message.ids);
        break;
      case 'close':
        void server.close().then(() => send({ t: 'stopped' }));
        break;
    }
  });

  server.start().then(
    (bound) => send({ t: 'listening', port: bound }),
    (error: Error) => send({ t: 'failed', message: error.message }),
  );
}
