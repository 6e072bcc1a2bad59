/**
 * Turning images into trunk activations at one or more cuts, through the activation cache. Each image's bytes are
 * hashed; cached activations are used as they are; the rest are decoded and run through the trunk in batches, with
 * the next batch decoding while the current one runs. Files that do not decode are skipped and reported.
 */
import { readFile } from 'node:fs/promises';
import type { Base } from '../base/base.ts';
import { preprocessingKey } from '../base/preprocessing.ts';
import { ActivationCache, type ActivationKeyParts, type DamagedEntry, hashBytes } from '../cache/activation-cache.ts';
import type { Sample, Skipped } from '../dataset/dataset.ts';
import { decodeImage, ImageDecodeError } from '../dataset/decode.ts';
import { applyView, type View } from '../dataset/views.ts';
import type { RunnerFactory } from '../engines/engine-choice.ts';
import type { FeatureSet } from '../train/features.ts';
import { concatRows } from '../train/folds.ts';
import { UsageError } from '../util/errors.ts';
import { checkAbort, type ProgressCallback } from '../util/progress.ts';

export { type RunnerFactory, tfjsRunner } from '../engines/engine-choice.ts';

const DECODE_CONCURRENCY = 4;

/** Maps with at most `limit` calls in flight, keeping the input order in the result. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export interface ExtractOptions {
  base: Base;
  cuts: string[];
  samples: Sample[];
  cache?: ActivationCache;
  runner: RunnerFactory;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** Progress phase name (default 'extract'). */
  phase?: string;
  /**
   * Default true: pooled activations (what a head reads). false: the whole spatial activation (what a tail reads),
   * cached under a key of its own so pooled and spatial rows never collide.
   */
  pool?: boolean;
  /** The view of each sample (parallel to `samples`; default all 'orig'). A sample may appear once per view. */
  views?: View[];
}

export interface Extracted {
  /** Samples that produced activations, in input order. */
  samples: Sample[];
  /** The view of each row (parallel to `samples`). */
  views: View[];
  /** SHA-256 of each row's image file (parallel to `samples`): finds the same image under two names. */
  hashes: string[];
  /** Per cut (same order as `cuts`): samples.length × featureSize, row-major. */
  features: Float32Array[];
  featureSizes: number[];
  skipped: Skipped[];
  hits: number;
  misses: number;
  /** Cache entries that failed their check: deleted and recomputed (each reported once). */
  damaged: DamagedEntry[];
  /** Number of trunk forward calls made (0 on a fully warm cache). */
  trunkCalls: number;
  /** Engine that ran the trunk, when it ran. */
  engine?: string;
}

