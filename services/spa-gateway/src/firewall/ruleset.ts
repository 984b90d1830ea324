// The gateway's base ruleset, `table inet umbra`, in the nftables JSON schema (libnftables-json(5)).
//
// Everything not explicitly let in is dropped in silence: no ICMP echo, no TCP reset, no reject,
// so from outside the gateway looks like an unused address. Only a pinhole — an element in
// pinholes4/pinholes6 that the kernel expires by itself — lets a new flow in.
//
// A flow a pinhole lets in carries its session's conntrack mark (from pinhole_marks4/6, filled
// with the pinhole), so revoking the session can stop that very flow: its mark goes into
// cut_marks, and every later packet of it is dropped, even on an established connection.
//
// Each rule is written twice, as nft text (for docs and the drift report) and as JSON exactly as
// `nft -j list` prints it back, so a listing can be compared with the desired rules structurally.
// A test loads the text form with `nft -f` and checks that the kernel lists the JSON form.

import { isDeepStrictEqual } from 'node:util';

export const TABLE_FAMILY = 'inet';
export const TABLE_NAME = 'umbra';
export const PINHOLES4 = 'pinholes4';
export const PINHOLES6 = 'pinholes6';
export const PINHOLE_MARKS4 = 'pinhole_marks4';
export const PINHOLE_MARKS6 = 'pinhole_marks6';
export const CUT_MARKS = 'cut_marks';

const table = { family: TABLE_FAMILY, name: TABLE_NAME };
const inTable = { family: TABLE_FAMILY, table: TABLE_NAME };

export interface SetSpec {
  name: string;
  /** The key's type; a list for a concatenation. nft prints a single type as a plain string. */
  type: string | string[];
  /** For a map: the type of the values keys map to. */
  map?: string;
  flags: string[];
  /** The kernel refuses elements beyond this, so no client can grow the set without bound. */
  size: number;
}

export interface ChainSpec {
  name: string;
  type: 'filter';
  hook: 'input' | 'forward' | 'output';
  prio: number;
  policy: 'drop' | 'accept';
}

export interface RuleSpec {
  /** The rule in nft syntax, as `nft list` prints it. */
  text: string;
  /** The rule's `expr` array, as `nft -j list` prints it. */
  expr: object[];
}

/** Open pinholes at most, per address family: far above a branch office's needs, and bounded. */
export const MAX_PINHOLES = 65_536;

export const PINHOLE_SETS: readonly SetSpec[] = [
  {
    name: PINHOLES4,
    type: ['ipv4_addr', 'inet_proto', 'inet_service'],
    flags: ['timeout'],
    size: MAX_PINHOLES,
  },
  {
    name: PINHOLES6,
    type: ['ipv6_addr', 'inet_proto', 'inet_service'],
    flags: ['timeout'],
    size: MAX_PINHOLES,
  },
];

/**
 * Which conntrack mark a new flow through a pinhole gets: the same key as the pinhole, filled in
 * the same transaction, and expiring with it.
 */
export const MARK_MAPS: readonly SetSpec[] = [
  {
    name: PINHOLE_MARKS4,
    type: ['ipv4_addr', 'inet_proto', 'inet_service'],
    map: 'mark',
    flags: ['timeout'],
    size: MAX_PINHOLES,
  },
  {
    name: PINHOLE_MARKS6,
    type: ['ipv6_addr', 'inet_proto', 'inet_service'],
    map: 'mark',
    flags: ['timeout'],
    size: MAX_PINHOLES,
  },
];

/** Marks of revoked sessions whose flows are dropped, established or not. */
export const CUT_MARKS_SET: SetSpec = {
  name: CUT_MARKS,
  type: 'mark',
  flags: ['timeout'],
  size: MAX_PINHOLES,
};

/** Every set and map of the base ruleset, in the order nft lists them (creation order). */
export const BASE_SETS: readonly SetSpec[] = [...PINHOLE_SETS, ...MARK_MAPS, CUT_MARKS_SET];

const FILTER_PRIORITY = 0;

export const BASE_CHAINS: readonly ChainSpec[] = [
  { name: 'input', type: 'filter', hook: 'input', prio: FILTER_PRIORITY, policy: 'drop' },
  // The gateway does not route: nothing is forwarded but flows already established. Pinholes for
  // DNAT'd backends will match the destination too, so a grant never opens a port on every host.
  { name: 'forward', type: 'filter', hook: 'forward', prio: FILTER_PRIORITY, policy: 'drop' },
  // The kernel answers some malformed packets itself, before any input hook sees them: an IPv4
  // header with a broken option or an IPv6 hop-by-hop option it does not know gets an ICMP
  // parameter problem from ip_rcv / ip6_rcv. The output hook is the one place to stop those.
  { name: 'output', type: 'filter', hook: 'output', prio: FILTER_PRIORITY, policy: 'accept' },
];

const meta = (key: string) => ({ meta: { key } });
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
const ctState = { ct: { key: 'state' } };

