// What a gateway enrolled with a TPM must prove on its link, beyond its certificate:
//
// - Channel binding, once per link: its hello carries the TPM identity key's signature over this
//   TLS connection's exporter value (protocol/src/attestation.ts). The link's TLS key is a software
//   key sealed on the box; the identity key never leaves the TPM, so a copied TLS key alone cannot
//   link. Checked synchronously when hello arrives, before anything else on the link is acted on.
// - Re-attestation, at link-up and then every interval (default 10 min): a fresh nonce, a quote over
//   the boot PCRs by the AK enrolled, compared with the gateway's golden values. A quote that does
//   not verify, or PCRs that drifted, quarantine the gateway (no new pinholes, an alert in the log,
//   an audit entry) until an operator acts. A quote that matches changes nothing and writes nothing:
//   only changes are audited.

import { randomBytes, verify } from 'node:crypto';
import {
  ATTESTATION_NONCE_BYTES,
  type Attest,
  type Attestation,
  BOOT_PCRS,
  linkBindingMessage,
} from '@umbra/protocol';
import {
  ecdsaSignatureP1363,
  publicKeyObject,
  type QuoteClock,
  Reader,
  readPublicArea,
  readSignature,
  TPM_ALG,
  verifyQuote,
} from '@umbra/tpm2';
import { pcrDrift } from '../attestation/attested-enrollment.ts';
import type { AttestationState, GatewayTpm, PcrValues, Store } from '../store/index.ts';
import { auditText } from './authorizer.ts';
import type { Logger } from './logger.ts';

export const DEFAULT_ATTEST_INTERVAL_MS = 10 * 60_000;
/** How long a gateway has to answer: a TPM quote takes well under a second, even on a slow box. */
const ANSWER_TIMEOUT_MS = 30_000;

/** Checks a hello's channel binding; returns why it fails, or null when it holds. */
export function checkLinkBinding(
  tpm: GatewayTpm,
  exporter: Buffer | null,
  binding: Uint8Array | undefined,
): string | null {
  if (exporter === null) return 'the link is not over TLS, so it cannot be bound';
  if (binding === undefined)
    return 'this gateway enrolled with a TPM but its hello carries no channel binding signature';
  try {
    const r = new Reader(Buffer.from(tpm.identityPublic, 'base64'), 'identity key');
    const area = readPublicArea(r);
    r.end();
    if (area.type !== TPM_ALG.ECC) return 'the enrolled identity key is not an ECC key';
    const sr = new Reader(binding, 'binding');
    const signature = readSignature(sr, 'binding');
    sr.end();
    if (signature.sigAlg !== TPM_ALG.ECDSA || signature.hash !== TPM_ALG.SHA256)
      return 'the channel binding is not an ECDSA signature with SHA-256';
    const ok = verify(
      'sha256',
      linkBindingMessage(exporter),
      { key: publicKeyObject(area), dsaEncoding: 'ieee-p1363' },
      ecdsaSignatureP1363(signature, area.parameters.curveId),
    );
    return ok ? null : "the channel binding signature does not verify with the gateway's TPM identity key";
  } catch (error) {
    return `the channel binding cannot be read: ${(error as Error).message}`;
  }
}

/** The link as the attestor needs it. */
export interface AttestableLink {
  readonly gateway: string;
  send(message: Attest): boolean;
}

interface Running {
  timer: NodeJS.Timeout;
  /** The clock of this link's last good quote: a TPM clock that goes back without a reset is refused. */
  clock?: QuoteClock;
  pending: Map<number, { nonce: Buffer; resolve(answer: Attestation | null): void }>;
}

export class LinkAttestor {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #clock: () => number;
  readonly #intervalMs: number;
  readonly #running = new Map<AttestableLink, Running>();
  #nextId = 1;

  constructor(options: { store: Store; log: Logger; clock: () => number; intervalMs?: number }) {
    this.#store = options.store;
    this.#log = options.log;
    this.#clock = options.clock;
    this.#intervalMs = options.intervalMs ?? DEFAULT_ATTEST_INTERVAL_MS;
  }

