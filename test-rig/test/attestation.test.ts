// Attested gateway enrollment end to end, on loopback: a real controller (SQLite), swtpm as the
// gateway's TPM (EK certificate from swtpm_setup's local CA), `enrollGatewayWithTpm` as
// `umbra-gateway enroll --tpm` runs it, and the gateway's own ControllerLink. What the issue asks
// to be refused is refused with its reason on the gateway's side and in the audit log; the link is
// bound to the TPM; drift quarantines; the sealed keys open on this box in this boot state only.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gatewayRefusal, parseEkRoots, testing } from '@umbra/controller';
import {
  ATTEST_CHALLENGE_PATH,
  ATTEST_ENROLL_PATH,
  type AttestChallengeResponse,
  ControllerApiError,
  createCertificateRequest,
  createEnrollmentToken,
  encodeKey,
  generateGatewayKeyPair,
  linkBindingDigest,
  postJson,
} from '@umbra/protocol';
import {
  ControllerLink,
  enrollGatewayWithTpm,
  GatewayTpm,
  type LinkIdentity,
  tpmLinkIdentity,
  unsealKeys,
} from '@umbra/spa-gateway';
import { type Swtpm, startSwtpm } from '@umbra/tpm2/testing';
import { pino } from 'pino';
import { bootPcrs, ekCaBundle, extendBootPcr } from '../src/session-rig.ts';
import { GATEWAY_BIN, TOOL_ENV } from '../src/umbra.ts';

const quiet = pino({ level: 'silent' });
let swtpm: Swtpm;
let otherSwtpm: Swtpm;
let controller: Awaited<ReturnType<typeof testing.startTestController>>;
let now = Date.now();
const root = mkdtempSync(join(tmpdir(), 'umbra-attest-test-'));
const links: ControllerLink[] = [];

before(async () => {
  [swtpm, otherSwtpm] = await Promise.all([startSwtpm(), startSwtpm()]);
  // The controller's clock, which the stale-nonce test moves on: after the EK certificates' notBefore.
  now = Date.now() + 2_000;
  controller = await testing.startTestController({
    attestIntervalMs: 400,
    clock: () => now,
    logLevel: process.env.UMBRA_TEST_LOG === '1' ? 'error' : 'silent',
  });
});

after(async () => {
  for (const link of links) link.stop();
  await controller?.close();
  await Promise.all([swtpm?.stop(), otherSwtpm?.stop()]);
  rmSync(root, { recursive: true, force: true });
});

async function gatewayToken(name: string): Promise<string> {
  const { store, settings } = controller.data;
  if (!(await store.getGatewayByName(name))) await store.createGateway({ name });
  const { token, secretHash } = createEnrollmentToken({
    url: controller.url,
    pin: settings.caPin,
    kind: 'gateway',
  });
  await store.createEnrollmentToken({
    tokenHash: secretHash,
    kind: 'gateway',
    subjectName: name,
    expiresAt: now + 3_600_000,
  });
  return token;
}

async function refusals(subject: string) {
  return (await controller.data.store.listAudit())
    .filter((entry) => entry.subject === subject && entry.decision === 'deny')
    .map((entry) => entry.reason);
}

async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | false>,
  ms = 10_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function refusedWith(pattern: RegExp) {
  return (error: unknown) => error instanceof ControllerApiError && pattern.test(error.message);
}