const loopbackAccept: RuleSpec = {
  text: 'iif "lo" accept',
  expr: [{ match: { op: '==', left: meta('iif'), right: 'lo' } }, { accept: null }],
};

// Invalid before established: a packet conntrack cannot place must not ride on an existing flow.
const invalidDrop: RuleSpec = {
  text: 'ct state invalid drop',
  expr: [{ match: { op: 'in', left: ctState, right: 'invalid' } }, { drop: null }],
};

// Before the established rule, so that a cut flow gets nothing through; no reset either, so a
// direct-mode client just sees its connection stall, as it would behind any dark firewall.
const cutMarksDrop: RuleSpec = {
  text: `ct mark @${CUT_MARKS} drop`,
  expr: [{ match: { op: '==', left: { ct: { key: 'mark' } }, right: `@${CUT_MARKS}` } }, { drop: null }],
};

// Flows a pinhole let in outlive the pinhole: the set element only gates the first packet.
const establishedAccept: RuleSpec = {
  text: 'ct state established,related accept',
  expr: [{ match: { op: 'in', left: ctState, right: ['established', 'related'] } }, { accept: null }],
};

const pinholeKey = (addressProtocol: 'ip' | 'ip6') => ({
  concat: [payload(addressProtocol, 'saddr'), meta('l4proto'), payload('th', 'dport')],
});

// Marks only new flows: a flow keeps the mark of the knock that let it in. A lookup miss (a
// pinhole opened without a mark, or no pinhole at all) ends the rule and sets nothing.
function markNewFlow(addressProtocol: 'ip' | 'ip6', map: string): RuleSpec {
  return {
    text: `ct state new ct mark set ${addressProtocol} saddr . meta l4proto . th dport map @${map}`,
    expr: [
      { match: { op: 'in', left: ctState, right: 'new' } },
      {
        mangle: {
          key: { ct: { key: 'mark' } },
          value: { map: { key: pinholeKey(addressProtocol), data: `@${map}` } },
        },
      },
    ],
  };
}

function pinholeAccept(addressProtocol: 'ip' | 'ip6', set: string): RuleSpec {
  return {
    text: `${addressProtocol} saddr . meta l4proto . th dport @${set} accept`,
    expr: [
      {
        match: {
          op: '==',
          left: pinholeKey(addressProtocol),
          right: `@${set}`,
        },
      },
      { accept: null },
    ],
  };
}

// IPv6 cannot resolve neighbours without these, just as IPv4 needs ARP (which inet tables never
// see). Hop limit 255 proves the sender is on the link: a router would have decremented it.
// Listed in ICMPv6 type order (133..136) because that is how nft prints the anonymous set back.
const neighbourDiscoveryAccept: RuleSpec = {
  text:
    'icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } ' +
    'ip6 hoplimit 255 accept',
  expr: [
    {
      match: {
        op: '==',
        left: payload('icmpv6', 'type'),
        right: {
          set: ['nd-router-solicit', 'nd-router-advert', 'nd-neighbor-solicit', 'nd-neighbor-advert'],
        },
      },
    },
    { match: { op: '==', left: payload('ip6', 'hoplimit'), right: 255 } },
    { accept: null },
  ],
};

// ICMP errors are how a host answers a packet it will not take. Dropped on the way out, so the
// gateway never sends one, whatever triggered it. (Packet-too-big is kept: only routers send it,
// and IPv6 path MTU discovery for the gateway's own flows must not break.)
const ERROR_TYPES = ['destination-unreachable', 'time-exceeded', 'parameter-problem'];
function icmpErrorsDrop(protocol: 'icmp' | 'icmpv6'): RuleSpec {
  return {
    text: `${protocol} type { ${ERROR_TYPES.join(', ')} } drop`,
    expr: [
      { match: { op: '==', left: payload(protocol, 'type'), right: { set: ERROR_TYPES } } },
      { drop: null },
    ],
  };
}

export const BASE_RULES: Readonly<Record<ChainSpec['name'], readonly RuleSpec[]>> = {
  input: [
    loopbackAccept,
    invalidDrop,
    cutMarksDrop,
    establishedAccept,
    markNewFlow('ip', PINHOLE_MARKS4),
    markNewFlow('ip6', PINHOLE_MARKS6),
    pinholeAccept('ip', PINHOLES4),
    pinholeAccept('ip6', PINHOLES6),
    neighbourDiscoveryAccept,
  ],
  forward: [invalidDrop, establishedAccept],
  output: [icmpErrorsDrop('icmp'), icmpErrorsDrop('icmpv6')],
};

function rulesOf(chain: ChainSpec): readonly RuleSpec[] {
  return BASE_RULES[chain.name] ?? [];
}

/**
 * The transaction that installs the base ruleset or repairs it in place. `add` of an existing
 * table, set or chain is a no-op (and `add chain` resets a changed policy), so the pinhole sets
 * keep their elements; each chain is flushed and refilled inside the same transaction, so the
 * kernel never runs without the drop policy or with a rule missing or doubled.
 */