  /** Attests the link's gateway now and then every interval, until stop(link). */
  start(link: AttestableLink): void {
    if (this.#running.has(link)) return;
    const timer = setInterval(() => void this.attest(link), this.#intervalMs);
    timer.unref();
    this.#running.set(link, { timer, pending: new Map() });
    void this.attest(link);
  }

  stop(link: AttestableLink): void {
    const running = this.#running.get(link);
    if (!running) return;
    clearInterval(running.timer);
    for (const pending of running.pending.values()) pending.resolve(null);
    this.#running.delete(link);
  }

  /** The gateway's answer to one of our requests; anything else is ignored. */
  answer(link: AttestableLink, message: Attestation): void {
    const pending = this.#running.get(link)?.pending.get(message.id);
    pending?.resolve(message);
  }

  /** One round: ask, wait, verify, act. Never throws; returns what it concluded, for tests. */
  async attest(link: AttestableLink): Promise<'ok' | 'quarantined' | 'no-answer' | 'skipped'> {
    const running = this.#running.get(link);
    if (!running) return 'skipped';
    const id = this.#nextId++;
    const nonce = randomBytes(ATTESTATION_NONCE_BYTES);
    const answer = await new Promise<Attestation | null>((resolve) => {
      const timer = setTimeout(() => finish(null), ANSWER_TIMEOUT_MS);
      const finish = (value: Attestation | null) => {
        clearTimeout(timer);
        running.pending.delete(id);
        resolve(value);
      };
      running.pending.set(id, { nonce, resolve: finish });
      if (!link.send({ t: 'attest', id, nonce, bank: BOOT_PCRS.bank, pcrs: [...BOOT_PCRS.pcrs] }))
        finish(null);
    });
    if (!this.#running.has(link)) return 'skipped';
    if (answer === null) {
      this.#log.warn({ gateway: link.gateway }, 'the gateway did not answer a re-attestation in time');
      return 'no-answer';
    }
    try {
      return await this.#judge(link.gateway, nonce, answer, running);
    } catch (error) {
      this.#log.error({ err: error, gateway: link.gateway }, 'a re-attestation could not be judged');
      return 'no-answer';
    }
  }

  async #judge(
    name: string,
    nonce: Buffer,
    answer: Attestation,
    running: Running,
  ): Promise<'ok' | 'quarantined' | 'skipped'> {
    const gateway = await this.#store.getGatewayByName(name);
    if (!gateway?.tpm || gateway.status !== 'enrolled') return 'skipped';
    const values = new Map<number, Uint8Array>();
    for (const [index, digest] of Object.entries(answer.pcrValues)) values.set(Number(index), digest);
    const quote = verifyQuote({
      attest: answer.attest,
      signature: answer.signature,
      akPublic: Buffer.from(gateway.tpm.akPublic, 'base64'),
      nonce,
      pcrs: new Map([[TPM_ALG.SHA256, values]]),
      selection: [{ hash: TPM_ALG.SHA256, pcrs: [...BOOT_PCRS.pcrs] }],
      requireAttestationKey: true,
      ...(running.clock ? { previous: running.clock } : {}),
    });
    const { state, golden } = gateway.attestation;
    if (!quote.ok) return this.#quarantine(name, state, `re-attestation failed: ${quote.reason}`);
    running.clock = quote.quote.clockInfo;
    const pcrs: PcrValues = {
      bank: BOOT_PCRS.bank,
      pcrs: Object.fromEntries(
        BOOT_PCRS.pcrs.map((index) => [String(index), Buffer.from(values.get(index)!).toString('hex')]),
      ),
    };
    if (state === 'approved' && golden) {
      const drift = pcrDrift(pcrs, golden);
      if (drift !== null)
        return this.#quarantine(name, state, `boot state drifted from its golden values: ${drift}`);
      return 'ok';
    }
    // Awaiting approval: keep what the operator will be asked to approve current, audited only when it changed.
    if (state === 'awaiting-approval' && !samePcrs(gateway.attestation.pcrs, pcrs))
      await this.#store.recordGatewayAttestation(
        name,
        {
          state: 'awaiting-approval',
          pcrs,
          ...(gateway.attestation.firmwareVersion
            ? { firmwareVersion: gateway.attestation.firmwareVersion }
            : {}),
        },
        this.#clock(),
        'controller',
      );
    return 'ok';
  }

  /** `before`: its state as #judge read it, so a gateway already quarantined raises no second alert. */
  async #quarantine(name: string, before: AttestationState, reason: string): Promise<'quarantined'> {
    await this.#store.quarantineGateway(name, auditText(reason), this.#clock(), 'controller');
    if (before !== 'quarantined')
      this.#log.error(
        { alert: 'gateway-quarantined', gateway: name, reason },
        `ALERT: gateway ${name} quarantined: ${reason}; it opens nothing until an operator runs \`umbra-controller gateway release ${name}\``,
      );
    return 'quarantined';
  }
}

function samePcrs(a: PcrValues | null, b: PcrValues): boolean {
  if (a === null || a.bank !== b.bank) return false;
  const keys = Object.keys(b.pcrs);
  return keys.length === Object.keys(a.pcrs).length && keys.every((key) => a.pcrs[key] === b.pcrs[key]);
}
