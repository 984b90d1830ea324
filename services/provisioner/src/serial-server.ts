// The box's side of the serial provisioning protocol (protocol/README.md, "Provisioning over serial"):
// a ProvisioningSession (side 'box') on the console port, answering
//
//   hello           → the box's hello: serial number, firmware version, EK hash, state, last error
//   status-request  → a fresh hello
//   logs-request    → the last N lines of the provisioner's log
//   apply-bundle    → a progress message per step, then one result (ok, or an error code and message)
//
// Damaged frames are the session's business (nak, retransmission); a message that fails its schema is
// answered with a result error "bad-message". A bundle sent while another is being applied gets
// "busy". The box never speaks first.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  type BoxHello,
  chooseVersion,
  LOGS_MAX_LINES,
  PROVISIONING_VERSIONS,
  ProvisioningLinkError,
  ProvisioningMessageError,
  ProvisioningSession,
  type ProvisioningSessionOptions,
  type ToBoxMessage,
  type ToTechnicianMessage,
} from '@umbra/protocol';
import { type ProgressEvent, ProvisionError, type Provisioner } from './provisioner.ts';
import type { ProvisioningStep } from './state.ts';

/** Shown when the TPM cannot be read: the hello must carry 64 hex digits. */
export const UNKNOWN_EK_HASH = '0'.repeat(64);
const SERIAL_NUMBER = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const FIRMWARE_VERSION = /^[\x21-\x7e]{1,64}$/;

export interface BoxIdentityOptions {
  /** Root of /sys and /proc (a fake tree in tests). Default /. */
  sysfsRoot?: string;
  /** Where umbra/firmware-version is (default /etc). */
  etcDir?: string;
  /** Used when neither DMI nor the device tree has a serial number. */
  serialNumber?: string;
  /** Used when etc/umbra/firmware-version is missing. */
  firmwareVersion?: string;
  /** The TPM to read the EK from (device:/dev/tpmrm0, swtpm:HOST:PORT, ...). */
  tpm?: string;
  /** Reads the EK hash (default: readEkHash(tpm)); called once, then cached. */
  readEkHash?: () => Promise<string>;
  log?: (message: string) => void;
}

/** SHA-256 of the TPM's EK certificate's public key (SPKI DER), as a controller claim names it. */
export async function readEkHash(tpmSpec: string): Promise<string> {
  const [{ GatewayTpm }, { parseEkCertificate }, { ekHash }] = await Promise.all([
    import('@umbra/spa-gateway'),
    import('@umbra/tpm2'),
    import('@umbra/protocol'),
  ]);
  const tpm = await GatewayTpm.open(tpmSpec);
  try {
    const endorsement = await tpm.readEndorsement();
    return ekHash(
      parseEkCertificate(endorsement.certificate).publicKey.export({ type: 'spki', format: 'der' }),
    );
  } finally {
    await tpm.close();
  }
}

/** What the box says about itself in its hello. */
export class BoxIdentity {
  readonly serialNumber: string;
  readonly firmwareVersion: string;
  readonly #readEkHash: () => Promise<string>;
  readonly #log: (message: string) => void;
  #ekHash: string | undefined;

  constructor(options: BoxIdentityOptions = {}) {
    const root = options.sysfsRoot ?? '/';
    this.#log = options.log ?? (() => {});
    this.serialNumber =
      [join(root, 'sys/class/dmi/id/product_serial'), join(root, 'proc/device-tree/serial-number')]
        .map(readTrimmed)
        .find((text) => text !== undefined && SERIAL_NUMBER.test(text)) ??
      (options.serialNumber && SERIAL_NUMBER.test(options.serialNumber) ? options.serialNumber : 'unknown');
    const firmware = readTrimmed(join(options.etcDir ?? '/etc', 'umbra/firmware-version'));
    this.firmwareVersion =
      firmware && FIRMWARE_VERSION.test(firmware) ? firmware : (options.firmwareVersion ?? 'unknown');
    const tpm = options.tpm;
    this.#readEkHash =
      options.readEkHash ??
      (() => (tpm ? readEkHash(tpm) : Promise.reject(new Error('no TPM configured (--tpm)'))));
  }

