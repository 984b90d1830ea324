// TPM_RC decoding (Part 2 §6.6). A response code is either format 0 (bit 7 clear: a TCG error or
// warning, a vendor code, or a TPM 1.2 code) or format 1 (bit 7 set: an error number in bits 0-5 and
// the parameter, handle or session it concerns in bits 8-11). Codes from a software layer (a resource
// manager) carry a layer number in bits 16-23 around a TPM code.

import { commandName, handleName } from './constants.ts';

const RC_VER1 = 0x100;
const RC_FMT1 = 0x080;
const RC_WARN = 0x900;
const RC_P = 0x040;
const RC_S = 0x800;

/** Format-0 errors: RC_VER1 + n. */
const FORMAT0_ERRORS: Readonly<Record<number, readonly [string, string]>> = {
  0: ['INITIALIZE', 'TPM not initialized by TPM2_Startup or already initialized'],
  1: ['FAILURE', 'commands not being accepted because of a TPM failure'],
  3: ['SEQUENCE', 'improper use of a sequence handle'],
  11: ['PRIVATE', 'not currently used'],
  25: ['HMAC', 'not currently used'],
  32: ['DISABLED', 'the command is disabled'],
  33: ['EXCLUSIVE', 'command failed because audit sequence required exclusivity'],
  36: ['AUTH_TYPE', 'authorization handle is not correct for command'],
  37: ['AUTH_MISSING', 'command requires an authorization session for handle and it is not present'],
  38: ['POLICY', 'policy failure in math operation or an invalid authPolicy value'],
  39: ['PCR', 'PCR check fail'],
  40: ['PCR_CHANGED', 'PCR have changed since checked'],
  45: ['UPGRADE', 'the TPM is in field upgrade mode'],
  46: ['TOO_MANY_CONTEXTS', 'context ID counter is at maximum'],
  47: ['AUTH_UNAVAILABLE', 'authValue or authPolicy is not available for selected entity'],
  48: ['REBOOT', 'a _TPM_Init and Startup(CLEAR) is required before the TPM can resume operation'],
  49: ['UNBALANCED', 'the protection algorithms (hash and symmetric) are not reasonably balanced'],
  66: ['COMMAND_SIZE', 'commandSize value is inconsistent with contents of the command buffer'],
  67: ['COMMAND_CODE', 'command code not supported'],
  68: ['AUTHSIZE', 'the value of authorizationSize is out of range or does not match the sessions'],
  69: ['AUTH_CONTEXT', 'an authorization session was used with a command that cannot have one'],
  70: ['NV_RANGE', 'NV offset+size is out of range'],
  71: ['NV_SIZE', 'requested allocation size is larger than allowed'],
  72: ['NV_LOCKED', 'NV access locked'],
  73: ['NV_AUTHORIZATION', 'NV access authorization fails in command actions'],
  74: [
    'NV_UNINITIALIZED',
    'an NV Index is used before being initialized, or saved state could not be restored',
  ],
  75: ['NV_SPACE', 'insufficient space for NV allocation'],
  76: ['NV_DEFINED', 'NV Index or persistent object already defined'],
  80: ['BAD_CONTEXT', 'context in TPM2_ContextLoad() is not valid'],
  81: ['CPHASH', 'cpHash value already set or not correct for use'],
  82: ['PARENT', 'handle for parent is not a valid parent'],
  83: ['NEEDS_TEST', 'some function needs testing'],
  84: ['NO_RESULT', 'an internal function cannot process a request due to an unspecified problem'],
  85: ['SENSITIVE', 'the sensitive area did not unmarshal correctly after decryption'],
};

