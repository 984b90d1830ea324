// Wires the parts together: keys, firewall, replay state, capture, pipeline, and the periodic
// stats file. The firewall is installed before capture starts, and left in place on exit: the
// kernel keeps the drop policy and expires pinholes even when this process is gone.

import { mkdirSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HealthGatedWatchdog, LinuxWatchdog } from '@umbra/hal/watchdog';
import { SpaReceiver } from '@umbra/protocol';
import type { Logger } from 'pino';
import { SourceBudget } from './budget.ts';
import { type KnockCapture, PcapCapture } from './capture.ts';
import type { GatewayConfig } from './config.ts';
import { type ControllerMode, startControllerMode } from './controller-mode.ts';
import type { Firewall } from './firewall/index.ts';
import { InstanceLock } from './instance-lock.ts';
import { loadGatewayKeys } from './keys.ts';
import { KnockPipeline } from './pipeline.ts';
import { Rejections } from './rejections.ts';
import { ReplayGuard } from './replay.ts';
import { selfTest } from './self-test.ts';
import { isAttested, unsealKeys } from './tpm/sealed-keys.ts';

export const STATS_FILE = 'stats.json';
const STATS_INTERVAL_MS = 1000;

export interface GatewayStats {
  startedAt: string;
  accepted: number;
  rejected: Record<string, number>;
  captureDropped: number;
  /** A gateway run by a controller: whether the link is up, the policy version held, live tunnels. */
  controller?: ReturnType<ControllerMode['stats']>;
}

export interface RunningGateway {
  pipeline: KnockPipeline;
  stats(): GatewayStats;
  /** Stops capturing and writes the last counters; the firewall stays. */
  stop(): Promise<void>;
}

export interface GatewayDependencies {
  log: Logger;
  firewall: Firewall;
  capture?: KnockCapture;
  now?: () => number;
}

