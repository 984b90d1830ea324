// NftablesFirewall against the real kernel, inside network namespaces this file creates and
// deletes. Node cannot enter a namespace in-process, so the firewall runs in a child
// (testdata/firewall-driver.ts) started with `ip netns exec`; `nft` cross-checks what it did.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BASE_CHAINS, BASE_RULES, BASE_SETS, baseRulesetText, describeDrift } from './ruleset.ts';
import {
  addNamespace,
  deleteNamespace,
  inNamespace,
  link,
  nodeInNamespace,
  nodeInNamespaceAsync,
  startInNamespace,
} from './testdata/namespaces.ts';

const DRIVER = join(import.meta.dirname, 'testdata', 'firewall-driver.ts');
const TCP_PROBE = join(import.meta.dirname, 'testdata', 'tcp-probe.ts');

const GATEWAY = `umbfw-${process.pid}`;
const CLIENT = `umbfw-${process.pid}-c`;
const gatewayEnd = { namespace: GATEWAY, interfaceName: 'umb0', ipv4: '192.0.2.1', ipv6: '2001:db8::1' };
const clientEnd = { namespace: CLIENT, interfaceName: 'umb0', ipv4: '192.0.2.2', ipv6: '2001:db8::2' };

type DriverResult = { ok: unknown } | { error: { name: string; message: string; details?: string } };

/** Runs firewall operations in a fresh process in the gateway namespace; returns each result. */
function drive(...operations: [string, unknown?][]): DriverResult[] {
  return JSON.parse(nodeInNamespace(GATEWAY, DRIVER, JSON.stringify(operations))) as DriverResult[];
}

/** Like drive(), but every operation must succeed; returns their values. */
function driveOk(...operations: [string, unknown?][]): unknown[] {
  return drive(...operations).map((result, n) => {
    assert.ok('ok' in result, `${operations[n]?.[0]} failed: ${JSON.stringify(result)}`);
    return result.ok;
  });
}

function nft(...args: string[]): string {
  return inNamespace(GATEWAY, 'nft', ...args);
}

type Listed = { nftables: Record<string, Record<string, unknown>>[] };
function nftJson(...args: string[]): Listed {
  return JSON.parse(nft('-j', ...args)) as Listed;
}

function listedRules(listing: Listed, chain?: string) {
  return listing.nftables.flatMap((item) =>
    item.rule && (!chain || item.rule.chain === chain) ? [item.rule] : [],
  );
}

function setElements(
  name: string,
): { elem: { val: { concat: unknown[] }; timeout: number; expires?: number } }[] {
  const set = nftJson('list', 'set', 'inet', 'umbra', name).nftables.find((item) => item.set)?.set;
  return (set?.elem ?? []) as ReturnType<typeof setElements>;
}

function resetRuleset(): void {
  nft('flush', 'ruleset');
}

const root = process.getuid?.() === 0;

