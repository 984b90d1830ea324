export { type ConnectOptions, type RunningConnect, startConnect } from './connect.ts';
export { ControlChannel, reconnectDelayMs } from './control-channel.ts';
export { fetchServiceRoute, requestRenewal, type ServiceRoute } from './controller-client.ts';
export { type Device, DeviceError, loadDevice, type TlsCredentials, validityOf } from './device.ts';
export { EnrollError, type Enrollment, enrollDevice, readEnrollment } from './enroll.ts';
export { type GatewayAddress, parseGatewayAddress } from './gateway-address.ts';
export { createIdentityFile, loadIdentityFile } from './identity.ts';
export { localAddressToward, type ResolvedGateway, resolveGateway, sendKnock } from './knock.ts';
export { dialWithKnocks, KnockSchedule } from './knock-schedule.ts';
export { type LinuxPostureOptions, linuxPosture, type Posture } from './posture/linux.ts';
export { renewalDue, renewCertificate, renewsAfter } from './renewal.ts';
export {
  CONTROL_ALPN,
  DialTimeoutError,
  dialTunnel,
  gatewayIdentityCheck,
  serviceAlpn,
} from './tunnel-dial.ts';
