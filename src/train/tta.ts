/**
 * Does test-time augmentation help this head? Judged on the training images alone: each image's out-of-fold
 * probabilities (from a head fitted without it) alone, against their mean with those of its augmentation views
 * (with `--augment flip`, its mirror). No validation image is used, so a validation score stays a measurement.
 */

import { opt, shown, UsageError, words } from '../util/errors.ts';
import { accuracy, logLoss } from './metrics.ts';

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
  /** Where the out-of-fold probabilities came from (the run's cross-validation). */
  method: string;
  /** Training images scored. */
  images: number;
  single: { accuracy: number; logLoss: number };
  flip: { accuracy: number; logLoss: number };
  /** The mean with the mirror lowers the log loss without lowering the accuracy. */
  helps: boolean;
}

/**
 * Compares single-view and view-averaged out-of-fold predictions over the training images: `oof` holds each image's
 * (n × numClasses), `viewsOof[v]` its v-th view's, all from fold heads that saw neither the image nor its views
 * (train/cross-validate.ts).
 */
export function judgeTta(
  oof: Float32Array,
  viewsOof: Float32Array[],
  y: Int32Array,
  numClasses: number,
  method: string,
): TtaCheck {
  const C = numClasses;
  const single = oof;
  const averaged = Float32Array.from(oof, (v, j) => viewsOof.reduce((a, w) => a + w[j], v) / (1 + viewsOof.length));
  const s = { accuracy: accuracy(single, y, C), logLoss: logLoss(single, y, C) };
  const t = { accuracy: accuracy(averaged, y, C), logLoss: logLoss(averaged, y, C) };
  return {
    method,
    images: y.length,
    single: s,
    flip: t,
    helps: t.logLoss < s.logLoss && t.accuracy >= s.accuracy,
  };
}
