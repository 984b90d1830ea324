export {
  CONTROL_ALPN,
  type ControlFrame,
  ControlFrameError,
  ControlFrameReader,
  encodeControlFrame,
  MAX_CONTROL_FRAME_BYTES,
  SERVICE_ALPN_PREFIX,
} from './control-frame.ts';
export { type Grant, type GrantRemoval, type GrantRequest, Grants } from './grants.ts';
export { type Posture, splitHostPort, TunnelListener, type TunnelListenerOptions } from './listener.ts';
export { type PeerIdentity, peerIdentityOf } from './peer-identity.ts';
