// Pinholes as elements of the nftables sets pinholes4/pinholes6 in `table inet umbra`, driven
// in-process through libnftables. The table outlives the gateway on purpose: pinholes keep
// expiring in the kernel and everything else stays dropped, whether the gateway is running or not.

import {
  type CheckedPinholeKey,
  checkPinholeKey,
  checkPinholeRequest,
  type Firewall,
  type Pinhole,
  type PinholeKey,
  type PinholeRequest,
} from './firewall.ts';
import { Libnftables, NftablesError } from './libnftables.ts';
import { describeDrift, installCommands, PINHOLES4, PINHOLES6, TABLE_FAMILY, TABLE_NAME } from './ruleset.ts';

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
    this.#changePinholes({ nftables: [{ add: timed }, { delete: element() }, { add: timed }] });
  }

  close(pinhole: PinholeKey): void {
    const element = setElement(checkPinholeKey(pinhole));
    // The add makes the delete succeed whether or not the pinhole was open; nft 1.0.6 has no
    // `destroy`, and matching "No such file or directory" in error text would be brittle.
    this.#changePinholes({ nftables: [{ add: element(1) }, { delete: element() }] });
  }

  list(): Pinhole[] {
    // One `list set` per call: nft 1.0.6 filters its cache by a single set name, so a second
    // `list set` in the same batch fails with "No such file or directory".
    return [PINHOLES4, PINHOLES6].flatMap((name) =>
      parsePinholes(
        this.#nft.run({ nftables: [{ list: { set: { family: TABLE_FAMILY, table: TABLE_NAME, name } } }] }),
      ),
    );
  }

  #changePinholes(commands: object): void {
    try {
      this.#nft.run(commands);
    } catch (error) {
      if (!isMissing(error)) throw error;
      throw new NftablesError(
        `table ${TABLE_FAMILY} ${TABLE_NAME} or its pinhole sets are missing: call install() first`,
        error.command,
        error.details,
      );
    }
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
