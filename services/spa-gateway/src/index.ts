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
export { enrollGateway, type GatewayEnrollment } from './enroll.ts';
export * from './firewall/index.ts';
export { type Datagram, parseDatagram } from './frame.ts';
export { type GatewayStats, type RunningGateway, STATS_FILE, startGateway } from './gateway.ts';
export { createGatewayKeys, loadGatewayKeys, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE } from './keys.ts';
export { KnockPipeline } from './pipeline.ts';
export { REJECT_REASONS, Rejections, type RejectReason } from './rejections.ts';
export { ReplayGuard } from './replay.ts';
export * from './tunnel/index.ts';
