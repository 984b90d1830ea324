// The gateway's TPM: what enrollment and the running gateway ask of it, on top of @umbra/tpm2.
//
// Persistent handles (owner hierarchy, TCG storage-key range), created at enrollment:
//   0x81000001  SRK: ECC P-256 storage key, the parent of the two below and of sealed secrets
//   0x81000002  AK: restricted ECC P-256 signing key; signs quotes and certifies the identity key
//   0x81000003  identity key: ECC P-256 signing key; signs each controller link's channel binding
// The EK is re-created from the TCG template when needed (CreatePrimary under the endorsement
// hierarchy gives the same key every time) and flushed after use; its certificate is read from NV.
// Every transient object and session is flushed on every path: swtpm has no resource manager.

import {
  decodeSealedBlob,
  EK_CERT_NV_INDEX,
  eccAttestationTemplate,
  eccEkTemplate,
  eccSigningTemplate,
  encodeSealedBlob,
  ensureStorageKey,
  openTransport,
  type PcrSelection,
  type PublicArea,
  passwordSession,
  rsaEkTemplate,
  type SealedBlob,
  sealToPcrs,
  TPM_ALG,
  TPM_HT,
  TPM_RC,
  TPM_RH,
  TPM_SE,
  TPM_SU,
  Tpm,
  TpmError,
  UMBRA_PERSISTENT,
  unsealWithPcrs,
  Writer,
  writeSignature,
} from '@umbra/tpm2';

/** The PCRs the gateway's secrets are sealed to: SHA-256 PCRs 0 (firmware), 2 (option ROMs), 4 (boot loader), 7 (secure boot). */
export const SEAL_PCRS = { bank: TPM_ALG.SHA256, pcrs: [0, 2, 4, 7] } as const;

const BANKS: Readonly<Record<string, number>> = {
  sha1: TPM_ALG.SHA1,
  sha256: TPM_ALG.SHA256,
  sha384: TPM_ALG.SHA384,
};

export interface Endorsement {
  /** The EK certificate as NV holds it. */
  certificate: Uint8Array;
  /** The EK's TPMT_PUBLIC. */
  publicBytes: Uint8Array;
  kind: 'rsa' | 'ecc';
}

export interface SignedAttestBytes {
  attest: Uint8Array;
  /** A marshalled TPMT_SIGNATURE. */
  signature: Uint8Array;
}

export interface Quote extends SignedAttestBytes {
  /** The quoted PCRs: index → digest. */
  pcrValues: Map<number, Uint8Array>;
}

function signatureBytes(signature: Parameters<typeof writeSignature>[1]): Uint8Array {
  const w = new Writer();
  writeSignature(w, signature);
  return w.finish();
}

export class GatewayTpm {
  readonly address: string;
  private readonly tpm: Tpm;

  private constructor(address: string, tpm: Tpm) {
    this.address = address;
    this.tpm = tpm;
  }

  /** Opens the TPM at `address` (device:PATH, swtpm:HOST:PORT, swtpm-unix:PATH) and starts it if nothing has. */
  static async open(address: string): Promise<GatewayTpm> {
    const tpm = new Tpm(openTransport(address));
    try {
      await tpm.startup(TPM_SU.CLEAR);
    } catch (error) {
      // The firmware or the kernel started it already: the usual case on a real box.
      if (!(error instanceof TpmError && error.base === TPM_RC.INITIALIZE)) {
        await tpm.close().catch(() => undefined);
        throw error;
      }
    }
    return new GatewayTpm(address, tpm);
  }

  close(): Promise<void> {
    return this.tpm.close();
  }

  /** The EK certificate and public area: RSA-2048 where the TPM has its certificate, else ECC P-256. */
  async readEndorsement(): Promise<Endorsement> {
    const candidates = [
      { kind: 'rsa' as const, index: EK_CERT_NV_INDEX.RSA_2048, template: rsaEkTemplate },
      { kind: 'ecc' as const, index: EK_CERT_NV_INDEX.ECC_NIST_P256, template: eccEkTemplate },
    ];
    for (const { kind, index, template } of candidates) {
      let certificate: Uint8Array;
      try {
        certificate = await this.tpm.nvRead(index);
      } catch (error) {
        if (error instanceof TpmError) continue; // no certificate at this index
        throw error;
      }
      const ek = await this.tpm.createPrimary(TPM_RH.ENDORSEMENT, template());
      await this.tpm.flushContext(ek.handle);
      return { certificate, publicBytes: ek.publicBytes, kind };
    }
    throw new Error(
      `the TPM at ${this.address} holds no EK certificate (NV 0x01c00002 or 0x01c0000a): it cannot prove it is genuine`,
    );
  }