export async function extractFeatures(o: ExtractOptions): Promise<Extracted> {
  const { base, cuts, samples } = o;
  const cache = o.cache ?? new ActivationCache();
  const phase = o.phase ?? 'extract';
  const pre = preprocessingKey(base.preprocessing);
  const pool = o.pool ?? true;
  const sizes = featureSizesOf(base, cuts, pool);
  const rows: (Float32Array[] | undefined)[] = new Array(samples.length);
  const hashes: string[] = new Array(samples.length);
  const skipped: Skipped[] = [];
  const views = o.views ?? samples.map((): View => 'orig');
  if (views.length !== samples.length)
    throw new UsageError('invalid-value', `extractFeatures: ${views.length} views for ${samples.length} samples`);
  const pending: { i: number; bytes: Uint8Array; keys: ActivationKeyParts[] }[] = [];
  const damagedBefore = cache.damaged.length;
  cache.describeBase(base.id, { name: base.name, source: base.source });
  // A file listed under several views is reported once when it cannot be read or decoded.
  const skippedFiles = new Set<string>();
  const skip = (file: string, reason: string) => {
    if (skippedFiles.has(file)) return;
    skippedFiles.add(file);
    skipped.push({ file, reason });
  };
  let hits = 0;
  let misses = 0;
  let done = 0;
  const report = () =>
    o.onProgress?.({ phase, done, total: samples.length, metrics: { cacheHits: hits, cacheMisses: misses } });

  // The views of one image are listed next to each other: its bytes are read and hashed once for all of them.
  let last: { file: string; bytes: Uint8Array; image: string } | undefined;
  for (let i = 0; i < samples.length; i++) {
    checkAbort(o.signal);
    let bytes: Uint8Array;
    const file = samples[i].file;
    try {
      bytes = last?.file === file ? last.bytes : await readFile(file);
    } catch (e) {
      skip(samples[i].file, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      done++;
      continue;
    }
    if (bytes.length === 0) {
      skip(samples[i].file, 'empty file');
      done++;
      continue;
    }
    const image = last?.file === file ? last.image : hashBytes(bytes);
    last = { file, bytes, image };
    hashes[i] = image;
    const keys = cuts.map(
      (cut): ActivationKeyParts => ({
        image,
        base: base.id,
        cut: pool ? cut : `${cut}:spatial`,
        preprocessing: pre,
        view: views[i],
      }),
    );
    const found = keys.map((k, c) => cache.get(k, sizes[c]));
    if (found.every((f) => f !== undefined)) {
      rows[i] = found as Float32Array[];
      hits++;
      done++;
    } else {
      pending.push({ i, bytes, keys });
      misses++;
    }
  }
  report();

  let trunkCalls = 0;
  let engine: string | undefined;
  if (pending.length) {
    const runner = await o.runner(base, cuts, pool);
    engine = runner.engine;
    try {
      const [h, w] = base.preprocessing.size;
      const px = h * w * 3;
      const decodeBatch = async (batch: typeof pending) => {
        // sharp decodes on its own threads: a few images in flight keep both cores busy (one alone is ~2x slower).
        // Views of one image are usually adjacent: decode each file once per batch and derive its views from that.
        const once = new Map<string, Promise<Uint8Array>>();
        const decodeOnce = (item: (typeof pending)[number]) => {
          const file = samples[item.i].file;
          let p = once.get(file);
          if (!p) {
            p = decodeImage(item.bytes, file, base.preprocessing);
            once.set(file, p);
          }
          return p;
        };
        const decoded = await mapLimit(batch, DECODE_CONCURRENCY, async (item) => {
          try {
            return applyView(await decodeOnce(item), base.preprocessing.size, views[item.i]);
          } catch (e) {
            const reason = e instanceof ImageDecodeError ? e.reason : (e as Error).message;
            skip(samples[item.i].file, reason);
            done++;
            return undefined;
          }
        });
        const pixels = new Float32Array(batch.length * px);
        const ok: typeof pending = [];
        batch.forEach((item, k) => {
          const rgb = decoded[k];
          if (!rgb) return;
          pixels.set(rgb, ok.length * px);
          ok.push(item);
        });
        return { pixels: pixels.subarray(0, ok.length * px), ok };
      };
      const bs = runner.batchSize;
      let next = decodeBatch(pending.slice(0, bs));
      for (let start = 0; start < pending.length; start += bs) {
        checkAbort(o.signal);
        const { pixels, ok } = await next;
        // Decode the following batch while the trunk works on this one.
        if (start + bs < pending.length) next = decodeBatch(pending.slice(start + bs, start + 2 * bs));
        if (ok.length === 0) continue;
        const outs = await runner.run(pixels, ok.length);
        trunkCalls++;
        ok.forEach((item, r) => {
          rows[item.i] = outs.map((o2, c) => {
            const row = o2.slice(r * sizes[c], (r + 1) * sizes[c]);
            cache.put(item.keys[c], row);
            return row;
          });
        });
        done += ok.length;
        report();
      }
    } finally {
      await runner.dispose();
    }
  }

  const kept: number[] = [];
  rows.forEach((r, i) => {
    r && kept.push(i);
  });
  const features = sizes.map((size, c) => {
    const m = new Float32Array(kept.length * size);
    kept.forEach((i, r) => {
      m.set(rows[i]![c], r * size);
    });
    return m;
  });
  return {
    samples: kept.map((i) => samples[i]),
    views: kept.map((i) => views[i]),
    hashes: kept.map((i) => hashes[i]),
    features,
    featureSizes: sizes,
    skipped,
    hits,
    misses,
    damaged: cache.damaged.slice(damagedBefore),
    trunkCalls,
    engine,
  };
}

/** The rows of one cut as a labelled set (class index = position of the label in `classes`). */
export function featureSet(e: Extracted, cutIndex: number, classes: string[]): FeatureSet {
  const y = Int32Array.from(e.samples.map((s) => classes.indexOf(s.label)));
  return { x: e.features[cutIndex], n: e.samples.length, dim: e.featureSizes[cutIndex], y };
}

/** The rows a head or tail trains on at one cut: every training image, then each of its augmentation views. */
export function trainingSet(
  data: { classes: string[]; train: Extracted; augmented?: Extracted[] },
  cutIndex: number,
): FeatureSet {
  const dim = data.train.featureSizes[cutIndex];
  return {
    ...concatRows(
      [data.train, ...(data.augmented ?? [])].map((e) => featureSet(e, cutIndex, data.classes)),
      dim,
    ),
    dim,
  };
}

/** Feature size at each cut, read from the graph (pooled channels for spatial outputs unless `pool` is false). */
export function featureSizesOf(base: Base, cuts: string[], pool = true): number[] {
  if (pool || base.format !== 'layers') return base.trunk.featureSizes(cuts);
  return cuts.map((cut) => {
    const layer = base.model.getLayer(cut);
    const shape = (layer.outputShape as number[]).slice(1);
    return shape.reduce((a, b) => a * b, 1);
  });
}
