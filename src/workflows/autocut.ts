/**
 * The cut search: "the less the pretraining data resembles yours, the more layers to strip" turned into a
 * measurement. Activations at many cuts come from ONE trunk pass (a multi-output trunk); a head is trained at each cut
 * and scored on held-out data; the best cut wins, ties going to the higher (cheaper) one.
 */
import type { Base } from '../base/base.ts';
import type { FeatureSet, TrainHeadOptions } from '../train/features.ts';
import { concatRows, selectRows, stratifiedFolds } from '../train/folds.ts';
import { accuracy } from '../train/metrics.ts';
import { trainHead } from '../train/trainer.ts';
import { checkAbort } from '../util/progress.ts';

/** At most this many cuts are swept; beyond it an even spread is taken. */
export const MAX_SWEEP_CUTS = 12;
/** Validation sets at least this large score cuts directly; smaller data uses k-fold cross-validation. */
export const MIN_VAL_FOR_HOLDOUT = 100;
export const SWEEP_FOLDS = 5;
/** Scores within this much of the best count as a tie, won by the highest cut. */
export const TIE_TOLERANCE = 0.005;

export interface SweepRow {
  cut: string;
  /** Candidate cut points between this cut and the head input (0 = the base's default cut). */
  depth: number;
  featureSize: number;
  /** Mean held-out accuracy. */
  score: number;
  /** Standard deviation over folds (k-fold), or the binomial standard error of the accuracy (hold-out set). */
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
  /** Hold-out features per cut; used when it has at least MIN_VAL_FOR_HOLDOUT rows. */
  val?: FeatureSet[];
  numClasses: number;
  head: TrainHeadOptions;
  seed: number;
  signal?: AbortSignal;
  onCut?: (row: SweepRow, done: number, total: number) => void;
}

export async function sweep(o: SweepInput): Promise<{ rows: SweepRow[]; chosen: string; method: string }> {
  const useHoldout = o.val !== undefined && o.val[0].n >= MIN_VAL_FOR_HOLDOUT;
  const folds = useHoldout ? undefined : stratifiedFolds(o.train[0].y, SWEEP_FOLDS, o.seed);
  // Each head early-stops on the data that scores it, exactly as `graft train --cut X` does with its validation set,
  // so a sweep row is the number a single-cut run at that cut would report.
  const headOpts: TrainHeadOptions = { ...o.head, signal: o.signal, onEpoch: undefined };
  const rows: SweepRow[] = [];
  for (const [c, { cut, depth }] of o.cuts.entries()) {
    checkAbort(o.signal);
    const t0 = performance.now();
    const tr = o.train[c];
    const views = (o.augmented ?? []).map((a) => a[c]);
    const fitRows = (sets: FeatureSet[]): FeatureSet => ({ ...concatRows(sets, tr.dim), dim: tr.dim });
    let scores: number[];
    if (useHoldout) {
      const v = o.val![c];
      const head = await trainHead(fitRows([tr, ...views]), v, o.numClasses, headOpts);
      try {
        scores = [accuracy(head.predictProba(v.x, v.n), v.y, o.numClasses)];
      } finally {
        head.dispose();
      }
    } else {
      scores = [];
      for (let f = 0; f < SWEEP_FOLDS; f++) {
        const inFold = [...folds!.keys()].filter((i) => folds![i] === f);
        const outFold = [...folds!.keys()].filter((i) => folds![i] !== f);
        if (inFold.length === 0) continue;
        const rows = (s: FeatureSet): FeatureSet => ({
          x: selectRows(s.x, s.dim, outFold),
          n: outFold.length,
          dim: s.dim,
          y: Int32Array.from(outFold, (i) => s.y[i]),
        });
        const fit = fitRows([tr, ...views].map(rows));
        const held: FeatureSet = {
          x: selectRows(tr.x, tr.dim, inFold),
          n: inFold.length,
          dim: tr.dim,
          y: Int32Array.from(inFold, (i) => tr.y[i]),
        };
        const head = await trainHead(fit, held, o.numClasses, headOpts);
        try {
          scores.push(accuracy(head.predictProba(held.x, held.n), held.y, o.numClasses));
        } finally {
          head.dispose();
        }
      }
    }
    const score = scores.reduce((a, b) => a + b, 0) / scores.length;
    const sd = useHoldout
      ? Math.sqrt((score * (1 - score)) / o.val![c].n)
      : Math.sqrt(scores.reduce((a, s) => a + (s - score) ** 2, 0) / Math.max(1, scores.length - 1));
    const row = { cut, depth, featureSize: tr.dim, score, sd, seconds: (performance.now() - t0) / 1000 };
    rows.push(row);
    o.onCut?.(row, c + 1, o.cuts.length);
  }
  const best = Math.max(...rows.map((r) => r.score));
  // Highest cut among the (near-)best: fewer layers to run, same accuracy.
  const winner = rows.filter((r) => r.score >= best - TIE_TOLERANCE).sort((a, b) => a.depth - b.depth)[0];
  winner.chosen = true;
  return { rows, chosen: winner.cut, method: useHoldout ? 'holdout' : `${SWEEP_FOLDS}-fold` };
}
