/**
 * `graft train`: data set → trunk activations (cached) → head → one stitched model on disk.
 */
import path from 'node:path';
import { type Base, type BaseOptions, disposeBase, type Fallback, type LayersBase, loadBase } from '../base/base.ts';
import { formatWords } from '../base/foreign.ts';
import { ActivationCache, type DamagedEntry } from '../cache/activation-cache.ts';
import {
  checkClasses,
  type DatasetListing,
  listDataset,
  type Sample,
  type Skipped,
  splitByHash,
} from '../dataset/dataset.ts';
import { type Augment, augmentViews, DEFAULT_AUGMENT, type View } from '../dataset/views.ts';
import { type EngineChoice, runnerFor } from '../engines/engine-choice.ts';
import { saveForeignModel } from '../export/foreign-model.ts';
import { type ModelMetadata, saveModel } from '../export/model-files.ts';
import { stitchModel } from '../export/stitch.ts';
import type { HeadKind, TrainedHead, TrainHeadOptions } from '../train/features.ts';
import { accuracy, argmaxRows, confusionMatrix } from '../train/metrics.ts';
import { trainHead } from '../train/trainer.ts';
import { InternalError, opt, UsageError, type Warning, words } from '../util/errors.ts';
import { checkRange } from '../util/options.ts';
import { checkAbort, type ProgressCallback } from '../util/progress.ts';
import { versions } from '../util/versions.ts';
import { type SweepRow, sweep, sweepCandidates } from './autocut.ts';
import { checkSplit, duplicateWarnings, listingWarnings, preflight } from './checks.ts';
import { type Extracted, extractFeatures, featureSet, type RunnerFactory, trainingSet } from './extract.ts';
import { type ParameterOutcome, planParameter, type TransferSettings, trainParameter } from './parameter.ts';

/** The head's settings, documented (with their defaults) on TrainHeadOptions. */
type HeadSettings = Pick<TrainHeadOptions, 'head' | 'epochs' | 'lr' | 'batchSize' | 'seed' | 'patience'>;

export interface TrainOptions extends BaseOptions, TransferSettings, HeadSettings {
  /** Training data: folder of class folders, or CSV of path,label. */
  data: string;
  /** Extra views of each training image whose activations are cached and trained on (default 'flip'; see
   *  dataset/views.ts). Validation images are never augmented. */
  augment?: Augment;
  /** Separate validation data (same layout). */
  val?: string;
  /** Without `val`: fraction of `data` held out by a hash of each path. Default 0.2; 0 disables validation. */
  valSplit?: number;
  /** A base name, path or URL, or an already loaded Base. Default: graft's default base. */
  base?: string | Base;
  /** Layer to cut at (default: the base's default cut, below its own classifier). */
  cut?: string;
  /**
   * 'feature' (default): one cut. 'auto': measure candidate cuts and keep the best (see workflows/autocut.ts).
   * 'parameter': retrain the base's top layers (the tail) with the head (see workflows/parameter.ts).
   */
  mode?: TrainMode;
  /** Where to write the trained model folder. Nothing is written when omitted. */
  out?: string;
  /** What runs the trunk and trains tails: 'auto' (ONNX Runtime when it loads, else TF.js on WASM), 'onnx', 'wasm'. */
  engine?: EngineChoice;
  /** ONNX Runtime intra-op threads, for extraction and training; default every core. */
  threads?: number;
  /** Activation cache folder (default: GRAFT_CACHE_DIR or the user's cache directory). */
  cacheDir?: string;
  onProgress?: ProgressCallback;
  /** Called as soon as something is noticed that does not stop the job (all of them are also in the result). */
  onWarning?: (w: Warning) => void;
  signal?: AbortSignal;
}

export type TrainMode = 'feature' | 'auto' | 'parameter';

