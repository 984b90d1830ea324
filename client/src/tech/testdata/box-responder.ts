// A scripted box for umbra-tech's tests: the box side of a ProvisioningSession that answers hello,
// status and logs requests, and an apply-bundle with the scripted progress events and result. The
// real box side is services/provisioner; this one only says what a test tells it to.

import type { Duplex } from 'node:stream';
import {
  type BoxHello,
  type ProgressMessage,
  ProvisioningSession,
  type ResultMessage,
  type ToBoxMessage,
} from '@umbra/protocol';

export interface BoxScript {
  /** Versions the box offers (default [1]). */
  versions?: number[];
  hello?: Partial<Omit<BoxHello, 't'>>;
  progress?: ProgressMessage[];
  /** The result of an apply-bundle (ok by default); null: none ever comes. */
  result?: ResultMessage | null;
  logs?: string[];
}

export interface BoxResponder {
  /** Every message the box received, in order. */
  received: ToBoxMessage[];
  stop(): void;
}

export const TEST_EK_HASH = 'ab'.repeat(32);

export function boxHello(script: BoxScript = {}): BoxHello {
  return {
    t: 'hello',
    versions: script.versions ?? [1],
    serialNumber: 'UMB-0042',
    firmwareVersion: '1.4.0',
    ekHash: TEST_EK_HASH,
    state: 'unprovisioned',
    ...script.hello,
  };
}

export function startBoxResponder(
  stream: Duplex,
  script: BoxScript = {},
  port = '/dev/ttyBOX',
): BoxResponder {
  const session = new ProvisioningSession(stream, { side: 'box', port, ackTimeoutMs: 50, maxAttempts: 20 });
  const received: ToBoxMessage[] = [];
  const loop = async () => {
    for (;;) {
      let message: ToBoxMessage;
      try {
        message = (await session.receive()) as ToBoxMessage;
      } catch (error) {
        if ((error as { code?: string }).code === 'closed') return;
        continue;
      }
      received.push(message);
      if (message.t === 'hello' || message.t === 'status-request') await session.send(boxHello(script));
      else if (message.t === 'logs-request') {
        const lines = script.logs ?? [];
        await session.send({ t: 'logs', lines: lines.slice(-(message.lines ?? 100)) });
      } else if (message.t === 'apply-bundle') {
        for (const progress of script.progress ?? []) await session.send(progress);
        if (script.result !== null) await session.send(script.result ?? { t: 'result', ok: true });
      }
    }
  };
  loop().catch(() => {});
  return { received, stop: () => session.close() };
}
