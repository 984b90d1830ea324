// Messages as plain CBOR maps with a type field `t`, each type with its own schema: what the
// controller link (link.ts) and the provisioning console (provisioning/messages.ts) both send.

import { Decoder, Encoder } from 'cbor-x';
import type { z } from 'zod';

// Plain CBOR both ways: no records, no structure sharing, maps as objects; byte strings as Uint8Array.
const encoder = new Encoder({ useRecords: false, pack: false, tagUint8Array: false, mapsAsObjects: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

/** Makes the caller's own error class from a message. */
export type MessageErrorOf = (message: string) => Error;

export function encodePlainCbor(value: unknown): Buffer {
  return Buffer.from(encoder.encode(value));
}

/** One CBOR item, checked as the message its `t` says it is (checkTypedMessage). */
export function decodeTypedMessage(
  bytes: Uint8Array,
  schemas: Record<string, z.ZodTypeAny>,
  error: MessageErrorOf,
): unknown {
  let value: unknown;
  try {
    value = decoder.decode(bytes);
  } catch (cause) {
    throw error(`not one CBOR item (${(cause as Error).message})`);
  }
  return checkTypedMessage(value, schemas, error);
}

/**
 * `value` checked against the schema of the type its `t` names (by type, so an error names the field
 * of the message it claims to be, not a failed union).
 */
export function checkTypedMessage(
  value: unknown,
  schemas: Record<string, z.ZodTypeAny>,
  error: MessageErrorOf,
): unknown {
  const type = (value as { t?: unknown } | null)?.t;
  if (typeof type !== 'string' || !Object.hasOwn(schemas, type))
    throw error(
      `not a message this side accepts (type ${typeof type === 'string' ? JSON.stringify(type.slice(0, 32)) : 'untyped'})`,
    );
  const parsed = schemas[type]!.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw error(`invalid ${type} message: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return parsed.data;
}