export interface TrainResult {
  mode: TrainMode;
  /** The cut search table (mode 'auto'). */
  sweep?: SweepRow[];
  sweepMethod?: string;
  valAccuracy: number | null;
  trainAccuracy: number;
  trainImages: number;
  valImages: number;
  /** Augmentation views added to the training rows. */
  augment: Augment;
  classes: string[];
  base: string;
  baseId: string;
  /** Why the default base was not used, when graft fell back to another one. */
  baseFallback?: Fallback;
  /** Files of a zoo base found damaged in the download cache and downloaded again (reported once: then whole). */
  baseRepaired?: string[];
  cut: string;
  head: HeadKind;
  engine: string;
  epochs: number;
  bestEpoch: number;
  seconds: { total: number; extract: number; train: number; export: number };
  /** Activation cache use; `damaged`: entries that failed their check, deleted and recomputed (reported once). */
  cache: { hits: number; misses: number; damaged: DamagedEntry[] };
  /** Trunk forward calls made (0 on a warm cache); one call serves every cut of a sweep. */
  trunkCalls: number;
  skipped: Skipped[];
  /** What was noticed that did not stop the job: validation data that is training data, one image in two classes… */
  warnings: Warning[];
  history: TrainedHead['history'];
  /** Parameter transfer / fine-tuning: the split of each stage and how it went. */
  parameter?: {
    /** Head input (the layer whose pooled output the head reads). */
    top: string;
    unfreezeFrom?: string;
    reinit: boolean;
    trainBn: boolean;
    stages: ParameterOutcome['stages'];
    /** Why a stage trained on TF.js although ONNX Runtime was preferred. */
    notes: Warning[];
  };
  /** Validation images with the class probabilities the in-training model gave them (parameter mode and fine-tuning). */
  valPredictions?: { file: string; label: string; probabilities: number[] }[];
  out?: string;
}

/** Prepared data for training: lists, splits and activations at the chosen cuts. Shared with the cut search. */
export interface PreparedData {
  base: Base;
  classes: string[];
  train: Extracted;
  val?: Extracted;
  /** Extra views of the training images (see dataset/views.ts): row r of each is a view of train.samples[r]. */
  augmented: Extracted[];
  augment: Augment;
  skipped: Skipped[];
  extractSeconds: number;
}

/** Data sets already listed by the caller, so the folders are walked once per run. */
interface Listed {
  listings?: { train: DatasetListing; val?: DatasetListing };
  /** The caller already warned that validation files are training files (no second warning by content). */
  valOverlapReported?: boolean;
}

export async function prepareData(
  o: TrainOptions & Listed & { cuts: string[]; base: Base; runner: RunnerFactory; pool?: boolean },
): Promise<PreparedData> {
  const t0 = performance.now();
  const listing = o.listings?.train ?? (await listDataset(o.data));
  let trainSamples: Sample[] = listing.samples;
  let valSamples: Sample[] = [];
  const skipped: Skipped[] = [...listing.skipped];
  if (o.val) {
    const v = o.listings?.val ?? (await listDataset(o.val));
    skipped.push(...v.skipped);
    for (const s of v.samples) {
      if (listing.classes.includes(s.label)) valSamples.push(s);
      else skipped.push({ file: s.file, reason: `class '${s.label}' is not in the training data` });
    }
  } else {
    const fraction = checkRange('valSplit', o.valSplit, 0, 1) ?? 0.2;
    if (fraction > 0) ({ train: trainSamples, val: valSamples } = splitByHash(listing, fraction));
  }
  checkSplit(o.data, listing, trainSamples, o);
  const cache = new ActivationCache(o.cacheDir);
  const common = {
    base: o.base,
    cuts: o.cuts,
    cache,
    runner: o.runner,
    onProgress: o.onProgress,
    signal: o.signal,
    pool: o.pool,
  };
  const extra = augmentViews(o.augment);
  // One pass over train + val (+ the training images' extra views) so the trunk runs in full batches. Each training
  // image is read next to its views, so they share one decode; the layout puts the rows in blocks (training images,
  // then each view of them in the same order, then validation images), so every part below is a slice, not a copy.
  const nT = trainSamples.length;
  const blocks = 1 + extra.length;
  const items: { sample: Sample; view: View; row: number }[] = [
    ...trainSamples.flatMap((sample, r) =>
      (['orig', ...extra] as View[]).map((view, v) => ({ sample, view, row: v * nT + r })),
    ),
    ...valSamples.map((sample, j) => ({ sample, view: 'orig' as View, row: blocks * nT + j })),
  ];
  const all = await extractFeatures({
    ...common,
    samples: items.map((i) => i.sample),
    views: items.map((i) => i.view),
    layout: Int32Array.from(items, (i) => i.row),
  });
  skipped.push(...all.skipped);
  const origRows = (wanted: Sample[]) => {
    const keep = new Set(wanted.map((s) => s.file));
    const rows = all.samples.flatMap((s, i) => (all.views[i] === 'orig' && keep.has(s.file) ? [i] : []));
    return { samples: rows.map((i) => all.samples[i]), hashes: rows.map((i) => all.hashes[i]) };
  };
  for (const w of duplicateWarnings(
    origRows(trainSamples),
    valSamples.length ? origRows(valSamples) : undefined,
    o.valOverlapReported ?? false,
  ))
    o.onWarning?.(w);
  // Where each block starts among the rows that produced activations.
  const starts = new Array<number>(blocks + 2).fill(all.rows.length);
  for (let b = blocks; b >= 0; b--) {
    const first = all.rows.findIndex((row) => row >= b * nT);
    starts[b] = first < 0 ? all.rows.length : first;
  }
  const slice = (b: number): Extracted => {
    const [from, to] = [starts[b], starts[b + 1]];
    return {
      ...all,
      samples: all.samples.slice(from, to),
      views: all.views.slice(from, to),
      hashes: all.hashes.slice(from, to),
      rows: all.rows.subarray(from, to),
      features: all.features.map((f, c) => f.subarray(from * all.featureSizes[c], to * all.featureSizes[c])),
    };
  };
  const train = slice(0);
  const val = valSamples.length ? slice(blocks) : undefined;
  // Extra views of exactly the training rows, row r of each being a view of train.samples[r].
  const augmented = extra.map((_, v) => slice(v + 1));
  for (const a of augmented) {
    if (a.samples.length !== train.samples.length || a.samples.some((s, r) => s !== train.samples[r]))
      throw new InternalError(
        `${a.views[0]} view: ${a.samples.length} of ${train.samples.length} training images produced activations`,
      );
  }
  const counts = new Map<string, number>(listing.classes.map((c) => [c, 0]));
  for (const s of train.samples) counts.set(s.label, (counts.get(s.label) ?? 0) + 1);
  const labelOf = new Map(trainSamples.map((x) => [x.file, x.label]));
  checkClasses(o.data, listing.classes, counts, (label) => skipped.find((x) => labelOf.get(x.file) === label));
  return {
    base: o.base,
    classes: listing.classes,
    train,
    val,
    augment: o.augment ?? DEFAULT_AUGMENT,
    augmented,
    skipped,
    extractSeconds: (performance.now() - t0) / 1000,
  };
}

