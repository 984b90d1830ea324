// The TPM: commands marshalled, sent over a Transport, and their responses taken apart (Part 1 §18,
// Part 3). Each command method is one request and one response; a response that does not parse is a
// TpmFormatError naming the command, and a response code other than success is a TpmError naming the
// command, the handle, parameter or session, and what the code means.

import { randomBytes } from 'node:crypto';
import {
  commandName,
  HEADER_SIZE,
  nameOf,
  TPM_ALG,
  TPM_CAP,
  TPM_CC,
  TPM_HT,
  TPM_PT,
  TPM_RH,
  TPM_SE,
  TPM_ST,
  TPM_SU,
} from './constants.ts';
import { digestSize, MAX_DIGEST_SIZE } from './hash.ts';
import { Reader, TpmFormatError, Writer } from './marshal.ts';
import { computeName, handleNameBytes } from './name.ts';
import { TPM_RC, TpmError } from './response-code.ts';
import {
  type AuthResponse,
  AuthSession,
  type CommandContext,
  passwordSession,
  type Session,
} from './session.ts';
import {
  type Attest,
  MAX_DATA_SIZE,
  type NvPublic,
  type PcrSelection,
  type PublicArea,
  readAttest,
  readNvPublic,
  readPcrSelections,
  readPublicArea,
  readSignature,
  readTicket,
  type Scheme,
  type Signature,
  type Ticket,
  writeNullHashcheckTicket,
  writePcrSelections,
  writePublicArea,
  writeSignature,
  writeSigScheme,
} from './structures.ts';
import type { Transport } from './transport.ts';

/** How a command is laid out: its handles, the sessions that authorize them, and its parameters. */
export interface CommandRequest<T> {
  readonly code: number;
  readonly handles?: readonly number[];
  readonly sessions?: readonly Session[];
  /** The handles' Names for cpHash; read from the TPM when a session needs them and they are absent. */
  readonly names?: readonly Uint8Array[];
  readonly parameters?: (w: Writer) => void;
  /** How many handles the response carries before its parameters (CreatePrimary, Load: 1). */
  readonly responseHandles?: number;
  /** Reads the response parameters; it must read all of them. */
  readonly decode: (r: Reader, handles: readonly number[]) => T;
}

/** TPMT_PUBLIC as the TPM returned it, parsed, with the exact bytes the Name was computed over. */
export interface LoadedPublic {
  readonly publicArea: PublicArea;
  readonly publicBytes: Uint8Array;
  readonly name: Uint8Array;
}

export interface ReadPublicResult extends LoadedPublic {
  readonly qualifiedName: Uint8Array;
}

export interface CreatePrimaryResult extends LoadedPublic {
  readonly handle: number;
  readonly creationData: Uint8Array;
  readonly creationHash: Uint8Array;
  readonly creationTicket: Ticket;
}

export interface CreateResult {
  readonly publicArea: PublicArea;
  readonly publicBytes: Uint8Array;
  /** TPM2B_PRIVATE's contents: the sensitive area wrapped by the parent; Load takes it back. */
  readonly private: Uint8Array;
  readonly creationData: Uint8Array;
  readonly creationHash: Uint8Array;
  readonly creationTicket: Ticket;
}

export interface LoadResult {
  readonly handle: number;
  readonly name: Uint8Array;
}

/** A TPMS_ATTEST as signed (the exact bytes), parsed, and its signature. */
export interface AttestResult {
  readonly attestBytes: Uint8Array;
  readonly attest: Attest;
  readonly signature: Signature;
}

export interface CreatePrimaryOptions {
  /** The hierarchy's authorization; the empty password by default. */
  readonly hierarchyAuth?: Session;
  /** The new key's authValue. */
  readonly userAuth?: Uint8Array;
  /** TPM2B_SENSITIVE_CREATE.data: the secret a KEYEDHASH sealed object holds (at most 128 bytes). */
  readonly sensitiveData?: Uint8Array;
  readonly outsideInfo?: Uint8Array;
  readonly creationPcrs?: readonly PcrSelection[];
}

export interface NvReadPublicResult {
  readonly nvPublic: NvPublic;
  /** The TPMS_NV_PUBLIC bytes the Name is computed over. */
  readonly nvPublicBytes: Uint8Array;
  readonly name: Uint8Array;
}

export interface NvReadOptions {
  /** Who authorizes the read: the index itself (the default), TPM_RH.OWNER or PLATFORM. */
  readonly authHandle?: number;
  readonly auth?: Session;
  readonly offset?: number;
  /** How many bytes; by default the rest of the index from `offset`. */
  readonly size?: number;
}

export interface PolicySecretResult {
  readonly timeout: Uint8Array;
  readonly ticket: Ticket;
}

export interface CapabilityResult<T> {
  readonly moreData: boolean;
  readonly values: T[];
}

export interface PcrValues {
  readonly updateCounter: number;
  /** Digests keyed by hash algorithm, then PCR index. */
  readonly banks: Map<number, Map<number, Uint8Array>>;
}