describe('attested enrollment refusals', () => {
  test('with no EK root trusted, or another manufacturer’s only, enrollment is refused and the token kept', async () => {
    const token = await gatewayToken('branch-a');
    await assert.rejects(
      enrollGatewayWithTpm(token, join(root, 'a1'), { tpm: swtpm.address }),
      refusedWith(/trusts no TPM manufacturer yet: add the EK CA with `umbra-controller ekca add FILE`/),
    );
    // A CA that did not issue this EK certificate.
    const other = await startSwtpm();
    try {
      await controller.data.store.addEkRoots(parseEkRoots(ekCaBundle(other), 'other.pem'), now, 'cli');
    } finally {
      await other.stop();
    }
    await assert.rejects(
      enrollGatewayWithTpm(token, join(root, 'a2'), { tpm: swtpm.address }),
      refusedWith(/not from a trusted TPM manufacturer: (unknown issuer|signature)/),
    );
    assert.equal(
      (await refusals('branch-a')).filter((reason) => /TPM manufacturer/.test(reason ?? '')).length,
      2,
    );
    // Now the right roots (this swtpm's and the second box's share nothing: each has its own CA).
    for (const tpm of [swtpm, otherSwtpm])
      await controller.data.store.addEkRoots(parseEkRoots(ekCaBundle(tpm), 'swtpm.pem'), now, 'cli');
  });

  test('PCRs that differ from the golden values of the firmware reported are refused, naming them', async () => {
    const token = await gatewayToken('branch-b');
    const golden = await bootPcrs(swtpm.address);
    await controller.data.store.addFirmwarePcrs(
      { version: '0.9', bank: 'sha256', pcrs: { ...golden, '7': 'ab'.repeat(32) } },
      now,
      'cli',
    );
    await assert.rejects(
      enrollGatewayWithTpm(token, join(root, 'b'), { tpm: swtpm.address, firmwareVersion: '0.9' }),
      refusedWith(/boot PCRs differ from the golden values of firmware 0\.9: sha256 PCR 7 differs/),
    );
    assert.match((await refusals('branch-b')).at(-1) ?? '', /sha256 PCR 7 differs/);
  });

  test('a failed activation, a forged quote and a stale or reused nonce are refused', async () => {
    const token = await gatewayToken('branch-c');
    const tpm = await GatewayTpm.open(swtpm.address);
    const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
    try {
      const endorsement = await tpm.readEndorsement();
      const keys = await tpm.createKeys();
      const caPem = controller.data.ca.pem;
      const ask = async () =>
        (await postJson(new URL(ATTEST_CHALLENGE_PATH, controller.url), caPem, {
          token,
          ekCertificate: b64(endorsement.certificate),
          ekPublic: b64(endorsement.publicBytes),
          akPublic: b64(keys.akPublic),
        })) as AttestChallengeResponse;
      const answer = async (
        challenge: AttestChallengeResponse,
        tamper: (body: Record<string, unknown>) => void,
      ) => {
        const nonce = Buffer.from(challenge.nonce, 'base64');
        const secret = await tpm.activateCredential(
          endorsement.kind,
          Buffer.from(challenge.credentialBlob, 'base64'),
          Buffer.from(challenge.encryptedSecret, 'base64'),
        );
        const quote = await tpm.quote(nonce, 'sha256', challenge.pcrs.pcrs);
        const certify = await tpm.certifyIdentity(nonce);
        const body: Record<string, unknown> = {
          token,
          challenge: challenge.challenge,
          secret: b64(secret),
          quote: { attest: b64(quote.attest), signature: b64(quote.signature) },
          pcrValues: Object.fromEntries(
            [...quote.pcrValues].map(([i, d]) => [String(i), Buffer.from(d).toString('hex')]),
          ),
          identityPublic: b64(keys.identityPublic),
          identityCertify: { attest: b64(certify.attest), signature: b64(certify.signature) },
          spaPublicKey: encodeKey(generateGatewayKeyPair().publicKey),
          csr: await createCertificateRequest(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey),
        };
        tamper(body);
        return postJson(new URL(ATTEST_ENROLL_PATH, controller.url), caPem, body);
      };

      await assert.rejects(
        answer(await ask(), (body) => {
          body.secret = b64(Buffer.alloc(32, 7));
        }),
        refusedWith(
          /credential activation failed: the attestation key is not in the TPM that holds the certified EK/,
        ),
      );
      await assert.rejects(
        answer(await ask(), (body) => {
          const quote = body.quote as { signature: string };
          const signature = Buffer.from(quote.signature, 'base64');
          signature[signature.length - 1]! ^= 1;
          quote.signature = b64(signature);
        }),
        refusedWith(/the quote does not verify/),
      );
      // Older than the challenge's 60 s.
      const stale = await ask();
      now += 61_000;
      await assert.rejects(
        answer(stale, () => {}),
        refusedWith(/stale nonce/),
      );
      // Answered once (refused for a forged PCR value), the same challenge is spent.
      const once = await ask();
      await assert.rejects(
        answer(once, (body) => {
          (body.pcrValues as Record<string, string>)['0'] = 'cd'.repeat(32);
        }),
        refusedWith(/the quote does not verify: .*PCR/i),
      );
      await assert.rejects(
        answer(once, () => {}),
        refusedWith(/stale nonce/),
      );
      const reasons = await refusals('branch-c');
      for (const pattern of [/credential activation failed/, /quote does not verify/, /stale nonce/])
        assert.ok(
          reasons.some((reason) => pattern.test(reason ?? '')),
          `audited: ${pattern}`,
        );
      // None of this spent the token: a correct answer still enrolls.
      const good = await answer(await ask(), () => {});
      assert.equal((good as { gateway: string }).gateway, 'branch-c');
    } finally {
      await tpm.close();
    }
  });
});

