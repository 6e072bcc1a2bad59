/**
 * The benchmarks behind graft's defaults (issue 16):
 *  - `bases`: the default `graft train` command on hymenoptera with every zoo base that can be downloaded (through
 *    GRAFT_MODEL_MIRROR, or ../shared/models/mirror served on 127.0.0.1 when that is unset), each with and without the
 *    ImageNet central crop and with both resize modes, plus the bundled bases and the local MobileNet v1 1.0 for
 *    reference: validation accuracy over seeds, extraction and trunk cost, exported size, and the default base and
 *    per-entry preprocessing the rule picks.
 *  - `heads`: the logistic head against the softmax head on the four figures that decide the default head
 *    (validation accuracy and 5-fold cross-validated accuracy on the training images, with the default and the
 *    bundled base), and test-time flip on the validation images.
 */
import { execFile } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_BASE, disposeBase, FALLBACK_BASE, loadBase, loadLayersBase } from '../src/base/base.ts';
import { ensureModelFiles } from '../src/base/download.ts';
import { findZooEntry, ZOO } from '../src/base/zoo.ts';
import { ActivationCache } from '../src/cache/activation-cache.ts';
import { listDataset } from '../src/dataset/dataset.ts';
import { runnerFor } from '../src/engines/engine-choice.ts';
import { onnxAvailable, onnxTrunkRunner } from '../src/engines/onnx.ts';
import { buildTrunkModel } from '../src/engines/trunk.ts';
import { initTf } from '../src/tfjs/tf.ts';
import type { FeatureSet, HeadKind } from '../src/train/features.ts';
import { stratifiedFolds } from '../src/train/folds.ts';
import { argmaxRows } from '../src/train/metrics.ts';
import { mulberry32, shuffleInPlace } from '../src/train/random.ts';
import { trainHead } from '../src/train/trainer.ts';
import { extractFeatures, featureSet, trainingSet } from '../src/workflows/extract.ts';
import { prepareData } from '../src/workflows/train.ts';
import { timeRunner } from './timing.ts';

const HYM = path.resolve('../shared/data/hymenoptera');
const MIRROR_DIR = path.resolve('../shared/models/mirror');
const V1 = path.resolve('../shared/models/mobilenet_v1_1.0_224_imagenet_trunc/model.json');
export const SEEDS = [1, 2, 3];
const INCEPTION = 'nsfw-inception-v3';
/** The default the issue measures against: the zoo's MobileNetV2 0.35, uncropped, as graft shipped it before. */
export const REFERENCE = { base: 'mobilenet_v2_0.35', crop: 1, resize: 'cover' };
/** The rule's budget: extraction at most this multiple of the reference's, exported model at most this many MB. */
export const EXTRACT_BUDGET = 1.5;
export const SIZE_BUDGET_MB = 20;

type Log = (s: string) => void;

// ---------------------------------------------------------------------------------------------------------------- stats

export function mean(a: number[]): number {
  return a.reduce((s, v) => s + v, 0) / a.length;
}

export function sd(a: number[]): number {
  if (a.length < 2) return 0;
  const m = mean(a);
  return Math.sqrt(a.reduce((s, v) => s + (v - m) ** 2, 0) / (a.length - 1));
}

/** Wilson score 95% interval for a proportion p measured on n items. */
export function wilson(p: number, n: number): [number, number] {
  const z = 1.96;
  const d = 1 + (z * z) / n;
  const c = (p + (z * z) / (2 * n)) / d;
  const h = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / d;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}

/** Percentile-bootstrap 95% interval of the mean of per-item values (paired differences), seeded. */
export function bootstrapMean(values: number[], reps = 4000, seed = 7): [number, number] {
  const rng = mulberry32(seed);
  const n = values.length;
  const means = new Float64Array(reps);
  for (let r = 0; r < reps; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += values[Math.floor(rng() * n)];
    means[r] = s / n;
  }
  means.sort();
  return [means[Math.floor(0.025 * reps)], means[Math.floor(0.975 * reps)]];
}

const f3 = (v: number) => v.toFixed(3);
const interval = ([a, b]: [number, number]) => `${f3(a)}–${f3(b)}`;
const signed = (v: number) => `${v >= 0 ? '+' : '−'}${f3(Math.abs(v))}`;

// --------------------------------------------------------------------------------------------------------------- mirror

