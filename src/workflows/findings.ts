/**
 * @file What training finds in the data besides a model: likely label errors (from the cross-validation's out-of-fold
 * probabilities) and near duplicates, leaks between training and validation among them (from the cached features).
 * Both read features already on hand: no image is decoded again and no trunk runs.
 */
import type { Sample } from '../dataset/dataset.ts';
import type { CrossValidation } from '../train/cross-validate.ts';
import { DUPLICATE_THRESHOLD, findDuplicates } from '../train/duplicates.ts';
import { findLabelIssues } from '../train/label-issues.ts';

/** Label issues are looked for by default up to this many training images. */
export const LABEL_ISSUES_MAX_IMAGES = 20_000;

export interface LabelIssueReport {
  /** Absolute path of the image. */
  file: string;
  given: string;
  suggested: string;
  /** Out-of-fold probability of the suggested class. */
  confidence: number;
  /** Out-of-fold probability of the given label. */
  givenProbability: number;
}

export type Split = 'train' | 'val';

export interface DuplicateReport {
  a: string;
  b: string;
  /** Cosine similarity of the centred features (see train/duplicates.ts). */
  similarity: number;
  splits: [Split, Split];
  labels: [string, string];
  /** One image in training, the other in validation: the validation score is flattered. */
  leak: boolean;
  /** The two carry different labels. */
  conflict: boolean;
}

/** Ranked label issues of the training images whose out-of-fold probabilities `cv` holds. */
export function labelIssuesOf(cv: CrossValidation, samples: Sample[], classes: string[]): LabelIssueReport[] {
  const y = Int32Array.from(samples, (s) => classes.indexOf(s.label));
  return findLabelIssues(cv.oof, y, classes.length).map((i) => ({
    file: samples[i.index].file,
    given: classes[i.given],
    suggested: classes[i.suggested],
    confidence: i.confidence,
    givenProbability: i.givenProbability,
  }));
}

/** Near-duplicate pairs among the training and validation images, from their features at one cut. */
export async function duplicatesOf(
  sets: { split: Split; samples: Sample[]; x: Float32Array }[],
  dim: number,
  threshold = DUPLICATE_THRESHOLD,
): Promise<DuplicateReport[]> {
  const rows = sets.flatMap((s) => s.samples.map((sample) => ({ sample, split: s.split })));
  // The sets are searched where they lie, without a joined copy.
  const x = sets.map((s) => s.x.subarray(0, s.samples.length * dim));
  const pairs = await findDuplicates(x, rows.length, dim, { threshold });
  return pairs.map((p) => {
    const a = rows[p.a];
    const b = rows[p.b];
    return {
      a: a.sample.file,
      b: b.sample.file,
      similarity: p.similarity,
      splits: [a.split, b.split],
      labels: [a.sample.label, b.sample.label],
      leak: a.split !== b.split,
      conflict: a.sample.label !== b.sample.label,
    };
  });
}