const EMPTY = new Uint8Array();
const MAX_ATTEMPTS = 5;
const RETRIABLE: ReadonlySet<number> = new Set([TPM_RC.RETRY, TPM_RC.YIELDED, TPM_RC.TESTING]);
/** Handle types a response may hand back that occupy TPM memory until flushed. */
const FLUSHABLE: ReadonlySet<number> = new Set([
  TPM_HT.TRANSIENT,
  TPM_HT.HMAC_SESSION,
  TPM_HT.POLICY_SESSION,
]);
/** TPML_DIGEST in a PCR_Read response holds at most 8 digests. */
const MAX_PCR_DIGESTS = 8;
const MAX_NAME_SIZE = 2 + MAX_DIGEST_SIZE;
/** MAX_SYM_DATA: what a sealed object holds at most (Part 2 §10.4.3, 128 on every TPM). */
export const MAX_SYM_DATA = 128;

export class Tpm {
  readonly transport: Transport;

  constructor(transport: Transport) {
    this.transport = transport;
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  /** Marshals a command, sends it, and decodes its response. */
  async execute<T>(request: CommandRequest<T>): Promise<T> {
    const { code, handles = [], sessions = [] } = request;
    const name = commandName(code);
    const parameters = new Writer();
    request.parameters?.(parameters);
    const parameterBytes = parameters.finish();
    const names =
      request.names ??
      (sessions.some((s) => s.needsNames)
        ? await Promise.all(handles.map((h) => this.nameOf(h)))
        : undefined);
    const context: CommandContext = { code, handles, parameters: parameterBytes, ...(names && { names }) };

    const w = new Writer();
    w.u16(sessions.length > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS)
      .u32(0)
      .u32(code);
    for (const handle of handles) w.u32(handle);
    if (sessions.length > 0) {
      w.sized32((area) => {
        for (const session of sessions) {
          const auth = session.authorize(context);
          area.u32(auth.sessionHandle).tpm2b(auth.nonce).u8(auth.attributes).tpm2b(auth.hmac);
        }
      });
    }
    w.bytes(parameterBytes);
    w.patchU32(2, w.length);

    const command = w.finish();
    let response: Uint8Array;
    let r: Reader;
    let tag: number;
    for (let attempt = 1; ; attempt++) {
      response = await this.transport.send(command);
      r = new Reader(response, `${name} response`);
      tag = r.u16('tag');
      const size = r.u32('responseSize');
      if (size !== response.length) r.fail(`responseSize is ${size} but ${response.length} bytes arrived`);
      const rc = r.u32('responseCode');
      if (rc === 0) break;
      if (response.length !== HEADER_SIZE)
        r.fail(`an error response (code 0x${rc.toString(16)}) with a body`);
      // Part 1 §12.3 (warnings): RETRY, YIELDED and TESTING mean the command did not run, or may be
      // sent again; tpm2-tss's ESYS retries them too. libtpms answers RETRY now and then to ECDSA Sign.
      if (attempt >= MAX_ATTEMPTS || !RETRIABLE.has(rc)) throw new TpmError(code, rc, handles);
      await new Promise((resolve) => setTimeout(resolve, rc === TPM_RC.TESTING ? 10 * attempt : 0));
    }
    const expectedTag = sessions.length > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS;
    if (tag !== expectedTag) r.fail(`tag is ${nameOf(TPM_ST, tag)}, expected ${nameOf(TPM_ST, expectedTag)}`);
    const responseHandles: number[] = [];
    for (let i = 0; i < (request.responseHandles ?? 0); i++) responseHandles.push(r.u32(`handle ${i + 1}`));

    try {
      return this.#decodeResponse(request, context, response, r, responseHandles);
    } catch (error) {
      // The command succeeded but its response is unusable: whatever it loaded (CreatePrimary, Load,
      // StartAuthSession) would be left in a TPM without a resource manager, so flush it now.
      for (const handle of responseHandles) {
        if (FLUSHABLE.has(handle >>> 24)) await this.flushContext(handle).catch(() => undefined);
      }
      throw error;
    }
  }

  #decodeResponse<T>(
    request: CommandRequest<T>,
    context: CommandContext,
    response: Uint8Array,
    r: Reader,
    responseHandles: readonly number[],
  ): T {
    const sessions = request.sessions ?? [];
    const name = commandName(request.code);
    let params: Reader;
    let paramStart = r.offset;
    if (sessions.length > 0) {
      const parameterSize = r.u32('parameterSize');
      paramStart = r.offset;
      params = r.sub(parameterSize, 'parameters');
    } else {
      params = r.sub(r.remaining, 'parameters');
    }
    const result = request.decode(params, responseHandles);
    params.end();
    const responseParameters = response.subarray(paramStart, params.offset);

    for (const [i, session] of sessions.entries()) {
      const auth: AuthResponse = {
        nonce: r.tpm2b(`session ${i + 1} nonce`, MAX_DIGEST_SIZE),
        attributes: r.u8(`session ${i + 1} attributes`),
        hmac: r.tpm2b(`session ${i + 1} hmac`, MAX_DIGEST_SIZE),
      };
      try {
        session.verify(context, auth, responseParameters);
      } catch (error) {
        throw new TpmFormatError(`${name} response: session ${i + 1}: ${(error as Error).message}`, {
          cause: error,
        });
      }
    }
    r.end();
    return result;
  }

