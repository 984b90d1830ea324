// The provisioner: applies one signed site bundle, from any source (serial, USB), and keeps the box's
// state machine (state.ts) honest across power cuts.
//
//   verify-bundle      open it with the organisation's provisioning public keys
//   network            snapshot (persisted) → apply → reach the controller; rolled back on failure
//   enroll-tpm         enrollGatewayWithTpm: EK, attestation and identity keys
//   enroll-controller  challenge, quote, certificate; enrollment.json written last
//   done               enrolled and dark
//
// Any failure leaves the box as it was: network rolled back, state unprovisioned, the error recorded,
// the fault pattern shown for a while, then awaiting-provisioning again. Provisioner.open() resumes
// or rolls back whatever a power cut interrupted (README.md, "Power loss").

import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusLeds, StatusPattern } from '@umbra/hal';
import {
  type NetworkSettings,
  type OpenedSiteBundle,
  openSiteBundle,
  type ProvisioningState,
  parseProvisioningPublicKey,
  SiteBundleError,
} from '@umbra/protocol';
import { ProvisionerLog } from './log.ts';
import {
  applyNetworkTransaction,
  isApplied,
  type NetworkApplier,
  NetworkError,
  type NetworkSnapshot,
  verifyControllerReachable,
} from './network.ts';
import { type LastError, type ProvisioningStep, type StateRecord, StateStore } from './state.ts';

export const DEFAULT_TRUST_DIR = '/etc/umbra/provisioning-keys';
/** The file enrollGatewayWithTpm writes last: its presence means a complete enrollment. */
export const ENROLLMENT_FILE = 'enrollment.json';
export const DEFAULT_FAULT_MS = 30_000;

export interface EnrollOptions {
  tpm: string;
  controllerUrl: string;
  /** Zero-touch only: the controller's CA pin as the firmware carries it. */
  caPin?: string;
  firmwareVersion?: string;
  progress: (text: string) => void;
}
/**
 * enrollGatewayWithTpm's shape; tests pass a fake. `token` null: zero-touch, by the controller's
 * claim for this box's TPM (options.caPin is then set).
 */
export type EnrollFunction = (token: string | null, dir: string, options: EnrollOptions) => Promise<unknown>;

/** The real attested enrollment, loaded only when needed (the gateway's modules are large). */
export const enrollWithTpm: EnrollFunction = async (token, dir, options) => {
  const { enrollGatewayWithTpm } = await import('@umbra/spa-gateway');
  return enrollGatewayWithTpm(token, dir, options);
};

export interface ProgressEvent {
  step: ProvisioningStep;
  text: string;
  percent?: number;
}

export interface ProvisionerOptions {
  stateDir: string;
  /** Where the gateway's identity goes (default STATE_DIR/gateway). */
  gatewayDir?: string;
  /** Raw Ed25519 public keys trusted to sign bundles (see loadTrustedKeys). */
  trustedKeys: readonly Uint8Array[];
  network: NetworkApplier;
  /** The TPM for enrollment: device:/dev/tpmrm0, swtpm:HOST:PORT, swtpm-unix:PATH. */
  tpm: string;
  leds?: StatusLeds;
  firmwareVersion?: string;
  /** Throws when the controller cannot be reached (default: resolve + TCP connect, 10 s). */
  verifyController?: (controllerUrl: string) => Promise<void>;
  enroll?: EnrollFunction;
  log?: ProvisionerLog;
  /** How long the fault pattern shows after a failure before awaiting-provisioning returns. */
  faultMs?: number;
  now?: () => number;
}

/** Why an attempt failed: `code` is what the box reports in its result (kebab-case). */
export class ProvisionError extends Error {
  override name = 'ProvisionError';
  readonly code: string;
  constructor(code: string, message: string, cause?: unknown) {
    super(message, { cause });
    this.code = code;
  }
}

export function patternFor(state: ProvisioningState): StatusPattern {
  switch (state) {
    case 'unprovisioned':
      return 'awaiting-provisioning';
    case 'provisioning':
    case 'enrolling':
      return 'provisioning';
    case 'enrolled':
      return 'enrolled-dark';
  }
}