describe('an attested gateway', () => {
  const dir = join(root, 'good');
  const name = 'branch-good';

  test('enrolls approved against its firmware’s golden PCRs; the TLS key exists only sealed', async () => {
    await controller.data.store.addFirmwarePcrs(
      { version: '1.0', bank: 'sha256', pcrs: await bootPcrs(swtpm.address) },
      now,
      'cli',
    );
    const steps: string[] = [];
    const enrolled = await enrollGatewayWithTpm(await gatewayToken(name), dir, {
      tpm: swtpm.address,
      firmwareVersion: '1.0',
      progress: (step) => steps.push(step),
    });
    assert.equal(enrolled.attestation, 'approved');
    assert.ok(steps.some((step) => /sealing/.test(step)));
    const gateway = await controller.data.store.getGatewayByName(name);
    assert.equal(gateway?.status, 'enrolled');
    assert.equal(gateway?.attestation.state, 'approved');
    assert.match(gateway?.tpm?.ekHash ?? '', /^[0-9a-f]{64}$/);
    assert.throws(() => readFileSync(join(dir, 'tls.key')), /ENOENT/);
    assert.equal(readFileSync(join(dir, 'keys.sealed')).subarray(0, 12).toString(), 'UMBRA-SEALED');
  });

  async function link(identity: LinkIdentity | undefined, key: string): Promise<ControllerLink> {
    const started = new ControllerLink({
      url: new URL(controller.url),
      key,
      cert: readFileSync(join(dir, 'tls.crt'), 'utf8'),
      ca: readFileSync(join(dir, 'ca.crt'), 'utf8'),
      endpoint: { host: '127.0.0.1', spaPort: 62201, tunnelPort: 8443 },
      snapshotVersion: () => null,
      onPolicy: () => {},
      onRevoke: () => {},
      log: quiet,
      random: () => 1,
      ...(identity ? { identity } : {}),
    });
    links.push(started);
    started.start();
    return started;
  }

  test('its link is refused without the TPM’s channel binding, or with one for another connection', async () => {
    const { tpm, keys } = await unsealKeys(dir);
    /** Starts a link, waits until the controller audits its refusal for `reason`, stops it. */
    const refusedLink = async (identity: LinkIdentity | undefined, reason: RegExp) => {
      const before = (await refusals(name)).length;
      const started = await link(identity, keys.tlsKey);
      try {
        await waitFor(`a refusal matching ${reason}`, async () =>
          (await refusals(name)).slice(before).some((found) => reason.test(found ?? '')),
        );
      } finally {
        started.stop();
      }
    };
    try {
      await refusedLink(undefined, /carries no channel binding/);
      await refusedLink(
        {
          bind: () => tpm.signWithIdentity(linkBindingDigest(Buffer.alloc(32, 1))),
          attest: () => Promise.reject(new Error('not asked')),
        },
        /does not verify with the gateway's TPM identity key/,
      );
      assert.equal((await controller.data.store.getGatewayByName(name))?.connectedAt, null);
    } finally {
      await tpm.close();
    }
  });

  test('bound by its TPM, it links; a boot-state drift quarantines it at the next re-attestation', async () => {
    const { tpm, keys } = await unsealKeys(dir);
    try {
      const identity = tpmLinkIdentity(tpm);
      const bound = await link(identity, keys.tlsKey);
      await waitFor(
        'the link up',
        async () => (await controller.data.store.getGatewayByName(name))?.connectedAt,
      );
      assert.equal(bound.connected, true);
      const connectedAt = (await controller.data.store.getGatewayByName(name))?.connectedAt;
      // The TLS key and certificate alone (no TPM) cannot push the real link off: refused at hello.
      const before0 = (await refusals(name)).length;
      const intruder = await link(undefined, keys.tlsKey);
      try {
        await waitFor('the intruder refused', async () =>
          (await refusals(name))
            .slice(before0)
            .some((found) => /carries no channel binding/.test(found ?? '')),
        );
      } finally {
        intruder.stop();
      }
      assert.equal(bound.connected, true);
      assert.equal((await controller.data.store.getGatewayByName(name))?.connectedAt, connectedAt);
      // Re-attestations while nothing changed write nothing.
      const before = (await controller.data.store.listAudit()).length;
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.equal((await controller.data.store.getGatewayByName(name))?.attestation.state, 'approved');
      assert.equal(
        (await controller.data.store.listAudit()).filter((entry) => entry.subject === name).length,
        (await controller.data.store.listAudit()).slice(0, before).filter((entry) => entry.subject === name)
          .length,
      );

      await extendBootPcr(swtpm.address, 7);
      const quarantined = await waitFor('the quarantine', async () => {
        const gateway = await controller.data.store.getGatewayByName(name);
        return gateway?.attestation.state === 'quarantined' && gateway;
      });
      assert.match(
        quarantined.attestation.quarantineReason ?? '',
        /drifted from its golden values: sha256 PCR 7 differs/,
      );
      const audit = await controller.data.store.listAudit();
      assert.ok(audit.some((entry) => entry.action === 'gateway.quarantine' && entry.subject === name));
      // No new pinholes: the controller's view refuses every knock through it.
      const view = await controller.server.links.views.invalidate(await controller.data.store.lastAuditSeq());
      assert.match(gatewayRefusal(view.gateways.get(name), name) ?? '', /is quarantined: boot state drifted/);
      bound.stop();
    } finally {
      await tpm.close();
    }
  });

  test('the sealed keys do not open in another boot state, nor on another box', async () => {
    await assert.rejects(
      unsealKeys(dir),
      /sha256 PCR 7 differs.*booted other firmware than it enrolled with/s,
    );
    // The second box's TPM, before it ever enrolled: no storage key at all.
    await assert.rejects(
      unsealKeys(dir, otherSwtpm.address),
      /no Umbra storage key: it was cleared, or this disk came from another box/,
    );
  });

  test('without golden values it awaits approval and no knock is allowed until an operator approves', async () => {
    const enrolled = await enrollGatewayWithTpm(await gatewayToken('branch-new'), join(root, 'new'), {
      tpm: otherSwtpm.address,
    });
    assert.equal(enrolled.attestation, 'awaiting-approval');
    // Its TPM now has a storage key of its own, which cannot load what the first box sealed.
    await assert.rejects(unsealKeys(dir, otherSwtpm.address), /sealed by another TPM.*re-enroll this one/s);
    const { store } = controller.data;
    assert.equal((await store.getGatewayByName('branch-new'))?.attestation.state, 'awaiting-approval');
    const view = await controller.server.links.views.invalidate(await store.lastAuditSeq());
    assert.match(gatewayRefusal(view.gateways.get('branch-new'), 'branch-new') ?? '', /awaits approval/);
    await store.approveGateway('branch-new', now, 'cli');
    assert.equal((await store.getGatewayByName('branch-new'))?.attestation.state, 'approved');
    const approved = await controller.server.links.views.invalidate(await store.lastAuditSeq());
    assert.equal(gatewayRefusal(approved.gateways.get('branch-new'), 'branch-new'), null);
  });
});

