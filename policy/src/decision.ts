// The decision for one knock: may this identity reach this service now, in this posture, and for
// how long. Pure: the caller loads the identity, the service and the policies that name the
// identity or one of its groups, and records the decision with its reason in the audit log.

import { formatRequirement, meets, type PostureValue, type Requirement } from './requirement.ts';
import { isWithin, type Schedule } from './schedule.ts';

export interface PolicyRule extends Schedule {
  id: string;
  serviceName: string;
  requirements: readonly Requirement[];
  maxTtlSeconds: number;
}

export interface DecisionInput {
  identity: { name: string; disabled: boolean; revoked: boolean };
  serviceName: string;
  /** Policies naming the identity or one of its groups, for any service. */
  policies: readonly PolicyRule[];
  posture: Readonly<Record<string, PostureValue>>;
  now: Date;
  timeZone: string;
  /** What the client asked for, if anything: the grant is never longer than the policy allows. */
  requestedTtlSeconds?: number;
}

export type Decision =
  | { allow: true; ttlSeconds: number; policyId: string }
  | { allow: false; reason: string };

export function decide(input: DecisionInput): Decision {
  const { identity, serviceName, posture, now, timeZone } = input;
  if (identity.revoked) return { allow: false, reason: `identity ${identity.name} is revoked` };
  if (identity.disabled) return { allow: false, reason: `identity ${identity.name} is disabled` };
  const candidates = input.policies.filter((policy) => policy.serviceName === serviceName);
  if (candidates.length === 0)
    return { allow: false, reason: `no policy lets ${identity.name} reach ${serviceName}` };

  // Any one policy that holds is enough; when several hold, the longest grant wins. The reason
  // for a refusal is the first failing check of the first policy, which is what an operator
  // reading the audit log needs to fix it.
  let best: PolicyRule | undefined;
  let firstFailure: string | undefined;
  for (const policy of candidates) {
    const failure = failureOf(policy, posture, now, timeZone);
    if (failure) {
      firstFailure ??= `policy ${policy.id}: ${failure}`;
      continue;
    }
    if (!best || policy.maxTtlSeconds > best.maxTtlSeconds) best = policy;
  }
  if (!best) return { allow: false, reason: firstFailure! };
  const requested = input.requestedTtlSeconds;
  const ttlSeconds =
    requested && requested > 0 ? Math.min(requested, best.maxTtlSeconds) : best.maxTtlSeconds;
  return { allow: true, ttlSeconds, policyId: best.id };
}

function failureOf(
  policy: PolicyRule,
  posture: Readonly<Record<string, PostureValue>>,
  now: Date,
  timeZone: string,
): string | undefined {
  if (!isWithin(policy, now, timeZone)) return 'outside the allowed hours or days';
  for (const requirement of policy.requirements) {
    if (!meets(requirement, posture)) {
      const claimed = posture[requirement.key];
      return `posture ${formatRequirement(requirement)} not met (device reports ${claimed === undefined ? 'nothing' : `${requirement.key}=${String(claimed)}`})`;
    }
  }
  return undefined;
}