/** What every mode reports the same way: data, base, engine, cache and timing. */
function runFacts(base: Base, data: PreparedData, engine: string, trainSeconds: number) {
  return {
    classes: data.classes,
    augment: data.augment,
    base: base.name,
    baseId: base.id,
    baseFallback: base.fallback,
    baseRepaired: base.repaired,
    engine: data.train.engine ?? engine,
    seconds: { total: 0, extract: data.extractSeconds, train: trainSeconds, export: 0 },
    cache: { hits: data.train.hits, misses: data.train.misses, damaged: data.train.damaged },
    trunkCalls: data.train.trunkCalls,
    skipped: data.skipped,
  };
}

export async function train(o: TrainOptions): Promise<TrainResult> {
  const t0 = performance.now();
  checkAbort(o.signal);
  const warnings: Warning[] = [];
  const onWarning = (w: Warning) => {
    warnings.push(w);
    o.onWarning?.(w);
  };
  // Options, output and cache folders, then the data: all before the base is loaded. The listings are reused below.
  for (const w of preflight(o)) onWarning(w);
  const listings = { train: await listDataset(o.data), val: o.val ? await listDataset(o.val) : undefined };
  const overlap = listingWarnings(listings.train, listings.val);
  for (const w of overlap) onWarning(w);
  const owned = typeof o.base !== 'object';
  const base = typeof o.base === 'object' ? o.base : await loadBase(o.base, o);
  try {
    const result = await trainWithBase({ ...o, listings, onWarning, valOverlapReported: overlap.length > 0 }, base, t0);
    return { ...result, warnings };
  } finally {
    // A base loaded here is ours to release; one passed in belongs to the caller.
    if (owned) disposeBase(base);
  }
}

type Trained = Omit<TrainResult, 'warnings'>;

