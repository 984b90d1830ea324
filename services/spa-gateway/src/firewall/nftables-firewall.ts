// Pinholes as elements of the nftables sets pinholes4/pinholes6 in `table inet umbra` (and their
// flows' marks as elements of pinhole_marks4/6, cut marks of cut_marks), driven in-process
// through libnftables. The table outlives the gateway on purpose: pinholes keep
// expiring in the kernel and everything else stays dropped, whether the gateway is running or not.

import {
  type CheckedPinholeKey,
  checkCut,
  checkPinholeKey,
  checkPinholeRequest,
  type Firewall,
  type Pinhole,
  type PinholeKey,
  type PinholeRequest,
} from './firewall.ts';
import { Libnftables, NftablesError } from './libnftables.ts';
import {
  CUT_MARKS,
  describeDrift,
  installCommands,
  PINHOLE_MARKS4,
  PINHOLE_MARKS6,
  PINHOLES4,
  PINHOLES6,
  TABLE_FAMILY,
  TABLE_NAME,
} from './ruleset.ts';

export class NftablesFirewall implements Firewall {
  #nft: Libnftables;

  /** Throws if libnftables.so.1 cannot be loaded; needs root or CAP_NET_ADMIN to do anything. */
  constructor() {
    this.#nft = new Libnftables();
  }

  install(): void {
    this.#nft.run(installCommands());
  }

  isInstalled(): boolean {
    return this.drift().length === 0;
  }

  /** How the kernel's `table inet umbra` differs from the base ruleset, in nft terms; [] if intact. */
  drift(): string[] {
    let listing: object | undefined;
    try {
      listing = this.#nft.run(
        { nftables: [{ list: { table: { family: TABLE_FAMILY, name: TABLE_NAME } } }] },
        { omitSetElements: true },
      );
    } catch (error) {
      if (isMissing(error)) listing = undefined;
      else throw error;
    }
    return describeDrift(listing);
  }

  open(request: PinholeRequest): void {
    const pinhole = checkPinholeRequest(request);
    const element = setElement(pinhole);
    const timed = element(pinhole.ttlSeconds);
    // Re-adding an element that exists keeps its old timeout on kernels before 6.12, and deleting
    // one that does not exist fails the whole transaction. add, delete, add in one transaction
    // (one netlink batch) works on every kernel: the element ends up with the new timeout, and a
    // packet meets the old element or the new one, never neither.
    const commands = [{ add: timed }, { delete: element() }, { add: timed }];
    if (pinhole.mark === undefined) {
      this.#changePinholes([commands]);
      return;
    }
    // The mark goes in the same transaction, so no flow gets in unmarked. A map refuses to add a
    // key it holds with another value ("File exists"), and the kernel may expire the element
    // between two attempts: try as if absent or the same mark (a refresh, the usual case), then
    // as if another mark, then as if absent again.
    const marked = markElement(pinhole);
    const timedMark = marked(pinhole.ttlSeconds, pinhole.mark);
    const asIfAbsent = [...commands, { add: timedMark }, { delete: marked() }, { add: timedMark }];
    const asIfOther = [...commands, { delete: marked() }, { add: timedMark }];
    this.#changePinholes([asIfAbsent, asIfOther, asIfAbsent]);
  }

  close(pinhole: PinholeKey): void {
    const checked = checkPinholeKey(pinhole);
    const element = setElement(checked);
    // The add makes the delete succeed whether or not the pinhole was open; nft 1.0.6 has no
    // `destroy`. A mark cannot be added without knowing its value, so its delete is tried with
    // the pinhole's and left out if there is no mark to delete.
    const commands = [{ add: element(1) }, { delete: element() }];
    this.#changePinholes([[...commands, { delete: markElement(checked)() }], commands]);
  }

  cut(marks: readonly number[], ttlSeconds: number): void {
    checkCut(marks, ttlSeconds);
    if (marks.length === 0) return;
    const element = (timeout?: number) => ({
      element: {
        family: TABLE_FAMILY,
        table: TABLE_NAME,
        name: CUT_MARKS,
        elem: marks.map((mark) => (timeout === undefined ? mark : { elem: { val: mark, timeout } })),
      },
    });
    // add, delete, add, as for pinholes: a mark cut again gets the new timeout on every kernel.
    this.#changePinholes([
      [{ add: element(ttlSeconds) }, { delete: element() }, { add: element(ttlSeconds) }],
    ]);
  }

  list(): Pinhole[] {
    // One `list set` per call: nft 1.0.6 filters its cache by a single set name, so a second
    // `list set` in the same batch fails with "No such file or directory".
    const list = (kind: 'set' | 'map', name: string) =>
      this.#nft.run({ nftables: [{ list: { [kind]: { family: TABLE_FAMILY, table: TABLE_NAME, name } } }] });
    const marks = new Map<string, number>();
    for (const name of [PINHOLE_MARKS4, PINHOLE_MARKS6]) {
      for (const [key, mark] of parseMarks(list('map', name))) marks.set(key, mark);
    }
    return [PINHOLES4, PINHOLES6].flatMap((name) =>
      parsePinholes(list('set', name)).map((pinhole) => {
        const mark = marks.get(listedKey(pinhole));
        return mark === undefined ? pinhole : { ...pinhole, mark };
      }),
    );
  }

  /**
   * Runs the first of these transactions the kernel takes. The next is tried only when one fails
   * on an element that exists or does not ("File exists", "No such file or directory"): a
   * transaction is all or nothing, so a failed one changed nothing.
   */
  #changePinholes(transactions: object[][]): void {
    let failure: unknown;
    for (const nftables of transactions) {
      try {
        this.#nft.run({ nftables });
        return;
      } catch (error) {
        if (!isMissing(error) && !isExisting(error)) throw error;
        failure = error;
      }
    }
    if (!isMissing(failure)) throw failure;
    throw new NftablesError(
      `table ${TABLE_FAMILY} ${TABLE_NAME} or its pinhole sets are missing: call install() first`,
      failure.command,
      failure.details,
    );
  }

  /** Frees the libnftables context. The ruleset and the open pinholes stay in the kernel. */
  release(): void {
    this.#nft.close();
  }
}

