// A private PostgreSQL server for one test process: its own cluster in a fresh temporary directory,
// listening on 127.0.0.1 on a free port and on a unix socket in that directory, trusting local
// connections, with fsync off (the data is thrown away). The Debian package's own cluster
// (/var/lib/postgresql/15/main, port 5432) is neither used nor started.
//
// PostgreSQL refuses to run as root, so when the tests run as root the server's commands run as the
// `postgres` OS user (setpriv: a plain exec, no PAM session that could take the server down with it)
// and the directory is handed to that user. Run as anyone else, they run as the caller.

import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

/** Debian's PostgreSQL 15 server binaries (package postgresql-15); UMBRA_PG_BIN overrides. */
const DEFAULT_PG_BIN = '/usr/lib/postgresql/15/bin';
const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_S = 30;
const SERVER_OS_USER = 'postgres';
/** A free port found by binding port 0 can be taken before the server binds it; try again then. */
const PORT_ATTEMPTS = 3;
const DATABASE = 'umbra';

export interface TestPostgres {
  /** postgres://postgres@127.0.0.1:PORT/umbra: superuser, trusted, no password. */
  url: string;
  /** The directory holding the unix socket (and the cluster), for clients that prefer it. */
  socketDir: string;
  port: number;
  /** Stops the server (pg_ctl stop -m fast) and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

export interface TestPostgresOptions {
  /** How long initdb plus the start may take before giving up; default 30 s. */
  startTimeoutMs?: number;
  /** Run the server inside this network namespace (`ip netns exec`), e.g. a test rig's backend host. */
  netns?: string;
  /** The address to listen on; default 127.0.0.1. */
  listenAddress?: string;
  /** Networks (CIDR) trusted to connect over TCP; default 127.0.0.1/32. */
  trustedNetworks?: string[];
  /** The TCP port; default a free one (in a namespace of its own, 5432 is free). */
  port?: number;
}

/**
 * Starts the server and creates the database `umbra`. Call `stop()` in `after()`; should the process
 * exit without it, an exit hook stops the server (immediate mode) and removes the directory.
 */
