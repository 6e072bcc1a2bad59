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
import { type CrossValidation, type CvEpoch, crossValidate, foldCount } from '../train/cross-validate.ts';
import type { EpochLog, HeadKind, LogisticFitInfo, TrainedHead, TrainHeadOptions } from '../train/features.ts';
import { accuracy, argmaxRows, confusionMatrix } from '../train/metrics.ts';
import { HEAD_DEFAULTS, trainHead } from '../train/trainer.ts';
import { judgeTta, type Tta, type TtaCheck } from '../train/tta.ts';
import { InternalError, opt, UsageError, type Warning, words } from '../util/errors.ts';
import { checkRange } from '../util/options.ts';
import { checkAbort, type ProgressCallback } from '../util/progress.ts';
import { versions } from '../util/versions.ts';
import { type SweepRow, sweep, sweepCandidates } from './autocut.ts';
import { checkSplit, duplicateWarnings, listingWarnings, preflight } from './checks.ts';
import { type Extracted, extractFeatures, featureSet, type RunnerFactory, trainingSet } from './extract.ts';
import {
  type DuplicateReport,
  duplicatesOf,
  LABEL_ISSUES_MAX_IMAGES,
  type LabelIssueReport,
  labelIssuesOf,
} from './findings.ts';
import {
  type ParameterOutcome,
  planParameter,
  type StageLog,
  type StageName,
  type TransferSettings,
  trainParameter,
} from './parameter.ts';

/** The head's settings, documented (with their defaults) on TrainHeadOptions. */
type HeadSettings = Pick<TrainHeadOptions, 'head' | 'epochs' | 'lr' | 'batchSize' | 'seed' | 'patience'>;

export interface TrainOptions extends BaseOptions, TransferSettings, HeadSettings {
  /** Training data: folder of class folders, or CSV of path,label. */
  data: string;
  /** Extra views of each training image whose activations are cached and trained on (default 'flip'; see
   *  dataset/views.ts). Validation images are never augmented. */
  augment?: Augment;
  /**
   * Test-time flip recorded in the model for predictors: 'auto' (default) measures on the training images (out of fold,
   * see train/tta.ts) whether averaging each image with its mirror helps, and records 'flip' when it does; 'flip'
   * records it without measuring; 'none' neither measures nor records. 'auto' needs the flipped training views
   * (augment 'flip'); feature transfer only.
   */
  tta?: Tta | 'auto';
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
  /** Rank likely label errors of the training images from out-of-fold probabilities (feature and auto modes).
   *  Default: on up to LABEL_ISSUES_MAX_IMAGES training images. */
  findLabelIssues?: boolean;
  /** Look for near-duplicate images (and leaks between training and validation) in the features. Default true. */
  findDuplicates?: boolean;
  /** Cosine similarity of centred features from which two images count as near duplicates (default 0.95, see
   *  train/duplicates.ts). */
  duplicateThreshold?: number;
  onProgress?: ProgressCallback;
  /** Called as soon as something is noticed that does not stop the job (all of them are also in the result). */
  onWarning?: (w: Warning) => void;
  signal?: AbortSignal;
}

export type TrainMode = 'feature' | 'auto' | 'parameter';

/** How the choices of a run (epochs, cut) were scored, and on what. */
export interface Selection {
  /** e.g. '5-fold cross-validation on the training images', 'early stopping on the validation set'. */
  method: string;
  /** What was chosen on that score. */
  chose: string[];
  /** The score the choices were made on (mean held-out accuracy). It chose, so it flatters. */
  score: number;
  /** Standard deviation over folds, for cross-validation. */
  sd?: number;
  /** true when the validation images took part in a choice: then `valAccuracy` is optimistic too. */
  usedValidation: boolean;
  /** The held-out curve the epochs were chosen on (cross-validated epoch-trained heads): the folds' pooled loss and
   *  accuracy after each epoch; the chosen epoch is its lowest loss. */
  curve?: CvEpoch[];
}

/** One training stage (head, tail, fine-tune) as it went. */
export interface StageSummary {
  stage: StageName;
  epochs: number;
  /** The epoch whose weights were kept (0: the stage kept the weights it started with). */
  bestEpoch: number;
  lr: number;
  valAccuracy?: number;
  valLoss?: number;
  seconds: number;
}

