// The knock pipeline: one captured datagram in, at most one pinhole out, never a packet sent.
// Checks run cheapest first, so a flood of garbage costs a length compare and one HMAC per
// packet, and public-key work is reserved for packets from holders of the gateway's public key:
//
//   size → mac1 → per-source budget → HPKE open → CBOR schema → identity → signature
//     → time window → replay → source binding → policy → persist replay state → pinhole

import type { SpaReceiver } from '@umbra/protocol';
import { parseAccess } from '@umbra/protocol';
import type { Logger } from 'pino';
import { allows } from './access.ts';
import type { SourceBudget } from './budget.ts';
import type { Client } from './config.ts';
import type { Firewall } from './firewall/index.ts';
import type { Datagram } from './frame.ts';
import type { Rejections, RejectReason } from './rejections.ts';
import type { ReplayGuard } from './replay.ts';

/** The wall clock with sub-millisecond resolution (Date.now() has whole milliseconds). */
function wallClockMs(): number {
  return performance.timeOrigin + performance.now();
}

export interface KnockPipelineOptions {
  receiver: SpaReceiver;
  clients: readonly Client[];
  budget: SourceBudget;
  replay: ReplayGuard;
  firewall: Firewall;
  rejections: Rejections;
  log: Logger;
}

export class KnockPipeline {
  accepted = 0;
  private readonly options: KnockPipelineOptions;
  private readonly clients = new Map<string, Client>();
  /** The client a knock was identified as, once known: rejections after that point name it. */
  private identified: Client | undefined;

  constructor(options: KnockPipelineOptions) {
    this.options = options;
    for (const client of options.clients) this.clients.set(client.identityId.toString('hex'), client);
  }

  /** Handles one datagram. Never throws: a throw here would take the capture down with it. */
  handle(datagram: Datagram): void {
    let reason: RejectReason | undefined;
    try {
      reason = this.check(datagram);
    } catch (error) {
      this.options.log.error(
        { source: datagram.source, err: error },
        'knock handling failed; nothing was opened',
      );
      reason = 'internal';
    }
    if (reason) this.options.rejections.reject(datagram.source, reason, this.identified?.name);
  }

  private check(datagram: Datagram): RejectReason | undefined {
    const { receiver, budget, replay, firewall, log } = this.options;
    this.identified = undefined;
    const packet = datagram.payload;
    if (!receiver.hasValidShape(packet)) return 'size';
    if (!receiver.hasValidMac1(packet)) return 'mac1';
    const spent = budget.take(datagram.source);
    if (spent !== 'ok') return spent === 'source' ? 'budget' : 'overload';

    const opened = receiver.open(packet);
    if (!opened.ok) return opened.reason;
    const { knock } = opened;
    const identityHex = knock.identityId.toString('hex');
    const client = this.clients.get(identityHex);
    if (!client) return 'unknown-identity';
    this.identified = client;
    if (!receiver.verifySignature(opened, client.publicKey)) return 'signature';

    const nonceHex = knock.nonce.toString('hex');
    const freshness = replay.check(identityHex, knock.timestampMs, nonceHex);
    if (freshness !== 'fresh') return freshness;
    if (
      knock.claimedSource !== undefined
        ? knock.claimedSource !== datagram.source
        : client.requireSourceBinding
    )
      return 'source-mismatch';
    const access = parseAccess(knock.access);
    if (!access || !allows(client.allow, access.protocol, access.port)) return 'not-allowed';

    // Persist first: if we crash after opening, the knock must still count as used.
    replay.record(identityHex, knock.timestampMs, nonceHex);
    try {
      firewall.open({
        source: datagram.source,
        protocol: access.protocol,
        port: access.port,
        ttlSeconds: client.ttlSeconds,
      });
    } catch (error) {
      log.error({ source: datagram.source, identity: client.name, err: error }, 'could not open the pinhole');
      return 'firewall';
    }
    this.accepted++;
    log.info(
      {
        source: datagram.source,
        identity: client.name,
        access: knock.access,
        ttlSeconds: client.ttlSeconds,
        ...(datagram.receivedAtMs
          ? { latencyMs: Math.round((wallClockMs() - datagram.receivedAtMs) * 1000) / 1000 }
          : {}),
      },
      'pinhole opened',
    );
    return undefined;
  }
}