/** The set element for a pinhole, in the shape `add element` (with a timeout) and `delete element` take. */
function setElement({ source, protocol, port, family }: CheckedPinholeKey) {
  const key = { concat: [source, protocol, port] };
  return (ttlSeconds?: number) => ({
    element: {
      family: TABLE_FAMILY,
      table: TABLE_NAME,
      name: family === 4 ? PINHOLES4 : PINHOLES6,
      elem: [ttlSeconds === undefined ? key : { elem: { val: key, timeout: ttlSeconds } }],
    },
  });
}

/** A pinhole's mark as a pinhole_marks4/6 element: with a timeout and a mark to add, bare to delete. */
function markElement({ source, protocol, port, family }: CheckedPinholeKey) {
  const key = { concat: [source, protocol, port] };
  return (ttlSeconds?: number, mark?: number) => ({
    element: {
      family: TABLE_FAMILY,
      table: TABLE_NAME,
      name: family === 4 ? PINHOLE_MARKS4 : PINHOLE_MARKS6,
      elem: [ttlSeconds === undefined ? key : [{ elem: { val: key, timeout: ttlSeconds } }, mark]],
    },
  });
}

function listedKey({ source, protocol, port }: PinholeKey): string {
  return `${source}|${protocol}|${port}`;
}

/** Reads `list map` output of pinhole_marks4/6: each element is [key or timed key, mark]. */
function parseMarks(listing: object | undefined): [string, number][] {
  const marks: [string, number][] = [];
  const items = (listing as { nftables?: { map?: { elem?: unknown[] } }[] } | undefined)?.nftables ?? [];
  for (const item of items) {
    for (const listed of item.map?.elem ?? []) {
      if (!Array.isArray(listed) || listed.length !== 2) continue;
      const [key, mark] = listed as [ListedElement, unknown];
      const concat = ((key.elem?.val ?? key) as { concat?: unknown }).concat;
      if (!Array.isArray(concat) || concat.length !== 3 || typeof mark !== 'number') continue;
      const [source, protocol, port] = concat as [string, PinholeKey['protocol'], number];
      marks.push([listedKey({ source, protocol, port }), mark]);
    }
  }
  return marks;
}

interface ListedElement {
  elem?: { val?: unknown; timeout?: number; expires?: number };
  concat?: unknown;
}

/**
 * Reads pinholes from `list set` output. An element carries `timeout` and `expires` (whole
 * seconds, rounded down) unless someone added it by hand without a timeout: then it never expires.
 * Elements whose protocol is neither tcp nor udp are not pinholes the gateway could have made.
 */
function parsePinholes(listing: object | undefined): Pinhole[] {
  const pinholes: Pinhole[] = [];
  const items =
    (listing as { nftables?: { set?: { elem?: ListedElement[] } }[] } | undefined)?.nftables ?? [];
  for (const item of items) {
    for (const listed of item.set?.elem ?? []) {
      const val = listed.elem?.val ?? listed;
      const concat = (val as { concat?: unknown }).concat;
      if (!Array.isArray(concat) || concat.length !== 3) continue;
      const [source, protocol, port] = concat as [unknown, unknown, unknown];
      if (typeof source !== 'string' || typeof port !== 'number') continue;
      if (protocol !== 'tcp' && protocol !== 'udp') continue;
      const ttlSeconds = listed.elem?.timeout ?? Number.POSITIVE_INFINITY;
      // nft leaves `expires` out once less than a second is left.
      const secondsLeft = listed.elem?.expires ?? (Number.isFinite(ttlSeconds) ? 0 : ttlSeconds);
      pinholes.push({ source, protocol, port, ttlSeconds, secondsLeft });
    }
  }
  return pinholes;
}

function isMissing(error: unknown): error is NftablesError {
  return error instanceof NftablesError && /No such file or directory/.test(error.details);
}

function isExisting(error: unknown): error is NftablesError {
  return error instanceof NftablesError && /File exists/.test(error.details);
}
