/**
 * @file k-fold cross-validation of a head on cached features. It serves three purposes at once: it chooses what must be
 * chosen (the number of epochs, the cut) without looking at the validation set, so that set only measures; its mean
 * held-out accuracy is the score those choices were made on; and its out-of-fold probabilities (every training image
 * scored by a head that never saw it) are what the label-issue finder reads.
 *
 * Epochs are chosen the way xgboost's and LightGBM's `cv` choose boosting rounds: the fold heads train in lockstep, their
 * held-out losses are pooled after every epoch into one curve, and training stops `patience` epochs after that curve's
 * minimum. The head on all rows then trains for the minimum's epoch count, as scikit-learn's LogisticRegressionCV refits
 * on all rows with the chosen setting. Per-fold early stopping was tried first and fails on small sets: a fold of four
 * images stops at whichever epoch happens to flatter those four, and the mean of such epochs undertrains; the pooled curve
 * reads every training image at every epoch, which is as much evidence as a validation set of that size gives.
 */
import { InternalError, opt, UsageError, words } from '../util/errors.ts';
import { checkAbort } from '../util/progress.ts';
import type { FeatureSet, LogisticFitInfo, TrainedHead, TrainHeadOptions } from './features.ts';
import { concatRows, selectRows, stratifiedFolds } from './folds.ts';
import { accuracy, logLoss } from './metrics.ts';
import { DenseFit, denseSettings, HEAD_DEFAULTS, RESIDENT_VALUES, trainHead } from './trainer.ts';

/** Folds used by graft's cross-validation (the cut search and the choice of epochs). */
export const CV_FOLDS = 5;

/** One point of the pooled held-out curve. */
export interface CvEpoch {
  epoch: number;
  /** Held-out class-weighted cross-entropy, the folds' means weighted by their sizes. */
  loss: number;
  /** Held-out accuracy over all training images. */
  accuracy: number;
}

export interface CrossValidation {
  /** Folds that held out at least one row. */
  folds: number;
  /** Out-of-fold class probabilities of every row of `train`, n × numClasses row-major, from the fold heads at the
   *  chosen epoch. */
  oof: Float32Array;
  /** Accuracy of each fold head (at the chosen epoch) on its held-out fold. */
  scores: number[];
  /** Mean of `scores`: the score the choice was made on. */
  score: number;
  /** Standard deviation of `scores` (n - 1 in the denominator). */
  sd: number;
  /** The pooled held-out curve, one point per epoch run (one point for a head without epochs, e.g. knn). */
  curve: CvEpoch[];
  /** Epochs for a head trained on all rows: the epoch of the curve's lowest loss (1 for a head without epochs). */
  epochs: number;
  /** Out-of-fold probabilities of each augmentation view's rows (`views[v]`, n × numClasses), from the same fold heads
   *  as `oof`: what the test-time flip check compares the images' own with. */
  viewsOof: Float32Array[];
  /** The logistic head's L2 strength chosen on these folds (absent for the other heads), and the search behind it. */
  lambda?: number;
  lambdaSearch?: LogisticFitInfo['search'];
  /** The logistic head's fit on all the rows at that strength, for the final head to start from (TrainHeadOptions.start). */
  logisticSolution?: Float64Array;
}

export interface CrossValidateOptions {
  /** Default foldCount(train.y): CV_FOLDS, fewer when a class has fewer images. */
  k?: number;
  /** Seed of the fold assignment (the heads take theirs from `head.seed`). */
  seed?: number;
  signal?: AbortSignal;
  /** Called after every epoch of the lockstep with that epoch's pooled held-out numbers. */
  onEpoch?: (point: CvEpoch, maxEpochs: number) => void;
}

/**
 * Folds for cross-validating on labels `y`: CV_FOLDS, or the image count of the smallest class when that is lower, so
 * stratified folds leave every class in every fold's fitting rows; 0 when some class has a single image (no split can).
 */
export function foldCount(y: Int32Array): number {
  const counts = new Map<number, number>();
  for (const c of y) counts.set(c, (counts.get(c) ?? 0) + 1);
  const least = Math.min(...counts.values());
  return counts.size > 0 && least >= 2 ? Math.min(CV_FOLDS, least) : 0;
}