export interface TrainResult {
  mode: TrainMode;
  /** The cut search table (mode 'auto'). */
  sweep?: SweepRow[];
  sweepMethod?: string;
  /** Accuracy on the validation images. Used to choose nothing unless `selection.usedValidation`. */
  valAccuracy: number | null;
  /** The score the run's choices were made on, and how (see Selection). */
  selection?: Selection;
  trainAccuracy: number;
  trainImages: number;
  valImages: number;
  /** Images per class (in the order of `classes`) in each split. */
  classCounts: { train: number[]; val: number[] };
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
  /** A logistic head's lambda search and fit. */
  headFit?: LogisticFitInfo;
  /** Test-time augmentation recorded in the model for predictors. */
  tta: Tta;
  /** The measurement behind `tta` (mode 'auto' with flipped training views). */
  ttaCheck?: TtaCheck;
  engine: string;
  epochs: number;
  bestEpoch: number;
  /** Wall seconds: `train` includes `select` (cross-validation or the cut search); `find`: label issues and duplicates. */
  seconds: { total: number; extract: number; select: number; train: number; find: number; export: number };
  /** Activation cache use; `damaged`: entries that failed their check, deleted and recomputed (reported once). */
  cache: { hits: number; misses: number; damaged: DamagedEntry[] };
  /** Trunk forward calls made (0 on a warm cache); one call serves every cut of a sweep. */
  trunkCalls: number;
  skipped: Skipped[];
  /** What was noticed that did not stop the job: validation data that is training data, one image in two classes… */
  warnings: Warning[];
  /** Every epoch of every stage, in order; `epoch` restarts at 1 for each stage. */
  history: StageLog[];
  stages: StageSummary[];
  /** Likely label errors among the training images, most likely first (feature and auto modes). */
  labelIssues?: LabelIssueReport[];
  /** Near-duplicate pairs among training and validation images, most similar first (feature and auto modes). */
  duplicates?: DuplicateReport[];
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
  /** Validation images with the class probabilities the trained model gives them. */
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
    seconds: { total: 0, extract: data.extractSeconds, select: 0, train: trainSeconds, find: 0, export: 0 },
    cache: { hits: data.train.hits, misses: data.train.misses, damaged: data.train.damaged },
    trunkCalls: data.train.trunkCalls,
    skipped: data.skipped,
    classCounts: {
      train: countLabels(data.train.samples, data.classes),
      val: countLabels(data.val?.samples ?? [], data.classes),
    },
  };
}

function countLabels(samples: Sample[], classes: string[]): number[] {
  const counts = classes.map(() => 0);
  for (const s of samples) counts[classes.indexOf(s.label)]++;
  return counts;
}

