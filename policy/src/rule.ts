// A policy as text (the controller's store, a signed snapshot) turned into the rule decide() reads.
// One parser for both, so the controller and a gateway deciding from its cache can never disagree
// on what "08:00-18:00" or "osVersion>=12" means.

import type { PolicyRule } from './decision.ts';
import { parseRequirement } from './requirement.ts';
import { parseDays, parseHours } from './schedule.ts';

export interface PolicyText {
  id: string;
  /** The service's name. */
  service: string;
  requirements: readonly string[];
  hours: string | null;
  days: string | null;
  maxTtlSeconds: number;
}

/** Throws RequirementError or ScheduleError naming the text that does not parse. */
export function policyRule(policy: PolicyText): PolicyRule {
  const rule: PolicyRule = {
    id: policy.id,
    serviceName: policy.service,
    requirements: policy.requirements.map(parseRequirement),
    maxTtlSeconds: policy.maxTtlSeconds,
  };
  if (policy.hours !== null) rule.hours = parseHours(policy.hours);
  if (policy.days !== null) rule.days = parseDays(policy.days);
  return rule;
}