/** The provisioning public keys in `dir`: one per file, SPKI PEM or one line of base64. */
export function loadTrustedKeys(dir: string = DEFAULT_TRUST_DIR): Buffer[] {
  let names: string[];
  try {
    names = readdirSync(dir).filter((name) => !name.startsWith('.'));
  } catch (error) {
    throw new Error(`cannot read the provisioning keys in ${dir}: ${(error as Error).message}`);
  }
  const keys = names.sort().map((name) => {
    const path = join(dir, name);
    return parseProvisioningPublicKey(readFileSync(path, 'utf8'), path);
  });
  if (keys.length === 0)
    throw new Error(
      `no provisioning public keys in ${dir}: this box cannot check a site bundle (the firmware should carry one)`,
    );
  return keys;
}

export class Provisioner {
  readonly store: StateStore;
  readonly log: ProvisionerLog;
  readonly gatewayDir: string;
  readonly #options: ProvisionerOptions;
  readonly #network: NetworkApplier;
  readonly #now: () => number;
  #job: Promise<void> | undefined;
  #jobSource = '';
  #listeners = new Set<(record: StateRecord) => void>();

  private constructor(options: ProvisionerOptions, store: StateStore, log: ProvisionerLog) {
    this.#options = options;
    this.#network = options.network;
    this.#now = options.now ?? Date.now;
    this.store = store;
    this.log = log;
    this.gatewayDir = options.gatewayDir ?? join(options.stateDir, 'gateway');
  }

  /**
   * Loads the state (a corrupt file is a StateFileError naming it), shows booting, then recovers
   * from whatever a power cut interrupted. An interrupted enrollment whose network is still up is
   * resumed in the background (`idle()` waits for it).
   */
  static async open(options: ProvisionerOptions): Promise<Provisioner> {
    const log = options.log ?? new ProvisionerLog();
    await options.leds?.show('booting');
    const store = StateStore.load(options.stateDir, options.now);
    const provisioner = new Provisioner(options, store, log);
    await provisioner.#recover();
    return provisioner;
  }

  get record(): StateRecord {
    return this.store.record;
  }

  get state(): ProvisioningState {
    return this.store.state;
  }

  get lastError(): LastError | undefined {
    return this.store.record.lastError;
  }

  /** Whether a bundle (or a resumed enrollment, or a factory reset) is being applied. */
  get busy(): boolean {
    return this.#job !== undefined;
  }

  /** Resolves once nothing is being applied. */
  async idle(): Promise<void> {
    while (this.#job) await this.#job.catch(() => {});
  }

  /** Called after every transition (for status displays). */
  onChange(listener: (record: StateRecord) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Applies a site bundle. Resolves once the box is enrolled; rejects with a ProvisionError (code and
   * message for the technician) after putting the box back as it was.
   */
  apply(
    bundle: Uint8Array,
    options: { source: string; progress?: (event: ProgressEvent) => void },
  ): Promise<void> {
    if (this.#job)
      return Promise.reject(
        new ProvisionError(
          'busy',
          `the box is busy (${this.#jobSource}); wait for its result before sending another bundle`,
        ),
      );
    if (this.state === 'enrolled')
      return Promise.reject(
        new ProvisionError(
          'already-provisioned',
          `this box is already enrolled (site ${this.record.site?.name ?? 'unknown'}); hold the reset button 10 s to factory-reset it first`,
        ),
      );
    return this.#run(`applying a bundle from ${options.source}`, () =>
      this.#apply(bundle, options.source, options.progress ?? (() => {})),
    );
  }

  /**
   * The reset button's long press: wipes the gateway identity (GATEWAY_DIR) and the site
   * configuration, puts the network back as it was before provisioning, returns to unprovisioned.
   * Firmware files are not touched.
   */
  factoryReset(): Promise<void> {
    if (this.#job)
      return Promise.reject(
        new ProvisionError('busy', `the box is busy (${this.#jobSource}); factory reset refused, try again`),
      );
    return this.#run('a factory reset', () => this.#factoryReset());
  }

  /**
   * A problem found before any bundle could be applied (a USB stick with no bundle, say): logged,
   * recorded as the last error while the box is unprovisioned and idle, and the fault pattern shown.
   */
  async reportError(code: string, message: string): Promise<void> {
    this.log.error(`${code}: ${message}`);
    if (this.state === 'unprovisioned' && !this.#job)
      this.#transition({
        state: 'unprovisioned',
        step: this.record.step,
        lastError: this.store.error(code, message),
      });
    await this.#showFault();
  }

  #run(what: string, job: () => Promise<void>): Promise<void> {
    this.#jobSource = what;
    const running = job().finally(() => {
      this.#job = undefined;
    });
    this.#job = running;
    return running;
  }

  #transition(change: Parameters<StateStore['transition']>[0]): void {
    const record = this.store.transition(change);
    this.log.info(`state ${record.state} (${record.step})`);
    for (const listener of this.#listeners) listener(record);
  }

  async #show(pattern: StatusPattern): Promise<void> {
    try {
      await this.#options.leds?.show(pattern);
      // New work ends a fault still flashing from an earlier failure: the LEDs show the state now.
      await this.#options.leds?.endFlash();
    } catch (error) {
      this.log.warn(`LEDs: ${(error as Error).message}`);
    }
  }