  /**
   * Creates a fresh AK and identity key under the SRK (creating the SRK if needed) and makes them
   * persistent, replacing any from an earlier enrollment. Returns their TPMT_PUBLIC bytes.
   */
  async createKeys(): Promise<{ akPublic: Uint8Array; identityPublic: Uint8Array }> {
    await ensureStorageKey(this.tpm);
    const akPublic = await this.createPersistent(eccAttestationTemplate(), UMBRA_PERSISTENT.AK);
    const identityPublic = await this.createPersistent(
      eccSigningTemplate('P-256'),
      UMBRA_PERSISTENT.IDENTITY_KEY,
    );
    return { akPublic, identityPublic };
  }

  private async createPersistent(template: PublicArea, handle: number): Promise<Uint8Array> {
    if ((await this.tpm.handles(TPM_HT.PERSISTENT)).includes(handle))
      await this.tpm.evictControl(handle, handle);
    const created = await this.tpm.create(UMBRA_PERSISTENT.SRK, template);
    const loaded = await this.tpm.load(UMBRA_PERSISTENT.SRK, created);
    await this.tpm.withTransient(loaded.handle, (transient) => this.tpm.evictControl(transient, handle));
    return created.publicBytes;
  }

  /** The public area of a persistent key (to check it is the one enrolled). */
  async publicOf(handle: number): Promise<Uint8Array> {
    return (await this.tpm.readPublic(handle)).publicBytes;
  }

  /** ActivateCredential with the EK for the AK: what the controller's MakeCredential protected. */
  async activateCredential(
    kind: 'rsa' | 'ecc',
    credentialBlob: Uint8Array,
    encryptedSecret: Uint8Array,
  ): Promise<Uint8Array> {
    const ek = await this.tpm.createPrimary(
      TPM_RH.ENDORSEMENT,
      kind === 'rsa' ? rsaEkTemplate() : eccEkTemplate(),
    );
    return this.tpm.withTransient(ek.handle, (ekHandle) =>
      this.tpm.withSession(TPM_SE.POLICY, async (session) => {
        await this.tpm.policySecret(TPM_RH.ENDORSEMENT, session);
        return this.tpm.activateCredential(
          UMBRA_PERSISTENT.AK,
          ekHandle,
          credentialBlob,
          encryptedSecret,
          passwordSession(),
          session,
        );
      }),
    );
  }

  /** A quote by the AK over `pcrs` of `bank` with `nonce`, and the values it covers. */
  async quote(nonce: Uint8Array, bank: string, pcrs: readonly number[]): Promise<Quote> {
    const hash = BANKS[bank];
    if (hash === undefined) throw new Error(`unknown PCR bank ${bank}`);
    const selection: PcrSelection[] = [{ hash, pcrs: [...pcrs] }];
    // Read, quote, read again: a PCR extended in between would make the values disagree with the quote.
    for (let attempt = 0; attempt < 3; attempt++) {
      const before = await this.tpm.pcrRead(selection);
      const quoted = await this.tpm.quote(UMBRA_PERSISTENT.AK, nonce, selection);
      const after = await this.tpm.pcrRead(selection);
      if (before.updateCounter !== after.updateCounter) continue;
      return {
        attest: quoted.attestBytes,
        signature: signatureBytes(quoted.signature),
        pcrValues: after.banks.get(hash) ?? new Map(),
      };
    }
    throw new Error('the PCRs kept changing while they were quoted; try again');
  }

  /** The AK certifies that the identity key is in this TPM, over `nonce`. */
  async certifyIdentity(nonce: Uint8Array): Promise<SignedAttestBytes> {
    const certified = await this.tpm.certify(UMBRA_PERSISTENT.IDENTITY_KEY, UMBRA_PERSISTENT.AK, nonce);
    return { attest: certified.attestBytes, signature: signatureBytes(certified.signature) };
  }

  /** The identity key's signature (a marshalled TPMT_SIGNATURE) over a SHA-256 digest. */
  async signWithIdentity(digest: Uint8Array): Promise<Uint8Array> {
    const signature = await this.tpm.sign(UMBRA_PERSISTENT.IDENTITY_KEY, digest, {
      scheme: TPM_ALG.ECDSA,
      hashAlg: TPM_ALG.SHA256,
    });
    return signatureBytes(signature);
  }

  /** Seals `secret` to the current values of SEAL_PCRS under the SRK; the bytes go to a file. */
  async seal(secret: Uint8Array): Promise<Uint8Array> {
    await ensureStorageKey(this.tpm);
    return encodeSealedBlob(await sealToPcrs(this.tpm, UMBRA_PERSISTENT.SRK, secret, SEAL_PCRS));
  }

  /** Unseals what seal() wrote; SealedToOtherBootStateError / SealedByOtherTpmError say why not. */
  async unseal(sealed: Uint8Array): Promise<Uint8Array> {
    const blob: SealedBlob = decodeSealedBlob(sealed);
    return unsealWithPcrs(this.tpm, UMBRA_PERSISTENT.SRK, blob);
  }
}
