// Figures for benchmark reports: percentiles, and a process's CPU time and resident memory read
// from /proc (valid across network namespaces: they share the machine's pid namespace).

import { readFileSync } from 'node:fs';

/** Nearest-rank percentile of unsorted samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** User plus system CPU seconds the process has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

/** Resident memory now and at its peak, in MiB. */
export function residentMiB(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: kib('VmRSS') / 1024, peak: kib('VmHWM') / 1024 };
}

/** Samples CPU over an interval: call the returned function at the end for the share of one core. */
export function cpuMeter(pid: number): () => { cpuSeconds: number; wallSeconds: number; coreShare: number } {
  const cpu0 = cpuSeconds(pid);
  const wall0 = performance.now();
  return () => {
    const used = cpuSeconds(pid) - cpu0;
    const wall = (performance.now() - wall0) / 1000;
    return { cpuSeconds: used, wallSeconds: wall, coreShare: used / wall };
  };
}
