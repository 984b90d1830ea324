// The controller's data directory: the database, the CA and the settings every enrollment token
// carries (the controller's URL and the CA's pin). Created once by `init`; every admin command
// opens it.

import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CertificateAuthority } from './ca/index.ts';
import { PgStore, SqliteStore, type Store } from './store/index.ts';

const SETTINGS_FILE = 'controller.json';
const CA_DIR = 'ca';
const SETTINGS_VERSION = 1;

export type Storage = 'sqlite' | 'postgresql';

export interface ControllerSettings {
  version: number;
  /** Where the records live: controller.db in this directory, or a PostgreSQL database (its URL, which
   * may hold a password, is never written here: every command is given it with --database). */
  storage?: Storage;
  /** Where clients and gateways reach the controller; https only. */
  url: string;
  /** The CA's pin, as enrollment tokens carry it. */
  caPin: string;
  /**
   * The IANA time zone policies' --hours and --days are read in (the branch office's, e.g.
   * Europe/Berlin); UTC when absent.
   */
  timeZone?: string;
}

export const DEFAULT_TIME_ZONE = 'UTC';

/** Whether Intl knows `timeZone` as an IANA name (it throws RangeError for one it does not). */
export function isTimeZone(timeZone: unknown): timeZone is string {
  if (typeof timeZone !== 'string' || timeZone.length === 0 || timeZone.length > 64) return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
    return true;
  } catch {
    return false;
  }
}

/** The time zone the controller decides in. */
export function timeZoneOf(settings: ControllerSettings): string {
  return settings.timeZone ?? DEFAULT_TIME_ZONE;
}

export interface DataDir {
  dir: string;
  settings: ControllerSettings;
  store: Store;
  ca: CertificateAuthority;
}

export class DataDirError extends Error {
  override name = 'DataDirError';
}

async function openStore(dir: string, databaseUrl: string | undefined): Promise<Store> {
  return databaseUrl === undefined ? SqliteStore.open(dir) : PgStore.connect(databaseUrl);
}

/**
 * Creates the directory, the CA and the database (controller.db here, or the schema in the
 * PostgreSQL database at `databaseUrl`); refuses a directory that already holds a controller.
 * Controllers that share one PostgreSQL database share this directory's contents too (the CA).
 */
export async function initDataDir(
  dir: string,
  url: string,
  name: string,
  databaseUrl?: string,
  timeZone?: string,
): Promise<DataDir> {
  if (timeZone !== undefined && !isTimeZone(timeZone))
    throw new DataDirError(
      `--time-zone "${timeZone}": not an IANA time zone; use a name like Europe/Berlin or UTC`,
    );
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new DataDirError(`--url "${url}": not a URL; expected https://HOST:PORT`);
  }
  if (parsed.protocol !== 'https:' || parsed.username || parsed.password || parsed.search || parsed.hash)
    throw new DataDirError(`--url "${url}": expected https://HOST[:PORT] with nothing after the path`);
  if (existsSync(join(dir, SETTINGS_FILE)))
    throw new DataDirError(
      `${dir} already holds a controller (${SETTINGS_FILE}); use another --data directory`,
    );
  if (existsSync(dir) && readdirSync(dir).length > 0)
    throw new DataDirError(`${dir} is not empty; init needs a new or empty --data directory`);
  const existed = existsSync(dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  try {
    mkdirSync(join(dir, CA_DIR), { mode: 0o700 });
    const ca = await CertificateAuthority.create(join(dir, CA_DIR), { name });
    const store = await openStore(dir, databaseUrl);
    const settings: ControllerSettings = {
      version: SETTINGS_VERSION,
      url: parsed.href,
      caPin: ca.pin,
      storage: databaseUrl === undefined ? 'sqlite' : 'postgresql',
      ...(timeZone === undefined ? {} : { timeZone }),
    };
    // Written last: its presence marks a complete controller.
    writeFileSync(join(dir, SETTINGS_FILE), `${JSON.stringify(settings, null, 2)}\n`, { mode: 0o644 });
    return { dir, settings, store, ca };
  } catch (error) {
    // Leave nothing half-made behind: the next init must find the directory as it was.
    for (const entry of readdirSync(dir)) rmSync(join(dir, entry), { recursive: true, force: true });
    if (!existed) rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

export async function openDataDir(dir: string, databaseUrl?: string): Promise<DataDir> {
  const path = join(dir, SETTINGS_FILE);
  let settings: ControllerSettings;
  try {
    settings = JSON.parse(readFileSync(path, 'utf8')) as ControllerSettings;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new DataDirError(
        `${dir} holds no controller; create one with \`umbra-controller init --data ${dir} --url https://HOST:PORT\``,
      );
    throw new DataDirError(`${path}: unreadable (${(error as Error).message})`);
  }
  if (
    settings.version !== SETTINGS_VERSION ||
    typeof settings.url !== 'string' ||
    typeof settings.caPin !== 'string'
  )
    throw new DataDirError(
      `${path}: not a settings file this controller knows (version ${SETTINGS_VERSION} expected)`,
    );
  if (settings.timeZone !== undefined && !isTimeZone(settings.timeZone))
    throw new DataDirError(
      `${path}: timeZone ${JSON.stringify(settings.timeZone)} is not an IANA time zone; use a name like Europe/Berlin, or remove the key for UTC`,
    );
  const storage = settings.storage ?? 'sqlite';
  if (storage === 'postgresql' && databaseUrl === undefined)
    throw new DataDirError(
      `${dir}: this controller keeps its records in PostgreSQL; give --database postgres://…`,
    );
  if (storage === 'sqlite' && databaseUrl !== undefined)
    throw new DataDirError(
      `${dir}: this controller keeps its records in ${join(dir, 'controller.db')}; drop --database`,
    );
  const ca = await CertificateAuthority.load(join(dir, CA_DIR));
  return { dir, settings, store: await openStore(dir, databaseUrl), ca };
}
