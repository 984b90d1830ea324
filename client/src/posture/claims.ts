// The shape every platform's reader fills in: lower snake case claim names, 'on'/'off' for
// switches and dotted numbers as text for versions, so one policy (`disk_encryption=on`,
// `os_version>=14.4`) reads the same on Linux, macOS and Windows. A fact the platform does not
// tell is left out, never guessed: a missing claim meets no requirement, a wrong one might.

import {
  POSTURE_KEY_MAX_BYTES,
  POSTURE_MAX_ENTRIES,
  POSTURE_TEXT_MAX_BYTES,
  type PostureValue,
} from '@umbra/protocol';

export type Posture = Record<string, PostureValue>;

export type Switch = 'on' | 'off';

export function onOff(value: boolean | undefined): Switch | undefined {
  return value === undefined ? undefined : value ? 'on' : 'off';
}

/** The versions policies compare (`>=`, `<=`), as the policy package reads them. */
const VERSION = /^\d+(\.\d+){0,5}$/;

/** A version a tool printed, or undefined when it printed something else (an error, a banner). */
export function versionText(text: string | undefined): string | undefined {
  const trimmed = text?.trim();
  return trimmed && VERSION.test(trimmed) ? trimmed : undefined;
}

/** Sets the claims that have a value; undefined ones stay out of the posture. */
export function addClaims(posture: Posture, claims: Record<string, PostureValue | undefined>): Posture {
  for (const [name, value] of Object.entries(claims)) {
    if (value !== undefined) posture[name] = value;
  }
  return posture;
}

/**
 * Drops what a knock cannot carry (a name over 32 bytes, text over 64, broken UTF-16, more than
 * 16 claims),
 * so an odd os-release or tool answer costs one claim instead of making every knock fail.
 */
export function fitForKnock(posture: Posture): Posture {
  const fitted: Posture = {};
  for (const [name, value] of Object.entries(posture)) {
    if (Object.keys(fitted).length === POSTURE_MAX_ENTRIES) break;
    if (name === '' || Buffer.byteLength(name) > POSTURE_KEY_MAX_BYTES || !name.isWellFormed()) continue;
    if (
      typeof value === 'string' &&
      (Buffer.byteLength(value) > POSTURE_TEXT_MAX_BYTES || !value.isWellFormed())
    )
      continue;
    fitted[name] = value;
  }
  return fitted;
}
