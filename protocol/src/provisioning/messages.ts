// Provisioning messages: what umbra-tech (the technician's laptop) and a box's provisioner say to
// each other over the serial session (session.ts). One CBOR map per message, `t` naming its type;
// each side decodes only what the other side may send, by type, so an error names the field.
//
//   to the box:        hello, apply-bundle, status-request, logs-request
//   to the technician: hello, progress, result, logs
//
// Both sides open with hello, listing the protocol versions they speak; each picks the highest
// common one (chooseVersion) or shows the same clear error. The box answers status-request with a
// fresh hello (which carries its state), apply-bundle with progress events and one result, and
// logs-request with logs.

import { z } from 'zod';
import { checkTypedMessage, decodeTypedMessage, encodePlainCbor } from '../typed-message.ts';

/** Versions of this message set this build speaks, oldest first. */
export const PROVISIONING_VERSIONS = [1] as const;
/** A whole message (a site bundle and its envelope are a few KB; logs are bounded below). */
export const PROVISIONING_MAX_MESSAGE_BYTES = 64 * 1024;
/** A site bundle on the wire (site-bundle.ts bounds the same). */
export const SITE_BUNDLE_MAX_BYTES = 16 * 1024;
export const LOGS_MAX_LINES = 100;
export const LOG_LINE_MAX_CHARS = 160;

export const PROVISIONING_STATES = ['unprovisioned', 'provisioning', 'enrolling', 'enrolled'] as const;
export type ProvisioningState = (typeof PROVISIONING_STATES)[number];

const versions = z.array(z.number().int().min(1).max(255)).min(1).max(16);
/** Error codes and step names: kebab-case words, e.g. "bad-signature", "apply-network". */
const code = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,47}$/, { message: 'expected kebab-case, e.g. "bad-signature"' });
const text = (max: number) => z.string().min(1).max(max);
const bytes = (max: number) =>
  z.custom<Uint8Array>((value) => value instanceof Uint8Array && value.length >= 1 && value.length <= max, {
    message: `expected a byte string of 1 to ${max} bytes`,
  });
const failure = z.object({ code, message: text(512) }).strict();

export const technicianHello = z
  .object({
    t: z.literal('hello'),
    versions,
  })
  .strict();

export const boxHello = z
  .object({
    t: z.literal('hello'),
    versions,
    /** The box's serial number as printed on its label. */
    serialNumber: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/),
    firmwareVersion: z
      .string()
      .regex(/^[\x21-\x7e]{1,64}$/, { message: 'expected 1 to 64 printable ASCII characters' }),
    /** SHA-256 of the TPM's endorsement key, lower-case hex: what a controller claim names. */
    ekHash: z.string().regex(/^[0-9a-f]{64}$/, { message: 'expected 64 lower-case hex digits' }),
    state: z.enum(PROVISIONING_STATES),
    /** Why the last attempt failed, until the next one starts. */
    lastError: failure.optional(),
  })
  .strict();

export const applyBundle = z
  .object({
    t: z.literal('apply-bundle'),
    /** The signed site bundle exactly as created (site-bundle.ts); the box checks it. */
    bundle: bytes(SITE_BUNDLE_MAX_BYTES),
  })
  .strict();

export const statusRequest = z.object({ t: z.literal('status-request') }).strict();

export const logsRequest = z
  .object({
    t: z.literal('logs-request'),
    /** The most recent lines; LOGS_MAX_LINES when absent. */
    lines: z.number().int().min(1).max(LOGS_MAX_LINES).optional(),
  })
  .strict();

export const progress = z
  .object({
    t: z.literal('progress'),
    /** Machine-readable step, e.g. "verify-bundle", "apply-network", "enroll". */
    step: code,
    /** For the technician's screen. */
    text: text(200),
    percent: z.number().int().min(0).max(100).optional(),
  })
  .strict();

export const result = z.discriminatedUnion('ok', [
  z.object({ t: z.literal('result'), ok: z.literal(true) }).strict(),
  z.object({ t: z.literal('result'), ok: z.literal(false), error: failure }).strict(),
]);

