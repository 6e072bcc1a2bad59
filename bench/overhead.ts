/**
 * @file What the report and the two finders (label issues, near duplicates) cost a warm-cache `graft train` on
 * hymenoptera, in CPU seconds (user + system of the whole process, GNU time): the machines these benchmarks run on are
 * shared, and wall time there measures the neighbours as much as graft. Runs with and without them alternate, so a
 * change of load hits both alike; the figure is the ratio of the medians. Goal (issue 11): at most 20% more.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { haveGnuTime, parseTiming, timedNode } from './gnu-time.ts';

export interface OverheadRun {
  /** With report.html and both finders, or with --no-report --no-find-label-issues --no-find-duplicates. */
  extras: boolean;
  cpuSeconds: number;
  wallSeconds: number;
  /** graft's own seconds for the finders and the report (from --json). */
  findSeconds: number;
  reportSeconds: number;
  load: number;
}

export interface OverheadResult {
  base: string;
  runs: OverheadRun[];
  /** Median CPU seconds with the extras, without, and their ratio minus one. */
  withExtras: number;
  without: number;
  overhead: number;
  /** The first run with the report, right after the activation cache was warmed: its thumbnails are made, not read
   *  from the cache (kept out of the medians; a rerun, the warm-cache case, reads them). */
  firstReport?: OverheadRun;
}

const OFF = ['--no-report', '--no-find-label-issues', '--no-find-duplicates'];
const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function trainOnce(
  hym: string,
  base: string,
  cacheDir: string,
  out: string,
  extras: boolean,
  warm = true,
): OverheadRun {
  const load = os.loadavg()[0];
  const t = performance.now();
  const r = spawnSync(
    ...timedNode([
      '--import',
      'tsx',
      'src/cli/main.ts',
      'train',
      path.join(hym, 'train'),
      '--val',
      path.join(hym, 'val'),
      '--base',
      base,
      '--out',
      out,
      '--json',
      ...(extras ? [] : OFF),
    ]),
    { encoding: 'utf8', env: { ...process.env, GRAFT_CACHE_DIR: cacheDir }, maxBuffer: 1 << 26 },
  );
  const wallSeconds = (performance.now() - t) / 1000;
  const { timing, stderr } = parseTiming(r.stderr);
  if (r.status !== 0) throw new Error(`overhead: train failed: ${stderr.trim().split('\n').pop()}`);
  if (!timing) throw new Error('overhead: no CPU time from GNU time');
  const out_ = JSON.parse(r.stdout.trim().split('\n').pop()!);
  if (warm && out_.cache.misses !== 0) throw new Error(`overhead: ${out_.cache.misses} cache misses on a warm cache`);
  return {
    extras,
    cpuSeconds: timing.cpuSeconds,
    wallSeconds,
    findSeconds: out_.seconds.find ?? 0,
    reportSeconds: out_.seconds.report ?? 0,
    load,
  };
}

/** `pairs` runs with and `pairs` without the extras, alternating, after one run that warms the activation cache. */
export function overheadSection(
  hym: string,
  log: (s: string) => void,
  base = 'nsfw-mobilenet-v2',
  pairs = 5,
): OverheadResult | undefined {
  if (!haveGnuTime()) {
    log('overhead: skipped (needs GNU time at /usr/bin/time for CPU seconds)');
    return undefined;
  }
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-overhead-'));
  try {
    const cache = path.join(tmp, 'cache');
    trainOnce(hym, base, cache, path.join(tmp, 'warm'), false, false);
    const firstReport = trainOnce(hym, base, cache, path.join(tmp, 'first'), true);
    log(`overhead, first report (thumbnails made): ${firstReport.cpuSeconds.toFixed(1)} CPU s`);
    const runs: OverheadRun[] = [];
    for (let k = 0; k < pairs; k++) {
      // Alternate which goes first, so that a drift in load does not favour one side.
      for (const extras of k % 2 ? [false, true] : [true, false]) {
        const r = trainOnce(hym, base, cache, path.join(tmp, `m${k}${extras ? 'x' : ''}`), extras);
        runs.push(r);
        log(
          `overhead ${extras ? 'with report + finders' : 'without'}: ${r.cpuSeconds.toFixed(1)} CPU s, ${r.wallSeconds.toFixed(1)} s wall (load ${r.load.toFixed(1)})`,
        );
      }
    }
    const withExtras = median(runs.filter((r) => r.extras).map((r) => r.cpuSeconds));
    const without = median(runs.filter((r) => !r.extras).map((r) => r.cpuSeconds));
    return { base, runs, withExtras, without, overhead: withExtras / without - 1, firstReport };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

export function renderOverhead(o: OverheadResult, when: string): string[] {
  const lines = [
    '',
    '## What the report and the finders cost (`--sections=overhead`, bench/overhead.ts)',
    '',
    when,
    '',
    `Warm-cache \`graft train ../shared/data/hymenoptera/train --val ../shared/data/hymenoptera/val --base ${o.base} --out M\`,`,
    'with report.html and both finders (the default) and with `--no-report --no-find-label-issues --no-find-duplicates`,',
    'alternating, after one run that warms the activation cache and one run with the report whose thumbnails are made',
    'rather than read from graft\'s thumbnail cache ("first report", outside the medians). CPU seconds are user + system',
    'of the whole process (GNU time), start-up included. Goal: at most 20% more.',
    '',
    '| | median CPU s | runs (CPU s) | wall s | finders s | report s |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const extras of [true, false]) {
    const rs = o.runs.filter((r) => r.extras === extras);
    lines.push(
      `| ${extras ? 'with report + finders' : 'without'} | ${(extras ? o.withExtras : o.without).toFixed(1)} | ${rs.map((r) => r.cpuSeconds.toFixed(1)).join(', ')} | ${rs.map((r) => r.wallSeconds.toFixed(1)).join(', ')} | ${rs.map((r) => r.findSeconds.toFixed(2)).join(', ')} | ${rs.map((r) => r.reportSeconds.toFixed(2)).join(', ')} |`,
    );
  }
  const f = o.firstReport;
  if (f)
    lines.push(
      `| first report (thumbnails made) | ${f.cpuSeconds.toFixed(1)} | ${f.cpuSeconds.toFixed(1)} | ${f.wallSeconds.toFixed(1)} | ${f.findSeconds.toFixed(2)} | ${f.reportSeconds.toFixed(2)} |`,
    );
  lines.push(
    '',
    `Overhead: ${(o.overhead * 100).toFixed(1)}% more CPU time with the report and the finders (medians).`,
  );
  if (f)
    lines.push(
      `The first report of a data set, whose thumbnails are made rather than read: ${((f.cpuSeconds / o.without - 1) * 100).toFixed(1)}% more (one run).`,
    );
  return lines;
}
