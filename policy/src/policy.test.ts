import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { decide, type PolicyRule } from './decision.ts';
import { compareVersions, meets, parseRequirement, RequirementError } from './requirement.ts';
import { policyRule } from './rule.ts';
import { isWithin, parseDays, parseHours, ScheduleError } from './schedule.ts';

describe('requirements', () => {
  test('parse the four forms and refuse the rest with the accepted forms named', () => {
    assert.deepEqual(parseRequirement('disk_encryption=on'), {
      key: 'disk_encryption',
      op: '=',
      value: 'on',
    });
    assert.deepEqual(parseRequirement('os_version>=13.2'), { key: 'os_version', op: '>=', value: '13.2' });
    assert.deepEqual(parseRequirement('firewall!=off'), { key: 'firewall', op: '!=', value: 'off' });
    for (const bad of ['', 'x', '=on', 'Disk=on', 'os_version>=thirteen', 'a==b', 'key=two words'])
      assert.throws(() => parseRequirement(bad), RequirementError, bad);
  });

  test('versions compare by number, part by part', () => {
    assert.equal(compareVersions('13.2.1', '13.2'), 1);
    assert.equal(compareVersions('13.2', '13.2.0'), 0);
    assert.equal(compareVersions('9.10', '9.9'), 1);
    assert.equal(compareVersions('6.1.0', '6.12'), -1);
  });

  test('a missing or malformed claim never meets a requirement', () => {
    assert.equal(meets(parseRequirement('os_version>=13'), {}), false);
    assert.equal(meets(parseRequirement('os_version>=13'), { os_version: 'Sonoma' }), false);
    assert.equal(meets(parseRequirement('firewall!=off'), {}), false);
    assert.equal(meets(parseRequirement('screen_lock=true'), { screen_lock: true }), true);
    assert.equal(meets(parseRequirement('os_version>=13.2'), { os_version: '14.0.1' }), true);
  });
});

describe('schedules', () => {
  const at = (iso: string) => new Date(iso);

  test('hours, including intervals across midnight', () => {
    const office = { hours: parseHours('08:00-18:00') };
    assert.equal(isWithin(office, at('2026-11-18T07:59:00Z'), 'UTC'), false);
    assert.equal(isWithin(office, at('2026-11-18T08:00:00Z'), 'UTC'), true);
    assert.equal(isWithin(office, at('2026-11-18T17:59:00Z'), 'UTC'), true);
    assert.equal(isWithin(office, at('2026-11-18T18:00:00Z'), 'UTC'), false);
    const night = { hours: parseHours('22:00-06:00') };
    assert.equal(isWithin(night, at('2026-11-18T23:30:00Z'), 'UTC'), true);
    assert.equal(isWithin(night, at('2026-11-18T05:59:00Z'), 'UTC'), true);
    assert.equal(isWithin(night, at('2026-11-18T12:00:00Z'), 'UTC'), false);
  });

  test('days, and the time zone of the office', () => {
    const weekdays = { hours: parseHours('08:00-18:00'), days: parseDays('mon-fri') };
    assert.equal(isWithin(weekdays, at('2026-11-21T10:00:00Z'), 'UTC'), false, 'Saturday');
    assert.equal(isWithin(weekdays, at('2026-11-20T10:00:00Z'), 'UTC'), true, 'Friday');
    // 07:30 UTC is 08:30 in Berlin (UTC+1 in November).
    assert.equal(isWithin(weekdays, at('2026-11-20T07:30:00Z'), 'Europe/Berlin'), true);
    assert.equal(isWithin(weekdays, at('2026-11-20T07:30:00Z'), 'UTC'), false);
    // A Friday-night shift still counts as Friday after midnight.
    const fridayNight = { hours: parseHours('22:00-06:00'), days: parseDays('fri') };
    assert.equal(isWithin(fridayNight, at('2026-11-21T02:00:00Z'), 'UTC'), true);
    assert.equal(isWithin(fridayNight, at('2026-11-22T02:00:00Z'), 'UTC'), false);
  });

  test('bad input names the option and the format', () => {
    for (const bad of ['8-18', '08:00-08:00', '25:00-26:00', '08:00'])
      assert.throws(() => parseHours(bad), ScheduleError, bad);
    assert.deepEqual([...parseDays('fri-mon')].sort(), [0, 1, 5, 6]);
    assert.throws(() => parseDays('funday'), /--days "funday"/);
  });
});