async function trainWithBase(o: TrainOptions & Listed, base: Base, t0: number): Promise<Trained> {
  const mode = o.mode ?? 'feature';
  if (mode === 'parameter' || o.fineTune) {
    if (base.format !== 'layers')
      throw new UsageError(
        'base-cannot',
        words`${mode === 'parameter' ? [opt('mode'), ' parameter'] : [opt('fineTune')]} needs a TF.js Layers base; ${base.name} is ${formatWords(base.format)}: feature transfer only (${opt('mode')} feature or auto)`,
      );
    return trainParameterMode(o, mode as 'feature' | 'parameter', base, t0);
  }
  const candidates = mode === 'auto' ? sweepCandidates(base) : [{ cut: o.cut ?? base.defaultCut, depth: 0 }];
  for (const c of candidates) base.trunk.requireCut(c.cut);
  const { runner, engine } = await runnerFor(o.engine, base, { threads: o.threads });
  const data = await prepareData({ ...o, base, cuts: candidates.map((c) => c.cut), runner });

  const t1 = performance.now();
  let chosen = 0;
  let sweepResult: Awaited<ReturnType<typeof sweep>> | undefined;
  if (mode === 'auto') {
    sweepResult = await sweep({
      cuts: candidates,
      train: candidates.map((_, c) => featureSet(data.train, c, data.classes)),
      augmented: data.augmented.map((a) => candidates.map((_, c) => featureSet(a, c, data.classes))),
      val: data.val ? candidates.map((_, c) => featureSet(data.val!, c, data.classes)) : undefined,
      numClasses: data.classes.length,
      head: { head: o.head, epochs: o.epochs, lr: o.lr, batchSize: o.batchSize, seed: o.seed, patience: o.patience },
      seed: o.seed ?? 42,
      signal: o.signal,
      onCut: (row, done, total) =>
        o.onProgress?.({ phase: 'sweep', done, total, detail: `${row.cut} ${row.score.toFixed(3)}` }),
    });
    chosen = candidates.findIndex((c) => c.cut === sweepResult!.chosen);
  }
  const cut = candidates[chosen].cut;
  const trainSet = trainingSet(data, chosen);
  const valSet = data.val ? featureSet(data.val, chosen, data.classes) : undefined;

  const headOptions: TrainHeadOptions = {
    head: o.head,
    epochs: o.epochs,
    lr: o.lr,
    batchSize: o.batchSize,
    seed: o.seed,
    patience: o.patience,
    signal: o.signal,
    onEpoch: (log, total) =>
      o.onProgress?.({
        phase: 'train',
        done: log.epoch,
        total,
        detail: `loss ${log.loss.toFixed(3)}${log.valAccuracy !== undefined ? ` val_acc ${log.valAccuracy.toFixed(3)}` : ''}`,
        metrics: { ...log },
      }),
  };
  const head = await trainHead(trainSet, valSet, data.classes.length, headOptions);
  const trainSeconds = (performance.now() - t1) / 1000;
  // Early stopping ends before the maximum: close the bar at the epochs actually run.
  o.onProgress?.({ phase: 'train', done: head.history.length, total: head.history.length });

  // Training accuracy is measured on the images as they are, not on their augmented views.
  const plainTrain = featureSet(data.train, chosen, data.classes);
  const trainAcc = accuracy(head.predictProba(plainTrain.x, plainTrain.n), plainTrain.y, data.classes.length);
  let valAccuracy: number | null = null;
  let confusion: number[][] | undefined;
  if (valSet) {
    const p = head.predictProba(valSet.x, valSet.n);
    valAccuracy = accuracy(p, valSet.y, data.classes.length);
    confusion = confusionMatrix(argmaxRows(p, valSet.n, data.classes.length), valSet.y, data.classes.length);
  }

  const t2 = performance.now();
  const result: Trained = {
    mode,
    sweep: sweepResult?.rows,
    sweepMethod: sweepResult?.method,
    valAccuracy,
    trainAccuracy: trainAcc,
    trainImages: data.train.samples.length,
    valImages: valSet?.n ?? 0,
    ...runFacts(base, data, engine, trainSeconds),
    cut,
    head: head.kind,
    epochs: head.history.length,
    bestEpoch: head.bestEpoch,
    history: head.history,
  };
  try {
    if (o.out) {
      await exportTrained(o.out, base, cut, head, data.classes, result, o, confusion);
      result.out = path.resolve(o.out);
    }
  } finally {
    head.dispose();
  }
  result.seconds.export = (performance.now() - t2) / 1000;
  result.seconds.total = (performance.now() - t0) / 1000;
  return result;
}

