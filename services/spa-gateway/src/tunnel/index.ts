export { type Grant, type GrantRemoval, type GrantRequest, Grants } from './grants.ts';
export {
  defaultTunnelWorkers,
  MAX_TUNNEL_WORKERS,
  type Posture,
  splitHostPort,
  TunnelListener,
  type TunnelListenerOptions,
} from './listener.ts';
export { type PeerIdentity, peerIdentityOf } from './peer-identity.ts';