describe('decide', () => {
  const policy = (overrides: Partial<PolicyRule> = {}): PolicyRule => ({
    id: 'p1',
    serviceName: 'db',
    requirements: [],
    maxTtlSeconds: 30,
    ...overrides,
  });
  const base = {
    identity: { name: 'alice', disabled: false, revoked: false },
    serviceName: 'db',
    posture: { disk_encryption: 'on', os_version: '14.1' },
    now: new Date('2026-11-20T10:00:00Z'),
    timeZone: 'UTC',
  };

  test('allows with the policy TTL, or the shorter one the client asked for', () => {
    assert.deepEqual(decide({ ...base, policies: [policy()] }), {
      allow: true,
      ttlSeconds: 30,
      policyId: 'p1',
    });
    assert.deepEqual(decide({ ...base, policies: [policy()], requestedTtlSeconds: 10 }), {
      allow: true,
      ttlSeconds: 10,
      policyId: 'p1',
    });
    assert.equal(decide({ ...base, policies: [policy()], requestedTtlSeconds: 999 }).allow && 30, 30);
  });

  test('refuses with a reason an operator can act on', () => {
    const reason = (input: Parameters<typeof decide>[0]) => {
      const decision = decide(input);
      assert.equal(decision.allow, false);
      return (decision as { reason: string }).reason;
    };
    assert.match(reason({ ...base, policies: [] }), /no policy lets alice reach db/);
    assert.match(reason({ ...base, policies: [policy({ serviceName: 'ssh' })] }), /no policy/);
    assert.match(
      reason({ ...base, identity: { ...base.identity, revoked: true }, policies: [policy()] }),
      /revoked/,
    );
    assert.match(
      reason({ ...base, identity: { ...base.identity, disabled: true }, policies: [policy()] }),
      /disabled/,
    );
    assert.match(
      reason({ ...base, policies: [policy({ hours: parseHours('20:00-22:00') })] }),
      /policy p1: outside the allowed hours/,
    );
    assert.match(
      reason({ ...base, policies: [policy({ requirements: [parseRequirement('os_version>=15')] })] }),
      /posture os_version>=15 not met \(device reports os_version=14.1\)/,
    );
    assert.match(
      reason({ ...base, policies: [policy({ requirements: [parseRequirement('firewall=on')] })] }),
      /device reports nothing/,
    );
  });

  test('one policy that holds is enough, and the longest grant wins', () => {
    const decision = decide({
      ...base,
      policies: [
        policy({ id: 'strict', requirements: [parseRequirement('os_version>=15')], maxTtlSeconds: 600 }),
        policy({ id: 'short', maxTtlSeconds: 30 }),
        policy({ id: 'long', maxTtlSeconds: 120 }),
      ],
    });
    assert.deepEqual(decision, { allow: true, ttlSeconds: 120, policyId: 'long' });
  });

  test('a refused posture is never allowed, whatever else the device claims', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.stringMatching(/^[a-z]{1,8}$/), fc.string({ maxLength: 8 })), (claims) => {
        const posture = { ...claims, disk_encryption: 'off' };
        const decision = decide({
          ...base,
          posture,
          policies: [policy({ requirements: [parseRequirement('disk_encryption=on')] })],
        });
        assert.equal(decision.allow, false);
      }),
      { numRuns: 200 },
    );
  });
});

describe('policyRule', () => {
  test('reads the text a snapshot carries into the rule decide() uses', () => {
    const rule = policyRule({
      id: 'p1',
      service: 'db',
      requirements: ['disk_encryption=on', 'os_version>=12'],
      hours: '08:00-18:00',
      days: 'mon-fri',
      maxTtlSeconds: 30,
    });
    assert.equal(rule.serviceName, 'db');
    assert.deepEqual(rule.hours, { from: 480, to: 1080 });
    assert.deepEqual([...rule.days!].sort(), [1, 2, 3, 4, 5]);
    assert.equal(rule.requirements.length, 2);
    const monday10 = new Date('2026-11-23T10:00:00Z');
    const allowed = decide({
      identity: { name: 'a', disabled: false, revoked: false },
      serviceName: 'db',
      policies: [rule],
      posture: { disk_encryption: 'on', os_version: '12.4' },
      now: monday10,
      timeZone: 'UTC',
    });
    assert.equal(allowed.allow, true);
  });

  test('names the text that does not parse', () => {
    const base = { id: 'p', service: 's', requirements: [], hours: null, days: null, maxTtlSeconds: 1 };
    assert.throws(() => policyRule({ ...base, hours: '8-18' }), ScheduleError);
    assert.throws(() => policyRule({ ...base, requirements: ['=x'] }), RequirementError);
  });
});