function rowsOf(s: FeatureSet, rows: ArrayLike<number>): FeatureSet {
  const list = Array.from(rows);
  return { x: selectRows(s.x, s.dim, list), n: list.length, dim: s.dim, y: Int32Array.from(list, (i) => s.y[i]) };
}

/** A fold: its held-out rows of the training images, and the rows its head fits (of the images and their views). */
interface Fold {
  held: Int32Array;
  fit: Int32Array;
}

/**
 * Trains one head per stratified fold on the other folds' rows (plus their augmentation views: `views[v]` row r is a view
 * of `train` row r; a held-out row's views never join its own fold's fitting rows) and scores it on the held-out rows.
 */
export async function crossValidate(
  train: FeatureSet,
  views: FeatureSet[],
  numClasses: number,
  head: TrainHeadOptions,
  o: CrossValidateOptions = {},
): Promise<CrossValidation> {
  for (const v of views) {
    if (v.n !== train.n || v.dim !== train.dim)
      throw new InternalError(`cross-validation: a view has ${v.n}×${v.dim} rows, the data ${train.n}×${train.dim}`);
  }
  const k = Math.min(o.k ?? foldCount(train.y), train.n);
  if (!(k >= 2)) throw new InternalError(`cross-validation needs 2 folds or more (got ${k} for ${train.n} rows)`);
  const fold = stratifiedFolds(train.y, k, o.seed ?? 42);
  // Images first, then each view's rows: row r + v*n shows image r.
  const all: FeatureSet = { ...concatRows([train, ...views], train.dim), dim: train.dim };
  const folds: Fold[] = [];
  for (let f = 0; f < k; f++) {
    const held: number[] = [];
    const fit: number[] = [];
    for (let i = 0; i < train.n; i++) {
      if (fold[i] === f) held.push(i);
      else for (let v = 0; v <= views.length; v++) fit.push(i + v * train.n);
    }
    if (held.length > 0) folds.push({ held: Int32Array.from(held), fit: Int32Array.from(fit) });
  }
  const kind = head.head ?? HEAD_DEFAULTS.head;
  const oof = new Float32Array(train.n * numClasses);
  const viewsOof = views.map(() => new Float32Array(train.n * numClasses));
  const scores: number[] = [];
  const place = (into: Float32Array, rows: Int32Array, p: Float32Array) => {
    rows.forEach((i, r) => {
      into.set(p.subarray(r * numClasses, (r + 1) * numClasses), i * numClasses);
    });
  };
  // A fold's held-out rows are copied out only to predict them, one fold at a time: the rows stay in one matrix.
  const collect = (f: Fold, h: TrainedHead) => {
    const heldSet = rowsOf(train, f.held);
    const p = h.predictProba(heldSet.x, heldSet.n);
    place(oof, f.held, p);
    scores.push(accuracy(p, heldSet.y, numClasses));
    for (const [v, view] of views.entries()) {
      const heldView = rowsOf(view, f.held);
      place(viewsOof[v], f.held, h.predictProba(heldView.x, heldView.n));
    }
  };
  let curve: CvEpoch[];
  let epochs: number;
  let lambda: number | undefined;
  let lambdaSearch: CrossValidation['lambdaSearch'];
  let logisticSolution: Float64Array | undefined;
  if (kind === 'softmax' || kind === 'mlp') {
    ({ curve, epochs } = await lockstep(kind, all, train, folds, numClasses, head, o, collect));
  } else if (kind === 'logistic' && head.lambda === undefined) {
    // The logistic head's own search for its L2 strength is this cross-validation: on these folds (each view in its
    // image's), one fit per fold and strength; the chosen strength's out-of-fold probabilities and fold scores are the
    // result, and the head on all rows is then fitted at that strength.
    const n = train.n;
    const h = await trainHead(
      { ...all, source: Int32Array.from({ length: all.n }, (_, r) => r % n) },
      undefined,
      numClasses,
      { ...head, folds: Int32Array.from({ length: all.n }, (_, r) => fold[r % n]), signal: o.signal },
    );
    try {
      const search = h.fit?.search;
      const rowsOof = h.outOfFold;
      if (!search || !rowsOof || !h.fit)
        throw new InternalError('cross-validation: the logistic head searched nothing');
      oof.set(rowsOof.subarray(0, n * numClasses));
      for (let v = 0; v < views.length; v++)
        viewsOof[v].set(rowsOof.subarray((v + 1) * n * numClasses, (v + 2) * n * numClasses));
      scores.push(...(search.foldScores ?? []));
      lambda = h.fit.lambda;
      lambdaSearch = search;
      logisticSolution = h.solution;
    } finally {
      h.dispose();
    }
    curve = [{ epoch: 1, loss: logLoss(oof, train.y, numClasses), accuracy: accuracy(oof, train.y, numClasses) }];
    epochs = 1;
  } else {
    // A head without epochs (knn, or the logistic head at a given strength): one fit per fold.
    for (const f of folds) {
      checkAbort(o.signal);
      const h = await trainHead(rowsOf(all, f.fit), undefined, numClasses, { ...head, signal: o.signal });
      try {
        collect(f, h);
      } finally {
        h.dispose();
      }
    }
    curve = [{ epoch: 1, loss: logLoss(oof, train.y, numClasses), accuracy: accuracy(oof, train.y, numClasses) }];
    epochs = 1;
  }
  const score = scores.reduce((a, b) => a + b, 0) / scores.length;
  const sd = Math.sqrt(scores.reduce((a, s) => a + (s - score) ** 2, 0) / Math.max(1, scores.length - 1));
  return {
    folds: scores.length,
    oof,
    scores,
    score,
    sd,
    curve,
    epochs,
    viewsOof,
    ...(lambda === undefined ? {} : { lambda, lambdaSearch, logisticSolution }),
  };
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The fold heads trained epoch by epoch together; stops `patience` epochs past the pooled held-out loss's minimum. */
async function lockstep(
  kind: 'softmax' | 'mlp',
  all: FeatureSet,
  train: FeatureSet,
  folds: Fold[],
  numClasses: number,
  head: TrainHeadOptions,
  o: CrossValidateOptions,
  collect: (f: Fold, h: TrainedHead) => void,
): Promise<{ curve: CvEpoch[]; epochs: number }> {
  const s = denseSettings(kind, head);
  const total = folds.reduce((a, f) => a + f.held.length, 0);
  const fits: DenseFit[] = [];
  try {
    // The folds together keep at most one trainer's budget of scored rows on the device.
    const residentValues = Math.floor(RESIDENT_VALUES / folds.length);
    for (const f of folds)
      fits.push(
        new DenseFit(all, f.fit, { set: train, rows: f.held }, numClasses, s, { scoreTraining: false, residentValues }),
      );
    const curve: CvEpoch[] = [];
    let bestLoss = Number.POSITIVE_INFINITY;
    let bestEpoch = 0;
    for (let epoch = 1; epoch <= s.epochs; epoch++) {
      let loss = 0;
      let acc = 0;
      for (const [i, fit] of fits.entries()) {
        const { val } = await fit.epoch(o.signal);
        const w = folds[i].held.length / total;
        loss += (val?.loss ?? Number.NaN) * w;
        acc += (val?.accuracy ?? Number.NaN) * w;
      }
      const point = { epoch, loss, accuracy: acc };
      curve.push(point);
      if (loss < bestLoss) {
        bestLoss = loss;
        bestEpoch = epoch;
        for (const fit of fits) fit.keep();
      }
      o.onEpoch?.(point, s.epochs);
      if (!Number.isFinite(loss) && bestEpoch === 0)
        throw new UsageError('diverged', words`training diverged at epoch ${epoch} (loss ${loss}); lower ${opt('lr')}`);
      if (epoch - bestEpoch >= s.patience) break;
      await tick();
    }
    checkAbort(o.signal);
    for (const [i, fit] of fits.entries()) {
      const h = fit.toHead([], bestEpoch);
      try {
        collect(folds[i], h);
      } finally {
        h.dispose();
      }
    }
    return { curve, epochs: bestEpoch };
  } finally {
    for (const fit of fits) fit.dispose();
  }
}