export function installCommands(): { nftables: object[] } {
  const commands: object[] = [{ add: { table } }];
  for (const set of BASE_SETS) {
    const { name, type, map, flags, size } = set;
    commands.push(
      map === undefined
        ? { add: { set: { ...inTable, name, type, flags, size } } }
        : { add: { map: { ...inTable, name, type, map, flags, size } } },
    );
  }
  for (const chain of BASE_CHAINS) commands.push({ add: { chain: { ...inTable, ...chain } } });
  for (const chain of BASE_CHAINS) {
    commands.push({ flush: { chain: { ...inTable, name: chain.name } } });
    for (const rule of rulesOf(chain)) {
      commands.push({ add: { rule: { ...inTable, chain: chain.name, expr: rule.expr } } });
    }
  }
  return { nftables: commands };
}

/** The base ruleset in nft syntax, as `nft list table inet umbra` prints it with no pinholes. */
export function baseRulesetText(): string {
  const blocks: string[] = [];
  for (const set of BASE_SETS) {
    blocks.push(
      `\t${set.map === undefined ? 'set' : 'map'} ${set.name} {\n\t\ttype ${typeText(set)}\n\t\tsize ${set.size}\n\t\tflags ${set.flags.join(',')}\n\t}\n`,
    );
  }
  for (const chain of BASE_CHAINS) {
    const lines = [
      `\t\ttype ${chain.type} hook ${chain.hook} priority ${chain.prio === FILTER_PRIORITY ? 'filter' : chain.prio}; policy ${chain.policy};`,
    ];
    for (const rule of rulesOf(chain)) lines.push(`\t\t${rule.text}`);
    blocks.push(`\tchain ${chain.name} {\n${lines.join('\n')}\n\t}\n`);
  }
  return `table ${TABLE_FAMILY} ${TABLE_NAME} {\n${blocks.join('\n')}}\n`;
}

/**
 * Compares `nft -j list table inet umbra` output with the base ruleset and says, in nft terms,
 * what differs. An empty list means installed and intact. Chains and sets the base ruleset does
 * not define are ignored: later features may add their own.
 */
export function describeDrift(listing: object | undefined): string[] {
  const items = listedItems(listing);
  const ours = (o: Record<string, unknown>) => o.family === TABLE_FAMILY && o.table === TABLE_NAME;
  if (!items.some((i) => i.table && i.table.family === TABLE_FAMILY && i.table.name === TABLE_NAME)) {
    return [`table ${TABLE_FAMILY} ${TABLE_NAME} is missing`];
  }
  const drift: string[] = [];
  for (const set of BASE_SETS) {
    const kind = set.map === undefined ? 'set' : 'map';
    const listed = items.find((i) => i[kind] && ours(i[kind]) && i[kind].name === set.name)?.[kind];
    if (listed === undefined) drift.push(`${kind} ${set.name} is missing`);
    else if (
      !isDeepStrictEqual(listed.type, set.type) ||
      listed.map !== set.map ||
      !isDeepStrictEqual(listed.flags, set.flags) ||
      listed.size !== set.size
    ) {
      drift.push(
        `${kind} ${set.name} is not { type ${typeText(set)}; size ${set.size}; flags ${set.flags.join(',')} }`,
      );
    }
  }
  for (const chain of BASE_CHAINS) {
    const listed = items.find((i) => i.chain && ours(i.chain) && i.chain.name === chain.name)?.chain;
    if (listed === undefined) {
      drift.push(`chain ${chain.name} is missing`);
      continue;
    }
    for (const key of ['type', 'hook', 'prio', 'policy'] as const) {
      if (listed[key] !== chain[key]) {
        drift.push(`chain ${chain.name}: ${key} is ${String(listed[key])}, expected ${chain[key]}`);
      }
    }
    const rules = items
      .filter((i) => i.rule && ours(i.rule) && i.rule.chain === chain.name)
      .map((i) => i.rule!);
    const expected = rulesOf(chain);
    for (let n = 0; n < Math.max(rules.length, expected.length); n++) {
      const want = expected[n];
      const got = rules[n];
      if (want === undefined)
        drift.push(`chain ${chain.name}: unexpected rule #${n + 1} (handle ${got?.handle})`);
      else if (got === undefined)
        drift.push(`chain ${chain.name}: rule #${n + 1} \`${want.text}\` is missing`);
      else if (!isDeepStrictEqual(got.expr, want.expr)) {
        drift.push(`chain ${chain.name}: rule #${n + 1} (handle ${got.handle}) is not \`${want.text}\``);
      }
    }
  }
  return drift;
}

function typeText({ type, map }: SetSpec): string {
  const key = typeof type === 'string' ? type : type.join(' . ');
  return map === undefined ? key : `${key} : ${map}`;
}

type Listed = Record<string, unknown>;
interface ListedItem {
  table?: Listed;
  set?: Listed;
  map?: Listed;
  chain?: Listed;
  rule?: Listed;
}

function listedItems(listing: object | undefined): ListedItem[] {
  const items = (listing as { nftables?: unknown } | undefined)?.nftables;
  return Array.isArray(items) ? (items as ListedItem[]) : [];
}
