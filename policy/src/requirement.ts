// Posture requirements a policy can make of a device: `--require KEY=VALUE`, `KEY!=VALUE`,
// `KEY>=VERSION`, `KEY<=VERSION`. Values are compared as text, except that >= and <= compare
// dotted version numbers ("13.2.1" >= "13.2"), which is what "OS version at least X" means.

export type PostureValue = string | number | boolean;
export type Comparison = '=' | '!=' | '>=' | '<=';

export interface Requirement {
  key: string;
  op: Comparison;
  value: string;
}

const REQUIREMENT = /^([a-z][a-z0-9_.]{0,31})(=|!=|>=|<=)([^\s=<>!]{1,64})$/;
const VERSION = /^\d+(\.\d+){0,5}$/;

export class RequirementError extends Error {
  override name = 'RequirementError';
}

/** Parses `--require` text; the error says what the accepted forms are. */
export function parseRequirement(text: string): Requirement {
  const match = REQUIREMENT.exec(text);
  if (!match)
    throw new RequirementError(
      `--require "${text}": expected KEY=VALUE, KEY!=VALUE, KEY>=VERSION or KEY<=VERSION, with KEY in lower case (e.g. disk_encryption=on, os_version>=13.2)`,
    );
  const [, key, op, value] = match as unknown as [string, string, Comparison, string];
  if ((op === '>=' || op === '<=') && !VERSION.test(value))
    throw new RequirementError(
      `--require "${text}": ${op} compares dotted version numbers such as 13.2.1, not "${value}"`,
    );
  return { key, op, value };
}

export function formatRequirement(requirement: Requirement): string {
  return `${requirement.key}${requirement.op}${requirement.value}`;
}

/** Whether the device's reported posture meets the requirement. A claim that is missing never does. */
export function meets(requirement: Requirement, posture: Readonly<Record<string, PostureValue>>): boolean {
  const claimed = posture[requirement.key];
  if (claimed === undefined) return false;
  const text = String(claimed);
  switch (requirement.op) {
    case '=':
      return text === requirement.value;
    case '!=':
      return text !== requirement.value;
    case '>=':
      return VERSION.test(text) && compareVersions(text, requirement.value) >= 0;
    case '<=':
      return VERSION.test(text) && compareVersions(text, requirement.value) <= 0;
  }
}

/** Compares dotted numbers part by part; missing parts count as 0 ("13.2" equals "13.2.0"). */
export function compareVersions(a: string, b: string): number {
  const left = a.split('.').map(Number);
  const right = b.split('.').map(Number);
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const difference = (left[i] ?? 0) - (right[i] ?? 0);
    if (difference !== 0) return Math.sign(difference);
  }
  return 0;
}
