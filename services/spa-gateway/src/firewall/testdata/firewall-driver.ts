// Runs NftablesFirewall operations inside whatever network namespace it is started in
// (`ip netns exec NS node firewall-driver.ts OPS`): Node cannot switch namespaces in-process.
// OPS is a JSON array of [operation, argument?]; prints a JSON array with one
// { ok } or { error } per operation, and exits — so every result also proves what outlives it.

import { NftablesFirewall } from '../nftables-firewall.ts';

type Operation = [string, unknown?];

function median(sorted: number[]): number {
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

/** Opens `count` distinct pinholes, then refreshes each, timing every call. */
function benchOpen(firewall: NftablesFirewall, count: number) {
  const fresh: number[] = [];
  const refresh: number[] = [];
  for (const [round, samples] of [fresh, refresh].entries()) {
    for (let i = 0; i < count; i++) {
      const source = `198.51.100.${i % 250}`;
      const start = process.hrtime.bigint();
      firewall.open({ source, protocol: 'tcp', port: 10_000 + i, ttlSeconds: 60 + round });
      samples.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    samples.sort((a, b) => a - b);
  }
  return { count, freshMedianMs: median(fresh), refreshMedianMs: median(refresh) };
}

const operations = JSON.parse(process.argv[2] ?? '[]') as Operation[];
const firewall = new NftablesFirewall();
const results: unknown[] = [];
for (const [name, argument] of operations) {
  try {
    let ok: unknown;
    if (name === 'install') ok = firewall.install();
    else if (name === 'isInstalled') ok = firewall.isInstalled();
    else if (name === 'drift') ok = firewall.drift();
    else if (name === 'open') ok = firewall.open(argument as Parameters<NftablesFirewall['open']>[0]);
    else if (name === 'close') ok = firewall.close(argument as Parameters<NftablesFirewall['close']>[0]);
    else if (name === 'list') ok = firewall.list();
    else if (name === 'cut') {
      const { marks, ttlSeconds } = argument as { marks: number[]; ttlSeconds: number };
      ok = firewall.cut(marks, ttlSeconds);
    } else if (name === 'benchOpen') ok = benchOpen(firewall, argument as number);
    else throw new Error(`firewall-driver: unknown operation ${name}`);
    results.push({ ok: ok ?? null });
  } catch (error) {
    const { name: errorName, message, details } = error as Error & { details?: string };
    results.push({ error: { name: errorName, message, details } });
  }
}
firewall.release();
process.stdout.write(`${JSON.stringify(results)}\n`);