export const logs = z
  .object({
    t: z.literal('logs'),
    lines: z.array(z.string().max(LOG_LINE_MAX_CHARS)).max(LOGS_MAX_LINES),
  })
  .strict();

const toBox = {
  hello: technicianHello,
  'apply-bundle': applyBundle,
  'status-request': statusRequest,
  'logs-request': logsRequest,
};
const toTechnician = { hello: boxHello, progress, result, logs };

export type TechnicianHello = z.infer<typeof technicianHello>;
export type BoxHello = z.infer<typeof boxHello>;
export type ApplyBundle = z.infer<typeof applyBundle>;
export type StatusRequest = z.infer<typeof statusRequest>;
export type LogsRequest = z.infer<typeof logsRequest>;
export type ProgressMessage = z.infer<typeof progress>;
export type ResultMessage = z.infer<typeof result>;
export type LogsMessage = z.infer<typeof logs>;
export type ToBoxMessage = TechnicianHello | ApplyBundle | StatusRequest | LogsRequest;
export type ToTechnicianMessage = BoxHello | ProgressMessage | ResultMessage | LogsMessage;
export type ProvisioningMessage = ToBoxMessage | ToTechnicianMessage;
export type ProvisioningDirection = 'to-box' | 'to-technician';

/** A message that cannot be sent or was not understood; the text names the field. */
export class ProvisioningMessageError extends Error {
  override name = 'ProvisioningMessageError';
}

/** The two sides share no protocol version; both show this message. */
export class ProvisioningVersionError extends Error {
  override name = 'ProvisioningVersionError';
}

const messageError = (message: string) => new ProvisioningMessageError(message);

/** Checks `message` against the schema of its direction (a bug shows here, not on the box) and encodes it. */
export function encodeProvisioningMessage(
  message: ProvisioningMessage,
  direction: ProvisioningDirection,
): Buffer {
  const checked = checkTypedMessage(message, direction === 'to-box' ? toBox : toTechnician, messageError);
  const encoded = encodePlainCbor(checked);
  if (encoded.length > PROVISIONING_MAX_MESSAGE_BYTES)
    throw new ProvisioningMessageError(
      `a ${message.t} message of ${encoded.length} bytes exceeds the limit of ${PROVISIONING_MAX_MESSAGE_BYTES}`,
    );
  return encoded;
}

export function decodeToBox(bytes: Uint8Array): ToBoxMessage {
  return decodeWith(bytes, toBox) as ToBoxMessage;
}

export function decodeToTechnician(bytes: Uint8Array): ToTechnicianMessage {
  return decodeWith(bytes, toTechnician) as ToTechnicianMessage;
}

export function decodeProvisioningMessage(
  bytes: Uint8Array,
  direction: ProvisioningDirection,
): ProvisioningMessage {
  return direction === 'to-box' ? decodeToBox(bytes) : decodeToTechnician(bytes);
}

function decodeWith(bytes: Uint8Array, schemas: Record<string, z.ZodTypeAny>): unknown {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > PROVISIONING_MAX_MESSAGE_BYTES)
    throw new ProvisioningMessageError(`a message must be 1 to ${PROVISIONING_MAX_MESSAGE_BYTES} bytes`);
  return decodeTypedMessage(bytes, schemas, messageError);
}

/**
 * The version both sides use: the highest both speak. `peer` names the other side in the error
 * ("the box", "umbra-tech"), which says what to upgrade.
 */
export function chooseVersion(ours: readonly number[], theirs: readonly number[], peer: string): number {
  const common = ours.filter((v) => theirs.includes(v));
  if (common.length > 0) return Math.max(...common);
  const span = (list: readonly number[]) =>
    list.length === 0 ? 'none' : [...new Set(list)].sort((a, b) => a - b).join(', ');
  const upgrade = Math.max(...ours) < Math.max(...theirs, 0) ? 'upgrade this side' : `upgrade ${peer}`;
  throw new ProvisioningVersionError(
    `no common provisioning protocol version: this side speaks ${span(ours)}, ${peer} speaks ${span(theirs)}; ${upgrade}`,
  );
}
