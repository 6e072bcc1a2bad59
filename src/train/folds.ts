/**
 * Stratified k-fold assignment: every fold gets each class in (nearly) the same proportion, and the same seed always
 * gives the same folds, so cut-search scores can be reproduced and compared.
 */

import { InternalError } from '../util/errors.ts';
import { mulberry32, shuffleInPlace } from './random.ts';

/** Returns the fold (0..k-1) of each sample. */
export function stratifiedFolds(y: Int32Array, k: number, seed: number): Int32Array {
  if (!Number.isInteger(k) || k < 2) throw new InternalError(`k-fold needs k >= 2 (got ${k})`);
  const rng = mulberry32(seed);
  const folds = new Int32Array(y.length);
  const classes = [...new Set(y)].sort((a, b) => a - b);
  let offset = 0;
  for (const c of classes) {
    const members = Int32Array.from([...y.keys()].filter((i) => y[i] === c));
    shuffleInPlace(members, rng);
    // Continue the round-robin where the previous class stopped so small classes do not all pile into fold 0.
    members.forEach((i, r) => {
      folds[i] = (offset + r) % k;
    });
    offset = (offset + members.length) % k;
  }
  return folds;
}

/**
 * Stratified folds of the images among a set's rows, each augmentation view in its image's fold: `source[r]` is the row
 * of the image row r shows (r itself for an image), as FeatureSet.source. Images are stratified by `y` in row order.
 */
export function imageFolds(y: Int32Array, source: Int32Array, k: number, seed: number): Int32Array {
  const images = [...source.keys()].filter((r) => source[r] === r);
  const ofImage = stratifiedFolds(
    Int32Array.from(images, (r) => y[r]),
    k,
    seed,
  );
  const fold = new Int32Array(source.length);
  images.forEach((r, i) => {
    fold[r] = ofImage[i];
  });
  for (let r = 0; r < source.length; r++) fold[r] = fold[source[r]];
  return fold;
}

/** Rows of a row-major matrix selected by a mask. */
export function selectRows(x: Float32Array, dim: number, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => {
    out.set(x.subarray(r * dim, (r + 1) * dim), i * dim);
  });
  return out;
}

/** Stacks row sets of the same width, in order (original rows, then each augmentation view's). */
export function concatRows<T extends { x: Float32Array; n: number; y: Int32Array }>(
  sets: T[],
  dim: number,
): { x: Float32Array; n: number; y: Int32Array } {
  if (sets.length === 1) return sets[0];
  const n = sets.reduce((a, s) => a + s.n, 0);
  for (const s of sets) {
    if (s.x.length !== s.n * dim)
      throw new InternalError(`concatRows: a set of ${s.n} rows holds ${s.x.length} values, expected ${s.n * dim}`);
  }
  const y = new Int32Array(n);
  // Sets that already lie one after another in one buffer (extraction lays them out so) are joined without a copy:
  // with many images the rows are most of the memory a run uses.
  const first = sets[0].x;
  let end = first.byteOffset;
  const adjacent = sets.every((s) => {
    const ok = s.x.buffer === first.buffer && s.x.byteOffset === end;
    end += s.x.byteLength;
    return ok;
  });
  const x = adjacent ? new Float32Array(first.buffer, first.byteOffset, n * dim) : new Float32Array(n * dim);
  let r = 0;
  for (const s of sets) {
    if (!adjacent) x.set(s.x, r * dim);
    y.set(s.y, r);
    r += s.n;
  }
  return { x, n, y };
}
