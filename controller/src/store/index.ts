export { StoreError, type StoreErrorCode } from './errors.ts';
export { PgStore, type PgStoreOptions } from './pg-store.ts';
export { MIGRATIONS, MIGRATIONS_TABLE, type Migration, pendingMigrations, SCHEMA_VERSION } from './schema.ts';
export { DATABASE_FILE, SqliteStore, type SqliteStoreOptions } from './sqlite-store.ts';
export * from './store.ts';
export { DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS } from './validate.ts';
