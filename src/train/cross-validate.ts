/**
 * @file k-fold cross-validation of a head on cached features. It serves three purposes at once: it chooses what must be
 * chosen (the number of epochs, the cut) without looking at the validation set, so that set only measures; its mean
 * held-out accuracy is the score those choices were made on; and its out-of-fold probabilities (every training image
 * scored by a head that never saw it) are what the label-issue finder reads.
 */
import { checkAbort } from '../util/progress.ts';
import type { EpochLog, FeatureSet, TrainHeadOptions } from './features.ts';
import { concatRows, selectRows, stratifiedFolds } from './folds.ts';
import { accuracy } from './metrics.ts';
import { trainHead } from './trainer.ts';

/** Folds used by graft's cross-validation (the cut search and the choice of epochs). */
export const CV_FOLDS = 5;

export interface CrossValidation {
  /** Folds that held out at least one row. */
  folds: number;
  /** Out-of-fold class probabilities of every row of `train`, n × numClasses row-major. */
  oof: Float32Array;
  /** Accuracy on each held-out fold. */
  scores: number[];
  /** Mean of `scores`. */
  score: number;
  /** Standard deviation of `scores` (n - 1 in the denominator). */
  sd: number;
  /** Best epoch of each fold's head (early stopping on its held-out fold). */
  bestEpochs: number[];
  /** Epochs for a head trained on all rows: the rounded mean of `bestEpochs`, at least 1. */
  epochs: number;
}

export interface CrossValidateOptions {
  /** Default CV_FOLDS; fewer when there are fewer rows. */
  k?: number;
  /** Seed of the fold assignment (the heads take theirs from `head.seed`). */
  seed?: number;
  signal?: AbortSignal;
  /** Called after every epoch of every fold's head (fold counts from 0). */
  onEpoch?: (fold: number, folds: number, log: EpochLog, total: number) => void;
}

function rowsOf(s: FeatureSet, rows: number[]): FeatureSet {
  return { x: selectRows(s.x, s.dim, rows), n: rows.length, dim: s.dim, y: Int32Array.from(rows, (i) => s.y[i]) };
}

/**
 * Trains one head per stratified fold on the other folds' rows (plus their augmentation views: `views[v]` row r is a view
 * of `train` row r; a held-out row's views never join its own fold's fitting rows) and scores it on the held-out rows.
 * Each head early-stops on its held-out fold, as a single run with a validation set would.
 */
export async function crossValidate(
  train: FeatureSet,
  views: FeatureSet[],
  numClasses: number,
  head: TrainHeadOptions,
  o: CrossValidateOptions = {},
): Promise<CrossValidation> {
  if (train.n < 2) throw new Error(`cross-validation needs at least 2 rows (got ${train.n})`);
  for (const v of views) {
    if (v.n !== train.n || v.dim !== train.dim)
      throw new Error(`cross-validation: a view has ${v.n}×${v.dim} rows, the data ${train.n}×${train.dim}`);
  }
  const k = Math.min(o.k ?? CV_FOLDS, train.n);
  const fold = stratifiedFolds(train.y, k, o.seed ?? 42);
  const oof = new Float32Array(train.n * numClasses);
  const scores: number[] = [];
  const bestEpochs: number[] = [];
  const opts: TrainHeadOptions = { ...head, signal: o.signal, onEpoch: undefined, earlyStopping: true };
  for (let f = 0; f < k; f++) {
    checkAbort(o.signal);
    const held: number[] = [];
    const fit: number[] = [];
    for (let i = 0; i < train.n; i++) (fold[i] === f ? held : fit).push(i);
    if (held.length === 0) continue;
    const fitSet = {
      ...concatRows(
        [train, ...views].map((s) => rowsOf(s, fit)),
        train.dim,
      ),
      dim: train.dim,
    };
    const heldSet = rowsOf(train, held);
    const h = await trainHead(fitSet, heldSet, numClasses, {
      ...opts,
      onEpoch: o.onEpoch ? (log, total) => o.onEpoch?.(f, k, log, total) : undefined,
    });
    try {
      const p = h.predictProba(heldSet.x, heldSet.n);
      held.forEach((i, r) => {
        oof.set(p.subarray(r * numClasses, (r + 1) * numClasses), i * numClasses);
      });
      scores.push(accuracy(p, heldSet.y, numClasses));
      bestEpochs.push(h.bestEpoch);
    } finally {
      h.dispose();
    }
  }
  const score = scores.reduce((a, b) => a + b, 0) / scores.length;
  const sd = Math.sqrt(scores.reduce((a, s) => a + (s - score) ** 2, 0) / Math.max(1, scores.length - 1));
  const epochs = Math.max(1, Math.round(bestEpochs.reduce((a, b) => a + b, 0) / bestEpochs.length));
  return { folds: scores.length, oof, scores, score, sd, bestEpochs, epochs };
}