export async function startGateway(
  config: GatewayConfig,
  deps: GatewayDependencies,
): Promise<RunningGateway> {
  const { log, firewall } = deps;
  const keys = loadGatewayKeys(config.keyDir);
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  const lock = InstanceLock.acquire(config.stateDir);

  firewall.install();
  const receiver = new SpaReceiver(keys.privateKey);
  selfTest(receiver);
  // After the firewall: a box whose keys will not unseal stops here, dark.
  const attested =
    config.enrollmentDir !== undefined && isAttested(config.enrollmentDir)
      ? await unsealKeys(config.enrollmentDir)
      : undefined;
  const replay = new ReplayGuard({
    stateDir: config.stateDir,
    windowMs: config.timeWindowSeconds * 1000,
    now: deps.now,
    ...(attested ? { stateKey: attested.keys.replayKey } : {}),
  });
  if (replay.distrust) log.warn({ reason: replay.distrust }, 'the replay state was not trusted');
  const rejections = new Rejections(log, config.log.rejectionsPerSecond);
  let controllerMode: ControllerMode | undefined;
  if (config.enrollmentDir !== undefined)
    controllerMode = await startControllerMode(
      { ...config, enrollmentDir: config.enrollmentDir },
      {
        firewall,
        rejections,
        log,
        acceptedKnocks: () => pipeline.accepted,
        ...(attested ? { attested: { tpm: attested.tpm, tlsKey: attested.keys.tlsKey } } : {}),
      },
    );
  const pipeline: KnockPipeline = new KnockPipeline({
    receiver,
    admission: controllerMode?.admission,
    clients: config.clients,
    budget: new SourceBudget({
      perSecond: config.budget.knocksPerSecond,
      burst: config.budget.burst,
      totalPerSecond: config.budget.totalKnocksPerSecond,
      totalBurst: config.budget.totalBurst,
    }),
    replay,
    firewall,
    rejections,
    log,
  });

  const capture =
    deps.capture ??
    new PcapCapture({
      interface: config.interface,
      port: config.spaPort,
      onError: (error) =>
        log.error({ err: error }, 'a captured packet could not be handled; nothing was opened'),
    });
  capture.start((datagram) => pipeline.handle(datagram));
  // Healthy: the drop ruleset is in place (the box is dark), checked from an event loop that still
  // turns. A gateway that hangs, or whose firewall was removed, is reset by the watchdog.
  const watchdog = config.watchdog
    ? await startWatchdog(config.watchdog, () => firewall.isInstalled(), log)
    : undefined;

  const startedAt = new Date().toISOString();
  const stats = (): GatewayStats => ({
    startedAt,
    accepted: pipeline.accepted,
    rejected: { ...rejections.counts },
    captureDropped: capture.dropped(),
    ...(controllerMode ? { controller: controllerMode.stats() } : {}),
  });
  // Written off the event loop and without fsync: the counters are for people and tools to read,
  // not state to recover, and a blocking write here would stall a knock arriving meanwhile.
  const statsPath = join(config.stateDir, STATS_FILE);
  let lastWritten = '';
  let writing: Promise<void> | null = null;
  const writeStats = (): Promise<void> => {
    rejections.flush();
    const text = `${JSON.stringify(stats())}\n`;
    if (writing || text === lastWritten) return writing ?? Promise.resolve();
    const temporary = `${statsPath}.tmp`;
    writing = writeFile(temporary, text, { mode: 0o644 })
      .then(() => rename(temporary, statsPath))
      .then(
        () => {
          lastWritten = text;
        },
        (error: unknown) => log.warn({ err: error }, 'could not write the stats file'),
      )
      .finally(() => {
        writing = null;
      });
    return writing;
  };
  const timer = setInterval(writeStats, STATS_INTERVAL_MS);
  timer.unref();

  if (config.clients.length === 0 && !controllerMode)
    log.warn(
      { config: config.path },
      'no clients are configured: no knock can open anything (see clients in the README)',
    );
  log.info(
    {
      interface: config.interface,
      spaPort: config.spaPort,
      clients: config.clients.length,
      mode: controllerMode ? 'controller' : 'standalone',
      attestation: attested
        ? `TPM ${attested.record.address}: identity key 0x${attested.record.handles.identity.toString(16)}, keys sealed to sha256 PCRs ${attested.record.sealedTo.pcrs.join(',')}`
        : 'none: software keys',
    },
    'gateway dark and listening for knocks',
  );
  if (!attested)
    log.warn(
      'unattested: this gateway holds software keys and no TPM vouches for its identity or boot state ' +
        '(enroll with --tpm for an attested gateway)',
    );
  return {
    pipeline,
    stats,
    async stop() {
      clearInterval(timer);
      // A clean stop closes the watchdog with the magic character: the box is not reset.
      await watchdog?.stop();
      capture.close();
      await controllerMode?.stop();
      replay.close();
      await attested?.tpm.close();
      await writing;
      await writeStats();
      lock.release();
    },
  };
}

/**
 * Opens the watchdog and feeds it every interval while `healthy()` holds. Once it does not, the
 * watchdog is never fed again and the box resets when the device's timeout runs out.
 */
async function startWatchdog(
  settings: { device: string; intervalSeconds: number },
  healthy: () => boolean,
  log: Logger,
): Promise<HealthGatedWatchdog> {
  const device = await LinuxWatchdog.open(settings.device);
  const intervalMs = settings.intervalSeconds * 1000;
  const gate = new HealthGatedWatchdog(device, healthy, {
    intervalMs,
    checkTimeoutMs: Math.min(2000, intervalMs - 1),
    onFailure: (reason) =>
      log.error(
        { watchdog: settings.device, reason },
        'unhealthy: the watchdog is no longer fed; the box will reset',
      ),
  });
  gate.start();
  log.info(
    { watchdog: settings.device, intervalSeconds: settings.intervalSeconds },
    'feeding the watchdog while healthy',
  );
  return gate;
}
