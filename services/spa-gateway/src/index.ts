export { type AccessRule, allows, parseAccessRule } from './access.ts';
export { SourceBudget } from './budget.ts';
export { type KnockCapture, MemoryCapture, PcapCapture } from './capture.ts';
export {
  type Client,
  ConfigError,
  type GatewayConfig,
  loadConfig,
  parseConfig,
} from './config.ts';
export { tpmLinkIdentity } from './controller-mode.ts';
export { enrollGateway, type GatewayEnrollment } from './enroll.ts';
export * from './firewall/index.ts';
export { type Datagram, parseDatagram } from './frame.ts';
export { type GatewayStats, type RunningGateway, STATS_FILE, startGateway } from './gateway.ts';
export { createGatewayKeys, loadGatewayKeys, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE } from './keys.ts';
export { ControllerLink, type ControllerLinkOptions, type LinkIdentity } from './link/controller-link.ts';
export { KnockPipeline } from './pipeline.ts';
export { REJECT_REASONS, Rejections, type RejectReason } from './rejections.ts';
export { ReplayGuard } from './replay.ts';
export {
  type AttestedEnrollOptions,
  type AttestedGatewayEnrollment,
  enrollGatewayWithTpm,
} from './tpm/attested-enroll.ts';
export { GatewayTpm, SEAL_PCRS } from './tpm/gateway-tpm.ts';
export {
  isAttested,
  readTpmRecord,
  SEALED_KEYS_FILE,
  TPM_RECORD_FILE,
  type TpmRecord,
  unsealKeys,
} from './tpm/sealed-keys.ts';
export * from './tunnel/index.ts';
