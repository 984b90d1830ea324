import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BASE_CHAINS,
  BASE_RULES,
  BASE_SETS,
  baseRulesetText,
  describeDrift,
  installCommands,
} from './ruleset.ts';

// The kernel's side of this (that nft lists these exact forms back) is checked in
// nftables-firewall.test.ts.

test('the install transaction adds, and flushes only the base chains, so pinholes survive it', () => {
  const kinds = installCommands().nftables.map((command) => {
    const [verb, body] = Object.entries(command)[0] as [string, Record<string, { name?: string }>];
    const [object, spec] = Object.entries(body)[0] as [string, { name?: string }];
    return `${verb} ${object}${verb === 'flush' ? ` ${spec.name}` : ''}`;
  });
  const rules = Object.values(BASE_RULES).flat().length;
  assert.deepEqual(kinds, [
    'add table',
    'add set',
    'add set',
    'add map',
    'add map',
    'add set',
    'add chain',
    'add chain',
    'add chain',
    'flush chain input',
    ...Array(BASE_RULES.input?.length).fill('add rule'),
    'flush chain forward',
    ...Array(BASE_RULES.forward?.length).fill('add rule'),
    'flush chain output',
    ...Array(BASE_RULES.output?.length).fill('add rule'),
  ]);
  assert.equal(kinds.filter((kind) => kind === 'add rule').length, rules);
});

test('nothing in the base ruleset answers a packet', () => {
  const text = baseRulesetText();
  assert.doesNotMatch(text, /reject|echo/);
  assert.doesNotMatch(JSON.stringify(installCommands()), /"reject"|echo-request/);
  // Only the output chain accepts by default, and it drops every ICMP error type first.
  for (const chain of BASE_CHAINS) assert.equal(chain.policy, chain.hook === 'output' ? 'accept' : 'drop');
  assert.match(
    text,
    /chain output \{[^}]*icmp type \{ destination-unreachable, time-exceeded, parameter-problem \} drop/,
  );
  assert.match(text, /icmpv6 type \{ destination-unreachable, time-exceeded, parameter-problem \} drop/);
});

test('describeDrift finds nothing in a listing of the base ruleset, and names what is missing', () => {
  const inTable = { family: 'inet', table: 'umbra' };
  const listing = {
    nftables: [
      { metainfo: { version: '1.0.6' } },
      { table: { family: 'inet', name: 'umbra', handle: 1 } },
      ...BASE_SETS.map((set) =>
        set.map === undefined
          ? { set: { ...inTable, ...set, handle: 2 } }
          : { map: { ...inTable, ...set, handle: 2 } },
      ),
      ...BASE_CHAINS.map((chain) => ({ chain: { ...inTable, ...chain, handle: 3 } })),
      ...BASE_CHAINS.flatMap((chain) =>
        (BASE_RULES[chain.name] ?? []).map((rule, n) => ({
          rule: { ...inTable, chain: chain.name, handle: 10 + n, expr: rule.expr },
        })),
      ),
    ],
  };
  assert.deepEqual(describeDrift(listing), []);
  assert.deepEqual(describeDrift(undefined), ['table inet umbra is missing']);

  const withoutForward = {
    nftables: listing.nftables.filter((item) => !JSON.stringify(item).includes('"forward"')),
  };
  assert.deepEqual(describeDrift(withoutForward), ['chain forward is missing']);

  const withoutCut = {
    nftables: listing.nftables.filter((item) => !JSON.stringify(item).includes('cut_marks')),
  };
  const drift = describeDrift(withoutCut);
  assert.equal(drift[0], 'set cut_marks is missing');
  assert.match(drift[1] ?? '', /^chain input: rule #3 \(handle \d+\) is not `ct mark @cut_marks drop`$/);
});

test('new flows through a pinhole are marked from the map filled with it, and cut marks drop first', () => {
  const input = (BASE_RULES.input ?? []).map((rule) => rule.text);
  const at = (text: string) => input.findIndex((rule) => rule.includes(text));
  assert.ok(at('@cut_marks drop') < at('established,related accept'), 'a cut flow gets nothing through');
  assert.ok(at('map @pinhole_marks4') < at('@pinholes4 accept'), 'marked before the accept ends the chain');
  assert.ok(at('map @pinhole_marks6') < at('@pinholes6 accept'));
  assert.match(
    baseRulesetText(),
    /map pinhole_marks4 \{\n\t\ttype ipv4_addr \. inet_proto \. inet_service : mark\n/,
  );
});