/**
 * Zoo downloads need GRAFT_MODEL_MIRROR or the network. When it is unset and ../shared holds the mirror folder, serve
 * that folder on 127.0.0.1 for the length of the section, so one command reruns the benchmark.
 */
async function withMirror<T>(log: Log, fn: () => Promise<T>): Promise<T> {
  if (process.env.GRAFT_MODEL_MIRROR || !existsSync(MIRROR_DIR)) return fn();
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = path.join(MIRROR_DIR, rel);
    if (!file.startsWith(MIRROR_DIR + path.sep) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  log(`serving ${MIRROR_DIR} at ${url} as GRAFT_MODEL_MIRROR`);
  process.env.GRAFT_MODEL_MIRROR = url;
  try {
    return await fn();
  } finally {
    delete process.env.GRAFT_MODEL_MIRROR;
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------------------------- bases

export interface BaseRow {
  base: string;
  label: string;
  kind: 'zoo' | 'bundled' | 'file';
  crop: number;
  resize: 'cover' | 'fill';
  cut: string;
  head: string;
  seeds: number[];
  valAccuracy: number[];
  valImages: number;
  /** The logistic head's own cross-validated accuracy on the training images at its chosen lambda, per seed. */
  cvAccuracy?: number[];
  trainImages: number;
  /** Cold activation cache: decode + trunk (+ cache writes, trunk set-up) per image of the data set, in the first run. */
  extractMsPerImage: number;
  /** The same, timed in alternation with the other candidates (reference and each zoo entry's best preprocessing). */
  extractInterleaved?: number[];
  /** Wall seconds of the cold run, process start included. */
  coldSeconds: number;
  trunkMsPerImage?: number;
  modelMB: number;
}

export interface BasesResult {
  rows: BaseRow[];
  /** Zoo entries that could not be downloaded, with the first reason. */
  unavailable: { count: number; reason: string };
  load: string;
}

const run = promisify(execFile);

/** The fields of `graft train --json` these tables read. */
interface TrainJson {
  cut: string;
  head: string;
  valAccuracy: number;
  valImages: number;
  trainImages: number;
  cache: { misses: number };
  seconds: { extract: number };
  headFit?: { lambda: number; search?: { rows: { lambda: number; accuracy: number }[] } };
}

async function trainJson(args: string[], env: NodeJS.ProcessEnv): Promise<{ json: TrainJson; seconds: number }> {
  const t = performance.now();
  const r = await run(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'train', ...args, '--json'], {
    env,
    maxBuffer: 1 << 26,
  }).catch((e: { stderr?: string; message: string }) => {
    throw new Error((e.stderr ?? e.message).trim().split('\n').pop());
  });
  return { json: JSON.parse(r.stdout.trim().split('\n').pop() as string), seconds: (performance.now() - t) / 1000 };
}

function folderMB(dir: string): number {
  return readdirSync(dir)
    .filter((f) => f === 'model.json' || f.endsWith('.bin'))
    .reduce((s, f) => s + statSync(path.join(dir, f)).size / 1e6, 0);
}

interface Config {
  spec: string;
  label: string;
  kind: BaseRow['kind'];
  crop: number;
  resize: BaseRow['resize'];
  extra: string[];
}

export async function basesSection(log: Log): Promise<BasesResult> {
  const load = os
    .loadavg()
    .map((v) => v.toFixed(2))
    .join(', ');
  return withMirror(log, async () => {
    const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-bases-'));
    const env = { ...process.env, GRAFT_CACHE_DIR: cacheDir };
    try {
      const available: string[] = [];
      const reasons: string[] = [];
      for (const z of ZOO) {
        try {
          await ensureModelFiles(z.url, {
            cacheDir: path.join(cacheDir, 'models'),
            name: z.name,
            stallTimeoutMs: 5000,
          });
          available.push(z.name);
        } catch (e) {
          reasons.push((e as Error).message.split('\n')[0]);
        }
      }
      log(`zoo: ${available.join(', ') || 'none'} available; ${reasons.length} not (${reasons[0] ?? ''})`);
      // Read every image once, so the first row's cold run does not also pay for a cold file-system cache.
      for (const split of ['train', 'val'])
        for (const s of (await listDataset(path.join(HYM, split))).samples) readFileSync(s.file);
      const configs: Config[] = [];
      for (const name of available)
        for (const resize of ['cover', 'fill'] as const)
          for (const crop of [1, 0.875])
            configs.push({ spec: name, label: name, kind: 'zoo', crop, resize, extra: [] });
      const bundled: [string, number[]][] = [[FALLBACK_BASE, [1, 0.875]]];
      // About 20x the reference's extraction and 87 MB exported: never a candidate, and it alone takes longer than
      // every other row on two shared cores, so it is measured on request.
      if (process.argv.includes('--bases-inception')) bundled.push([INCEPTION, [1]]);
      for (const [name, crops] of bundled)
        for (const crop of crops)
          configs.push({ spec: name, label: name, kind: 'bundled', crop, resize: 'cover', extra: [] });
      if (existsSync(V1))
        for (const crop of [1, 0.875])
          configs.push({
            spec: V1,
            label: 'mobilenet_v1_1.0_224_imagenet_trunc',
            kind: 'file',
            crop,
            resize: 'cover',
            extra: ['--input-range=-1,1'],
          });

      const rows: BaseRow[] = [];
      for (const c of configs) {
        const out = path.join(cacheDir, 'model');
        const args = (seed: number) => [
          path.join(HYM, 'train'),
          '--val',
          path.join(HYM, 'val'),
          '--base',
          c.spec,
          '--crop',
          String(c.crop),
          '--resize',
          c.resize,
          '--seed',
          String(seed),
          ...c.extra,
          ...(seed === SEEDS[0] ? ['--out', out] : []),
        ];
        try {
          const runs = [];
          for (const seed of SEEDS) runs.push(await trainJson(args(seed), env));
          const [cold] = runs;
          if (cold.json.cache.misses === 0) throw new Error('the first run found its activations cached');
          const row: BaseRow = {
            base: c.spec,
            label: c.label,
            kind: c.kind,
            crop: c.crop,
            resize: c.resize,
            cut: cold.json.cut,
            head: cold.json.head,
            seeds: SEEDS,
            valAccuracy: runs.map((r) => r.json.valAccuracy),
            valImages: cold.json.valImages,
            trainImages: cold.json.trainImages,
            extractMsPerImage: (cold.json.seconds.extract * 1000) / (cold.json.trainImages + cold.json.valImages),
            coldSeconds: cold.seconds,
            modelMB: folderMB(out),
          };
          const cv = runs.map((r) => {
            const fit = r.json.headFit;
            return fit?.search?.rows.find((x) => x.lambda === fit.lambda)?.accuracy;
          });
          if (cv.every((v) => typeof v === 'number')) row.cvAccuracy = cv;
          rows.push(row);
          log(
            `bases ${c.label} crop ${c.crop} ${c.resize}: val ${row.valAccuracy.map(f3).join(' ')}, extract ${row.extractMsPerImage.toFixed(1)} ms/image, ${row.modelMB.toFixed(1)} MB`,
          );
        } catch (e) {
          log(`bases ${c.label} crop ${c.crop} ${c.resize}: failed (${(e as Error).message})`);
        } finally {
          rmSync(out, { recursive: true, force: true });
        }
      }

      // Trunk forward on ONNX Runtime, per base at its default cut (crop and resize do not change it).
      if (await onnxAvailable()) {
        const saved = process.env.GRAFT_CACHE_DIR;
        process.env.GRAFT_CACHE_DIR = cacheDir;
        try {
          for (const spec of [...new Set(rows.map((r) => r.base))]) {
            const row = rows.find((r) => r.base === spec) as BaseRow;
            const base = await loadLayersBase(spec, row.kind === 'file' ? { inputRange: [-1, 1] } : {});
            const runner = await onnxTrunkRunner(buildTrunkModel(base, [base.defaultCut]));
            const ms = await timeRunner(runner, base.preprocessing.size[0], 16, 5);
            await runner.dispose();
            disposeBase(base);
            for (const r of rows) if (r.base === spec) r.trunkMsPerImage = ms;
            log(`bases trunk ${row.label}: ${ms.toFixed(1)} ms/image on ONNX Runtime`);
          }
        } finally {
          if (saved === undefined) delete process.env.GRAFT_CACHE_DIR;
          else process.env.GRAFT_CACHE_DIR = saved;
        }
      }
      // The rule's cost figure: extraction of the reference and of each zoo entry at its best preprocessing, timed in
      // alternation on fresh activation caches so drifting load touches every candidate alike.
      const saved = process.env.GRAFT_CACHE_DIR;
      process.env.GRAFT_CACHE_DIR = cacheDir;
      try {
        const rule = applyRule(rows);
        const timed = [rule.reference, ...rule.perEntry.map((e) => e.best)].filter(
          (r, i, a): r is BaseRow => r !== undefined && a.indexOf(r) === i,
        );
        const times = new Map<BaseRow, number[]>(timed.map((r) => [r, []]));
        for (let rep = 0; rep < TIMING_REPS; rep++) {
          for (const r of timed) {
            const ms = await extractionMs(r, path.join(cacheDir, `timing-${rep}`));
            times.get(r)?.push(ms);
            log(`bases extraction ${r.label} crop ${r.crop} ${r.resize}: ${ms.toFixed(1)} ms/image`);
          }
        }
        for (const [r, t] of times) r.extractInterleaved = t;
      } finally {
        if (saved === undefined) delete process.env.GRAFT_CACHE_DIR;
        else process.env.GRAFT_CACHE_DIR = saved;
      }
      return { rows, unavailable: { count: reasons.length, reason: reasons[0] ?? '' }, load };
    } finally {
      rmSync(cacheDir, { recursive: true, force: true });
    }
  });
}

/** Rounds of the alternating extraction timing. */
export const TIMING_REPS = 3;

/** ms per data-set image of graft train's extraction (prepareData: decode + trunk, flipped training views) on a fresh
 *  activation cache, in this process. */
async function extractionMs(r: BaseRow, cacheDir: string): Promise<number> {
  await initTf();
  const base = await loadBase(r.base, {
    crop: r.crop,
    resize: r.resize,
    ...(r.kind === 'file' ? { inputRange: [-1, 1] } : {}),
  });
  try {
    const { runner } = await runnerFor('auto', base);
    const t = performance.now();
    const d = await prepareData({
      data: path.join(HYM, 'train'),
      val: path.join(HYM, 'val'),
      base,
      cuts: [base.defaultCut],
      runner,
      cacheDir,
    });
    return (performance.now() - t) / (d.train.samples.length + (d.val?.samples.length ?? 0));
  } finally {
    disposeBase(base);
    rmSync(cacheDir, { recursive: true, force: true });
  }
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Extraction cost against the reference: the median of the alternating timings when both have them, else the first
 *  (cold) runs. */
export function extractionRatio(r: BaseRow, reference: BaseRow | undefined): number {
  if (!reference) return Number.NaN;
  if (r.extractInterleaved?.length && reference.extractInterleaved?.length)
    return median(r.extractInterleaved) / median(reference.extractInterleaved);
  return r.extractMsPerImage / reference.extractMsPerImage;
}

/**
 * The default base by the rule of issue 16, and each zoo entry's preprocessing: a setting replaces the plain one
 * (crop 1, cover) only when it measures better on both the validation images and the cross-validated training images;
 * among several such, the best cross-validated one (the figure no validation image chose).
 */
export function applyRule(rows: BaseRow[]): {
  reference?: BaseRow;
  eligible: BaseRow[];
  chosen?: BaseRow;
  perEntry: { base: string; plain?: BaseRow; best: BaseRow }[];
} {
  const reference = rows.find(
    (r) => r.base === REFERENCE.base && r.crop === REFERENCE.crop && r.resize === REFERENCE.resize,
  );
  const byAcc = (a: BaseRow, b: BaseRow) => mean(b.valAccuracy) - mean(a.valAccuracy);
  const cv = (r: BaseRow) => (r.cvAccuracy ? mean(r.cvAccuracy) : Number.NaN);
  const perEntry = [...new Set(rows.filter((r) => r.kind === 'zoo').map((r) => r.base))].map((base) => {
    const mine = rows.filter((r) => r.base === base);
    const plain = mine.find((r) => r.crop === 1 && r.resize === 'cover');
    const better = plain ? mine.filter((r) => mean(r.valAccuracy) > mean(plain.valAccuracy) && cv(r) > cv(plain)) : [];
    const best = better.sort((a, b) => cv(b) - cv(a))[0] ?? plain ?? mine[0];
    return { base, plain, best };
  });
  // A base is a candidate with its entry's preprocessing, the one it would be the default with.
  const eligible = perEntry
    .map((e) => e.best)
    .filter((r) => extractionRatio(r, reference) <= EXTRACT_BUDGET && r.modelMB <= SIZE_BUDGET_MB);
  const chosen = [...eligible].sort(byAcc)[0];
  return { reference, eligible, chosen, perEntry };
}

export function renderBases(result: BasesResult, when: string): string[] {
  const { rows } = result;
  const rule = applyRule(rows);
  const lines = [
    '',
    '## Bases: the default `graft train` command on hymenoptera with every base graft can get',
    '',
    when.includes('load average') ? when : `${when} Load average at the start: ${result.load}.`,
    '',
    'Each row is `graft train ../shared/data/hymenoptera/train --val ../shared/data/hymenoptera/val --base BASE --crop C',
    `--resize R --seed S\` for seeds ${SEEDS.join(', ')}, everything else default (zoo bases through \`GRAFT_MODEL_MIRROR\`; the`,
    'bench serves `../shared/models/mirror` itself when it is unset). Accuracy: mean over the seeds, their range, and the',
    'Wilson 95% interval for that mean on the validation images (the seeds move it far less than the choice of 153',
    'images does). CV: the logistic head’s own cross-validated accuracy on the training images at its chosen L2 strength',
    '(no validation image involved). Extraction: decode + trunk per image on a cold activation cache in the first run',
    '(training images also run mirrored); against the reference row, marked †: the median of three rounds that time the',
    'reference and each zoo entry’s best setting in alternation (the figure the rule reads; the first runs are minutes',
    'apart under changing load). Trunk: forward pass at the default cut on ONNX Runtime, batch 16. Size: the exported',
    'model.json + weights.',
    '',
    '| base | crop | resize | cut | val accuracy | seeds range | 95% interval | CV (train) | extraction ms/image, first run | extraction vs reference | trunk ms/image | model MB |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const m = mean(r.valAccuracy);
    const ratio = `${extractionRatio(r, rule.reference).toFixed(2)}${r.extractInterleaved?.length && rule.reference?.extractInterleaved?.length ? ' †' : ''}`;
    const mark = r === rule.reference ? ' (reference)' : r === rule.chosen ? ' (**rule’s choice**)' : '';
    lines.push(
      `| ${r.label}${mark} | ${r.crop} | ${r.resize} | ${r.cut} | ${f3(m)} | ${f3(Math.min(...r.valAccuracy))}–${f3(Math.max(...r.valAccuracy))} | ${interval(wilson(m, r.valImages))} | ${r.cvAccuracy ? f3(mean(r.cvAccuracy)) : ''} | ${r.extractMsPerImage.toFixed(1)} | ${ratio} | ${r.trunkMsPerImage?.toFixed(1) ?? ''} | ${r.modelMB.toFixed(1)} |`,
    );
  }
  lines.push('');
  if (result.unavailable.count)
    lines.push(
      `- ${result.unavailable.count} other zoo entries could not be downloaded here (${result.unavailable.reason}).`,
    );
  if (!rows.some((r) => r.base === INCEPTION))
    lines.push(
      `- ${INCEPTION} (bundled, about 20x the reference's extraction, 87 MB exported) is measured with \`npm run bench -- --sections=bases --bases-inception\`.`,
    );
  lines.push(
    `- The rule (issue 16): the most accurate zoo base (with its entry’s preprocessing) whose extraction costs at most ${EXTRACT_BUDGET}x the reference’s in the same run and whose exported model is at most ${SIZE_BUDGET_MB} MB.`,
    `  Eligible here: ${rule.eligible.map((r) => `${r.label} crop ${r.crop} ${r.resize}`).join('; ') || 'none'}.`,
    `  Choice: ${rule.chosen ? `**${rule.chosen.label}, crop ${rule.chosen.crop}, ${rule.chosen.resize}** (${f3(mean(rule.chosen.valAccuracy))})` : 'none (no measured reference)'}.`,
  );
  if (rule.chosen)
    lines.push(
      `  graft’s default (src/base/zoo.ts): ${DEFAULT_BASE}${rule.chosen.base === DEFAULT_BASE ? ', the rule’s choice in this run' : ` — **not** the rule’s choice in this run (${rule.chosen.label})`}.`,
    );
  for (const { base, plain, best } of rule.perEntry) {
    const entry = findZooEntry(base);
    const has = `crop ${entry?.crop ?? 1}, ${entry?.resize ?? 'cover'}`;
    const pick = `crop ${best.crop}, ${best.resize}`;
    const why =
      best === plain
        ? 'no setting beat crop 1, cover on both the validation and the cross-validated figures'
        : `val ${f3(mean(best.valAccuracy))} and CV ${f3(mean(best.cvAccuracy ?? [Number.NaN]))} against ${f3(mean(plain?.valAccuracy ?? [Number.NaN]))} and ${f3(mean(plain?.cvAccuracy ?? [Number.NaN]))} uncropped`;
    lines.push(
      `- ${base}: measured best ${pick} (${why}); the entry has ${has}${has === pick ? '' : ' — **differs**'}.`,
    );
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------------------------- heads

export interface HeadFigure {
  base: string;
  head: HeadKind;
  figure: 'val' | 'cv';
  /** Per seed: accuracy. */
  accuracy: number[];
  /** Per item (validation or training image): fraction of seeds that got it right. */
  perItem: number[];
  /** Validation only: with each image averaged with its mirror (test-time flip). */
  flipAccuracy?: number[];
}

export interface HeadsResult {
  figures: HeadFigure[];
  load: string;
}

function rowsOf(s: FeatureSet, idx: number[]): FeatureSet {
  const x = new Float32Array(idx.length * s.dim);
  idx.forEach((r, i) => {
    x.set(s.x.subarray(r * s.dim, (r + 1) * s.dim), i * s.dim);
  });
  return { x, n: idx.length, dim: s.dim, y: Int32Array.from(idx, (r) => s.y[r]) };
}

function withViews(images: FeatureSet, flips: FeatureSet): FeatureSet {
  const x = new Float32Array(2 * images.n * images.dim);
  x.set(images.x);
  x.set(flips.x, images.x.length);
  const y = new Int32Array(2 * images.n);
  y.set(images.y);
  y.set(flips.y, images.n);
  return {
    x,
    n: 2 * images.n,
    dim: images.dim,
    y,
    source: Int32Array.from({ length: 2 * images.n }, (_, r) => r % images.n),
  };
}

function correct(p: Float32Array, y: Int32Array, C: number): number[] {
  const pred = argmaxRows(p, y.length, C);
  return Array.from(y, (c, i) => (pred[i] === c ? 1 : 0));
}

/**
 * 5-fold cross-validation of what `graft train DATA` (no --val) would do on the training images: the softmax head
 * holds out a fifth of its fold's images to stop early on (the default --val-split 0.2); the logistic head fits on all
 * of them and chooses its lambda by its own inner folds. Held-out images are scored as they are.
 */
async function crossValidated(
  head: HeadKind,
  images: FeatureSet,
  flips: FeatureSet,
  C: number,
  seed: number,
): Promise<number[]> {
  const folds = stratifiedFolds(images.y, 5, seed);
  const hits = new Array<number>(images.n).fill(0);
  for (let f = 0; f < 5; f++) {
    const held = [...folds.keys()].filter((i) => folds[i] === f);
    let fit = [...folds.keys()].filter((i) => folds[i] !== f);
    let stop: FeatureSet | undefined;
    if (head !== 'logistic') {
      const order = shuffleInPlace(Int32Array.from(fit), mulberry32(seed * 31 + f));
      const cut = Math.round(order.length * 0.2);
      stop = rowsOf(images, Array.from(order.subarray(0, cut)));
      fit = Array.from(order.subarray(cut));
    }
    const h = await trainHead(withViews(rowsOf(images, fit), rowsOf(flips, fit)), stop, C, { head, seed });
    try {
      const test = rowsOf(images, held);
      correct(h.predictProba(test.x, test.n), test.y, C).forEach((v, i) => {
        hits[held[i]] = v;
      });
    } finally {
      h.dispose();
    }
  }
  return hits;
}

export async function headsSection(log: Log): Promise<HeadsResult> {
  const load = os
    .loadavg()
    .map((v) => v.toFixed(2))
    .join(', ');
  return withMirror(log, async () => {
    await initTf();
    const figures: HeadFigure[] = [];
    const cache = new ActivationCache();
    const listings = {
      train: await listDataset(path.join(HYM, 'train')),
      val: await listDataset(path.join(HYM, 'val')),
    };
    for (const spec of [DEFAULT_BASE, FALLBACK_BASE]) {
      const base = await loadBase(spec);
      try {
        const { runner } = await runnerFor('auto', base);
        const data = await prepareData({
          data: path.join(HYM, 'train'),
          val: path.join(HYM, 'val'),
          listings,
          base,
          cuts: [base.defaultCut],
          runner,
        });
        const val = featureSet(data.val!, 0, data.classes);
        const valFlip = await extractFeatures({
          base,
          cuts: [base.defaultCut],
          samples: data.val!.samples,
          views: data.val!.samples.map(() => 'flip' as const),
          cache,
          runner,
        });
        const vf = featureSet(valFlip, 0, data.classes);
        const images = featureSet(data.train, 0, data.classes);
        const flips = featureSet(data.augmented[0], 0, data.classes);
        const C = data.classes.length;
        for (const head of ['softmax', 'logistic'] as HeadKind[]) {
          const v: HeadFigure = { base: spec, head, figure: 'val', accuracy: [], perItem: [], flipAccuracy: [] };
          const cv: HeadFigure = { base: spec, head, figure: 'cv', accuracy: [], perItem: [] };
          const vHits = new Array<number>(val.n).fill(0);
          const cvHits = new Array<number>(images.n).fill(0);
          for (const seed of SEEDS) {
            // As `graft train --val`: the softmax head stops early on the validation set, the logistic head never reads it.
            const h = await trainHead(trainingSet(data, 0), val, C, { head, seed });
            try {
              const p = h.predictProba(val.x, val.n);
              const q = h.predictProba(vf.x, vf.n);
              const hits = correct(p, val.y, C);
              v.accuracy.push(mean(hits));
              hits.forEach((x, i) => {
                vHits[i] += x / SEEDS.length;
              });
              v.flipAccuracy?.push(
                mean(
                  correct(
                    Float32Array.from(p, (a, i) => (a + q[i]) / 2),
                    val.y,
                    C,
                  ),
                ),
              );
            } finally {
              h.dispose();
            }
            const c = await crossValidated(head, images, flips, C, seed);
            cv.accuracy.push(mean(c));
            c.forEach((x, i) => {
              cvHits[i] += x / SEEDS.length;
            });
          }
          v.perItem = vHits;
          cv.perItem = cvHits;
          figures.push(v, cv);
          log(
            `heads ${spec} ${head}: val ${v.accuracy.map(f3).join(' ')} (flip ${v.flipAccuracy?.map(f3).join(' ')}), 5-fold CV ${cv.accuracy.map(f3).join(' ')}`,
          );
        }
      } finally {
        disposeBase(base);
      }
    }
    return { figures, load };
  });
}

export function renderHeads(result: HeadsResult, when: string): string[] {
  const lines = [
    '',
    '## Heads: logistic against softmax on hymenoptera',
    '',
    when.includes('load average') ? when : `${when} Load average at the start: ${result.load}.`,
    '',
    'Features at each base’s default cut and preprocessing, every training image also mirrored. **val**: trained on the',
    '245 training images (the softmax head stops early on the validation loss, as `graft train --val` did before it chose',
    'epochs by cross-validation, so its figure is optimistic; the logistic head never reads the validation set), scored on',
    'the 153 validation images. **CV**: 5-fold cross-validation on the training images (the softmax head stops early on a',
    `fifth of its fold’s images; the logistic head chooses its L2 strength by its own inner folds), scored on the held-out`,
    `images. Mean over seeds ${SEEDS.join(', ')} with their range and the Wilson 95% interval;`,
    'the difference is paired by image (fraction of seeds right), with a bootstrap 95% interval.',
    '',
    '| base | figure | softmax | logistic | logistic − softmax (95% interval) |',
    '| --- | --- | --- | --- | --- |',
  ];
  const diffs: number[] = [];
  const fmt = (f: HeadFigure) => {
    const m = mean(f.accuracy);
    return `${f3(m)} (seeds ${f3(Math.min(...f.accuracy))}–${f3(Math.max(...f.accuracy))}; ${interval(wilson(m, f.perItem.length))})`;
  };
  for (const base of [...new Set(result.figures.map((f) => f.base))])
    for (const figure of ['val', 'cv'] as const) {
      const s = result.figures.find((f) => f.base === base && f.figure === figure && f.head === 'softmax');
      const l = result.figures.find((f) => f.base === base && f.figure === figure && f.head === 'logistic');
      if (!s || !l) continue;
      const d = l.perItem.map((v, i) => v - s.perItem[i]);
      diffs.push(mean(d));
      const name = figure === 'val' ? 'val (153 images)' : `5-fold CV (${s.perItem.length} training images)`;
      lines.push(
        `| ${base} | ${name} | ${fmt(s)} | ${fmt(l)} | ${signed(mean(d))} (${signed(bootstrapMean(d)[0])}, ${signed(bootstrapMean(d)[1])}) |`,
      );
    }
  lines.push('', `- Mean difference over the ${diffs.length} figures: ${signed(mean(diffs))}.`);
  lines.push(
    '',
    '**Test-time flip** on the validation images (each image’s probabilities averaged with its mirror’s):',
    '',
  );
  lines.push('| base | head | val accuracy | with test-time flip |', '| --- | --- | --- | --- |');
  for (const f of result.figures.filter((x) => x.figure === 'val' && x.flipAccuracy?.length))
    lines.push(`| ${f.base} | ${f.head} | ${f3(mean(f.accuracy))} | ${f3(mean(f.flipAccuracy as number[]))} |`);
  return lines;
}

// -------------------------------------------------------------------------------------------------------------- default

/** One configuration of the default-command comparison: wall seconds (process start included) per round. */
export interface DefaultRow {
  label: string;
  args: string[];
  base: string;
  head: string;
  tta: string;
  seconds: number[];
  valAccuracy: number[];
  valImages: number;
}

export interface DefaultResult {
  rows: DefaultRow[];
  load: string;
}

/** Rounds of the default-command comparison (each configuration once per round, in alternation). */
const DEFAULT_ROUNDS = 2;

/**
 * `graft train hymenoptera/train --val hymenoptera/val --out M` as it is, against the default before issue 16
 * (mobilenet_v2_0.35, the softmax head, no test-time flip), each on a fresh cache (model download from the mirror
 * included), in alternation so drifting load touches both alike.
 */
export async function defaultSection(log: Log): Promise<DefaultResult> {
  const load = os
    .loadavg()
    .map((v) => v.toFixed(2))
    .join(', ');
  return withMirror(log, async () => {
    const configs = [
      { label: 'before issue 16', args: ['--base', 'mobilenet_v2_0.35', '--head', 'softmax', '--tta', 'none'] },
      { label: 'default', args: [] as string[] },
    ];
    const rows: DefaultRow[] = [];
    for (let round = 0; round < DEFAULT_ROUNDS; round++) {
      for (const c of configs) {
        const dir = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-default-'));
        try {
          const { json, seconds } = await trainJson(
            [path.join(HYM, 'train'), '--val', path.join(HYM, 'val'), '--out', path.join(dir, 'm'), ...c.args],
            { ...process.env, GRAFT_CACHE_DIR: path.join(dir, 'cache') },
          );
          let row = rows.find((r) => r.label === c.label);
          if (!row) {
            const j = json as TrainJson & { base?: string; tta?: string };
            row = {
              label: c.label,
              args: c.args,
              base: j.base ?? '',
              head: json.head,
              tta: j.tta ?? 'none',
              seconds: [],
              valAccuracy: [],
              valImages: json.valImages,
            };
            rows.push(row);
          }
          row.seconds.push(seconds);
          row.valAccuracy.push(json.valAccuracy);
          log(`default ${c.label}: ${seconds.toFixed(1)} s, val ${f3(json.valAccuracy)}`);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }
    return { rows, load };
  });
}

export function renderDefault(result: DefaultResult, when: string): string[] {
  const before = result.rows.find((r) => r.label === 'before issue 16');
  const lines = [
    '',
    '## The default command on a cold cache, against the default before issue 16',
    '',
    when,
    '',
    '`graft train ../shared/data/hymenoptera/train --val ../shared/data/hymenoptera/val --out M ARGS`, each run on a fresh',
    '`GRAFT_CACHE_DIR` (the base downloaded from the mirror, every activation computed), the two configurations in',
    `alternation, ${DEFAULT_ROUNDS} rounds; wall seconds include process start. \`npm run bench -- --sections=default\`.`,
    '',
    '| configuration | args | base | head | test-time flip recorded | wall s per round | median | vs before | val accuracy (95% interval) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of result.rows) {
    const m = median(r.seconds);
    const acc = mean(r.valAccuracy);
    lines.push(
      `| ${r.label} | \`${r.args.join(' ') || '(none)'}\` | ${r.base} | ${r.head} | ${r.tta} | ${r.seconds.map((s) => s.toFixed(1)).join(', ')} | ${m.toFixed(1)} | ${before ? (m / median(before.seconds)).toFixed(2) : ''} | ${f3(acc)} (${interval(wilson(acc, r.valImages))}) |`,
    );
  }
  return lines;
}
