/**
 * @file The finders' acceptance checks, rerunnable as `npm run bench -- --sections=findings` (docs/BENCHMARKS.md):
 *   - label issues: 20 training images of hymenoptera moved to the other class in a copy of the data set; how many of
 *     them the finder ranks in its top 40, and its precision and recall;
 *   - near duplicates: 10 training images copied into a copy of the validation folder (5 re-encoded as PNG, 5 resized to
 *     80%); how many come back as leaks, and which pairs are reported on the untouched data set;
 *   - the duplicate search on 50,000 random 1280-d rows, timed.
 * Uses the default base (downloaded once, or GRAFT_MODEL_MIRROR serving ../shared/models/mirror).
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { DEFAULT_BASE } from '../src/base/base.ts';
import { initTf } from '../src/tfjs/tf.ts';
import { findDuplicates } from '../src/train/duplicates.ts';
import { mulberry32, shuffleInPlace } from '../src/train/random.ts';
import { train } from '../src/workflows/train.ts';

export interface LabelIssueCheck {
  base: string;
  flipped: number;
  inTop40: number;
  reported: number;
  /** Flipped images among all reported issues / all reported. */
  precision: number;
  /** Flipped images reported (anywhere in the list) / flipped. */
  recall: number;
  /** Reported issues that are not flipped images (natural label errors or hard images), by file name. */
  others: string[];
  seconds: number;
}

export interface DuplicateCheck {
  base: string;
  planted: number;
  plantedFoundAsLeaks: number;
  /** Pairs reported on the untouched data set. */
  untouched: { a: string; b: string; similarity: number; leak: boolean; conflict: boolean }[];
  /** Similarity of each planted pair (PNG first, then resized). */
  plantedSimilarities: number[];
  /** Highest similarity between two different photos of the untouched set (pairs below the threshold included). */
  closestDistinct: number;
}

export interface DuplicateTiming {
  rows: number;
  dim: number;
  seconds: number;
  /** CPU seconds (user + system) of the process during the search: wall seconds on a shared machine measure the load. */
  cpuSeconds?: number;
  /** One-minute load average when the search started. */
  load?: number;
  found: number;
  planted: number;
}

function copyTree(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const e of readdirSync(from, { withFileTypes: true })) {
    if (e.isDirectory()) copyTree(path.join(from, e.name), path.join(to, e.name));
    else copyFileSync(path.join(from, e.name), path.join(to, e.name));
  }
}

/** Files of a class folder data set, sorted, as [class, name]. */
function listFiles(dir: string): [string, string][] {
  return readdirSync(dir)
    .sort()
    .flatMap((c) =>
      readdirSync(path.join(dir, c))
        .sort()
        .map((f): [string, string] => [c, f]),
    );
}