describe('zero-touch: a box with no token enrolls by its claimed TPM', () => {
  test('refused without a claim; enrolls once claimed; the claim is spent', async () => {
    const box = await startSwtpm();
    now = Math.max(now, Date.now() + 2_000); // after its EK certificate's notBefore
    try {
      await controller.data.store.addEkRoots(parseEkRoots(ekCaBundle(box), 'box.pem'), now, 'cli');
      const firmware = {
        controllerUrl: controller.url,
        caPin: controller.data.settings.caPin,
        tpm: box.address,
      };
      const refused = await enrollGatewayWithTpm(null, join(root, 'zt1'), firmware).then(
        () => assert.fail('enrolled without a claim'),
        (error: unknown) => error as Error,
      );
      const hash = /EK hash ([0-9a-f]{64})/.exec(refused.message)?.[1];
      assert.ok(hash, refused.message);
      assert.match(refused.message, /no token, and no claim for this TPM .*gateway claim --ek-hash/);

      await controller.data.store.createGateway({ name: 'lyon-1' });
      await controller.data.store.addGatewayClaim(
        { ekHash: hash, gateway: 'lyon-1', site: 'Lyon' },
        now,
        'cli',
      );
      const enrolled = await enrollGatewayWithTpm(null, join(root, 'zt2'), firmware);
      assert.equal(enrolled.gateway, 'lyon-1');
      assert.equal(enrolled.attestation, 'awaiting-approval');
      const gateway = await controller.data.store.getGatewayByName('lyon-1');
      assert.equal(gateway?.tpm?.ekHash, hash);
      assert.notEqual((await controller.data.store.getGatewayClaim(hash))?.usedAt, null);
      await assert.rejects(
        enrollGatewayWithTpm(null, join(root, 'zt3'), firmware),
        refusedWith(/claim for this TPM .* was already used/),
      );
      // A token-less enrollment needs the pin its firmware carries; a wrong one trusts nothing.
      await assert.rejects(
        enrollGatewayWithTpm(null, join(root, 'zt4'), { ...firmware, caPin: `sha256/${'A'.repeat(43)}=` }),
        /pin/i,
      );
    } finally {
      await box.stop();
    }
  });
});