/** Format-1 errors: RC_FMT1 + n. */
const FORMAT1_ERRORS: Readonly<Record<number, readonly [string, string]>> = {
  1: ['ASYMMETRIC', 'asymmetric algorithm not supported or not correct'],
  2: ['ATTRIBUTES', 'inconsistent attributes'],
  3: ['HASH', 'hash algorithm not supported or not appropriate'],
  4: ['VALUE', 'value is out of range or is not correct for the context'],
  5: ['HIERARCHY', 'hierarchy is not enabled or is not correct for the use'],
  7: ['KEY_SIZE', 'key size is not supported'],
  8: ['MGF', 'mask generation function not supported'],
  9: ['MODE', 'mode of operation not supported'],
  10: ['TYPE', 'the type of the value is not appropriate for the use'],
  11: ['HANDLE', 'the handle is not correct for the use'],
  12: ['KDF', 'unsupported key derivation function or function not appropriate for use'],
  13: ['RANGE', 'value was out of allowed range'],
  14: ['AUTH_FAIL', 'the authorization HMAC check failed and DA counter incremented'],
  15: ['NONCE', 'invalid nonce size or nonce value mismatch'],
  16: ['PP', 'authorization requires assertion of PP'],
  18: ['SCHEME', 'unsupported or incompatible scheme'],
  21: ['SIZE', 'structure is the wrong size'],
  22: ['SYMMETRIC', 'unsupported symmetric algorithm or key size, or not appropriate for instance'],
  23: ['TAG', 'incorrect structure tag'],
  24: ['SELECTOR', 'union selector is incorrect'],
  26: ['INSUFFICIENT', 'the TPM was unable to unmarshal a value because there were not enough octets'],
  27: ['SIGNATURE', 'the signature is not valid'],
  28: ['KEY', 'key fields are not compatible with the selected use'],
  29: ['POLICY_FAIL', 'a policy check failed'],
  31: ['INTEGRITY', 'integrity check failed'],
  32: ['TICKET', 'invalid ticket'],
  33: ['RESERVED_BITS', 'reserved bits not set to zero as required'],
  34: ['BAD_AUTH', 'authorization failure without DA implications'],
  35: ['EXPIRED', 'the policy has expired'],
  36: ['POLICY_CC', 'the commandCode in the policy is not the commandCode of the command'],
  37: ['BINDING', 'public and sensitive portions of an object are not cryptographically bound'],
  38: ['CURVE', 'curve not supported'],
  39: ['ECC_POINT', 'point is not on the required curve'],
};

const ORDINALS = ['first', 'second', 'third', 'fourth', 'fifth', 'sixth', 'seventh'] as const;

/** Warnings: RC_WARN + n. */
const WARNINGS: Readonly<Record<number, readonly [string, string]>> = {
  1: ['CONTEXT_GAP', 'gap for context ID is too large'],
  2: ['OBJECT_MEMORY', 'out of memory for object contexts'],
  3: ['SESSION_MEMORY', 'out of memory for session contexts'],
  4: ['MEMORY', 'out of shared object/session memory or need space for internal operations'],
  5: ['SESSION_HANDLES', 'out of session handles; a session must be flushed before a new one is created'],
  6: ['OBJECT_HANDLES', 'out of object handles; the handle space for objects is depleted'],
  7: ['LOCALITY', 'bad locality'],
  8: ['YIELDED', 'the TPM has suspended operation on the command; it may be retried'],
  9: ['CANCELED', 'the command was canceled'],
  10: ['TESTING', 'TPM is performing self-tests'],
  ...Object.fromEntries(
    ORDINALS.map((ordinal, i) => [
      0x10 + i,
      [
        `REFERENCE_H${i}`,
        `the ${ordinal} handle references a transient object or session that is not loaded`,
      ],
    ]),
  ),
  ...Object.fromEntries(
    ORDINALS.map((ordinal, i) => [
      0x18 + i,
      [
        `REFERENCE_S${i}`,
        `the ${ordinal} authorization session handle references a session that is not loaded`,
      ],
    ]),
  ),
  32: ['NV_RATE', 'the TPM is rate-limiting accesses to prevent wearout of NV'],
  33: ['LOCKOUT', 'the TPM is in dictionary-attack lockout mode'],
  34: ['RETRY', 'the TPM was not able to start the command'],
  35: ['NV_UNAVAILABLE', 'the command may require writing of NV and NV is not currently accessible'],
};

export type ResponseCodeKind = 'error' | 'warning' | 'vendor' | 'tpm12';

export interface ResponseCode {
  /** The whole code as the TPM (or a software layer) returned it. */
  readonly code: number;
  readonly kind: ResponseCodeKind;
  /** The code without parameter/handle/session bits, e.g. 0x084 for TPM_RC_VALUE. */
  readonly base: number;
  /** TPM_RC_<NAME>, or a hex form when the spec does not define it. */
  readonly name: string;
  readonly meaning: string;
  /** Format 1 only: which parameter (1-15), handle (1-7) or session (1-7) the error is about. */
  readonly parameter?: number;
  readonly handle?: number;
  readonly session?: number;
  /** A software layer's number (bits 16-23), e.g. a resource manager; 0 for the TPM itself. */
  readonly layer: number;
}