export async function startTestPostgres(options: TestPostgresOptions = {}): Promise<TestPostgres> {
  const bin = process.env.UMBRA_PG_BIN ?? DEFAULT_PG_BIN;
  const pgCtl = join(bin, 'pg_ctl');
  if (!existsSync(join(bin, 'initdb')) || !existsSync(pgCtl)) {
    throw new Error(
      `PostgreSQL server binaries not found in ${bin}: install the Debian package postgresql ` +
        '(scripts/setup.sh does), or set UMBRA_PG_BIN to a directory holding initdb and pg_ctl',
    );
  }
  const timeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  const asServerUser = serverUserPrefix();
  if (options.netns) asServerUser.prefix = ['ip', 'netns', 'exec', options.netns, ...asServerUser.prefix];
  const listenAddress = options.listenAddress ?? '127.0.0.1';
  const trusted = options.trustedNetworks ?? ['127.0.0.1/32'];
  const dir = mkdtempSync(join(tmpdir(), 'umbra-pg-'));
  const data = join(dir, 'data');
  const log = join(dir, 'postgres.log');
  if (asServerUser.owner) chownSync(dir, asServerUser.owner.uid, asServerUser.owner.gid);

  /** Runs a server program; a failure says which, and whether it ran out of time or what it printed. */
  const command = async (program: string, args: string[], timeout: number): Promise<void> => {
    const [file, ...prefix] = [...asServerUser.prefix, join(bin, program)];
    const limit = Math.max(timeout, 1);
    const what = program === 'pg_ctl' ? `pg_ctl ${args[0]}` : program;
    try {
      await run(file!, [...prefix, ...args], { timeout: limit, killSignal: 'SIGKILL' });
    } catch (error) {
      const failure = error as Error & { killed?: boolean; stderr?: string };
      throw new Error(
        failure.killed
          ? `${what} did not finish within ${limit} ms (the start timeout is ${timeoutMs} ms)`
          : `${what} failed: ${failure.stderr?.trim() || failure.message}`,
      );
    }
  };
  const stopSync = (): void => {
    try {
      const [file, ...prefix] = [...asServerUser.prefix, pgCtl];
      execFileSync(file!, [...prefix, 'stop', '-D', data, '-m', 'immediate', '-s', '-w', '-t', '10'], {
        stdio: 'ignore',
      });
    } catch {
      // Not running, or pg_ctl could not run (its namespace is gone): signal the postmaster itself,
      // so no server outlives the test. SIGQUIT is PostgreSQL's immediate shutdown.
      try {
        const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
        if (pid > 1) process.kill(pid, 'SIGQUIT');
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stopSync);

  let stopped: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopped ??= (async () => {
      process.removeListener('exit', stopSync);
      try {
        if (existsSync(join(data, 'postmaster.pid'))) {
          await command(
            'pg_ctl',
            ['stop', '-D', data, '-m', 'fast', '-s', '-w', '-t', String(STOP_TIMEOUT_S)],
            (STOP_TIMEOUT_S + 5) * 1000,
          );
        }
      } catch {
        stopSync();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    })();
    return stopped;
  };

  try {
    await command(
      'initdb',
      [
        '-D',
        data,
        '--username=postgres',
        '--auth=trust',
        '--encoding=UTF8',
        '--locale=C',
        '--no-sync',
        '--no-instructions',
      ],
      deadline - Date.now(),
    );
    // Trust is for the socket in `dir` and the given networks only (by default 127.0.0.1).
    writeFileSync(
      join(data, 'pg_hba.conf'),
      ['local all all trust', ...trusted.map((network) => `host all all ${network} trust`), ''].join('\n'),
    );

    for (let attempt = 1; ; attempt++) {
      const port = options.port ?? (await freePort());
      writeFileSync(
        join(data, 'postgresql.auto.conf'),
        [
          `listen_addresses = '${listenAddress}'`,
          `port = ${port}`,
          `unix_socket_directories = '${dir}'`,
          // Throwaway data: durability buys nothing here and costs seconds.
          'fsync = off',
          'synchronous_commit = off',
          'full_page_writes = off',
          '',
        ].join('\n'),
      );
      const remainingS = Math.max(1, Math.ceil((deadline - Date.now()) / 1000));
      try {
        await command(
          'pg_ctl',
          ['start', '-D', data, '-l', log, '-s', '-w', '-t', String(remainingS)],
          remainingS * 1000 + 5_000,
        );
      } catch (error) {
        const tail = logTail(log);
        if (attempt < PORT_ATTEMPTS && /could not bind|already in use/i.test(tail) && Date.now() < deadline) {
          continue;
        }
        const timedOut = Date.now() >= deadline;
        throw new Error(
          `${timedOut ? `PostgreSQL did not become ready within ${timeoutMs} ms` : 'PostgreSQL failed to start'} ` +
            `(cluster ${data}, port ${port}): ${(error as Error).message}` +
            (tail ? `\nits log ends:\n${tail}` : ''),
        );
      }
      // Over the socket: a server in another network namespace has no address reachable from here.
      const admin = new pg.Client({ host: dir, port, user: 'postgres', database: 'postgres' });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${DATABASE}`);
      } finally {
        await admin.end();
      }
      return { url: `postgres://postgres@${listenAddress}:${port}/${DATABASE}`, socketDir: dir, port, stop };
    }
  } catch (error) {
    await stop();
    throw error;
  }
}

/** As root: the command prefix that drops to the server's OS user, and that user's ids. */
function serverUserPrefix(): { prefix: string[]; owner?: { uid: number; gid: number } } {
  // (The caller may put `ip netns exec NS` in front.)
  if (process.getuid?.() !== 0) return { prefix: [] };
  let uid: number;
  let gid: number;
  try {
    uid = Number(execFileSync('id', ['-u', SERVER_OS_USER], { encoding: 'utf8' }).trim());
    gid = Number(execFileSync('id', ['-g', SERVER_OS_USER], { encoding: 'utf8' }).trim());
  } catch {
    throw new Error(
      `running as root, the test server must run as the OS user "${SERVER_OS_USER}", which does not exist: ` +
        'install the Debian package postgresql (it creates the user), or run the tests as another user',
    );
  }
  return {
    prefix: ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--init-groups', '--'],
    owner: { uid, gid },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

function logTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}