  /** The EK hash, read from the TPM the first time it is asked for; zeros while the TPM cannot be read. */
  async ekHash(): Promise<string> {
    if (this.#ekHash) return this.#ekHash;
    try {
      const hash = await this.#readEkHash();
      if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error(`not a SHA-256 hex digest: ${hash.slice(0, 80)}`);
      this.#ekHash = hash;
      return hash;
    } catch (error) {
      this.#log(`cannot read the EK from the TPM: ${(error as Error).message}`);
      return UNKNOWN_EK_HASH;
    }
  }
}

/** The file's text without trailing NULs and blanks; undefined when it is missing or unreadable. */
function readTrimmed(path: string): string | undefined {
  try {
    // Device-tree strings end in NUL.
    return readFileSync(path, 'latin1').replace(/\0+$/, '').trim();
  } catch {
    return undefined;
  }
}

const STEP_PERCENT: Record<ProvisioningStep, number> = {
  'verify-bundle': 10,
  network: 30,
  'enroll-tpm': 50,
  'enroll-controller': 75,
  done: 100,
};

export interface SerialServerOptions {
  provisioner: Provisioner;
  identity: BoxIdentity;
  /** The port's name, for errors and the log. */
  port: string;
  /** Called when the box has answered and nothing is being applied (a shared console ends its session). */
  onQuiet?: () => void;
  /** Passed to the ProvisioningSession (timers, ackTimeoutMs, ...). */
  session?: Omit<ProvisioningSessionOptions, 'side' | 'port'>;
}

export class SerialServer {
  readonly #session: ProvisioningSession;
  readonly #options: SerialServerOptions;
  readonly #applying = new Set<Promise<void>>();
  readonly done: Promise<void>;

  constructor(stream: Duplex, options: SerialServerOptions) {
    this.#options = options;
    const log = options.provisioner.log;
    this.#session = new ProvisioningSession(stream, {
      onFrameError: (error) => log.warn(`serial ${options.port}: damaged frame: ${error.kind}`),
      ...options.session,
      side: 'box',
      port: options.port,
    });
    this.done = this.#serve();
  }

  /** Ends the session (a bundle being applied carries on; its result has nowhere to go). */
  async close(): Promise<void> {
    this.#session.close();
    await this.done;
  }

  /** Settles once every bundle received so far has its result sent (tests). */
  async idle(): Promise<void> {
    while (this.#applying.size > 0) await Promise.all(this.#applying);
  }

  async #serve(): Promise<void> {
    const { provisioner, port } = this.#options;
    for (;;) {
      let message: ToBoxMessage;
      try {
        message = (await this.#session.receive()) as ToBoxMessage;
      } catch (error) {
        if (error instanceof ProvisioningMessageError) {
          provisioner.log.warn(`serial ${port}: ${error.message}`);
          this.#send({
            t: 'result',
            ok: false,
            error: { code: 'bad-message', message: error.message.slice(0, 512) },
          });
          continue;
        }
        if (!(error instanceof ProvisioningLinkError && error.code === 'closed'))
          provisioner.log.warn(`serial ${port}: ${(error as Error).message}`);
        return;
      }
      switch (message.t) {
        case 'hello':
          try {
            chooseVersion(PROVISIONING_VERSIONS, message.versions, 'umbra-tech');
          } catch (error) {
            provisioner.log.warn(`serial ${port}: ${(error as Error).message}`);
          }
          await this.#send(await this.#hello());
          this.#quiet();
          break;
        case 'status-request':
          await this.#send(await this.#hello());
          this.#quiet();
          break;
        case 'logs-request':
          await this.#send({ t: 'logs', lines: provisioner.log.tail(message.lines ?? LOGS_MAX_LINES) });
          this.#quiet();
          break;
        case 'apply-bundle': {
          const applying = this.#apply(message.bundle);
          this.#applying.add(applying);
          void applying.finally(() => {
            this.#applying.delete(applying);
            this.#quiet();
          });
          break;
        }
      }
    }
  }

  #quiet(): void {
    if (this.#applying.size === 0) this.#options.onQuiet?.();
  }

  async #apply(bundle: Uint8Array): Promise<void> {
    const { provisioner, port } = this.#options;
    try {
      await provisioner.apply(bundle, {
        source: `serial ${port}`,
        progress: (event: ProgressEvent) =>
          this.#send({
            t: 'progress',
            step: event.step,
            text: event.text,
            percent: STEP_PERCENT[event.step],
          }),
      });
      await this.#send({ t: 'result', ok: true });
    } catch (error) {
      const failure =
        error instanceof ProvisionError
          ? error
          : new ProvisionError('internal-error', (error as Error).message);
      await this.#send({
        t: 'result',
        ok: false,
        error: { code: failure.code, message: failure.message.slice(0, 512) || failure.code },
      });
    }
  }

  async #hello(): Promise<BoxHello> {
    const { provisioner, identity } = this.#options;
    const lastError = provisioner.lastError;
    return {
      t: 'hello',
      versions: [...PROVISIONING_VERSIONS],
      serialNumber: identity.serialNumber,
      firmwareVersion: identity.firmwareVersion,
      ekHash: await identity.ekHash(),
      state: provisioner.state,
      ...(lastError ? { lastError: { code: lastError.code, message: lastError.message } } : {}),
    };
  }

  /** Sends in order; a failure (the technician went away) is logged, not thrown. */
  #send(message: ToTechnicianMessage): Promise<void> {
    return this.#session.send(message).catch((error: Error) => {
      this.#options.provisioner.log.warn(
        `serial ${this.#options.port}: sending ${message.t}: ${error.message}`,
      );
    });
  }
}