  async #apply(bytes: Uint8Array, source: string, progress: (event: ProgressEvent) => void): Promise<void> {
    const report = (step: ProvisioningStep, text: string) => {
      this.log.info(`${step}: ${text}`);
      progress({ step, text: text.slice(0, 200) });
    };
    this.log.info(`a site bundle from ${source} (${bytes.length} bytes)`);
    await this.#show('provisioning');
    this.#transition({ state: 'provisioning', step: 'verify-bundle', lastError: undefined });
    let bundle: OpenedSiteBundle;
    let previous: NetworkSnapshot | undefined;
    try {
      report('verify-bundle', 'checking the site bundle signature');
      try {
        bundle = openSiteBundle(bytes, this.#options.trustedKeys, this.#now());
      } catch (error) {
        if (error instanceof SiteBundleError) throw new ProvisionError(error.code, error.message, error);
        throw error;
      }
      report('verify-bundle', `bundle for site ${bundle.site}, signed by key ${bundle.keyId.slice(0, 16)}`);
      this.store.saveBundle(bytes);

      report('network', describeNetwork(this.#network.interface, bundle.network));
      previous = await applyNetworkTransaction(this.#network, bundle.network, {
        beforeChange: (snapshot) =>
          this.#transition({
            state: 'provisioning',
            step: 'network',
            previousNetwork: snapshot,
            site: {
              name: bundle.site,
              controllerUrl: bundle.controllerUrl,
              keyId: bundle.keyId,
              source,
              network: bundle.network,
            },
          }),
        verify: async () => {
          report('network', `reaching the controller at ${new URL(bundle.controllerUrl).host}`);
          await (this.#options.verifyController ?? verifyControllerReachable)(bundle.controllerUrl);
        },
      });
      await this.#enroll(bundle.enrollmentToken, bundle.controllerUrl, report);
      this.store.removeBundle();
      this.#transition({ state: 'enrolled', step: 'done' });
      report(
        'done',
        `enrolled with ${new URL(bundle.controllerUrl).host} for site ${bundle.site}; the gateway is dark`,
      );
      await this.#show('enrolled-dark');
    } catch (error) {
      const failure = asProvisionError(error, this.store.record.step);
      // A failed network transaction has rolled itself back; a later failure rolls it back here.
      await this.#fail(failure, previous);
      throw failure;
    }
  }

