// Authorization sessions (Part 1 §19). A command's authorization area carries one TPMS_AUTH_COMMAND
// per session; the response carries one TPMS_AUTH_RESPONSE back. The password session needs nothing
// from the command; HMAC and policy sessions (AuthSession, started by Tpm.startAuthSession) HMAC the
// command's cpHash and check the response's rpHash, which is why a session sees both.

import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { TPM_RH, TPM_SE, TPMA_SESSION } from './constants.ts';
import { digestSize, hash, nodeHashName } from './hash.ts';
import { Writer } from './marshal.ts';

export interface AuthCommand {
  readonly sessionHandle: number;
  readonly nonce: Uint8Array;
  /** TPMA_SESSION bits. */
  readonly attributes: number;
  /** The HMAC, or for the password session the password itself. */
  readonly hmac: Uint8Array;
}

export interface AuthResponse {
  readonly nonce: Uint8Array;
  readonly attributes: number;
  readonly hmac: Uint8Array;
}

/** What a session sees of the command it authorizes. */
export interface CommandContext {
  readonly code: number;
  readonly handles: readonly number[];
  /** The handles' Names, when some session needs them (Tpm.execute reads them if needsNames is set). */
  readonly names?: readonly Uint8Array[];
  readonly parameters: Uint8Array;
}

export interface Session {
  readonly handle: number;
  /** True when authorize needs CommandContext.names (for cpHash). */
  readonly needsNames?: boolean;
  authorize(command: CommandContext): AuthCommand;
  /** Throws if the TPM's response authorization does not check out. */
  verify(command: CommandContext, response: AuthResponse, responseParameters: Uint8Array): void;
}

/** TPM_RS_PW with a password (the entity's authValue); empty by default, as for an unset owner auth. */
export function passwordSession(password: Uint8Array = new Uint8Array()): Session {
  return {
    handle: TPM_RH.PW,
    authorize: () => ({
      sessionHandle: TPM_RH.PW,
      nonce: new Uint8Array(),
      attributes: TPMA_SESSION.continueSession,
      hmac: password,
    }),
    verify: (_command, response) => {
      // Part 1 §19.8.4: a password session's response has an empty nonce and HMAC.
      if (response.nonce.length !== 0 || response.hmac.length !== 0) {
        throw new Error('the password session response carries a nonce or HMAC');
      }
    },
  };
}

/**
 * An HMAC or policy session started by TPM2_StartAuthSession, unsalted and unbound, so its sessionKey
 * is empty and the HMAC key is the authorized entity's authValue (trailing zeros removed, Part 1
 * §19.6.4.3), for a policy session only after PolicyAuthValue. With an empty key the TPM accepts an
 * empty HMAC (as tpm2-tss sends for a policy session satisfied by PolicySecret alone), so no Names are
 * needed then. Otherwise (Part 1 §19.6.5):
 *
 *   cpHash = H(commandCode ‖ Name1 ‖ … ‖ parameters), rpHash = H(0 ‖ commandCode ‖ parameters)
 *   hmac   = HMAC(sessionKey ‖ authValue, pHash ‖ nonceNewer ‖ nonceOlder ‖ attributes)
 *
 * with nonceNewer the caller's fresh nonce in a command and the TPM's new one in a response. Each
 * response's nonceTPM is kept for the next command. One session, one command at a time.
 */
export class AuthSession implements Session {
  readonly handle: number;
  readonly type: number;
  readonly authHash: number;
  /** The authorized entity's authValue; set it before a command that uses the session. */
  authValue: Uint8Array = new Uint8Array();
  /** For a policy session: PolicyAuthValue was run, so the authValue enters the HMAC key. */
  authValueNeeded: boolean;
  #nonceTpm: Uint8Array;
  #nonceCaller: Uint8Array = new Uint8Array();
  #sentEmptyHmac = false;

  constructor(handle: number, type: number, authHash: number, nonceTpm: Uint8Array) {
    this.handle = handle;
    this.type = type;
    this.authHash = authHash;
    this.#nonceTpm = nonceTpm;
    this.authValueNeeded = type === TPM_SE.HMAC;
  }

  get nonceTpm(): Uint8Array {
    return this.#nonceTpm;
  }

  #key(): Uint8Array {
    if (!this.authValueNeeded) return new Uint8Array();
    let end = this.authValue.length;
    while (end > 0 && this.authValue[end - 1] === 0) end--;
    return this.authValue.subarray(0, end);
  }

  get needsNames(): boolean {
    return this.#key().length > 0;
  }

  #hmac(pHash: Uint8Array, newer: Uint8Array, older: Uint8Array, attributes: number): Uint8Array {
    return new Uint8Array(
      createHmac(nodeHashName(this.authHash), this.#key())
        .update(pHash)
        .update(newer)
        .update(older)
        .update(Uint8Array.of(attributes))
        .digest(),
    );
  }

  authorize(command: CommandContext): AuthCommand {
    this.#nonceCaller = new Uint8Array(randomBytes(digestSize(this.authHash)));
    const attributes = TPMA_SESSION.continueSession;
    const key = this.#key();
    this.#sentEmptyHmac = key.length === 0;
    if (this.#sentEmptyHmac)
      return { sessionHandle: this.handle, nonce: this.#nonceCaller, attributes, hmac: new Uint8Array() };
    if (!command.names || command.names.length !== command.handles.length)
      throw new Error('the session needs the Names of the command handles for cpHash');
    const cp = new Writer().u32(command.code);
    for (const name of command.names) cp.bytes(name);
    cp.bytes(command.parameters);
    const cpHash = hash(this.authHash, cp.finish());
    return {
      sessionHandle: this.handle,
      nonce: this.#nonceCaller,
      attributes,
      hmac: this.#hmac(cpHash, this.#nonceCaller, this.#nonceTpm, attributes),
    };
  }

  verify(command: CommandContext, response: AuthResponse, responseParameters: Uint8Array): void {
    if (response.nonce.length !== digestSize(this.authHash))
      throw new Error(`nonceTPM is ${response.nonce.length} bytes, not ${digestSize(this.authHash)}`);
    if ((response.attributes & TPMA_SESSION.continueSession) === 0)
      throw new Error('the TPM ended a session that was asked to continue');
    const rp = new Writer().u32(0).u32(command.code).bytes(responseParameters).finish();
    const expected = this.#hmac(
      hash(this.authHash, rp),
      response.nonce,
      this.#nonceCaller,
      response.attributes,
    );
    const ok =
      (this.#sentEmptyHmac && response.hmac.length === 0) ||
      (response.hmac.length === expected.length && timingSafeEqual(response.hmac, expected));
    if (!ok) throw new Error('the response HMAC does not match rpHash');
    this.#nonceTpm = response.nonce;
  }
}
