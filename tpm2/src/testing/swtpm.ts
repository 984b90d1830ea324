// A private swtpm for tests: manufactured by swtpm_setup with an EK certificate and a platform
// certificate from a local CA in a fresh temporary directory, then served over TCP on a free loopback
// port or over a Unix socket. The process is stopped and the directory removed by stop(), or at the
// latest when the test process exits. Nothing outside the directory is read or written.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SwtpmOptions {
  /** The data channel: a TCP port on 127.0.0.1 (the default) or a Unix socket in the directory. */
  readonly transport?: 'tcp' | 'unix';
  /** PCR banks to allocate, as swtpm_setup's active_pcr_banks names them. */
  readonly pcrBanks?: readonly string[];
}

export interface Swtpm {
  /** The address for openTransport / parseTpmAddress. */
  readonly address: string;
  /** TPM2TOOLS_TCTI for Debian's tpm2-tools against the same swtpm (TCP only: Debian 12's swtpm TCTI has no path). */
  readonly tcti: string;
  readonly dir: string;
  /** The local CA that issued the EK certificate: its root and its intermediate (issuer). */
  readonly rootCaCert: string;
  readonly issuerCert: string;
  stop(): Promise<void>;
}

/** The persistent handles and NV indices swtpm_setup creates (TCG EK Credential Profile). */
export const SWTPM_SETUP = {
  RSA_EK_HANDLE: 0x81010001,
  ECC_EK_HANDLE: 0x81010016,
  RSA_EK_CERT_NV_INDEX: 0x01c00002,
  ECC_EK_CERT_NV_INDEX: 0x01c00016,
  PLATFORM_CERT_NV_INDEX: 0x01c08000,
} as const;

const running = new Set<{ child: ChildProcess; dir: string }>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const { child, dir } of running) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

async function requireTool(tool: string): Promise<void> {
  try {
    await run(tool, ['--version']);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(
        `${tool} is not installed: the TPM tests need swtpm (Debian: swtpm swtpm-tools tpm2-tools); run scripts/setup.sh`,
      );
    }
  }
}

/** A free loopback port whose successor is free too: tpm2-tss's swtpm TCTI finds the control channel at port+1. */
async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const first = await listenOn(0);
    const port = (first.address() as { port: number }).port;
    const second = port < 65535 ? await listenOn(port + 1).catch(() => undefined) : undefined;
    await Promise.all([first, second].map((s) => s && new Promise((resolve) => s.close(resolve))));
    if (second) return port;
  }
  throw new Error('no two consecutive free TCP ports on 127.0.0.1 after 20 tries');
}

function listenOn(port: number): Promise<Server> {
  const server = createServer();
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

function canConnect(target: { host: string; port: number } | { path: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(target);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startSwtpm(options: SwtpmOptions = {}): Promise<Swtpm> {
  await requireTool('swtpm');
  await requireTool('swtpm_setup');
  installExitHook();
  const dir = mkdtempSync(join(tmpdir(), 'umbra-swtpm-'));
  const state = join(dir, 'state');
  const ca = join(dir, 'ca');
  try {
    writeFileSync(
      join(dir, 'swtpm_setup.conf'),
      [
        'create_certs_tool = /usr/bin/swtpm_localca',
        `create_certs_tool_config = ${join(dir, 'swtpm-localca.conf')}`,
        `create_certs_tool_options = ${join(dir, 'swtpm-localca.options')}`,
        `active_pcr_banks = ${(options.pcrBanks ?? ['sha256', 'sha384']).join(',')}`,
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(dir, 'swtpm-localca.conf'),
      [
        `statedir = ${ca}`,
        `signingkey = ${join(ca, 'signkey.pem')}`,
        `issuercert = ${join(ca, 'issuercert.pem')}`,
        `certserial = ${join(ca, 'certserial')}`,
        '',
      ].join('\n'),
    );
    writeFileSync(
      join(dir, 'swtpm-localca.options'),
      '--platform-manufacturer Umbra\n--platform-version 2.1\n--platform-model swtpm\n',
    );
    mkdirSync(state);
    mkdirSync(ca);
    await run('swtpm_setup', [
      '--tpm2',
      '--tpm-state',
      state,
      '--create-ek-cert',
      '--create-platform-cert',
      '--config',
      join(dir, 'swtpm_setup.conf'),
      '--logfile',
      join(dir, 'swtpm_setup.log'),
    ]).catch((error: Error) => {
      throw new Error(`swtpm_setup failed (log in ${dir}/swtpm_setup.log): ${error.message}`);
    });

    const unix = options.transport === 'unix';
    const socketPath = join(dir, 'tpm.sock');
    const port = unix ? 0 : await freePortPair();
    const server = unix ? `type=unixio,path=${socketPath}` : `type=tcp,port=${port},bindaddr=127.0.0.1`;
    // not-need-init: the TPM needs no _TPM_Init from the control channel, but still a TPM2_Startup,
    // which the tests send themselves.
    const child = spawn(
      'swtpm',
      [
        'socket',
        '--tpm2',
        '--tpmstate',
        `dir=${state}`,
        '--server',
        server,
        '--ctrl',
        unix ? `type=unixio,path=${join(dir, 'ctrl.sock')}` : `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
        '--flags',
        'not-need-init',
        '--log',
        `file=${join(dir, 'swtpm.log')},level=1`,
      ],
      { stdio: 'ignore' },
    );
    child.unref();
    const entry = { child, dir };
    running.add(entry);

    const target = unix ? { path: socketPath } : { host: '127.0.0.1', port };
    const listening = async () => (unix && !existsSync(socketPath) ? false : canConnect(target));
    const deadline = Date.now() + 5000;
    while (!(await listening())) {
      if (child.exitCode !== null)
        throw new Error(`swtpm exited with ${child.exitCode} (log in ${dir}/swtpm.log)`);
      if (Date.now() > deadline) throw new Error(`swtpm did not listen within 5 s (log in ${dir}/swtpm.log)`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }

    const stop = async () => {
      if (!running.has(entry)) return;
      running.delete(entry);
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    };
    return {
      address: unix ? `swtpm-unix:${socketPath}` : `swtpm:127.0.0.1:${port}`,
      tcti: unix ? '' : `swtpm:host=127.0.0.1,port=${port}`,
      dir,
      rootCaCert: join(ca, 'swtpm-localca-rootca-cert.pem'),
      issuerCert: join(ca, 'issuercert.pem'),
      stop,
    };
  } catch (error) {
    for (const entry of running) {
      if (entry.dir === dir) {
        entry.child.kill('SIGKILL');
        running.delete(entry);
      }
    }
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}