async function trainParameterMode(
  o: TrainOptions & Listed,
  mode: 'feature' | 'parameter',
  base: LayersBase,
  t0: number,
): Promise<Trained> {
  const plan = planParameter(base, {
    mode,
    cut: o.cut,
    retrainLayers: o.retrainLayers,
    fineTune: o.fineTune,
    unfreezeFrom: o.unfreezeFrom,
  });
  const { runner, engine } = await runnerFor(o.engine, base, { threads: o.threads });
  // Tails read whole spatial activations, cached apart from the pooled ones.
  const data = await prepareData({ ...o, base, cuts: plan.cuts, runner, pool: false });
  const t1 = performance.now();
  const outcome = await trainParameter(base, plan, data, {
    mode,
    cut: o.cut,
    retrainLayers: o.retrainLayers,
    reinit: o.reinit,
    tailLr: o.tailLr,
    tailEpochs: o.tailEpochs,
    fineTune: o.fineTune,
    unfreezeFrom: o.unfreezeFrom,
    fineTuneLr: o.fineTuneLr,
    fineTuneEpochs: o.fineTuneEpochs,
    trainBn: o.trainBn,
    patience: o.patience,
    engine: o.engine,
    threads: o.threads,
    head: { epochs: o.epochs, lr: o.lr, batchSize: o.batchSize, seed: o.seed, patience: o.patience },
    onProgress: o.onProgress,
    signal: o.signal,
  });
  const { head } = outcome;
  try {
    const trainSeconds = (performance.now() - t1) / 1000;
    o.onProgress?.({ phase: 'train', done: 1, total: 1 });
    const t2 = performance.now();
    const valSamples = data.val?.samples ?? [];
    const C = data.classes.length;
    const result: Trained = {
      mode,
      valAccuracy: outcome.valAccuracy,
      trainAccuracy: outcome.trainAccuracy,
      trainImages: data.train.samples.length,
      valImages: valSamples.length,
      ...runFacts(base, data, engine, trainSeconds),
      cut: plan.cut,
      head: 'softmax',
      epochs: outcome.history.length,
      bestEpoch: outcome.bestEpoch,
      history: outcome.history,
      parameter: {
        top: plan.top,
        unfreezeFrom: plan.unfreezeFrom,
        reinit: o.reinit ?? false,
        trainBn: o.trainBn ?? false,
        stages: outcome.stages,
        notes: outcome.notes,
      },
      valPredictions: outcome.valProbabilities
        ? valSamples.map((s, i) => ({
            file: s.file,
            label: s.label,
            probabilities: Array.from(outcome.valProbabilities!.subarray(i * C, (i + 1) * C)),
          }))
        : undefined,
    };
    if (o.out) {
      await exportTrained(o.out, base, plan.top, head, data.classes, result, o, outcome.confusion);
      result.out = path.resolve(o.out);
    }
    result.seconds.export = (performance.now() - t2) / 1000;
    result.seconds.total = (performance.now() - t0) / 1000;
    return result;
  } finally {
    head.dispose();
    outcome.restore();
  }
}

async function exportTrained(
  out: string,
  base: Base,
  cut: string,
  head: TrainedHead,
  classes: string[],
  r: Trained,
  o: TrainOptions,
  confusion?: number[][],
): Promise<void> {
  checkAbort(o.signal);
  o.onProgress?.({ phase: 'export', done: 0, total: 1 });
  const knn = head.kind === 'knn';
  const foreign = base.format !== 'layers';
  const metadata: ModelMetadata = {
    format: 'graft-model',
    formatVersion: 1,
    labels: classes,
    preprocessing: { ...base.preprocessing, inModel: !foreign },
    base: {
      name: base.name,
      id: base.id,
      source: base.source,
      kind: base.kind,
      ...(foreign ? { format: base.format } : {}),
    },
    cut,
    mode: r.mode,
    parameter: r.parameter,
    sweep: r.sweep ? { method: r.sweepMethod, rows: r.sweep } : undefined,
    head: { kind: head.kind },
    headData: knn || foreign ? head.toJSON() : undefined,
    metrics: {
      valAccuracy: r.valAccuracy,
      trainAccuracy: r.trainAccuracy,
      valImages: r.valImages,
      trainImages: r.trainImages,
      confusion,
    },
    training: {
      data: path.resolve(o.data),
      val: o.val ? path.resolve(o.val) : undefined,
      valSplit: o.val ? undefined : (o.valSplit ?? 0.2),
      augment: r.augment,
      epochs: r.epochs,
      bestEpoch: r.bestEpoch,
      lr: o.lr,
      batchSize: o.batchSize,
      seed: o.seed ?? 42,
      history: r.history,
    },
    versions: versions(),
    createdAt: new Date().toISOString(),
  };
  // Graph and ONNX bases cannot be stitched into Layers: their folder keeps the base file and the head as JSON.
  if (base.format !== 'layers') {
    await saveForeignModel(out, base, metadata, o.signal);
    o.onProgress?.({ phase: 'export', done: 1, total: 1 });
    return;
  }
  const model = stitchModel(base, cut, knn ? undefined : head);
  try {
    await saveModel(out, model, metadata, {}, o.signal);
    o.onProgress?.({ phase: 'export', done: 1, total: 1 });
  } finally {
    // The stitched model shares the base's layers (released with the base) but owns the head's: release those here.
    for (const layer of model.layers) if (layer.name.startsWith('graft_head')) layer.dispose();
  }
}
