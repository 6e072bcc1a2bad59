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
import { InternalError, UsageError } from '../util/errors.ts';
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
  /**
   * The row of the result each sample goes to (a permutation of 0..n-1; default the input order). Samples are read in
   * input order (views of one image side by side share one decode) while rows land where the caller wants them, e.g.
   * all training rows, then all mirrored rows, then validation rows, so each part is a slice, never a copy.
   */
  layout?: Int32Array;
}

export interface Extracted {
  /** Samples that produced activations, in row order (the layout's, without the skipped ones). */
  samples: Sample[];
  /** The view of each row (parallel to `samples`). */
  views: View[];
  /** SHA-256 of each row's image file (parallel to `samples`): finds the same image under two names. */
  hashes: string[];
  /** The layout row each row was meant for (skipped samples leave gaps here). */
  rows: Int32Array;
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
  const n = samples.length;
  const cache = o.cache ?? new ActivationCache();
  const phase = o.phase ?? 'extract';
  const pre = preprocessingKey(base.preprocessing);
  const pool = o.pool ?? true;
  const sizes = featureSizesOf(base, cuts, pool);
  const views = o.views ?? samples.map((): View => 'orig');
  if (views.length !== n)
    throw new UsageError('invalid-value', `extractFeatures: ${views.length} views for ${n} samples`);
  const layout = o.layout ?? Int32Array.from({ length: n }, (_, i) => i);
  checkLayout(layout, n);
  // One matrix per cut, written in place as activations arrive (cache or trunk): the activations are held once.
  const matrices = sizes.map((size) => new Float32Array(n * size));
  const filled = new Uint8Array(n);
  const put = (i: number, c: number, row: Float32Array) => {
    matrices[c].set(row, layout[i] * sizes[c]);
  };
  const hashes: string[] = new Array(n);
  const skipped: Skipped[] = [];
  // File bytes are not kept for the misses (100,000 images would hold them all): decodeBatch reads them again.
  // Keys are rebuilt when a miss is stored rather than kept per pending sample: at 100,000 images that adds up.
  const pending: { i: number; image: string }[] = [];
  const keyOf = (i: number, image: string, c: number): ActivationKeyParts => ({
    image,
    base: base.id,
    cut: pool ? cuts[c] : `${cuts[c]}:spatial`,
    preprocessing: pre,
    view: views[i],
  });
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
  const report = () => o.onProgress?.({ phase, done, total: n, metrics: { cacheHits: hits, cacheMisses: misses } });

