/**
 * The cut search: "the less the pretraining data resembles yours, the more layers to strip" turned into a
 * measurement. Activations at many cuts come from ONE trunk pass (a multi-output trunk); heads are cross-validated at each
 * cut on the training images; the best cut wins, ties going to the higher (cheaper) one.
 */
import type { Base } from '../base/base.ts';
import { type CrossValidation, CV_FOLDS, crossValidate, foldCount } from '../train/cross-validate.ts';
import type { FeatureSet, TrainHeadOptions } from '../train/features.ts';
import { checkAbort } from '../util/progress.ts';

/** At most this many cuts are swept; beyond it an even spread is taken. */
export const MAX_SWEEP_CUTS = 12;
export const SWEEP_FOLDS = CV_FOLDS;
/** Scores within this much of the best count as a tie, won by the highest cut. */
export const TIE_TOLERANCE = 0.005;

export interface SweepRow {
  cut: string;
  /** Candidate cut points between this cut and the head input (0 = the base's default cut). */
  depth: number;
  featureSize: number;
  /** Mean held-out accuracy over the folds of the training images. */
  score: number;
  /** Standard deviation over folds. */
  sd: number;
  seconds: number;
  chosen?: boolean;
}

/**
 * Candidate cuts to sweep: all of them when there are at most MAX_SWEEP_CUTS; otherwise those from the top of the
 * network down to about its middle (by layer position), thinned to an even spread that always contains the top one.
 */
export function sweepCandidates(base: Base): { cut: string; depth: number }[] {
  const cuts = base.trunk.candidates;
  const all = cuts.map((c, i, a) => ({ ...c, depth: a.length - 1 - i }));
  if (all.length <= MAX_SWEEP_CUTS) return all.map(({ name, depth }) => ({ cut: name, depth }));
  const middle = base.trunk.depth / 2;
  const upper = all.filter((c) => c.index >= middle);
  const pool = upper.length >= 2 ? upper : all;
  if (pool.length <= MAX_SWEEP_CUTS) return pool.map(({ name, depth }) => ({ cut: name, depth }));
  const picked = new Set<number>();
  for (let k = 0; k < MAX_SWEEP_CUTS; k++)
    picked.add(pool.length - 1 - Math.round((k * (pool.length - 1)) / (MAX_SWEEP_CUTS - 1)));
  return [...picked].sort((a, b) => a - b).map((i) => ({ cut: pool[i].name, depth: pool[i].depth }));
}

export interface SweepInput {
  cuts: { cut: string; depth: number }[];
  train: FeatureSet[];
  /** Extra views of the training images, per view then per cut, row r a view of train row r. They join the rows a
   *  head is fitted on, never the rows that score it, so a fold's held-out images are not seen flipped either. */
  augmented?: FeatureSet[][];
  numClasses: number;
  head: TrainHeadOptions;
  seed: number;
  signal?: AbortSignal;
  onCut?: (row: SweepRow, done: number, total: number) => void;
}

export interface SweepOutcome {
  rows: SweepRow[];
  chosen: string;
  method: string;
  /** The cross-validation at the chosen cut: its epochs and out-of-fold probabilities serve the final head and the
   *  label-issue finder. */
  cv: CrossValidation;
}

/**
 * Scores every cut by stratified k-fold cross-validation on the training images only. A validation set, when there is
 * one, takes no part: it measures the chosen model afterwards, so its accuracy is not the maximum of a dozen noisy
 * scores.
 */
export async function sweep(o: SweepInput): Promise<SweepOutcome> {
  const rows: SweepRow[] = [];
  const cvs: CrossValidation[] = [];
  // Cuts are only compared with one another: with a class of a single image (no fold split keeps it in every fitting
  // set) the scores are pessimistic for that class at every cut alike, so plain k-fold still ranks them.
  const k = foldCount(o.train[0].y) || Math.min(SWEEP_FOLDS, o.train[0].n);
  for (const [c, { cut, depth }] of o.cuts.entries()) {
    checkAbort(o.signal);
    const t0 = performance.now();
    const tr = o.train[c];
    const views = (o.augmented ?? []).map((a) => a[c]);
    const cv = await crossValidate(tr, views, o.numClasses, o.head, { k, seed: o.seed, signal: o.signal });
    cvs.push(cv);
    const row = {
      cut,
      depth,
      featureSize: tr.dim,
      score: cv.score,
      sd: cv.sd,
      seconds: (performance.now() - t0) / 1000,
    };
    rows.push(row);
    o.onCut?.(row, c + 1, o.cuts.length);
  }
  const best = Math.max(...rows.map((r) => r.score));
  // Highest cut among the (near-)best: fewer layers to run, same accuracy.
  const winner = rows.filter((r) => r.score >= best - TIE_TOLERANCE).sort((a, b) => a.depth - b.depth)[0];
  winner.chosen = true;
  return { rows, chosen: winner.cut, method: `${cvs[0].folds}-fold`, cv: cvs[rows.indexOf(winner)] };
}
