/**
 * @file Likely label errors, found from out-of-fold probabilities in the manner of confident learning (Northcutt, Jiang
 * and Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", 2021). Each class gets a threshold: the
 * mean out-of-fold probability of that class over the images labelled with it (how sure the model typically is of a
 * correct member). An image is an issue when the model, never having seen it, predicts another class, and that class's
 * probability reaches the other class's own threshold: the model is as sure it belongs there as it usually is of the
 * images that do. Issues are ranked by the probability of the given label, lowest first. Nothing is moved or deleted.
 */
import { InternalError } from '../util/errors.ts';

export interface LabelIssue {
  /** Row index in the probabilities given. */
  index: number;
  /** Class index of the given label. */
  given: number;
  /** Class index the model suggests. */
  suggested: number;
  /** Out-of-fold probability of the suggested class. */
  confidence: number;
  /** Out-of-fold probability of the given label. */
  givenProbability: number;
}

/**
 * `proba`: out-of-fold probabilities, n × numClasses row-major; `y`: the given labels. Returns the issues, most
 * likely first.
 */
export function findLabelIssues(proba: Float32Array, y: Int32Array, numClasses: number): LabelIssue[] {
  const n = y.length;
  if (proba.length !== n * numClasses)
    throw new InternalError(`findLabelIssues: ${proba.length} probabilities for ${n} rows of ${numClasses} classes`);
  const sum = new Float64Array(numClasses);
  const count = new Float64Array(numClasses);
  for (let i = 0; i < n; i++) {
    sum[y[i]] += proba[i * numClasses + y[i]];
    count[y[i]]++;
  }
  // A class nobody carries has no typical confidence: nothing can be confidently moved into it.
  const threshold = Array.from(sum, (s, c) => (count[c] > 0 ? s / count[c] : Number.POSITIVE_INFINITY));
  const issues: LabelIssue[] = [];
  for (let i = 0; i < n; i++) {
    const row = proba.subarray(i * numClasses, (i + 1) * numClasses);
    let best = 0;
    for (let c = 1; c < numClasses; c++) if (row[c] > row[best]) best = c;
    if (best === y[i] || row[best] < threshold[best]) continue;
    issues.push({ index: i, given: y[i], suggested: best, confidence: row[best], givenProbability: row[y[i]] });
  }
  return issues.sort((a, b) => a.givenProbability - b.givenProbability || a.index - b.index);
}
