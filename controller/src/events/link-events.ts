// What an audit entry means for the gateways. A revocation or a disabling carries, in its details,
// the key ids and serials that end (the store writes them in the same transaction as the change:
// see AccessChange), so a controller that only reads the log can push it. Anything else that may
// change a gateway's share of the policy asks for a delta; a controller working out that nothing
// changed for a gateway sends it nothing.

import type { Revoke } from '@umbra/protocol';
import type { AuditEntry } from '../store/index.ts';

export interface LinkEffect {
  /** To push to every connected gateway at once. */
  revoke: Revoke | null;
  /** A gateway revoked: its link is closed now, and refused from then on. */
  closeGateway?: string;
  /** Whether gateways' snapshots may have changed (a delta to work out). */
  policyChanged: boolean;
}

/**
 * Actions that change no gateway's policy: decisions, session bookkeeping, tokens, renewals, and the
 * records attestation is checked against (EK roots, golden values per firmware), which only an
 * enrollment or a re-attestation reads. A gateway's own attestation state does count: a quarantine
 * must reach the view that decides its knocks.
 */
const NO_POLICY_CHANGE = new Set([
  'knock',
  'session.close',
  'init',
  'token.create',
  'gateway.token.create',
  'gateway.claim',
  'gateway.link',
  'certificate.renew',
  'ekca.add',
  'ekca.remove',
  'firmware.pcrs.add',
  'firmware.pcrs.remove',
]);

const REVOKING = new Map([
  ['identity.revoke', 'revoked'],
  ['identity.disable', 'disabled'],
  ['certificate.revoke', 'revoked'],
]);

const KEY_ID = /^[0-9a-f]{32}$/;
const SERIAL = /^[0-9a-f]{1,64}$/;
const SESSION = /^.{1,64}$/su;
const MAX_LIST = 10_000;
const NOTHING: LinkEffect = Object.freeze({ revoke: null, policyChanged: false });

export function linkEffectOf(entry: AuditEntry): LinkEffect {
  if (NO_POLICY_CHANGE.has(entry.action)) return NOTHING;
  if (entry.action === 'gateway.revoke')
    return { revoke: null, policyChanged: true, closeGateway: entry.subject };
  const what = REVOKING.get(entry.action);
  if (what === undefined) return { revoke: null, policyChanged: true };
  // Written by the store, but read back from a shared database: take only what has the right form.
  const keyIds = listOf(entry.details.keyIds, KEY_ID);
  const serials = listOf(entry.details.serials, SERIAL);
  const sessionIds = listOf(entry.details.sessions, SESSION);
  if (keyIds.length + serials.length + sessionIds.length === 0) return { revoke: null, policyChanged: true };
  const kind = entry.action.startsWith('certificate.') ? 'certificate' : 'identity';
  return {
    revoke: {
      t: 'revoke',
      keyIds,
      serials,
      sessionIds,
      reason: `${kind} ${entry.subject} ${what}`.slice(0, 512),
    },
    policyChanged: true,
  };
}

function listOf(value: unknown, form: RegExp): string[] {
  if (!Array.isArray(value)) return [];
  return value
    .filter((item): item is string => typeof item === 'string' && form.test(item))
    .slice(0, MAX_LIST);
}