function valPredictionsOf(samples: Sample[], proba: Float32Array, numClasses: number): TrainResult['valPredictions'] {
  return samples.map((s, i) => ({
    file: s.file,
    label: s.label,
    probabilities: Array.from(proba.subarray(i * numClasses, (i + 1) * numClasses)),
  }));
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
  const plainTrain = featureSet(data.train, chosen, data.classes);
  const headSettings = {
    head: o.head,
    epochs: o.epochs,
    lr: o.lr,
    batchSize: o.batchSize,
    seed: o.seed,
    patience: o.patience,
  };
  // The head's one setting (the logistic head's L2 strength, the others' number of epochs) and in auto mode the cut are
  // chosen by cross-validation on the training images, so the validation images only measure; the same fold heads give
  // the label-issue finder and the test-time flip check their out-of-fold probabilities.
  // When a class has a single training image no split leaves it in every fold's fitting rows: the epochs then stop
  // early on the validation set, and the result says so (selection.usedValidation), or on the training loss without one.
  const folds = foldCount(plainTrain.y);
  const cv: CrossValidation | undefined =
    folds < 2
      ? undefined
      : (sweepResult?.cv ??
        (await crossValidate(
          plainTrain,
          data.augmented.map((a) => featureSet(a, chosen, data.classes)),
          data.classes.length,
          headSettings,
          {
            k: folds,
            seed: o.seed ?? 42,
            signal: o.signal,
            // Choosing the epochs is training too: the bar shows the folds' epochs.
            onEpoch: (point, total) =>
              o.onProgress?.({
                phase: 'train',
                done: point.epoch,
                total,
                detail: `cross-validation, ${folds} folds: held-out loss ${point.loss.toFixed(3)}`,
              }),
          },
        )));
  const selectSeconds = (performance.now() - t1) / 1000;
  const setting = cv?.lambda !== undefined ? 'L2 strength' : 'epochs';
  const logistic = (o.head ?? HEAD_DEFAULTS.head) === 'logistic';
  const selection: Selection | undefined = cv
    ? {
        method: `${cv.folds}-fold cross-validation on the training images`,
        chose: mode === 'auto' ? ['cut', setting] : [setting],
        score: cv.score,
        sd: cv.sd,
        usedValidation: false,
        ...(cv.curve.length > 1 ? { curve: cv.curve } : {}),
      }
    : valSet && !logistic
      ? {
          method: 'early stopping on the validation set (a class has one training image: too few for folds)',
          chose: ['epochs'],
          score: Number.NaN,
          usedValidation: true,
        }
      : undefined;

  const headOptions: TrainHeadOptions = {
    ...headSettings,
    // The search already fitted the logistic head on these rows at its strength: the final fit starts there.
    ...(cv
      ? cv.lambda !== undefined
        ? { lambda: cv.lambda, start: cv.logisticSolution }
        : { epochs: cv.epochs, earlyStopping: false }
      : {}),
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

  let ttaCheck: TtaCheck | undefined;
  const ttaMode = o.tta ?? 'auto';
  if (ttaMode === 'auto' && data.augment === 'flip' && cv?.viewsOof.length)
    ttaCheck = judgeTta(cv.oof, cv.viewsOof, plainTrain.y, data.classes.length, `${cv.folds}-fold, out of fold`);
  const tta: Tta = ttaMode === 'flip' || ttaCheck?.helps ? 'flip' : 'none';

  // Training accuracy is measured on the images as they are, not on their augmented views.
  const trainAcc = accuracy(head.predictProba(plainTrain.x, plainTrain.n), plainTrain.y, data.classes.length);
  let valAccuracy: number | null = null;
  let confusion: number[][] | undefined;
  let valPredictions: TrainResult['valPredictions'];
  if (valSet && data.val) {
    const p = head.predictProba(valSet.x, valSet.n);
    valAccuracy = accuracy(p, valSet.y, data.classes.length);
    confusion = confusionMatrix(argmaxRows(p, valSet.n, data.classes.length), valSet.y, data.classes.length);
    valPredictions = valPredictionsOf(data.val.samples, p, data.classes.length);
  }
  if (selection?.usedValidation) selection.score = valAccuracy ?? Number.NaN;

  const tFind = performance.now();
  const wantIssues = o.findLabelIssues ?? data.train.samples.length <= LABEL_ISSUES_MAX_IMAGES;
  const labelIssues = wantIssues && cv ? labelIssuesOf(cv, data.train.samples, data.classes) : undefined;
  const duplicates =
    (o.findDuplicates ?? true)
      ? await duplicatesOf(
          [
            { split: 'train', samples: data.train.samples, x: plainTrain.x },
            ...(data.val && valSet ? [{ split: 'val' as const, samples: data.val.samples, x: valSet.x }] : []),
          ],
          plainTrain.dim,
          o.duplicateThreshold,
        )
      : undefined;
  const findSeconds = (performance.now() - tFind) / 1000;

  const t2 = performance.now();
  const result: Trained = {
    mode,
    sweep: sweepResult?.rows,
    sweepMethod: sweepResult?.method,
    valAccuracy,
    selection,
    trainAccuracy: trainAcc,
    trainImages: data.train.samples.length,
    valImages: valSet?.n ?? 0,
    ...runFacts(base, data, engine, trainSeconds),
    cut,
    head: head.kind,
    ...(head.fit ? { headFit: { ...head.fit, ...(cv?.lambdaSearch ? { search: cv.lambdaSearch } : {}) } } : {}),
    tta,
    ...(ttaCheck ? { ttaCheck } : {}),
    epochs: head.history.length,
    bestEpoch: head.bestEpoch,
    history: head.history.map((l) => ({ ...l, stage: 'head' as const })),
    stages: [
      stageSummary('head', o.lr ?? HEAD_DEFAULTS.lr, head.history, head.bestEpoch, trainSeconds - selectSeconds),
    ],
    labelIssues,
    duplicates,
    valPredictions,
  };
  result.seconds.select = selectSeconds;
  result.seconds.find = findSeconds;
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
      // The stages stop early on the validation loss: that set chose the epochs and its score is not independent.
      selection:
        outcome.valAccuracy !== null
          ? {
              method: 'early stopping on the validation set',
              chose: outcome.stages.map((s) => `${s.stage} epochs`),
              score: outcome.valAccuracy,
              usedValidation: true,
            }
          : undefined,
      trainAccuracy: outcome.trainAccuracy,
      trainImages: data.train.samples.length,
      valImages: valSamples.length,
      ...runFacts(base, data, engine, trainSeconds),
      cut: plan.cut,
      head: 'softmax',
      tta: o.tta === 'flip' ? 'flip' : 'none',
      epochs: outcome.history.length,
      bestEpoch: outcome.bestEpoch,
      history: outcome.history,
      stages: outcome.stages,
      parameter: {
        top: plan.top,
        unfreezeFrom: plan.unfreezeFrom,
        reinit: o.reinit ?? false,
        trainBn: o.trainBn ?? false,
        stages: outcome.stages,
        notes: outcome.notes,
      },
      valPredictions: outcome.valProbabilities ? valPredictionsOf(valSamples, outcome.valProbabilities, C) : undefined,
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
    head: { kind: head.kind, ...(r.headFit ? { fit: r.headFit } : {}) },
    headData: knn || foreign ? head.toJSON() : undefined,
    ...(r.tta === 'flip' ? { tta: r.tta } : {}),
    metrics: {
      valAccuracy: r.valAccuracy,
      selection: r.selection,
      trainAccuracy: r.trainAccuracy,
      valImages: r.valImages,
      trainImages: r.trainImages,
      confusion,
      ...(r.ttaCheck ? { tta: r.ttaCheck } : {}),
    },
    training: {
      data: path.resolve(o.data),
      val: o.val ? path.resolve(o.val) : undefined,
      valSplit: o.val ? undefined : (o.valSplit ?? 0.2),
      augment: r.augment,
      epochs: r.epochs,
      bestEpoch: r.bestEpoch,
      stages: r.stages,
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

function stageSummary(
  stage: StageName,
  lr: number,
  logs: EpochLog[],
  bestEpoch: number,
  seconds: number,
): StageSummary {
  const b = logs[bestEpoch - 1];
  return { stage, epochs: logs.length, bestEpoch, lr, valAccuracy: b?.valAccuracy, valLoss: b?.valLoss, seconds };
}
