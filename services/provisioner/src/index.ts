// @umbra/provisioner: the box's provisioner (README.md). startProvisioner is what test-rig drives.

export { LOG_FILE, ProvisionerLog } from './log.ts';
export {
  applyNetworkTransaction,
  deviceFor,
  isApplied,
  LinuxNetworkApplier,
  type LinuxNetworkOptions,
  MemoryNetworkApplier,
  type MemoryNetworkOptions,
  type NetworkApplier,
  NetworkError,
  type NetworkErrorCode,
  type NetworkSettings,
  type NetworkSnapshot,
  verifyControllerReachable,
} from './network.ts';
export {
  DEFAULT_TRUST_DIR,
  ENROLLMENT_FILE,
  type EnrollFunction,
  type EnrollOptions,
  enrollWithTpm,
  loadTrustedKeys,
  type ProgressEvent,
  ProvisionError,
  Provisioner,
  type ProvisionerOptions,
  patternFor,
} from './provisioner.ts';
export {
  BoxIdentity,
  type BoxIdentityOptions,
  readEkHash,
  SerialServer,
  type SerialServerOptions,
} from './serial-server.ts';
export {
  applyFromStick,
  type ProvisionerHandle,
  type StartProvisionerOptions,
  startProvisioner,
} from './start.ts';
export {
  BUNDLE_FILE,
  PROVISIONING_STEPS,
  type ProvisioningStep,
  readStatus,
  STATE_FILE,
  StateFileError,
  type StateRecord,
  StateStore,
} from './state.ts';
