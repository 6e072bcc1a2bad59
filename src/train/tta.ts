/**
 * Does test-time augmentation help this head? Judged on the training images alone: each image's out-of-fold
 * probabilities (from a head fitted without it) alone, against their mean with those of its augmentation views
 * (with `--augment flip`, its mirror). No validation image is used, so a validation score stays a measurement.
 */

import { opt, shown, UsageError, words } from '../util/errors.ts';
import type { FeatureSet, TrainHeadOptions } from './features.ts';
import { imageFolds } from './folds.ts';
import { accuracy, logLoss } from './metrics.ts';
import { trainHead } from './trainer.ts';

/** Test-time augmentations graft applies at prediction: `flip` averages an image's probabilities with its mirror's. */
export type Tta = 'flip' | 'none';

export function parseTta(text: string | undefined, allowAuto: true): Tta | 'auto';
export function parseTta(text: string | undefined, allowAuto?: false): Tta;
export function parseTta(text: string | undefined, allowAuto = false): Tta | 'auto' {
  const t = text ?? (allowAuto ? 'auto' : 'none');
  if (t === 'flip' || t === 'none' || (allowAuto && t === 'auto')) return t;
  throw new UsageError(
    'invalid-value',
    words`${opt('tta')} must be ${allowAuto ? 'auto, ' : ''}flip or none (got ${shown(t)})`,
  );
}

export interface TtaCheck {
  /** How the out-of-fold probabilities were had: the head's own lambda search, or a k-fold run for this check. */
  method: string;
  /** Training images scored. */
  images: number;
  single: { accuracy: number; logLoss: number };
  flip: { accuracy: number; logLoss: number };
  /** The mean with the mirror lowers the log loss without lowering the accuracy. */
  helps: boolean;
}

export const TTA_FOLDS = 5;

/**
 * Out-of-fold probabilities for every row of `train` (images and views; `source` as in FeatureSet), each predicted by
 * a head fitted on the other folds' images and their views. Epoch-trained heads stop early on the held-out images, as
 * the cut search's folds do: optimistic for both arms of the comparison alike.
 */
export async function outOfFold(
  train: FeatureSet,
  numClasses: number,
  opts: TrainHeadOptions,
  k = TTA_FOLDS,
): Promise<Float32Array> {
  const source = train.source ?? Int32Array.from({ length: train.n }, (_, i) => i);
  const fold = imageFolds(train.y, source, k, opts.seed ?? 42);
  const { dim } = train;
  const rows = (idx: number[]): FeatureSet => {
    const x = new Float32Array(idx.length * dim);
    idx.forEach((r, i) => {
      x.set(train.x.subarray(r * dim, (r + 1) * dim), i * dim);
    });
    const pos = new Map(idx.map((r, i) => [r, i]));
    return {
      x,
      n: idx.length,
      dim,
      y: Int32Array.from(idx, (r) => train.y[r]),
      source: Int32Array.from(idx, (r) => pos.get(source[r]) ?? 0),
    };
  };
  const out = new Float32Array(train.n * numClasses);
  for (let f = 0; f < k; f++) {
    const fitIdx = [...fold.keys()].filter((r) => fold[r] !== f);
    const heldIdx = [...fold.keys()].filter((r) => fold[r] === f);
    if (heldIdx.length === 0) continue;
    const held = rows(heldIdx);
    const heldImages = rows(heldIdx.filter((r) => source[r] === r));
    const head = await trainHead(rows(fitIdx), heldImages, numClasses, { ...opts, onEpoch: undefined });
    try {
      const p = head.predictProba(held.x, held.n);
      heldIdx.forEach((r, i) => {
        out.set(p.subarray(i * numClasses, (i + 1) * numClasses), r * numClasses);
      });
    } finally {
      head.dispose();
    }
  }
  return out;
}

/** Compares single-view and view-averaged out-of-fold predictions over the training images. */
export function judgeTta(oof: Float32Array, train: FeatureSet, numClasses: number, method: string): TtaCheck {
  const C = numClasses;
  const source = train.source ?? Int32Array.from({ length: train.n }, (_, i) => i);
  const images = [...source.keys()].filter((r) => source[r] === r);
  const slot = new Map(images.map((r, i) => [r, i]));
  const single = new Float32Array(images.length * C);
  const mean = new Float64Array(images.length * C);
  const count = new Int32Array(images.length);
  for (let r = 0; r < train.n; r++) {
    const i = slot.get(source[r]) as number;
    for (let c = 0; c < C; c++) mean[i * C + c] += oof[r * C + c];
    count[i]++;
    if (source[r] === r) single.set(oof.subarray(r * C, (r + 1) * C), i * C);
  }
  const averaged = Float32Array.from(mean, (v, j) => v / count[Math.floor(j / C)]);
  const y = Int32Array.from(images, (r) => train.y[r]);
  const s = { accuracy: accuracy(single, y, C), logLoss: logLoss(single, y, C) };
  const t = { accuracy: accuracy(averaged, y, C), logLoss: logLoss(averaged, y, C) };
  return {
    method,
    images: images.length,
    single: s,
    flip: t,
    helps: t.logLoss < s.logLoss && t.accuracy >= s.accuracy,
  };
}