const hex = (n: number, width = 3) => `0x${n.toString(16).padStart(width, '0')}`;

export function decodeResponseCode(code: number): ResponseCode {
  const layer = (code >>> 16) & 0xff;
  const rc = code & 0xffff;
  if (rc & RC_FMT1) {
    const number = rc & 0x3f;
    const base = RC_FMT1 + number;
    const [name, meaning] = FORMAT1_ERRORS[number] ?? [
      hex(base),
      'an error the specification does not define',
    ];
    const n = (rc >>> 8) & 0xf;
    const where =
      rc & RC_P ? { parameter: n } : rc & RC_S ? { session: n & 7 } : n & 7 ? { handle: n & 7 } : {};
    return { code, kind: 'error', base, name: prefixed(name), meaning, layer, ...where };
  }
  if (!(rc & RC_VER1)) {
    return { code, kind: 'tpm12', base: rc, name: hex(rc), meaning: 'a TPM 1.2 response code', layer };
  }
  const number = rc & 0x7f;
  if (rc & 0x400) {
    return {
      code,
      kind: 'vendor',
      base: rc,
      name: `vendor ${hex(rc)}`,
      meaning: 'a vendor-defined code',
      layer,
    };
  }
  if (rc & RC_S) {
    const [name, meaning] = WARNINGS[number] ?? [hex(rc), 'a warning the specification does not define'];
    return { code, kind: 'warning', base: RC_WARN + number, name: prefixed(name), meaning, layer };
  }
  const [name, meaning] = FORMAT0_ERRORS[number] ?? [hex(rc), 'an error the specification does not define'];
  return { code, kind: 'error', base: RC_VER1 + number, name: prefixed(name), meaning, layer };
}

function prefixed(name: string): string {
  return name.startsWith('0x') ? name : `TPM_RC_${name}`;
}

/** A command the TPM answered with a response code other than TPM_RC_SUCCESS. */
export class TpmError extends Error {
  override name = 'TpmError';
  readonly command: number;
  readonly rc: ResponseCode;

  /** `handles` are the command's handles, so that a handle error can show which value it was about. */
  constructor(command: number, code: number, handles: readonly number[] = []) {
    const rc = decodeResponseCode(code);
    super(describe(command, rc, handles));
    this.command = command;
    this.rc = rc;
  }

  /** The base code, e.g. TPM_RC.VALUE, for callers that handle one error specially. */
  get base(): number {
    return this.rc.base;
  }
}

function describe(command: number, rc: ResponseCode, handles: readonly number[]): string {
  const parts = [commandName(command)];
  if (rc.layer) parts.push(`layer ${rc.layer}`);
  if (rc.parameter !== undefined) parts.push(`parameter ${rc.parameter}`);
  if (rc.session !== undefined) parts.push(`session ${rc.session}`);
  if (rc.handle !== undefined) {
    const value = handles[rc.handle - 1];
    parts.push(`handle ${rc.handle}${value === undefined ? '' : ` (${handleName(value)})`}`);
  }
  parts.push(`${rc.name} (${rc.meaning})`);
  return parts.join(': ');
}

/** Response-code bases, for comparing with TpmError.base. */
export const TPM_RC = {
  SUCCESS: 0x000,
  INITIALIZE: 0x100,
  FAILURE: 0x101,
  AUTH_MISSING: 0x125,
  COMMAND_CODE: 0x143,
  NV_DEFINED: 0x14c,
  ATTRIBUTES: 0x082,
  HASH: 0x083,
  VALUE: 0x084,
  HIERARCHY: 0x085,
  KEY_SIZE: 0x087,
  TYPE: 0x08a,
  HANDLE: 0x08b,
  AUTH_FAIL: 0x08e,
  SCHEME: 0x092,
  SIZE: 0x095,
  SIGNATURE: 0x09b,
  POLICY_FAIL: 0x09d,
  INTEGRITY: 0x09f,
  BAD_AUTH: 0x0a2,
  CURVE: 0x0a6,
  OBJECT_MEMORY: 0x902,
  YIELDED: 0x908,
  SESSION_MEMORY: 0x903,
  TESTING: 0x90a,
  REFERENCE_H0: 0x910,
  LOCKOUT: 0x921,
  RETRY: 0x922,
} as const;
