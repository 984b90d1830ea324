export {
  type AddressFamily,
  type CheckedPinholeKey,
  checkPinholeKey,
  checkPinholeRequest,
  type Firewall,
  MAX_PORT,
  MAX_TTL_SECONDS,
  MemoryFirewall,
  type Pinhole,
  type PinholeKey,
  type PinholeProtocol,
  type PinholeRequest,
} from './firewall.ts';
export { LIBNFTABLES, Libnftables, NftablesError } from './libnftables.ts';
export { NftablesFirewall } from './nftables-firewall.ts';
export {
  BASE_CHAINS,
  BASE_RULES,
  baseRulesetText,
  type ChainSpec,
  describeDrift,
  installCommands,
  PINHOLE_SETS,
  PINHOLES4,
  PINHOLES6,
  type RuleSpec,
  type SetSpec,
  TABLE_FAMILY,
  TABLE_NAME,
} from './ruleset.ts';
