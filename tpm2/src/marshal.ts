// Big-endian marshalling of TPM 2.0 structures (Part 1 §18, Part 2 §4). The Writer builds commands;
// the Reader takes responses apart and is the only thing that touches response bytes, so it is where
// every bound is checked: a short, over-long or malformed response becomes a TpmFormatError, never an
// out-of-bounds read, a RangeError from Buffer or an endless loop.

/** A response (or any TPM structure) that does not parse: too short, too long or with an invalid field. */
export class TpmFormatError extends Error {
  override name = 'TpmFormatError';
}

export class Writer {
  #buffer = new Uint8Array(256);
  #view = new DataView(this.#buffer.buffer);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  #reserve(n: number): number {
    const at = this.#length;
    if (at + n > this.#buffer.length) {
      let size = this.#buffer.length * 2;
      while (size < at + n) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#buffer.subarray(0, at));
      this.#buffer = grown;
      this.#view = new DataView(grown.buffer);
    }
    this.#length += n;
    return at;
  }

  u8(value: number): this {
    checkRange(value, 0xff, 'u8');
    const at = this.#reserve(1);
    this.#view.setUint8(at, value);
    return this;
  }

  u16(value: number): this {
    checkRange(value, 0xffff, 'u16');
    const at = this.#reserve(2);
    this.#view.setUint16(at, value);
    return this;
  }

  u32(value: number): this {
    checkRange(value, 0xffffffff, 'u32');
    const at = this.#reserve(4);
    this.#view.setUint32(at, value);
    return this;
  }

  u64(value: bigint): this {
    if (value < 0n || value > 0xffffffffffffffffn) throw new RangeError(`u64 out of range: ${value}`);
    const at = this.#reserve(8);
    this.#view.setBigUint64(at, value);
    return this;
  }

  bytes(data: Uint8Array): this {
    // #reserve may replace the buffer: take the offset before touching it.
    const at = this.#reserve(data.length);
    this.#buffer.set(data, at);
    return this;
  }

  /** A TPM2B: a u16 size, then that many bytes. */
  tpm2b(data: Uint8Array): this {
    return this.u16(data.length).bytes(data);
  }

  /** A structure preceded by its u16 size (TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE, ...), patched after `body` runs. */
  sized16(body: (w: this) => void): this {
    const at = this.#reserve(2);
    body(this);
    const size = this.#length - at - 2;
    checkRange(size, 0xffff, 'sized structure');
    this.#view.setUint16(at, size);
    return this;
  }

  /** As sized16 with a u32 size: the command's total size and the authorization area's size. */
  sized32(body: (w: this) => void, includeSizeField = false): this {
    const at = this.#reserve(4);
    body(this);
    this.#view.setUint32(at, this.#length - at - (includeSizeField ? 0 : 4));
    return this;
  }

  /** Patches a u32 at `offset` (the command size in the header). */
  patchU32(offset: number, value: number): this {
    checkRange(value, 0xffffffff, 'u32');
    if (offset < 0 || offset + 4 > this.#length)
      throw new RangeError(`patch at ${offset} outside ${this.#length}`);
    this.#view.setUint32(offset, value);
    return this;
  }

  finish(): Uint8Array {
    return this.#buffer.slice(0, this.#length);
  }
}

function checkRange(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max)
    throw new RangeError(`${what} out of range: ${value}`);
}

export class Reader {
  readonly #data: Uint8Array;
  readonly #view: DataView;
  readonly #end: number;
  readonly #what: string;
  #offset: number;

  /** `what` names the thing being read (e.g. "TPM2_ReadPublic response") for error messages. */
  constructor(data: Uint8Array, what: string, start = 0, end = data.length) {
    this.#data = data;
    this.#view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.#offset = start;
    this.#end = end;
    this.#what = what;
  }

  get offset(): number {
    return this.#offset;
  }

  get remaining(): number {
    return this.#end - this.#offset;
  }

  fail(message: string): never {
    throw new TpmFormatError(`${this.#what}: ${message} (at byte ${this.#offset})`);
  }

  #take(n: number, field: string): number {
    if (n > this.#end - this.#offset) {
      this.fail(`${field} needs ${n} bytes but only ${this.#end - this.#offset} are left`);
    }
    const at = this.#offset;
    this.#offset += n;
    return at;
  }

  u8(field = 'u8'): number {
    return this.#view.getUint8(this.#take(1, field));
  }

  u16(field = 'u16'): number {
    return this.#view.getUint16(this.#take(2, field));
  }

  u32(field = 'u32'): number {
    return this.#view.getUint32(this.#take(4, field));
  }

  u64(field = 'u64'): bigint {
    return this.#view.getBigUint64(this.#take(8, field));
  }

  bool(field: string): boolean {
    const v = this.u8(field);
    if (v > 1) this.fail(`${field} is ${v}, not YES (1) or NO (0)`);
    return v === 1;
  }

  bytes(n: number, field = 'bytes'): Uint8Array {
    const at = this.#take(n, field);
    return this.#data.slice(at, at + n);
  }

  /** A TPM2B: u16 size then bytes; `max` is the largest size the spec allows for this type. */
  tpm2b(field: string, max = 0xffff): Uint8Array {
    const size = this.u16(`${field}.size`);
    if (size > max) this.fail(`${field}.size is ${size}, more than the ${max} bytes it may hold`);
    return this.bytes(size, field);
  }

  /**
   * A structure preceded by its u16 size: `body` reads it from a Reader bounded by that size and must
   * consume exactly that many bytes. A size of 0 when the structure is required is refused.
   */
  sized16<T>(field: string, body: (r: Reader) => T): T {
    return this.sized16WithBytes(field, body).value;
  }

  /** As sized16, also returning the structure's bytes (a TPMT_PUBLIC, to compute its Name over). */
  sized16WithBytes<T>(field: string, body: (r: Reader) => T): { value: T; bytes: Uint8Array } {
    const size = this.u16(`${field}.size`);
    if (size === 0) this.fail(`${field} is empty`);
    const start = this.#take(size, field);
    const inner = new Reader(this.#data, `${this.#what}: ${field}`, start, start + size);
    const value = body(inner);
    inner.end();
    return { value, bytes: this.#data.slice(start, start + size) };
  }

  /** A bounded view of the next `n` bytes (the parameter area of a response with sessions). */
  sub(n: number, what: string): Reader {
    const start = this.#take(n, what);
    return new Reader(this.#data, `${this.#what}: ${what}`, start, start + n);
  }

  /**
   * The count of a TPML list. Each element takes at least `minElementSize` bytes, so a count the rest of
   * the input cannot hold is refused before any loop or allocation; `max` is the spec's bound if any.
   */
  count(field: string, minElementSize: number, max = 0xffffffff): number {
    const n = this.u32(`${field}.count`);
    if (n > max) this.fail(`${field}.count is ${n}, more than the ${max} it may hold`);
    if (n * minElementSize > this.remaining) {
      this.fail(`${field}.count is ${n} but only ${this.remaining} bytes are left`);
    }
    return n;
  }

  /** Asserts that everything was read: trailing bytes mean the response is not what we think it is. */
  end(): void {
    if (this.#offset !== this.#end) this.fail(`${this.#end - this.#offset} unexpected trailing bytes`);
  }
}