  // -------------------------------------------------------------------------------------------------
  // Start-up and random numbers

  /** TPM2_Startup. A TPM that is already started answers TPM_RC_INITIALIZE. */
  startup(type: number = TPM_SU.CLEAR): Promise<void> {
    return this.execute({ code: TPM_CC.Startup, parameters: (w) => w.u16(type), decode: () => undefined });
  }

  shutdown(type: number = TPM_SU.CLEAR): Promise<void> {
    return this.execute({ code: TPM_CC.Shutdown, parameters: (w) => w.u16(type), decode: () => undefined });
  }

  /** `count` random bytes; the TPM returns at most one digest's worth per command, so this asks again. */
  async getRandom(count: number): Promise<Uint8Array> {
    if (!Number.isInteger(count) || count < 0 || count > 0xffff) throw new RangeError(`getRandom(${count})`);
    const out = new Uint8Array(count);
    let filled = 0;
    while (filled < count) {
      const want = Math.min(count - filled, MAX_DIGEST_SIZE);
      const bytes = await this.execute({
        code: TPM_CC.GetRandom,
        parameters: (w) => w.u16(want),
        decode: (r) => r.tpm2b('randomBytes', want),
      });
      if (bytes.length === 0)
        throw new TpmFormatError(`TPM2_GetRandom response: no bytes for a request of ${want}`);
      out.set(bytes, filled);
      filled += bytes.length;
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------------
  // GetCapability

  /** One TPM2_GetCapability; the TPM decides how many values fit and sets moreData if there are more. */
  getCapability(
    capability: typeof TPM_CAP.TPM_PROPERTIES,
    property: number,
    count: number,
  ): Promise<CapabilityResult<{ property: number; value: number }>>;
  getCapability(
    capability: typeof TPM_CAP.HANDLES,
    property: number,
    count: number,
  ): Promise<CapabilityResult<number>>;
  getCapability(
    capability: typeof TPM_CAP.PCRS,
    property: number,
    count: number,
  ): Promise<CapabilityResult<PcrSelection>>;
  getCapability(
    capability: typeof TPM_CAP.ALGS,
    property: number,
    count: number,
  ): Promise<CapabilityResult<{ alg: number; properties: number }>>;
  getCapability(
    capability: typeof TPM_CAP.COMMANDS,
    property: number,
    count: number,
  ): Promise<CapabilityResult<number>>;
  getCapability(capability: number, property: number, count: number): Promise<CapabilityResult<unknown>> {
    return this.execute({
      code: TPM_CC.GetCapability,
      parameters: (w) => w.u32(capability).u32(property).u32(count),
      decode: (r) => {
        const moreData = r.bool('moreData');
        const returned = r.u32('capabilityData.capability');
        if (returned !== capability) r.fail(`capability ${returned} answers a request for ${capability}`);
        return { moreData, values: readCapabilityData(r, capability) };
      },
    });
  }

  /** TPM properties from `first` on (TPM_PT), following moreData. */
  async properties(first = 0x100, count = 0x100): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    let next = first;
    for (let round = 0; round < 64; round++) {
      const { moreData, values } = await this.getCapability(
        TPM_CAP.TPM_PROPERTIES,
        next,
        first + count - next,
      );
      for (const { property, value } of values) if (property < first + count) out.set(property, value);
      const last = values.at(-1);
      if (!moreData || !last || last.property + 1 >= first + count) return out;
      next = last.property + 1;
    }
    throw new TpmFormatError('TPM2_GetCapability: TPM_PROPERTIES did not end after 64 rounds');
  }

  /** The PCR banks and the PCRs allocated in each. */
  async pcrBanks(): Promise<PcrSelection[]> {
    return (await this.getCapability(TPM_CAP.PCRS, 0, 16)).values;
  }

  /** Handles of one type (TPM_HT), e.g. TPM_HT.TRANSIENT for loaded objects, following moreData. */
  async handles(type: number): Promise<number[]> {
    const out: number[] = [];
    let next = (type << 24) >>> 0;
    const end = ((type + 1) << 24) >>> 0;
    for (let round = 0; round < 1024; round++) {
      const { moreData, values } = await this.getCapability(TPM_CAP.HANDLES, next, 256);
      const inRange = values.filter((h) => h >= next && h < end);
      out.push(...inRange);
      const last = inRange.at(-1);
      if (!moreData || last === undefined) return out;
      next = last + 1;
    }
    throw new TpmFormatError('TPM2_GetCapability: HANDLES did not end after 1024 rounds');
  }

  // -------------------------------------------------------------------------------------------------
  // Objects

  readPublic(handle: number): Promise<ReadPublicResult> {
    return this.execute({
      code: TPM_CC.ReadPublic,
      handles: [handle],
      decode: (r) => {
        const { publicArea, publicBytes } = readPublicWithBytes(r, 'outPublic');
        const name = r.tpm2b('name', MAX_NAME_SIZE);
        const qualifiedName = r.tpm2b('qualifiedName', MAX_NAME_SIZE);
        return { publicArea, publicBytes, name, qualifiedName };
      },
    });
  }

  /** TPM2_CreatePrimary under a hierarchy (TPM_RH.OWNER, ENDORSEMENT, PLATFORM or NULL). */
  createPrimary(
    hierarchy: number,
    template: PublicArea,
    options: CreatePrimaryOptions = {},
  ): Promise<CreatePrimaryResult> {
    return this.execute({
      code: TPM_CC.CreatePrimary,
      handles: [hierarchy],
      sessions: [options.hierarchyAuth ?? passwordSession()],
      parameters: (w) => writeCreationParameters(w, template, options),
      responseHandles: 1,
      decode: (r, [handle]) => {
        const { publicArea, publicBytes } = readPublicWithBytes(r, 'outPublic');
        const creationData = r.tpm2b('creationData');
        const creationHash = r.tpm2b('creationHash', MAX_DIGEST_SIZE);
        const creationTicket = readTicket(r, 'creationTicket');
        const name = r.tpm2b('name', MAX_NAME_SIZE);
        const computed = computeName(publicArea.nameAlg, publicBytes);
        if (Buffer.compare(computed, name) !== 0) r.fail('name does not match outPublic');
        return { handle: handle!, publicArea, publicBytes, name, creationData, creationHash, creationTicket };
      },
    });
  }

  /** Frees a transient object or session. Its handle is a parameter, so errors say "parameter 1". */
  flushContext(handle: number): Promise<void> {
    return this.execute({
      code: TPM_CC.FlushContext,
      parameters: (w) => w.u32(handle),
      decode: () => undefined,
    });
  }

  /**
   * Runs `fn` with a transient handle (a loaded object or a session) and flushes it afterwards, whether
   * `fn` returned or threw: swtpm has no resource manager and a TPM holds only a few transients. A
   * failed flush after a failed `fn` does not hide `fn`'s error.
   */
  async withTransient<T>(handle: number | Promise<number>, fn: (handle: number) => Promise<T>): Promise<T> {
    const h = await handle;
    let result: T;
    try {
      result = await fn(h);
    } catch (error) {
      await this.flushContext(h).catch(() => undefined);
      throw error;
    }
    await this.flushContext(h);
    return result;
  }

  /**
   * TPM2_Create: a child key under a loaded storage parent, returned wrapped (not loaded). The options
   * are those of createPrimary; `hierarchyAuth` authorizes the parent.
   */
  create(
    parentHandle: number,
    template: PublicArea,
    options: CreatePrimaryOptions = {},
  ): Promise<CreateResult> {
    return this.execute({
      code: TPM_CC.Create,
      handles: [parentHandle],
      sessions: [options.hierarchyAuth ?? passwordSession()],
      parameters: (w) => writeCreationParameters(w, template, options),
      decode: (r) => {
        const priv = r.tpm2b('outPrivate');
        if (priv.length === 0) r.fail('outPrivate is empty');
        const { publicArea, publicBytes } = readPublicWithBytes(r, 'outPublic');
        const creationData = r.tpm2b('creationData');
        const creationHash = r.tpm2b('creationHash', MAX_DIGEST_SIZE);
        const creationTicket = readTicket(r, 'creationTicket');
        return { publicArea, publicBytes, private: priv, creationData, creationHash, creationTicket };
      },
    });
  }

  /** TPM2_Load: a key from Create back into the TPM under its parent. The Name is checked against the public area. */
  load(
    parentHandle: number,
    key: { readonly private: Uint8Array; readonly publicBytes: Uint8Array; readonly publicArea: PublicArea },
    parentAuth: Session = passwordSession(),
  ): Promise<LoadResult> {
    return this.execute({
      code: TPM_CC.Load,
      handles: [parentHandle],
      sessions: [parentAuth],
      parameters: (w) => {
        w.tpm2b(key.private);
        w.tpm2b(key.publicBytes);
      },
      responseHandles: 1,
      decode: (r, [handle]) => {
        const name = r.tpm2b('name', MAX_NAME_SIZE);
        if (Buffer.compare(computeName(key.publicArea.nameAlg, key.publicBytes), name) !== 0)
          r.fail('name does not match the public area loaded');
        return { handle: handle!, name };
      },
    });
  }

  /**
   * TPM2_LoadExternal of a public key alone (no sensitive part), by default in the NULL hierarchy:
   * the TPM can then verify signatures with it, and it is gone at the next reset.
   */
  loadExternal(publicArea: PublicArea, hierarchy: number = TPM_RH.NULL): Promise<LoadResult> {
    const pub = new Writer();
    writePublicArea(pub, publicArea);
    const publicBytes = pub.finish();
    return this.execute({
      code: TPM_CC.LoadExternal,
      parameters: (w) => {
        w.u16(0); // TPM2B_SENSITIVE inPrivate: empty, public only
        w.tpm2b(publicBytes);
        w.u32(hierarchy);
      },
      responseHandles: 1,
      decode: (r, [handle]) => {
        const name = r.tpm2b('name', MAX_NAME_SIZE);
        if (Buffer.compare(computeName(publicArea.nameAlg, publicBytes), name) !== 0)
          r.fail('name does not match the public area loaded');
        return { handle: handle!, name };
      },
    });
  }

  /**
   * TPM2_EvictControl. With a transient `objectHandle`, makes a persistent copy at `persistentHandle`
   * (the transient stays loaded and must still be flushed); with a persistent one (equal to
   * `persistentHandle`), removes it. `auth` is TPM_RH.OWNER (handles 0x81000000-0x817fffff) or PLATFORM.
   */
  evictControl(
    objectHandle: number,
    persistentHandle: number,
    auth: number = TPM_RH.OWNER,
    authSession: Session = passwordSession(),
  ): Promise<void> {
    return this.execute({
      code: TPM_CC.EvictControl,
      handles: [auth, objectHandle],
      sessions: [authSession],
      parameters: (w) => w.u32(persistentHandle),
      decode: () => undefined,
    });
  }

  /**
   * TPM2_VerifySignature: checks a signature over a digest with a loaded public key. A bad signature is
   * a TpmError (TPM_RC_SIGNATURE); a good one returns the TPMT_TK_VERIFIED ticket.
   */
  verifySignature(keyHandle: number, digest: Uint8Array, signature: Signature): Promise<Ticket> {
    return this.execute({
      code: TPM_CC.VerifySignature,
      handles: [keyHandle],
      parameters: (w) => {
        w.tpm2b(digest);
        writeSignature(w, signature);
      },
      decode: (r) => {
        const ticket = readTicket(r, 'validation');
        if (ticket.tag !== TPM_ST.VERIFIED)
          r.fail(`validation.tag is ${nameOf(TPM_ST, ticket.tag)}, not VERIFIED`);
        return ticket;
      },
    });
  }

  /**
   * The Name of an entity: for an object or NV index read from the TPM (ReadPublic, NV_ReadPublic, both
   * checked against the public area), otherwise the handle itself.
   */
  async nameOf(handle: number): Promise<Uint8Array> {
    const type = handle >>> 24;
    if (type === TPM_HT.TRANSIENT || type === TPM_HT.PERSISTENT) return (await this.readPublic(handle)).name;
    if (type === TPM_HT.NV_INDEX) return (await this.nvReadPublic(handle)).name;
    return handleNameBytes(handle);
  }

  // -------------------------------------------------------------------------------------------------
  // NV

  /** TPM2_NV_ReadPublic: an NV index's TPMS_NV_PUBLIC and Name (checked: nameAlg ‖ H(TPMS_NV_PUBLIC)). */
  nvReadPublic(nvIndex: number): Promise<NvReadPublicResult> {
    return this.execute({
      code: TPM_CC.NV_ReadPublic,
      handles: [nvIndex],
      decode: (r) => {
        const { value: nvPublic, bytes: nvPublicBytes } = r.sized16WithBytes('nvPublic', readNvPublic);
        const name = r.tpm2b('nvName', MAX_NAME_SIZE);
        if (nvPublic.nvIndex !== nvIndex)
          r.fail(`nvPublic.nvIndex 0x${nvPublic.nvIndex.toString(16)} is not the index asked for`);
        if (Buffer.compare(computeName(nvPublic.nameAlg, nvPublicBytes), name) !== 0)
          r.fail('nvName does not match nvPublic');
        return { nvPublic, nvPublicBytes, name };
      },
    });
  }

  /**
   * TPM2_NV_Read of `size` bytes from `offset` (by default the whole index), in pieces of at most
   * TPM_PT.NV_BUFFER_MAX. The index authorizes itself with the empty password unless told otherwise.
   */
  async nvRead(nvIndex: number, options: NvReadOptions = {}): Promise<Uint8Array> {
    const offset = options.offset ?? 0;
    const size = options.size ?? (await this.nvReadPublic(nvIndex)).nvPublic.dataSize - offset;
    if (!Number.isInteger(size) || size < 0 || offset < 0 || offset + size > 0xffff)
      throw new RangeError(`nvRead(0x${nvIndex.toString(16)}): offset ${offset}, size ${size}`);
    const { values } = await this.getCapability(TPM_CAP.TPM_PROPERTIES, TPM_PT.NV_BUFFER_MAX, 1);
    const chunk = values.find((v) => v.property === TPM_PT.NV_BUFFER_MAX)?.value ?? 512;
    if (chunk < 1) throw new TpmFormatError(`TPM_PT_NV_BUFFER_MAX is ${chunk}`);
    const out = new Uint8Array(size);
    for (let done = 0; done < size; ) {
      const want = Math.min(chunk, size - done);
      const at = offset + done;
      const data = await this.execute({
        code: TPM_CC.NV_Read,
        handles: [options.authHandle ?? nvIndex, nvIndex],
        sessions: [options.auth ?? passwordSession()],
        parameters: (w) => w.u16(want).u16(at),
        decode: (r) => r.tpm2b('data', want),
      });
      if (data.length !== want)
        throw new TpmFormatError(`TPM2_NV_Read response: ${data.length} bytes for a request of ${want}`);
      out.set(data, done);
      done += want;
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------------
  // Sessions and policies

  /**
   * TPM2_StartAuthSession: an unsalted, unbound HMAC or policy session (TPM_SE), no parameter
   * encryption (symmetric NULL). It stays loaded until flushed: use withSession.
   */
  startAuthSession(type: number = TPM_SE.POLICY, authHash: number = TPM_ALG.SHA256): Promise<AuthSession> {
    const nonceCaller = new Uint8Array(randomBytes(digestSize(authHash)));
    return this.execute({
      code: TPM_CC.StartAuthSession,
      handles: [TPM_RH.NULL, TPM_RH.NULL],
      parameters: (w) => {
        w.tpm2b(nonceCaller);
        w.tpm2b(EMPTY); // encryptedSalt
        w.u8(type);
        w.u16(TPM_ALG.NULL); // TPMT_SYM_DEF symmetric
        w.u16(authHash);
      },
      responseHandles: 1,
      decode: (r, [handle]) => {
        const nonceTpm = r.tpm2b('nonceTPM', MAX_DIGEST_SIZE);
        if (nonceTpm.length !== digestSize(authHash)) r.fail(`nonceTPM is ${nonceTpm.length} bytes`);
        const expectedType = type === TPM_SE.HMAC ? TPM_HT.HMAC_SESSION : TPM_HT.POLICY_SESSION;
        if (handle! >>> 24 !== expectedType)
          r.fail(`session handle 0x${handle!.toString(16)} is of the wrong type`);
        return new AuthSession(handle!, type, authHash, nonceTpm);
      },
    });
  }

  /** Starts a session, runs `fn` with it, and flushes it whether `fn` returned or threw. */
  async withSession<T>(
    type: number,
    fn: (session: AuthSession) => Promise<T>,
    authHash: number = TPM_ALG.SHA256,
  ): Promise<T> {
    const session = await this.startAuthSession(type, authHash);
    return this.withTransient(session.handle, () => fn(session));
  }

  /**
   * TPM2_PolicySecret: extends the policy session's digest with `authHandle`'s Name, proving knowledge
   * of its authorization (`auth`, the empty password by default), e.g. TPM_RH.ENDORSEMENT for the EK.
   * No expiration and no nonce: the policy holds for the session's life.
   */
  policySecret(
    authHandle: number,
    session: AuthSession,
    auth: Session = passwordSession(),
    policyRef: Uint8Array = EMPTY,
  ): Promise<PolicySecretResult> {
    return this.execute({
      code: TPM_CC.PolicySecret,
      handles: [authHandle, session.handle],
      sessions: [auth],
      parameters: (w) => {
        w.tpm2b(EMPTY); // nonceTPM
        w.tpm2b(EMPTY); // cpHashA
        w.tpm2b(policyRef);
        w.u32(0); // expiration
      },
      decode: (r) => ({ timeout: r.tpm2b('timeout'), ticket: readTicket(r, 'policyTicket') }),
    });
  }

  /** TPM2_PolicyPCR: the session's policy holds only with these PCR values (`pcrDigest` empty: as they are now). */
  policyPcr(
    session: AuthSession,
    pcrs: readonly PcrSelection[],
    pcrDigest: Uint8Array = EMPTY,
  ): Promise<void> {
    return this.execute({
      code: TPM_CC.PolicyPCR,
      handles: [session.handle],
      parameters: (w) => {
        w.tpm2b(pcrDigest);
        writePcrSelections(w, pcrs);
      },
      decode: () => undefined,
    });
  }

  /** TPM2_PolicyAuthValue: the object's authValue is needed too, so the session HMACs with it. */
  async policyAuthValue(session: AuthSession): Promise<void> {
    await this.execute({ code: TPM_CC.PolicyAuthValue, handles: [session.handle], decode: () => undefined });
    session.authValueNeeded = true;
  }

  /**
   * TPM2_PolicyOR: if the session's digest is one of `branches` (2 to 8 digests), it becomes
   * H(0…0 ‖ TPM_CC_PolicyOR ‖ branches); otherwise TPM_RC_VALUE.
   */
  policyOr(session: AuthSession, branches: readonly Uint8Array[]): Promise<void> {
    if (branches.length < 2 || branches.length > 8)
      throw new RangeError(`policyOr: ${branches.length} branches; TPM2_PolicyOR takes 2 to 8`);
    return this.execute({
      code: TPM_CC.PolicyOR,
      handles: [session.handle],
      parameters: (w) => {
        w.u32(branches.length);
        for (const digest of branches) w.tpm2b(digest);
      },
      decode: () => undefined,
    });
  }

  /** TPM2_PolicyGetDigest: the session's policyDigest so far. */
  policyGetDigest(session: AuthSession): Promise<Uint8Array> {
    return this.execute({
      code: TPM_CC.PolicyGetDigest,
      handles: [session.handle],
      decode: (r) => r.tpm2b('policyDigest', MAX_DIGEST_SIZE),
    });
  }

  // -------------------------------------------------------------------------------------------------
  // Sealed data

  /**
   * TPM2_Unseal: the data of a loaded KEYEDHASH object (USER role). A sealed object without
   * userWithAuth needs a policy session that satisfied its authPolicy.
   */
  unseal(itemHandle: number, session: Session = passwordSession()): Promise<Uint8Array> {
    return this.execute({
      code: TPM_CC.Unseal,
      handles: [itemHandle],
      sessions: [session],
      decode: (r) => r.tpm2b('outData', MAX_SYM_DATA),
    });
  }

  // -------------------------------------------------------------------------------------------------
  // Credentials

  /**
   * TPM2_ActivateCredential: `keyHandle` (the EK) decrypts the seed in `secret` and releases the
   * credential in `credentialBlob` if it was made for `activateHandle`'s Name (the AK). Both are
   * TPM2B as MakeCredential produced them (size fields included). The AK is authorized in the ADMIN
   * role, the EK in the USER role (for a TCG EK: a policy session that ran PolicySecret(ENDORSEMENT)).
   */
  activateCredential(
    activateHandle: number,
    keyHandle: number,
    credentialBlob: Uint8Array,
    secret: Uint8Array,
    activateAuth: Session,
    keyAuth: Session,
  ): Promise<Uint8Array> {
    return this.execute({
      code: TPM_CC.ActivateCredential,
      handles: [activateHandle, keyHandle],
      sessions: [activateAuth, keyAuth],
      parameters: (w) => w.bytes(credentialBlob).bytes(secret),
      decode: (r) => r.tpm2b('certInfo', MAX_DIGEST_SIZE),
    });
  }

  // -------------------------------------------------------------------------------------------------
  // Attestation

  /**
   * TPM2_Quote: the TPM signs, with a restricted signing key, a TPMS_ATTEST holding `qualifyingData`
   * (the verifier's nonce) as extraData and the digest of the selected PCRs. `scheme` NULL_SCHEME uses
   * the key's own.
   */
  quote(
    keyHandle: number,
    qualifyingData: Uint8Array,
    pcrs: readonly PcrSelection[],
    scheme: Scheme = { scheme: TPM_ALG.NULL },
    keyAuth: Session = passwordSession(),
  ): Promise<AttestResult> {
    checkQualifyingData(qualifyingData);
    return this.execute({
      code: TPM_CC.Quote,
      handles: [keyHandle],
      sessions: [keyAuth],
      parameters: (w) => {
        w.tpm2b(qualifyingData);
        writeSigScheme(w, scheme);
        writePcrSelections(w, pcrs);
      },
      decode: (r) => decodeAttestResponse(r, 'quoted'),
    });
  }

  /**
   * TPM2_Certify: `signHandle` signs that `objectHandle` (its Name) is loaded in this TPM. Both need
   * authorization: the object's in the ADMIN role (its authValue unless adminWithPolicy), the signer's.
   */
  certify(
    objectHandle: number,
    signHandle: number,
    qualifyingData: Uint8Array,
    scheme: Scheme = { scheme: TPM_ALG.NULL },
    objectAuth: Session = passwordSession(),
    signAuth: Session = passwordSession(),
  ): Promise<AttestResult> {
    checkQualifyingData(qualifyingData);
    return this.execute({
      code: TPM_CC.Certify,
      handles: [objectHandle, signHandle],
      sessions: [objectAuth, signAuth],
      parameters: (w) => {
        w.tpm2b(qualifyingData);
        writeSigScheme(w, scheme);
      },
      decode: (r) => decodeAttestResponse(r, 'certifyInfo'),
    });
  }

  // -------------------------------------------------------------------------------------------------
  // PCRs

  /** The selected PCRs; a TPM returns at most 8 per command, so this asks until all are read. */
  async pcrRead(selections: readonly PcrSelection[]): Promise<PcrValues> {
    const banks = new Map<number, Map<number, Uint8Array>>();
    const wanted = selections.map((s) => ({
      hash: s.hash,
      pcrs: [...new Set(s.pcrs)].sort((a, b) => a - b),
    }));
    let updateCounter: number | undefined;
    for (let round = 0; round < 64; round++) {
      const pending = wanted
        .map(({ hash, pcrs }) => ({ hash, pcrs: pcrs.filter((p) => !banks.get(hash)?.has(p)) }))
        .filter((s) => s.pcrs.length > 0);
      if (pending.length === 0) return { updateCounter: updateCounter ?? 0, banks };
      const result = await this.execute({
        code: TPM_CC.PCR_Read,
        parameters: (w) => writePcrSelections(w, pending),
        decode: (r) => {
          const counter = r.u32('pcrUpdateCounter');
          const selected = readPcrSelections(r, 'pcrSelectionOut');
          const count = r.count('pcrValues', 2, MAX_PCR_DIGESTS);
          const digests: Uint8Array[] = [];
          for (let i = 0; i < count; i++) digests.push(r.tpm2b(`pcrValues[${i}]`, MAX_DIGEST_SIZE));
          return { counter, selected, digests };
        },
      });
      if (updateCounter !== undefined && result.counter !== updateCounter) {
        // A PCR changed between two reads: start over so that all values belong to one state.
        banks.clear();
      }
      updateCounter = result.counter;
      let i = 0;
      for (const { hash, pcrs } of result.selected) {
        const bank = banks.get(hash) ?? new Map<number, Uint8Array>();
        banks.set(hash, bank);
        for (const pcr of pcrs) {
          const digest = result.digests[i++];
          if (!digest) throw new TpmFormatError('TPM2_PCR_Read response: fewer digests than selected PCRs');
          bank.set(pcr, digest);
        }
      }
      if (i !== result.digests.length)
        throw new TpmFormatError('TPM2_PCR_Read response: more digests than selected PCRs');
      if (i === 0) {
        throw new TpmFormatError(
          `TPM2_PCR_Read: the TPM returned none of the selected PCRs (banks: ${pending.map((s) => nameOf(TPM_ALG, s.hash)).join(', ')})`,
        );
      }
    }
    throw new TpmFormatError('TPM2_PCR_Read: did not finish after 64 rounds');
  }

  /**
   * TPM2_PCR_Extend: PCR[i] = H(PCR[i] ‖ digest) in each bank a digest is given for (TPML_DIGEST_VALUES,
   * at most one per bank). PCRs 0-15 need the platform's locality only on real hardware; the PCR's
   * authValue is empty, hence the empty password by default.
   */
  pcrExtend(
    pcrHandle: number,
    digests: readonly { readonly hash: number; readonly digest: Uint8Array }[],
    auth: Session = passwordSession(),
  ): Promise<void> {
    if (pcrHandle >>> 24 !== TPM_HT.PCR)
      throw new RangeError(`pcrExtend: 0x${pcrHandle.toString(16)} is not a PCR`);
    for (const { hash: alg, digest } of digests)
      if (digest.length !== digestSize(alg))
        throw new RangeError(
          `pcrExtend: a ${nameOf(TPM_ALG, alg)} digest is ${digestSize(alg)} bytes, not ${digest.length}`,
        );
    return this.execute({
      code: TPM_CC.PCR_Extend,
      handles: [pcrHandle],
      sessions: [auth],
      parameters: (w) => {
        w.u32(digests.length);
        for (const { hash: alg, digest } of digests) w.u16(alg).bytes(digest);
      },
      decode: () => undefined,
    });
  }

  // -------------------------------------------------------------------------------------------------
  // Signatures

  /**
   * Signs a digest with an unrestricted signing key. `scheme` may be NULL_SCHEME to use the key's own;
   * an ECDSA signature's r and s come back as the TPM sent them (see ecdsaSignatureP1363).
   */
  sign(
    keyHandle: number,
    digest: Uint8Array,
    scheme: Scheme,
    keyAuth: Session = passwordSession(),
  ): Promise<Signature> {
    return this.execute({
      code: TPM_CC.Sign,
      handles: [keyHandle],
      sessions: [keyAuth],
      parameters: (w) => {
        w.tpm2b(digest);
        writeSigScheme(w, scheme);
        writeNullHashcheckTicket(w);
      },
      decode: (r) => readSignature(r, 'signature'),
    });
  }
}

/** TPM2B_PUBLIC, keeping the bytes of its TPMT_PUBLIC for the Name. */
export function readPublicWithBytes(
  r: Reader,
  field: string,
): { publicArea: PublicArea; publicBytes: Uint8Array } {
  const { value, bytes } = r.sized16WithBytes(field, readPublicArea);
  return { publicArea: value, publicBytes: bytes };
}

function checkQualifyingData(data: Uint8Array): void {
  if (data.length > MAX_DATA_SIZE)
    throw new RangeError(`qualifyingData is ${data.length} bytes; TPM2B_DATA holds at most ${MAX_DATA_SIZE}`);
}

/** TPM2B_ATTEST then TPMT_SIGNATURE, as Quote and Certify answer. */
function decodeAttestResponse(r: Reader, field: string): AttestResult {
  const { value: attest, bytes: attestBytes } = r.sized16WithBytes(field, readAttest);
  const signature = readSignature(r, 'signature');
  return { attestBytes, attest, signature };
}

function readCapabilityData(r: Reader, capability: number): unknown[] {
  switch (capability) {
    case TPM_CAP.TPM_PROPERTIES: {
      const n = r.count('tpmProperties', 8);
      return Array.from({ length: n }, (_, i) => ({
        property: r.u32(`tpmProperties[${i}].property`),
        value: r.u32(`tpmProperties[${i}].value`),
      }));
    }
    case TPM_CAP.HANDLES:
    case TPM_CAP.COMMANDS: {
      const n = r.count('handles', 4);
      return Array.from({ length: n }, (_, i) => r.u32(`[${i}]`));
    }
    case TPM_CAP.PCRS:
      return readPcrSelections(r, 'assignedPCR');
    case TPM_CAP.ALGS: {
      const n = r.count('algorithms', 6);
      return Array.from({ length: n }, (_, i) => ({
        alg: r.u16(`[${i}].alg`),
        properties: r.u32(`[${i}].algProperties`),
      }));
    }
    default:
      return r.fail(`capability ${capability} is not one this library reads`);
  }
}

/** inSensitive, inPublic, outsideInfo and creationPCR: the parameters CreatePrimary and Create share. */
function writeCreationParameters(w: Writer, template: PublicArea, options: CreatePrimaryOptions): void {
  w.sized16((s) => s.tpm2b(options.userAuth ?? EMPTY).tpm2b(options.sensitiveData ?? EMPTY));
  w.sized16((p) => writePublicArea(p, template));
  w.tpm2b(options.outsideInfo ?? EMPTY);
  writePcrSelections(w, options.creationPcrs ?? []);
}
