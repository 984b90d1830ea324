// Authorization sessions (Part 1 §19). A command's authorization area carries one TPMS_AUTH_COMMAND
// per session; the response carries one TPMS_AUTH_RESPONSE back. The password session needs nothing
// from the command; HMAC and policy sessions (next: StartAuthSession) will need the command's cpHash
// and check the response's rpHash, which is why a session sees both.

import { TPM_RH, TPMA_SESSION } from './constants.ts';

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
  readonly parameters: Uint8Array;
}

export interface Session {
  readonly handle: number;
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