  /**
   * An enrolled box whose gateway is running: its LEDs say whether the gateway's link to the
   * controller is up (enrolled-dark) or not (controller-unreachable). Nothing changes while a job
   * runs or in any other state.
   */
  async showControllerLink(linked: boolean): Promise<void> {
    if (this.state !== 'enrolled' || this.#job) return;
    await this.#show(linked ? 'enrolled-dark' : 'controller-unreachable');
  }

  /**
   * Zero-touch: with no bundle, asks the controller the firmware names to enroll this box by the claim
   * an operator made for its TPM (`umbra-controller gateway claim --ek-hash`). The network is the
   * one the box already has (DHCP); nothing else changes. Returns whether the box is now enrolled;
   * a refusal (no claim yet, controller away) is logged and recorded, and the box stays ready for a
   * bundle or the next try.
   */
  async enrollByClaim(zeroTouch: { controllerUrl: string; caPin: string }): Promise<boolean> {
    if (this.state !== 'unprovisioned' || this.#job) return false;
    await this.#run('zero-touch enrollment', async () => {
      const report = (step: ProvisioningStep, text: string) => this.log.info(`${step}: ${text}`);
      this.log.info(
        `zero-touch: asking ${new URL(zeroTouch.controllerUrl).host} to enroll this box by its TPM`,
      );
      await this.#show('provisioning');
      try {
        await this.#enroll(null, zeroTouch.controllerUrl, report, zeroTouch.caPin);
        this.#transition({ state: 'enrolled', step: 'done', lastError: undefined });
        report(
          'done',
          `enrolled by claim with ${new URL(zeroTouch.controllerUrl).host}; the gateway is dark`,
        );
        await this.#show('enrolled-dark');
      } catch (error) {
        const failure = asProvisionError(error, 'enroll-controller');
        this.log.warn(`zero-touch: ${failure.message}`);
        this.#transition({
          state: 'unprovisioned',
          step: 'rollback',
          lastError: this.store.error(failure.code, failure.message),
        });
        await this.#show('awaiting-provisioning');
      }
    });
    return (this.state as ProvisioningState) === 'enrolled';
  }

  async #enroll(
    token: string | null,
    controllerUrl: string,
    report: (step: ProvisioningStep, text: string) => void,
    caPin?: string,
  ): Promise<void> {
    this.#transition({ state: 'enrolling', step: 'enroll-tpm' });
    report('enroll-tpm', `enrolling with the TPM (${this.#options.tpm})`);
    let step: ProvisioningStep = 'enroll-tpm';
    try {
      await (this.#options.enroll ?? enrollWithTpm)(token, this.gatewayDir, {
        tpm: this.#options.tpm,
        controllerUrl,
        ...(caPin ? { caPin } : {}),
        ...(this.#options.firmwareVersion ? { firmwareVersion: this.#options.firmwareVersion } : {}),
        progress: (text) => {
          // enrollGatewayWithTpm reads the TPM first, then talks to the controller.
          if (step === 'enroll-tpm' && /controller/.test(text)) {
            step = 'enroll-controller';
            this.#transition({ state: 'enrolling', step });
          }
          report(step, text);
        },
      });
    } catch (error) {
      if (error instanceof ProvisionError) throw error;
      throw new ProvisionError(
        step === 'enroll-tpm' ? 'tpm-failed' : 'enroll-failed',
        `enrollment failed: ${(error as Error).message}`,
        error,
      );
    }
  }

  /** Back to unprovisioned: network rolled back, error recorded, fault shown, then awaiting again. */
  async #fail(failure: ProvisionError, previous: NetworkSnapshot | undefined): Promise<void> {
    this.log.error(`${failure.code}: ${failure.message}`);
    let message = failure.message;
    if (previous) {
      try {
        await this.#network.rollback(previous);
        this.log.info('network rolled back to its previous settings');
      } catch (error) {
        message = `${message}; rolling the network back failed: ${(error as Error).message}`;
        this.log.error(`network rollback failed: ${(error as Error).message}`);
      }
    }
    this.store.removeBundle();
    this.#transition({
      state: 'unprovisioned',
      step: 'rollback',
      site: undefined,
      previousNetwork: undefined,
      lastError: this.store.error(failure.code, message),
    });
    await this.#showFault();
  }

  async #showFault(): Promise<void> {
    const leds = this.#options.leds;
    if (!leds) return;
    try {
      await leds.flash('fault', this.#options.faultMs ?? DEFAULT_FAULT_MS);
      await leds.show(patternFor(this.state));
    } catch (error) {
      this.log.warn(`LEDs: ${(error as Error).message}`);
    }
  }

  async #factoryReset(): Promise<void> {
    this.log.warn('factory reset: wiping the gateway identity and the site configuration');
    const previous = this.store.record.previousNetwork;
    // Recorded first: a power cut during the wipe finishes it at the next start.
    this.#transition({ state: 'unprovisioned', step: 'factory-reset' });
    rmSync(this.gatewayDir, { recursive: true, force: true });
    this.store.removeBundle();
    if (previous) {
      try {
        await this.#network.rollback(previous);
      } catch (error) {
        this.log.warn(`factory reset: the network could not be put back: ${(error as Error).message}`);
      }
    }
    this.#transition({
      state: 'unprovisioned',
      step: 'initial',
      site: undefined,
      previousNetwork: undefined,
      lastError: undefined,
    });
    this.log.info('factory reset done: awaiting provisioning');
    await this.#show('awaiting-provisioning');
  }

  /** What a restart does with each state and step (README.md, "Power loss"). */
  async #recover(): Promise<void> {
    const record = this.store.record;
    const interrupted = `interrupted by a power loss at ${record.step}; ready to try again`;
    switch (record.state) {
      case 'unprovisioned':
        if (record.step === 'factory-reset') {
          this.log.warn('a factory reset was interrupted; finishing it');
          await this.#factoryReset();
        } else await this.#show('awaiting-provisioning');
        return;
      case 'enrolled':
        await this.#ensureNetwork(record);
        await this.#show('enrolled-dark');
        return;
      case 'provisioning':
        this.log.warn(`${interrupted} (state provisioning)`);
        await this.#rollBack(record.previousNetwork, interrupted);
        return;
      case 'enrolling': {
        if (existsSync(join(this.gatewayDir, ENROLLMENT_FILE))) {
          this.log.info('the enrollment completed before the power loss');
          this.store.removeBundle();
          this.#transition({ state: 'enrolled', step: 'done' });
          await this.#show('enrolled-dark');
          return;
        }
        const network = record.site?.network as NetworkSettings | undefined;
        const bundle = this.store.readBundle();
        let applied = false;
        try {
          applied = network !== undefined && isApplied(await this.#network.current(), network);
        } catch (error) {
          this.log.warn(`cannot read the network: ${(error as Error).message}`);
        }
        if (!applied || !bundle || !record.site) {
          this.log.warn(
            `${interrupted}; the network is ${applied ? 'up but the bundle is gone' : 'not applied'}`,
          );
          await this.#rollBack(record.previousNetwork, interrupted);
          return;
        }
        this.log.warn(`the enrollment was interrupted at ${record.step}; the network is up, resuming it`);
        await this.#show('provisioning');
        const site = record.site;
        this.#run('resuming an interrupted enrollment', async () => {
          try {
            // Checked when accepted; opened again here (at the time it was accepted) for the token.
            const opened = openSiteBundle(
              bundle,
              this.#options.trustedKeys,
              Date.parse(record.history.find((h) => h.step === 'verify-bundle')?.at ?? record.at),
            );
            await this.#enroll(opened.enrollmentToken, site.controllerUrl, (step, text) =>
              this.log.info(`${step}: ${text}`),
            );
            this.store.removeBundle();
            this.#transition({ state: 'enrolled', step: 'done' });
            await this.#show('enrolled-dark');
          } catch (error) {
            await this.#fail(asProvisionError(error, 'enroll-tpm'), record.previousNetwork);
          }
        }).catch(() => {});
        return;
      }
    }
  }

  async #rollBack(previous: NetworkSnapshot | undefined, message: string): Promise<void> {
    let text = message;
    if (previous) {
      try {
        await this.#network.rollback(previous);
        this.log.info('network rolled back to its previous settings');
      } catch (error) {
        text = `${message}; rolling the network back failed: ${(error as Error).message}`;
        this.log.error(text);
      }
    }
    this.store.removeBundle();
    this.#transition({
      state: 'unprovisioned',
      step: 'rollback',
      site: undefined,
      previousNetwork: undefined,
      lastError: this.store.error('interrupted', text),
    });
    await this.#showFault();
  }

  /** An enrolled box after a restart: the kernel forgot the network, so it is applied again. */
  async #ensureNetwork(record: StateRecord): Promise<void> {
    const network = record.site?.network as NetworkSettings | undefined;
    if (!network) return;
    try {
      if (!isApplied(await this.#network.current(), network)) {
        this.log.info('applying the site network again after a restart');
        await this.#network.apply(network);
      }
    } catch (error) {
      this.log.error(`the site network could not be applied: ${(error as Error).message}`);
    }
  }
}

function asProvisionError(error: unknown, step: string): ProvisionError {
  if (error instanceof ProvisionError) return error;
  if (error instanceof NetworkError) return new ProvisionError(error.code, error.message, error);
  return new ProvisionError(
    'internal-error',
    `${step} failed: ${(error as Error)?.message ?? String(error)}`,
    error,
  );
}

function describeNetwork(iface: string, settings: NetworkSettings): string {
  const where = settings.vlan === undefined ? iface : `${iface} VLAN ${settings.vlan}`;
  return settings.mode === 'dhcp'
    ? `DHCP on ${where}`
    : `${settings.address} via ${settings.gateway} on ${where}`;
}
