// @umbra/controller: the controller's parts, for the link and the tests that drive them. The
// store's record types share names with the CA's and the decision engine's, so it is exported
// as a namespace.

export * from '@umbra/policy';
export * from './ca/index.ts';
export { type ControllerSettings, type DataDir, DataDirError, initDataDir, openDataDir } from './data-dir.ts';
export * as store from './store/index.ts';
export { SqliteStore, type Store, StoreError } from './store/index.ts';
