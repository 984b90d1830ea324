// What actually crossed the wire: tcpdump inside a namespace, writing a pcap file, so a test can
// prove silence ("the gateway sent nothing") by counting packets afterwards.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LineReader } from './lines.ts';
import type { HostHandle } from './topology.ts';

export interface CaptureOptions {
  /** Interface inside the host's namespace; default the host's eth0. */
  ifname?: string;
  /** BPF filter, e.g. `src host 192.0.2.10 and not arp`. Default: everything. */
  filter?: string;
  /** Keep the pcap file after stop() (it is in a temp dir the topology removes otherwise). */
  keepFile?: boolean;
  readyTimeoutMs?: number;
  /** stop() waits this long before it stops tcpdump, for packets still in flight; default 50 ms. */
  settleMs?: number;
}

export interface CaptureResult {
  packets: number;
  /** tcpdump's one-line summary of each packet (at most MAX_SUMMARY_LINES). */
  summary: string[];
  /** tcpdump's own count on exit ("N packets captured"), a cross-check; null if it printed none. */
  capturedByTcpdump: number | null;
  /** The pcap file if keepFile was set, else null (already deleted). */
  file: string | null;
}

export interface Capture {
  readonly file: string;
  stop(): Promise<CaptureResult>;
}

const MAX_SUMMARY_LINES = 10_000;
const DEFAULT_SETTLE_MS = 50;
const STOP_TIMEOUT_MS = 3_000;
const READ_TIMEOUT_MS = 30_000;

/** Starts tcpdump in `host` and resolves once it is really listening (it said so on stderr). */
export async function startCapture(host: HostHandle, options: CaptureOptions = {}): Promise<Capture> {
  const dir = mkdtempSync(join(tmpdir(), 'umbra-capture-'));
  let dirRemoved = false;
  const removeDir = () => {
    if (dirRemoved) return;
    dirRemoved = true;
    rmSync(dir, { recursive: true, force: true });
  };
  if (!options.keepFile) host.topology.addCleanup(removeDir);
  const file = join(dir, `${host.name}.pcap`);
  const ifname = options.ifname ?? host.ifname;
  // --immediate-mode: with -w, tcpdump otherwise takes packets from the kernel in blocks every
  // second, and a SIGINT before the block is handed over discards them ("0 packets captured",
  // "25 packets received by filter"). -U flushes each packet to the file. -Z root keeps tcpdump from
  // dropping to the `tcpdump` user, which could not write into our root-owned temp dir.
  const argv = ['tcpdump', '-n', '--immediate-mode', '-U', '-Z', 'root', '-i', ifname, '-w', file];
  if (options.filter) argv.push(options.filter);
  const child = host.spawn(argv);
  const output = LineReader.ofChild(`tcpdump on ${host.name}/${ifname}`, child);
  try {
    await output.waitFor(/listening on/, options.readyTimeoutMs ?? 5_000);
  } catch (error) {
    child.kill('SIGKILL');
    removeDir();
    throw error;
  }
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });

  let stopped: Promise<CaptureResult> | null = null;
  const stop = async (): Promise<CaptureResult> => {
    // Packets the test just caused may still be on their way through the kernel to tcpdump.
    await new Promise((resolve) => setTimeout(resolve, options.settleMs ?? DEFAULT_SETTLE_MS));
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    const timer = new Promise<'timeout'>((resolve) =>
      setTimeout(() => resolve('timeout'), STOP_TIMEOUT_MS).unref(),
    );
    if ((await Promise.race([exited, timer])) === 'timeout') {
      child.kill('SIGKILL');
      await exited;
    }
    const captured = output.lines().find((line) => /packets? captured/.test(line));
    // Reading a file needs no namespace: run tcpdump -r in ours.
    const read = spawnSync('tcpdump', ['-r', file, '-n'], {
      encoding: 'utf8',
      timeout: READ_TIMEOUT_MS,
      maxBuffer: 64 * 1024 * 1024,
    });
    if (
      read.status !== 0 &&
      !/^\s*$/.test(read.stderr ?? '') &&
      !/reading from file/.test(read.stderr ?? '')
    ) {
      throw new Error(`capture on ${host.name}: tcpdump -r ${file} failed: ${read.stderr}`);
    }
    const lines = (read.stdout ?? '').split('\n').filter((line) => line.length > 0);
    if (!options.keepFile) removeDir();
    return {
      packets: lines.length,
      summary: lines.slice(0, MAX_SUMMARY_LINES),
      capturedByTcpdump: captured ? Number(captured.trim().split(' ')[0]) : null,
      file: options.keepFile ? file : null,
    };
  };
  return {
    file,
    stop: () => {
      stopped ??= stop();
      return stopped;
    },
  };
}
