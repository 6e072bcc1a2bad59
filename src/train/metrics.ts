/** Classification metrics on plain arrays, so reports and the CLI can use them without TF.js. */
import { InternalError } from '../util/errors.ts';

/** Index of the largest value in each row; ties go to the lower class index. */
export function argmaxRows(proba: Float32Array, n: number, numClasses: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bestV = proba[i * numClasses];
    for (let c = 1; c < numClasses; c++) {
      const v = proba[i * numClasses + c];
      if (v > bestV) {
        bestV = v;
        best = c;
      }
    }
    out[i] = best;
  }
  return out;
}

export function accuracy(proba: Float32Array, y: Int32Array, numClasses: number): number {
  const n = y.length;
  if (n === 0) return Number.NaN;
  const pred = argmaxRows(proba, n, numClasses);
  let ok = 0;
  for (let i = 0; i < n; i++) if (pred[i] === y[i]) ok++;
  return ok / n;
}

/** Mean negative log-likelihood of the true class; probabilities are clipped so one confident mistake stays finite. */
export function logLoss(proba: Float32Array, y: Int32Array, numClasses: number): number {
  const n = y.length;
  if (n === 0) return Number.NaN;
  const eps = 1e-15;
  let s = 0;
  for (let i = 0; i < n; i++) s -= Math.log(Math.min(1 - eps, Math.max(eps, proba[i * numClasses + y[i]])));
  return s / n;
}

/** counts[true][pred]. */
export function confusionMatrix(pred: Int32Array, y: Int32Array, numClasses: number): number[][] {
  if (pred.length !== y.length)
    throw new InternalError(`confusionMatrix: ${pred.length} predictions for ${y.length} labels`);
  const m = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  for (let i = 0; i < y.length; i++) m[y[i]][pred[i]]++;
  return m;
}

/** Precision, recall and F1 per class; a class never predicted (or never present) scores 0 rather than NaN. */
export function perClassMetrics(
  confusion: number[][],
  classes: string[],
): { label: string; precision: number; recall: number; f1: number; support: number }[] {
  const k = confusion.length;
  return Array.from({ length: k }, (_, c) => {
    const tp = confusion[c][c];
    let predicted = 0;
    let support = 0;
    for (let j = 0; j < k; j++) {
      predicted += confusion[j][c];
      support += confusion[c][j];
    }
    const precision = predicted > 0 ? tp / predicted : 0;
    const recall = support > 0 ? tp / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    return { label: classes[c] ?? String(c), precision, recall, f1, support };
  });
}

/**
 * Wilson score interval for a proportion of `successes` out of `n` (95% by default). Unlike p ± 1.96·SE it stays inside
 * [0, 1] and is not zero-width at 0% or 100%, which matters for the small validation sets graft is meant for.
 */
export function wilsonInterval(successes: number, n: number, z = 1.959964): { low: number; high: number } {
  if (!(n > 0)) return { low: 0, high: 1 };
  const p = successes / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  // At 0 or n the bound is exactly 0 or 1; the formula reaches it only up to rounding.
  return { low: successes <= 0 ? 0 : centre - half, high: successes >= n ? 1 : centre + half };
}
