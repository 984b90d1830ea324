export { EnrollError, type Enrollment, enrollDevice, readEnrollment } from './enroll.ts';
export { type GatewayAddress, parseGatewayAddress } from './gateway-address.ts';
export { createIdentityFile, loadIdentityFile } from './identity.ts';
export { localAddressToward, type ResolvedGateway, resolveGateway, sendKnock } from './knock.ts';
export { type LinuxPostureOptions, linuxPosture, type Posture } from './posture/linux.ts';
