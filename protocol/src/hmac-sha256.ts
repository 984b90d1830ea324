// HMAC-SHA256 (RFC 2104, FIPS 180-4) with the key's inner and outer states computed once, for the
// gateway's mac1 check: the one piece of cryptography every packet of a flood pays for.
//
// node:crypto's createHmac costs ~3.6 µs here per call, most of it setting up a new OpenSSL MAC
// context with the key (measured: 55% of the gateway's busy time under a 100k packets/s flood).
// With the keyed states precomputed, a 200-byte message needs five SHA-256 compressions and no
// allocation. The output is checked against node:crypto by property tests. SHA-256 has no
// data-dependent branches or table lookups, so this is as constant-time as the native one.

const BLOCK_BYTES = 64;
const DIGEST_BYTES = 32;

// biome-ignore format: the FIPS 180-4 constants, eight to a line
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

const IV = new Int32Array([
  0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
]);

/** One SHA-256 compression of the 64 bytes at `bytes[offset]` into `state`; `w` is scratch. */
function compress(state: Int32Array, w: Int32Array, bytes: Uint8Array, offset: number): void {
  for (let i = 0; i < 16; i++) {
    const j = offset + 4 * i;
    w[i] = (bytes[j]! << 24) | (bytes[j + 1]! << 16) | (bytes[j + 2]! << 8) | bytes[j + 3]!;
  }
  for (let i = 16; i < 64; i++) {
    const x = w[i - 15]!;
    const y = w[i - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[i] = (w[i - 16]! + s0 + w[i - 7]! + s1) | 0;
  }
  let a = state[0]!;
  let b = state[1]!;
  let c = state[2]!;
  let d = state[3]!;
  let e = state[4]!;
  let f = state[5]!;
  let g = state[6]!;
  let h = state[7]!;
  for (let i = 0; i < 64; i++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const ch = (e & f) ^ (~e & g);
    const t1 = (h + S1 + ch + K[i]! + w[i]!) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const maj = (a & b) ^ (a & c) ^ (b & c);
    const t2 = (S0 + maj) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

/** An HMAC-SHA256 key with its inner and outer states precomputed. Not safe to share across threads. */
export class HmacSha256 {
  readonly #inner = new Int32Array(8);
  readonly #outer = new Int32Array(8);
  readonly #state = new Int32Array(8);
  readonly #w = new Int32Array(64);
  readonly #tail = new Uint8Array(2 * BLOCK_BYTES);

  /** @param key at most 64 bytes (longer keys would be hashed first; Umbra's keys are 32) */
  constructor(key: Uint8Array) {
    if (key.length > BLOCK_BYTES)
      throw new RangeError('HmacSha256: keys longer than 64 bytes are not supported');
    const pad = new Uint8Array(BLOCK_BYTES);
    for (const [state, byte] of [
      [this.#inner, 0x36],
      [this.#outer, 0x5c],
    ] as const) {
      pad.fill(byte);
      for (let i = 0; i < key.length; i++) pad[i]! ^= key[i]!;
      state.set(IV);
      compress(state, this.#w, pad, 0);
    }
  }

  /** Writes the first `out.length` (at most 32) bytes of HMAC(key, bytes[start..end)) into `out`. */
  digestInto(bytes: Uint8Array, start: number, end: number, out: Uint8Array): void {
    if (!(start >= 0 && start <= end && end <= bytes.length && out.length <= DIGEST_BYTES))
      throw new RangeError(
        `HmacSha256: bad range ${start}..${end} of ${bytes.length} bytes, or more than 32 out`,
      );
    const state = this.#state;
    const w = this.#w;
    const tail = this.#tail;
    const length = end - start;
    // Inner hash: the keyed block is already in the state; the message follows it.
    state.set(this.#inner);
    const full = start + length - (length % BLOCK_BYTES);
    for (let offset = start; offset < full; offset += BLOCK_BYTES) compress(state, w, bytes, offset);
    // The tail, padded: copied byte by byte, since a subarray view would allocate.
    const rest = end - full;
    const tailBytes = rest + 9 > BLOCK_BYTES ? 2 * BLOCK_BYTES : BLOCK_BYTES;
    for (let i = 0; i < rest; i++) tail[i] = bytes[full + i]!;
    tail[rest] = 0x80;
    tail.fill(0, rest + 1, tailBytes - 8);
    writeBitLength(tail, tailBytes, BLOCK_BYTES + length);
    for (let offset = 0; offset < tailBytes; offset += BLOCK_BYTES) compress(state, w, tail, offset);
    // Outer hash: the keyed block, then the inner digest in a single padded block.
    for (let i = 0; i < 8; i++) writeWord(tail, 4 * i, state[i]!);
    tail[DIGEST_BYTES] = 0x80;
    tail.fill(0, DIGEST_BYTES + 1, BLOCK_BYTES - 8);
    writeBitLength(tail, BLOCK_BYTES, BLOCK_BYTES + DIGEST_BYTES);
    state.set(this.#outer);
    compress(state, w, tail, 0);
    for (let i = 0; i < out.length; i++) out[i] = (state[i >> 2]! >>> (24 - 8 * (i & 3))) & 0xff;
  }
}

function writeWord(bytes: Uint8Array, offset: number, word: number): void {
  bytes[offset] = word >>> 24;
  bytes[offset + 1] = (word >>> 16) & 0xff;
  bytes[offset + 2] = (word >>> 8) & 0xff;
  bytes[offset + 3] = word & 0xff;
}

/** The message length in bits, big-endian, in the last 8 bytes before `end`. */
function writeBitLength(bytes: Uint8Array, end: number, lengthBytes: number): void {
  const bits = lengthBytes * 8;
  writeWord(bytes, end - 8, Math.floor(bits / 2 ** 32));
  writeWord(bytes, end - 4, bits >>> 0);
}
