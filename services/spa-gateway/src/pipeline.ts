// The knock pipeline: one captured datagram in, at most one pinhole out, never a packet sent.
// Checks run cheapest first, so a flood of garbage costs a length compare and one HMAC per
// packet, and public-key work is reserved for packets from holders of the gateway's public key:
//
//   size → mac1 → per-source budget → HPKE open → CBOR schema → identity → signature
//     → time window → replay → source binding → policy → persist replay state → pinhole

import type { KeyObject } from 'node:crypto';
import type { Knock, OpenedKnock, SpaReceiver } from '@umbra/protocol';
import type { Logger } from 'pino';
import type { SourceBudget } from './budget.ts';
import type { Client } from './config.ts';
import type { Firewall } from './firewall/index.ts';
import type { Datagram } from './frame.ts';
import type { Rejections, RejectReason } from './rejections.ts';
import type { ReplayGuard } from './replay.ts';
import { StandaloneAdmission } from './standalone-admission.ts';

/** Who a knock says it is, as far as this gateway knows them. */
export interface KnownIdentity {
  name: string;
  publicKey: KeyObject;
  /** Refuse knocks that do not name the address they come from. */
  requireSourceBinding: boolean;
}

/**
 * The last step: who may knock, and what a knock that passed every check opens. A standalone
 * gateway decides from its configuration file; one run by a controller asks the controller, or
 * its cached signed policy.
 */
export interface KnockAdmission {
  /** Knocks admitted (pinholes opened), for the stats. */
  readonly accepted: number;
  identify(identityHex: string): KnownIdentity | undefined;
  /**
   * Called once the knock passed every check and its replay state is recorded. Returns a refusal
   * now, or undefined when access was granted or will be decided later — then the admission
   * reports the outcome itself.
   */
  admit(
    knock: Knock,
    opened: OpenedKnock,
    identity: KnownIdentity,
    datagram: Datagram,
  ): RejectReason | undefined;
}

export interface KnockPipelineOptions {
  receiver: SpaReceiver;
  budget: SourceBudget;
  replay: ReplayGuard;
  rejections: Rejections;
  log: Logger;
  /** Default: a standalone admission from `clients` and `firewall`. */
  admission?: KnockAdmission;
  clients?: readonly Client[];
  firewall?: Firewall;
}

export class KnockPipeline {
  private readonly options: KnockPipelineOptions;
  readonly admission: KnockAdmission;
  /** The identity a knock was identified as, once known: rejections after that point name it. */
  private identified: KnownIdentity | undefined;

  constructor(options: KnockPipelineOptions) {
    this.options = options;
    if (options.admission) this.admission = options.admission;
    else if (options.clients && options.firewall)
      this.admission = new StandaloneAdmission({
        clients: options.clients,
        firewall: options.firewall,
        log: options.log,
      });
    else throw new TypeError('KnockPipeline needs an admission, or clients and a firewall');
  }

  get accepted(): number {
    return this.admission.accepted;
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
    const { receiver, budget, replay } = this.options;
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
    const identity = this.admission.identify(identityHex);
    if (!identity) return 'unknown-identity';
    this.identified = identity;
    if (!receiver.verifySignature(opened, identity.publicKey)) return 'signature';

    const nonceHex = knock.nonce.toString('hex');
    const freshness = replay.check(identityHex, knock.timestampMs, nonceHex);
    if (freshness !== 'fresh') return freshness;
    if (
      knock.claimedSource !== undefined
        ? knock.claimedSource !== datagram.source
        : identity.requireSourceBinding
    )
      return 'source-mismatch';

    // Persist first: if we crash after opening, the knock must still count as used.
    replay.record(identityHex, knock.timestampMs, nonceHex);
    return this.admission.admit(knock, opened, identity, datagram);
  }
}