describe('NftablesFirewall in a network namespace', {
  skip: !root && 'needs root: creates network namespaces and loads nftables rulesets in them',
}, () => {
  before(() => {
    try {
      addNamespace(GATEWAY);
      addNamespace(CLIENT);
      link(gatewayEnd, clientEnd);
    } catch (error) {
      deleteNamespace(GATEWAY);
      deleteNamespace(CLIENT);
      throw error;
    }
  });
  after(() => {
    deleteNamespace(GATEWAY);
    deleteNamespace(CLIENT);
  });

  test('install creates exactly the base ruleset, and it outlives the process', () => {
    resetRuleset();
    assert.deepEqual(driveOk(['isInstalled'], ['drift']), [false, ['table inet umbra is missing']]);
    assert.deepEqual(driveOk(['install'], ['isInstalled']), [null, true]);

    // The driver has exited: what follows is what the kernel kept.
    const listing = nftJson('list', 'ruleset');
    assert.deepEqual(describeDrift(listing), []);
    const tables = listing.nftables.filter((item) => item.table).map((item) => item.table?.name);
    assert.deepEqual(tables, ['umbra'], 'the only table in the namespace');
    for (const chain of BASE_CHAINS) {
      const rules = listedRules(listing, chain.name).map((rule) => rule.expr);
      assert.deepEqual(
        rules,
        BASE_RULES[chain.name]?.map((rule) => rule.expr),
        `rules of chain ${chain.name}`,
      );
    }
    const sets = listing.nftables.flatMap((item) => item.set ?? item.map ?? []) as Record<string, unknown>[];
    assert.deepEqual(
      sets.map((set) => ({ name: set.name, type: set.type, map: set.map, flags: set.flags })),
      BASE_SETS.map(({ name, type, map, flags }) => ({ name, type, map, flags })),
    );
    const text = nft('list', 'ruleset');
    assert.equal(text, baseRulesetText(), 'nft prints the documented text form');
    assert.doesNotMatch(
      text,
      /reject|echo|counter|log/,
      'silence: nothing answers, nothing is logged per packet',
    );
  });

  test('the text form loads to the same ruleset', () => {
    resetRuleset();
    const dir = mkdtempSync(join(tmpdir(), 'umbfw-'));
    try {
      // A file, not stdin: nft cannot open /dev/stdin when it is a socketpair, as Node makes it.
      const file = join(dir, 'umbra.nft');
      writeFileSync(file, baseRulesetText());
      nft('-f', file);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(describeDrift(nftJson('list', 'table', 'inet', 'umbra')), []);
  });

  test('a second install keeps the pinholes and doubles nothing', () => {
    resetRuleset();
    driveOk(
      ['install'],
      ['open', { source: '192.0.2.7', protocol: 'tcp', port: 22, ttlSeconds: 600 }],
      ['open', { source: '2001:db8::7', protocol: 'udp', port: 443, ttlSeconds: 600 }],
    );
    const rulesBefore = listedRules(nftJson('list', 'table', 'inet', 'umbra')).length;
    assert.deepEqual(driveOk(['install'], ['install'], ['isInstalled']), [null, null, true]);
    assert.equal(listedRules(nftJson('list', 'table', 'inet', 'umbra')).length, rulesBefore);
    assert.equal(setElements('pinholes4').length, 1);
    assert.deepEqual(setElements('pinholes6')[0]?.elem.val.concat, ['2001:db8::7', 'udp', 443]);
  });

  test('install repairs a deleted rule, a deleted chain, an added rule and a loosened policy', () => {
    resetRuleset();
    driveOk(['install'], ['open', { source: '192.0.2.7', protocol: 'tcp', port: 22, ttlSeconds: 600 }]);
    const pinholeRule = listedRules(nftJson('list', 'chain', 'inet', 'umbra', 'input')).find((rule) =>
      JSON.stringify(rule.expr).includes('@pinholes4'),
    );
    nft('delete', 'rule', 'inet', 'umbra', 'input', 'handle', String(pinholeRule?.handle));
    nft('flush', 'chain', 'inet', 'umbra', 'forward');
    nft('delete', 'chain', 'inet', 'umbra', 'forward');
    nft('add', 'rule', 'inet', 'umbra', 'input', 'tcp', 'dport', '80', 'accept');
    nft('chain', 'inet', 'umbra', 'input', '{ policy accept; }');

    const [installedBefore, drift, , installedAfter] = driveOk(
      ['isInstalled'],
      ['drift'],
      ['install'],
      ['isInstalled'],
    );
    assert.equal(installedBefore, false);
    const withoutHandles = (drift as string[]).map((line) => line.replace(/ \(handle \d+\)/, ''));
    assert.deepEqual(withoutHandles, [
      'chain input: policy is accept, expected drop',
      'chain input: rule #7 is not `ip saddr . meta l4proto . th dport @pinholes4 accept`',
      'chain input: rule #8 is not `ip6 saddr . meta l4proto . th dport @pinholes6 accept`',
      'chain input: rule #9 is not `icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, ' +
        'nd-neighbor-advert } ip6 hoplimit 255 accept`',
      'chain forward is missing',
    ]);
    assert.equal(installedAfter, true);
    assert.deepEqual(describeDrift(nftJson('list', 'table', 'inet', 'umbra')), []);
    assert.equal(setElements('pinholes4').length, 1, 'the pinhole survived the repair');
  });

  test('open adds a timed element, and the kernel expires it; opening again restarts the timeout', async () => {
    resetRuleset();
    const expiring = { source: '192.0.2.10', protocol: 'tcp', port: 22, ttlSeconds: 1 };
    const refreshed = { source: '192.0.2.11', protocol: 'tcp', port: 22, ttlSeconds: 1 };
    driveOk(['install'], ['open', expiring], ['open', refreshed]);
    const opened = setElements('pinholes4').map(({ elem }) => [elem.val.concat, elem.timeout]);
    assert.deepEqual(opened.sort(), [
      [['192.0.2.10', 'tcp', 22], 1],
      [['192.0.2.11', 'tcp', 22], 1],
    ]);

    await sleep(600);
    driveOk(['open', { ...refreshed, ttlSeconds: 2 }]);
    await sleep(900); // 1.5 s after the first open: past the first timeout, not the refreshed one
    const [listed] = driveOk(['list']);
    assert.deepEqual(
      (listed as { source: string; ttlSeconds: number }[]).map(({ source, ttlSeconds }) => ({
        source,
        ttlSeconds,
      })),
      [{ source: '192.0.2.11', ttlSeconds: 2 }],
    );
    assert.deepEqual(
      setElements('pinholes4').map(({ elem }) => elem.val.concat[0]),
      ['192.0.2.11'],
    );
  });

  test('a refresh can also shorten a pinhole, and list() reports the seconds left', () => {
    resetRuleset();
    const pinhole = { source: '192.0.2.12', protocol: 'udp', port: 53, ttlSeconds: 100 };
    const [, , listed] = driveOk(
      ['install'],
      ['open', pinhole],
      ['list'],
      ['open', { ...pinhole, ttlSeconds: 30 }],
    );
    const [only] = listed as { secondsLeft: number; ttlSeconds: number }[];
    assert.equal(only?.ttlSeconds, 100);
    assert.ok(only.secondsLeft >= 98 && only.secondsLeft <= 100, `secondsLeft ${only.secondsLeft}`);
    const [element] = setElements('pinholes4');
    assert.equal(element?.elem.timeout, 30);
    assert.ok(element.elem.expires !== undefined && element.elem.expires <= 30);
  });

  test('IPv6 pinholes go to pinholes6, canonical; IPv4-mapped addresses go to pinholes4', () => {
    resetRuleset();
    const [, , , listed] = driveOk(
      ['install'],
      ['open', { source: '2001:0DB8:0:0::0002', protocol: 'tcp', port: 8443, ttlSeconds: 60 }],
      ['open', { source: '::ffff:192.0.2.9', protocol: 'tcp', port: 8443, ttlSeconds: 60 }],
      ['list'],
    );
    assert.deepEqual(
      setElements('pinholes6').map(({ elem }) => elem.val.concat),
      [['2001:db8::2', 'tcp', 8443]],
    );
    assert.deepEqual(
      setElements('pinholes4').map(({ elem }) => elem.val.concat),
      [['192.0.2.9', 'tcp', 8443]],
    );
    assert.deepEqual((listed as { source: string }[]).map(({ source }) => source).sort(), [
      '192.0.2.9',
      '2001:db8::2',
    ]);
  });

  test('close removes a pinhole, and closing one that is not open does nothing', () => {
    resetRuleset();
    const pinhole = { source: '2001:db8::20', protocol: 'tcp', port: 22 };
    const results = driveOk(
      ['install'],
      ['open', { ...pinhole, ttlSeconds: 60 }],
      ['close', pinhole],
      ['close', pinhole],
      ['close', { source: '192.0.2.20', protocol: 'udp', port: 1 }],
      ['list'],
    );
    assert.deepEqual(results.at(-1), []);
    assert.equal(setElements('pinholes6').length, 0);
  });

  test('errors say what to do', () => {
    resetRuleset();
    const [beforeInstall, badSource] = drive(
      ['open', { source: '192.0.2.1', protocol: 'tcp', port: 22, ttlSeconds: 5 }],
      ['open', { source: 'gateway.example', protocol: 'tcp', port: 22, ttlSeconds: 5 }],
    );
    assert.ok(beforeInstall && 'error' in beforeInstall);
    assert.equal(beforeInstall.error.name, 'NftablesError');
    assert.match(beforeInstall.error.message, /missing: call install\(\) first/);
    assert.ok(badSource && 'error' in badSource);
    assert.match(badSource.error.message, /pinhole source "gateway.example" is not an IPv4 or IPv6 address/);

    const unprivileged = JSON.parse(
      inNamespace(
        GATEWAY,
        'setpriv',
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        DRIVER,
        '[["install"]]',
      ),
    ) as DriverResult[];
    assert.ok(unprivileged[0] && 'error' in unprivileged[0]);
    assert.match(unprivileged[0].error.message, /Operation not permitted.*root or CAP_NET_ADMIN/);
  });

  test('open() takes well under a millisecond', (t) => {
    resetRuleset();
    const [, bench] = driveOk(['install'], ['benchOpen', 1000]);
    const { freshMedianMs, refreshMedianMs } = bench as { freshMedianMs: number; refreshMedianMs: number };
    t.diagnostic(
      `open() median over 1000: new pinhole ${freshMedianMs.toFixed(3)} ms, refresh ${refreshMedianMs.toFixed(3)} ms`,
    );
    assert.ok(freshMedianMs < 1, `new pinhole: ${freshMedianMs} ms`);
    assert.ok(refreshMedianMs < 1, `refresh: ${refreshMedianMs} ms`);
  });

  test('packets: a SYN is dropped without a reset until a pinhole opens for its source', async () => {
    resetRuleset();
    driveOk(['install']);
    let listener: ChildProcess | undefined;
    try {
      listener = await startInNamespace(GATEWAY, 'listening', TCP_PROBE, 'listen', '8080');
      const probe = async (host: string, port: number) => {
        const out = await nodeInNamespaceAsync(CLIENT, TCP_PROBE, 'connect', host, String(port), '1000');
        return (JSON.parse(out) as { outcome: string }).outcome;
      };
      // 8081 has no listener: without the firewall it would answer with a reset.
      const dark = await Promise.all([
        probe('192.0.2.1', 8080),
        probe('2001:db8::1', 8080),
        probe('192.0.2.1', 8081),
      ]);
      assert.deepEqual(dark, ['timeout', 'timeout', 'timeout']);

      driveOk(
        ['open', { source: clientEnd.ipv4, protocol: 'tcp', port: 8080, ttlSeconds: 30 }],
        ['open', { source: clientEnd.ipv6, protocol: 'tcp', port: 8080, ttlSeconds: 30 }],
      );
      // IPv6 connecting at all also proves neighbour discovery gets through the drop policy.
      const lit = await Promise.all([
        probe('192.0.2.1', 8080),
        probe('2001:db8::1', 8080),
        probe('192.0.2.1', 8081),
      ]);
      assert.deepEqual(lit, ['connected', 'connected', 'timeout']);
    } finally {
      listener?.kill();
    }
  });

  test('a pinhole with a mark fills pinhole_marks in the same transaction; refresh, re-mark, close', () => {
    resetRuleset();
    const pinhole = { source: '192.0.2.30', protocol: 'tcp', port: 8443 };
    const [, , , , listed] = driveOk(
      ['install'],
      ['open', { ...pinhole, ttlSeconds: 60, mark: 5 }],
      ['open', { ...pinhole, ttlSeconds: 50, mark: 5 }],
      ['open', { ...pinhole, ttlSeconds: 40, mark: 6 }],
      ['list'],
      ['open', { source: '2001:db8::30', protocol: 'tcp', port: 8443, ttlSeconds: 40, mark: 7 }],
      ['open', { source: '192.0.2.31', protocol: 'tcp', port: 8443, ttlSeconds: 40 }],
    );
    assert.deepEqual(
      (listed as { mark?: number; ttlSeconds: number }[]).map(({ mark, ttlSeconds }) => ({
        mark,
        ttlSeconds,
      })),
      [{ mark: 6, ttlSeconds: 40 }],
    );
    const marks = (name: string) =>
      (
        (nftJson('list', 'map', 'inet', 'umbra', name).nftables.find((item) => item.map)?.map?.elem ??
          []) as [{ elem: { val: { concat: unknown[] }; timeout: number } }, number][]
      ).map(([key, mark]) => [key.elem.val.concat, key.elem.timeout, mark]);
    assert.deepEqual(marks('pinhole_marks4'), [[['192.0.2.30', 'tcp', 8443], 40, 6]]);
    assert.deepEqual(marks('pinhole_marks6'), [[['2001:db8::30', 'tcp', 8443], 40, 7]]);

    driveOk(['close', pinhole], ['close', { source: '192.0.2.31', protocol: 'tcp', port: 8443 }]);
    assert.deepEqual(marks('pinhole_marks4'), [], 'close removes the mark with the pinhole');
    assert.equal(setElements('pinholes4').length, 0);
    const [badMark] = drive(['open', { ...pinhole, ttlSeconds: 5, mark: 0 }]);
    assert.ok(badMark && 'error' in badMark);
    assert.match(badMark.error.message, /pinhole mark 0 must be an integer from 1 to 2147483647/);
  });

  test('packets: cut() stops an established marked flow at once, and only that one', async () => {
    resetRuleset();
    driveOk(
      ['install'],
      ['open', { source: clientEnd.ipv4, protocol: 'tcp', port: 9090, ttlSeconds: 30, mark: 41 }],
      ['open', { source: clientEnd.ipv6, protocol: 'tcp', port: 9090, ttlSeconds: 30, mark: 42 }],
    );
    const children: ChildProcess[] = [];
    try {
      children.push(await startInNamespace(GATEWAY, 'listening', TCP_PROBE, 'echo', '9090'));
      const session = async (host: string) => {
        const child = await startInNamespace(CLIENT, 'echoing', TCP_PROBE, 'session', host, '9090', '400');
        children.push(child);
        let out = '';
        child.stdout?.on('data', (chunk: string) => {
          out += chunk;
        });
        return { child, output: () => out };
      };
      const cutOne = await session('192.0.2.1');
      const keptOne = await session('2001:db8::1');
      // The pinholes closing changes nothing for established flows: only cut() does.
      driveOk(['close', { source: clientEnd.ipv4, protocol: 'tcp', port: 9090 }]);
      await sleep(300);
      assert.equal(cutOne.child.exitCode, null, 'still echoing after its pinhole closed');

      const started = Date.now();
      driveOk(['cut', { marks: [41, 7], ttlSeconds: 60 }]);
      await new Promise((resolve) => cutOne.child.once('exit', resolve));
      assert.match(cutOne.output(), /"outcome":"stalled"/);
      assert.ok(Date.now() - started < 2000, `stalled after ${Date.now() - started} ms`);
      assert.equal(keptOne.child.exitCode, null, 'the flow with another mark still echoes');

      const cut = nftJson('list', 'set', 'inet', 'umbra', 'cut_marks').nftables.find((item) => item.set)?.set;
      assert.deepEqual(
        ((cut?.elem ?? []) as { elem: { val: number } }[]).map(({ elem }) => elem.val).sort(),
        [41, 7].sort(),
      );
    } finally {
      for (const child of children) child.kill();
    }
  });
});