describe('umbra-gateway enroll --tpm, the command a technician types', () => {
  test('an expired token is refused on the console; --controller reaches a controller the token does not name', async () => {
    const box = await startSwtpm();
    now = Math.max(now, Date.now() + 2_000); // after its EK certificate's notBefore
    const enroll = (args: string[]) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        execFile(
          GATEWAY_BIN,
          ['enroll', ...args],
          { env: TOOL_ENV, timeout: 60_000 },
          (error, _stdout, stderr) =>
            resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr }),
        );
      });
    try {
      await controller.data.store.addEkRoots(parseEkRoots(ekCaBundle(box), 'cli-box.pem'), now, 'cli');
      const { store, settings } = controller.data;
      await store.createGateway({ name: 'branch-cli' });
      const tokenFor = async (url: string, expiresAt: number) => {
        const { token, secretHash } = createEnrollmentToken({ url, pin: settings.caPin, kind: 'gateway' });
        await store.createEnrollmentToken({
          tokenHash: secretHash,
          kind: 'gateway',
          subjectName: 'branch-cli',
          expiresAt,
        });
        return token;
      };

      // A token that lapsed: the controller's clock moves past its expiry.
      const expiredToken = await tokenFor(controller.url, Math.max(now, Date.now()) + 60_000);
      now = Math.max(now, Date.now()) + 120_000;
      const expired = await enroll([
        '--token',
        expiredToken,
        '--dir',
        join(root, 'cli-expired'),
        '--tpm',
        box.address,
      ]);
      assert.notEqual(expired.code, 0);
      assert.match(expired.stderr, /this enrollment token has expired; ask for a new one/);

      // The token names a controller nobody answers at; --controller says where it is.
      const moved = await enroll([
        '--token',
        await tokenFor('https://127.0.0.1:9/', now + 3_600_000),
        '--dir',
        join(root, 'cli-moved'),
        '--tpm',
        box.address,
        '--controller',
        controller.url,
      ]);
      assert.equal(moved.code, 0, moved.stderr);
      assert.match(moved.stderr, /enrolled as branch-cli/);
      assert.match(moved.stderr, /attested, awaiting approval/);
      assert.equal((await store.getGatewayByName('branch-cli'))?.attestation.state, 'awaiting-approval');
    } finally {
      await box.stop();
    }
  });
});
