export { type Grant, type GrantRemoval, type GrantRequest, Grants } from './grants.ts';
export { type Posture, splitHostPort, TunnelListener, type TunnelListenerOptions } from './listener.ts';
export { type PeerIdentity, peerIdentityOf } from './peer-identity.ts';