  // The views of one image are listed next to each other: its bytes are read and hashed once for all of them.
  let last: { file: string; image: string } | undefined;
  for (let i = 0; i < n; i++) {
    checkAbort(o.signal);
    const file = samples[i].file;
    let image: string;
    if (last?.file === file) {
      image = last.image;
    } else {
      let bytes: Uint8Array;
      try {
        bytes = await readFile(file);
      } catch (e) {
        skip(file, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
        done++;
        continue;
      }
      if (bytes.length === 0) {
        skip(file, 'empty file');
        done++;
        continue;
      }
      image = hashBytes(bytes);
      last = { file, image };
    }
    hashes[i] = image;
    const found = cuts.map((_, c) => cache.get(keyOf(i, image, c), sizes[c]));
    if (found.every((f) => f !== undefined)) {
      found.forEach((row, c) => {
        put(i, c, row as Float32Array);
      });
      filled[i] = 1;
      hits++;
      done++;
    } else {
      pending.push({ i, image });
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
      // Building the runner (an ONNX conversion, a session) can take a while.
      checkAbort(o.signal);
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
            p = readFile(file).then((bytes) => {
              // The activation is stored under the hash read earlier: bytes that changed since would poison it.
              if (hashBytes(bytes) !== item.image) throw new ImageDecodeError(file, 'changed while being read');
              return decodeImage(bytes, file, base.preprocessing);
            });
            once.set(file, p);
          }
          return p;
        };
        const decoded = await mapLimit(batch, DECODE_CONCURRENCY, async (item) => {
          // Between images, not only between batches: a cancelled run stops within one decode.
          checkAbort(o.signal);
          try {
            return applyView(await decodeOnce(item), base.preprocessing.size, views[item.i]);
          } catch (e) {
            const reason =
              e instanceof ImageDecodeError
                ? e.reason
                : `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
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
      // The batch decoding ahead may be left behind by an abort; its rejection is then nobody's to handle.
      const ahead = (batch: typeof pending) => {
        const p = decodeBatch(batch);
        p.catch(() => {});
        return p;
      };
      let next = ahead(pending.slice(0, bs));
      for (let start = 0; start < pending.length; start += bs) {
        checkAbort(o.signal);
        const { pixels, ok } = await next;
        checkAbort(o.signal);
        // Decode the following batch while the trunk works on this one.
        if (start + bs < pending.length) next = ahead(pending.slice(start + bs, start + 2 * bs));
        if (ok.length === 0) continue;
        const outs = await runner.run(pixels, ok.length);
        trunkCalls++;
        ok.forEach((item, r) => {
          outs.forEach((out, c) => {
            const row = out.subarray(r * sizes[c], (r + 1) * sizes[c]);
            cache.put(keyOf(item.i, item.image, c), row);
            put(item.i, c, row);
          });
          filled[item.i] = 1;
        });
        done += ok.length;
        report();
      }
    } finally {
      await runner.dispose();
    }
  }

  // Close the gaps of skipped samples in place, keeping the layout's order.
  const sampleAt = new Int32Array(n);
  layout.forEach((row, i) => {
    sampleAt[row] = i;
  });
  const rows: number[] = [];
  for (let row = 0; row < n; row++) {
    if (!filled[sampleAt[row]]) continue;
    const k = rows.length;
    if (k !== row)
      matrices.forEach((m, c) => {
        m.copyWithin(k * sizes[c], row * sizes[c], (row + 1) * sizes[c]);
      });
    rows.push(row);
  }
  return {
    samples: rows.map((row) => samples[sampleAt[row]]),
    views: rows.map((row) => views[sampleAt[row]]),
    hashes: rows.map((row) => hashes[sampleAt[row]]),
    rows: Int32Array.from(rows),
    features: matrices.map((m, c) => m.subarray(0, rows.length * sizes[c])),
    featureSizes: sizes,
    skipped,
    hits,
    misses,
    damaged: cache.damaged.slice(damagedBefore),
    trunkCalls,
    engine,
  };
}

function checkLayout(layout: Int32Array, n: number): void {
  if (layout.length !== n)
    throw new InternalError(`extractFeatures: layout has ${layout.length} rows for ${n} samples`);
  const seen = new Uint8Array(n);
  for (const row of layout) {
    if (!(row >= 0 && row < n) || seen[row]) throw new InternalError('extractFeatures: layout is not a permutation');
    seen[row] = 1;
  }
}

/** The rows of one cut as a labelled set (class index = position of the label in `classes`). */
export function featureSet(e: Extracted, cutIndex: number, classes: string[]): FeatureSet {
  const y = Int32Array.from(e.samples.map((s) => classes.indexOf(s.label)));
  return { x: e.features[cutIndex], n: e.samples.length, dim: e.featureSizes[cutIndex], y };
}

/**
 * The rows a head or tail trains on at one cut: every training image, then each of its augmentation views, with
 * `source` pointing each view at its image.
 */
export function trainingSet(
  data: { classes: string[]; train: Extracted; augmented?: Extracted[] },
  cutIndex: number,
): FeatureSet {
  const dim = data.train.featureSizes[cutIndex];
  const images = data.train.samples.length;
  const rows = concatRows(
    [data.train, ...(data.augmented ?? [])].map((e) => featureSet(e, cutIndex, data.classes)),
    dim,
  );
  return { ...rows, dim, source: Int32Array.from({ length: rows.n }, (_, r) => r % images) };
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
