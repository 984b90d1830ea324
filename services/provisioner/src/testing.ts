// Fixtures for tests of the provisioner and of what drives it (test-rig): a provisioning key and
// signed site bundles. Not used on a box.

import { randomBytes } from 'node:crypto';
import {
  createEnrollmentToken,
  createSiteBundle,
  generateProvisioningKey,
  PIN_PREFIX,
  type ProvisioningKey,
  type SiteBundleFields,
} from '@umbra/protocol';

export const TEST_NOW = Date.parse('2026-11-21T10:00:00Z');
export const DAY_MS = 86_400_000;

export interface TestBundle {
  bytes: Buffer;
  fields: SiteBundleFields;
  key: ProvisioningKey;
}

/** A signed bundle for a made-up controller (or `controllerUrl`/`caPin`/`token` given). */
export function makeSiteBundle(
  options: Partial<SiteBundleFields> & { key?: ProvisioningKey; includeKeyId?: boolean } = {},
): TestBundle {
  const key = options.key ?? generateProvisioningKey();
  const controllerUrl = options.controllerUrl ?? 'https://controller.example:8443/';
  const caPin = options.caPin ?? `${PIN_PREFIX}${randomBytes(32).toString('base64')}`;
  const enrollmentToken =
    options.enrollmentToken ??
    createEnrollmentToken({ kind: 'gateway', url: controllerUrl, pin: caPin }).token;
  const createdAt = options.createdAt ?? TEST_NOW;
  const fields: SiteBundleFields = {
    controllerUrl,
    caPin,
    enrollmentToken,
    site: options.site ?? 'Lyon branch 3',
    network: options.network ?? {
      mode: 'static',
      address: '192.0.2.10/24',
      gateway: '192.0.2.1',
      vlan: 42,
      dns: ['192.0.2.53'],
      ntp: ['pool.ntp.org'],
    },
    createdAt,
    expiresAt: options.expiresAt ?? createdAt + 7 * DAY_MS,
  };
  const bytes = createSiteBundle(fields, key.privateKey, { includeKeyId: options.includeKeyId });
  return { bytes, fields, key };
}
