export { type Decision, type DecisionInput, decide, type PolicyRule } from './decision.ts';
export {
  type Comparison,
  compareVersions,
  formatRequirement,
  meets,
  type PostureValue,
  parseRequirement,
  type Requirement,
  RequirementError,
} from './requirement.ts';
export { type PolicyText, policyRule } from './rule.ts';
export { isWithin, localTime, parseDays, parseHours, type Schedule, ScheduleError } from './schedule.ts';
