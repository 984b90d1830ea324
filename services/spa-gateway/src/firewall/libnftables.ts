// A thin binding to libnftables.so.1 through koffi, speaking the nftables JSON schema
// (libnftables-json(5)). In-process calls cost ~0.1 ms; spawning `nft` costs ~4 ms, and
// `nft -j -f -` cannot even read Node's socketpair stdin, so the gateway never spawns it.

import koffi, { type LibraryHandle } from 'koffi';

export const LIBNFTABLES = 'libnftables.so.1';

/** From <nftables/libnftables.h>, which Debian ships only in libnftables-dev. */
const NFT_CTX_DEFAULT = 0;
const NFT_CTX_OUTPUT_JSON = 1 << 4;
const NFT_CTX_OUTPUT_TERSE = 1 << 11;

export interface RunOptions {
  /** List sets without their elements (nft -t): listing 20,000 pinholes takes ~0.5 s. */
  omitSetElements?: boolean;
}

/** A command libnftables or the kernel refused; `details` is libnftables' own error text. */
export class NftablesError extends Error {
  readonly command: object;
  readonly details: string;

  constructor(message: string, command: object, details: string) {
    super(message);
    this.name = 'NftablesError';
    this.command = command;
    this.details = details;
  }
}

type NftCtx = bigint;

interface LibnftablesApi {
  nft_ctx_new(flags: number): NftCtx | null;
  nft_ctx_output_set_flags(ctx: NftCtx, flags: number): void;
  nft_ctx_buffer_output(ctx: NftCtx): number;
  nft_ctx_buffer_error(ctx: NftCtx): number;
  nft_run_cmd_from_buffer(ctx: NftCtx, buffer: string): number;
  nft_ctx_get_output_buffer(ctx: NftCtx): string | null;
  nft_ctx_get_error_buffer(ctx: NftCtx): string | null;
  nft_ctx_free(ctx: NftCtx): void;
}

const loaded = new Map<string, LibnftablesApi>();

/** Loads a library once per process: koffi keeps it mapped for the life of the process anyway. */
function loadApi(library: string): LibnftablesApi {
  const cached = loaded.get(library);
  if (cached !== undefined) return cached;
  let lib: LibraryHandle;
  try {
    lib = koffi.load(library);
  } catch (cause) {
    throw new Error(`${library} not found: install Debian's libnftables1 (apt-get install libnftables1)`, {
      cause,
    });
  }
  // An anonymous opaque pointer type: a named one would clash in koffi's process-wide registry
  // if another module declared `nft_ctx` too.
  const ctx = koffi.pointer(koffi.opaque());
  const api: LibnftablesApi = {
    nft_ctx_new: lib.func('nft_ctx_new', ctx, ['uint32_t']),
    nft_ctx_output_set_flags: lib.func('nft_ctx_output_set_flags', 'void', [ctx, 'uint32_t']),
    nft_ctx_buffer_output: lib.func('nft_ctx_buffer_output', 'int', [ctx]),
    nft_ctx_buffer_error: lib.func('nft_ctx_buffer_error', 'int', [ctx]),
    nft_run_cmd_from_buffer: lib.func('nft_run_cmd_from_buffer', 'int', [ctx, 'const char *']),
    nft_ctx_get_output_buffer: lib.func('nft_ctx_get_output_buffer', 'const char *', [ctx]),
    nft_ctx_get_error_buffer: lib.func('nft_ctx_get_error_buffer', 'const char *', [ctx]),
    nft_ctx_free: lib.func('nft_ctx_free', 'void', [ctx]),
  };
  loaded.set(library, api);
  return api;
}

/** One libnftables context. Not safe to share between threads; one per firewall is plenty. */
export class Libnftables {
  #api: LibnftablesApi;
  #ctx: NftCtx | undefined;

  /** @param options.library the shared object to load; the system's libnftables.so.1 by default */
  constructor(options: { library?: string } = {}) {
    this.#api = loadApi(options.library ?? LIBNFTABLES);
    const ctx = this.#api.nft_ctx_new(NFT_CTX_DEFAULT);
    if (ctx === null || ctx === 0n)
      throw new Error('nft_ctx_new failed: the process is probably out of memory');
    // libnftables 1.0.6 has no input-flags call: the JSON output flag is also what makes it
    // parse its input as JSON.
    this.#api.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON);
    if (this.#api.nft_ctx_buffer_output(ctx) !== 0 || this.#api.nft_ctx_buffer_error(ctx) !== 0) {
      this.#api.nft_ctx_free(ctx);
      throw new Error('libnftables could not buffer its output: the process is probably out of memory');
    }
    this.#ctx = ctx;
  }

  /**
   * Runs `{ nftables: commands }` as one transaction: the kernel applies all of it or none.
   * Returns the parsed JSON output (list commands), or undefined when there was none.
   */
  run(commands: object, options: RunOptions = {}): object | undefined {
    const ctx = this.#ctx;
    if (ctx === undefined) throw new Error('Libnftables.run after close(): create a new Libnftables');
    const terse = options.omitSetElements === true;
    if (terse) this.#api.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_TERSE);
    let status: number;
    try {
      status = this.#api.nft_run_cmd_from_buffer(ctx, JSON.stringify(commands));
    } finally {
      if (terse) this.#api.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON);
    }
    // Reading a buffer rewinds it for the next command; read both every time so one call's
    // text never leaks into the next.
    const output = this.#api.nft_ctx_get_output_buffer(ctx) ?? '';
    const errors = (this.#api.nft_ctx_get_error_buffer(ctx) ?? '').trim();
    if (status !== 0) throw refusal(commands, errors);
    if (output.trim() === '') return undefined;
    return JSON.parse(output) as object;
  }

  close(): void {
    if (this.#ctx === undefined) return;
    this.#api.nft_ctx_free(this.#ctx);
    this.#ctx = undefined;
  }
}

function refusal(command: object, details: string): NftablesError {
  if (/Operation not permitted/i.test(details)) {
    return new NftablesError(
      'nftables refused: Operation not permitted. The gateway needs root or CAP_NET_ADMIN ' +
        '(e.g. systemd AmbientCapabilities=CAP_NET_ADMIN).',
      command,
      details,
    );
  }
  const firstLine = details.split('\n')[0] || 'libnftables gave no error text';
  return new NftablesError(`nftables refused the command: ${firstLine}`, command, details);
}