export async function labelIssueCheck(hym: string, cacheDir: string, base = DEFAULT_BASE): Promise<LabelIssueCheck> {
  const work = mkdtempSync(path.join(os.tmpdir(), 'graft-flip-'));
  try {
    const data = path.join(work, 'train');
    copyTree(path.join(hym, 'train'), data);
    const files = listFiles(data);
    const classes = [...new Set(files.map(([c]) => c))];
    const order = Int32Array.from(files.keys());
    shuffleInPlace(order, mulberry32(2024));
    const flipped = new Set<string>();
    for (const i of order.subarray(0, 20)) {
      const [c, f] = files[i];
      const other = classes[(classes.indexOf(c) + 1) % classes.length];
      copyFileSync(path.join(data, c, f), path.join(data, other, f));
      rmSync(path.join(data, c, f));
      flipped.add(f);
    }
    const t = performance.now();
    const r = await train({ data, val: path.join(hym, 'val'), base, cacheDir, findDuplicates: false });
    const seconds = (performance.now() - t) / 1000;
    const issues = r.labelIssues ?? [];
    const names = issues.map((i) => path.basename(i.file));
    const found = names.filter((n) => flipped.has(n)).length;
    return {
      base: r.base,
      flipped: flipped.size,
      inTop40: names.slice(0, 40).filter((n) => flipped.has(n)).length,
      reported: issues.length,
      precision: issues.length ? found / issues.length : 0,
      recall: found / flipped.size,
      others: names.filter((n) => !flipped.has(n)),
      seconds,
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export async function duplicateCheck(hym: string, cacheDir: string, base = DEFAULT_BASE): Promise<DuplicateCheck> {
  const work = mkdtempSync(path.join(os.tmpdir(), 'graft-dup-'));
  try {
    const plain = await train({ data: path.join(hym, 'train'), val: path.join(hym, 'val'), base, cacheDir });
    const near = await train({
      data: path.join(hym, 'train'),
      val: path.join(hym, 'val'),
      base,
      cacheDir,
      findLabelIssues: false,
      duplicateThreshold: 0.5,
    });
    const val = path.join(work, 'val');
    copyTree(path.join(hym, 'val'), val);
    const files = listFiles(path.join(hym, 'train'));
    const order = Int32Array.from(files.keys());
    shuffleInPlace(order, mulberry32(7));
    const planted: { original: string; copy: string }[] = [];
    for (const [k, i] of [...order.subarray(0, 10)].entries()) {
      const [c, f] = files[i];
      const original = path.join(hym, 'train', c, f);
      const img = sharp(original).rotate();
      if (k < 5) {
        const copy = path.join(val, c, `copy-${path.parse(f).name}.png`);
        await img.png().toFile(copy);
        planted.push({ original, copy });
      } else {
        const { width = 0 } = await sharp(original).metadata();
        const copy = path.join(val, c, `copy80-${f}`);
        await img
          .resize({ width: Math.round(width * 0.8) })
          .jpeg({ quality: 90 })
          .toFile(copy);
        planted.push({ original, copy });
      }
    }
    const leaky = await train({
      data: path.join(hym, 'train'),
      val,
      base,
      cacheDir,
      findLabelIssues: false,
    });
    const pairs = leaky.duplicates ?? [];
    const pairOf = (p: { original: string; copy: string }) =>
      pairs.find(
        (d) => new Set([d.a, d.b]).has(path.resolve(p.original)) && new Set([d.a, d.b]).has(path.resolve(p.copy)),
      );
    const plantedSimilarities = planted.map((p) => pairOf(p)?.similarity ?? Number.NaN);
    const rel = (f: string) => path.relative(hym, f);
    const real = new Set((plain.duplicates ?? []).map((d) => `${d.a}\0${d.b}`));
    return {
      base: plain.base,
      planted: planted.length,
      plantedFoundAsLeaks: planted.filter((p) => pairOf(p)?.leak).length,
      untouched: (plain.duplicates ?? []).map((d) => ({
        a: rel(d.a),
        b: rel(d.b),
        similarity: d.similarity,
        leak: d.leak,
        conflict: d.conflict,
      })),
      plantedSimilarities,
      closestDistinct: Math.max(
        ...(near.duplicates ?? []).filter((d) => !real.has(`${d.a}\0${d.b}`)).map((d) => d.similarity),
      ),
    };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** The duplicate search on `rows` random positive 1280-d rows (like pooled ReLU features) with 10 planted copies. */
export async function duplicateTiming(rows = 50_000, dim = 1280): Promise<DuplicateTiming> {
  await initTf();
  const rng = mulberry32(1);
  const x = Float32Array.from({ length: rows * dim }, () => rng());
  const planted = 10;
  for (let k = 0; k < planted; k++) {
    const a = k * Math.floor(rows / planted);
    const b = a + 17;
    for (let d = 0; d < dim; d++) x[b * dim + d] = x[a * dim + d] + (rng() - 0.5) * 0.05;
  }
  const load = os.loadavg()[0];
  const cpu = process.cpuUsage();
  const t = performance.now();
  const found = await findDuplicates(x, rows, dim);
  const used = process.cpuUsage(cpu);
  return {
    rows,
    dim,
    seconds: (performance.now() - t) / 1000,
    cpuSeconds: (used.user + used.system) / 1e6,
    load,
    found: found.length,
    planted,
  };
}
