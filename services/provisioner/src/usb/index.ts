export {
  type DeviceCandidate,
  defaultAcceptDevice,
  MAX_BUNDLE_BYTES,
  SUPPORTED_FILESYSTEMS,
  type UsbBundle,
  UsbBundleWatcher,
  type UsbBundleWatcherOptions,
  type UsbLogger,
  type UsbLogLevel,
  UsbStickError,
  type UsbStickErrorCode,
} from './watcher.ts';
