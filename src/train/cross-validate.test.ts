import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initTf, tf } from '../tfjs/tf.ts';
import { crossValidate, foldCount } from './cross-validate.ts';
import type { FeatureSet } from './features.ts';
import { findLabelIssues } from './label-issues.ts';
import { LAMBDA_GRID } from './logistic.ts';
import { accuracy } from './metrics.ts';
import { gaussian, mulberry32 } from './random.ts';
import { trainHead } from './trainer.ts';

before(async () => {
  await initTf();
});

function blobs(n: number, dim: number, classes: number, seed: number): FeatureSet {
  const rng = mulberry32(seed);
  const centres = Array.from({ length: classes }, () => Array.from({ length: dim }, () => 2 * gaussian(rng)));
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % classes;
    for (let d = 0; d < dim; d++) x[i * dim + d] = centres[y[i]][d] + gaussian(rng);
  }
  return { x, y, n, dim };
}

test('out-of-fold probabilities cover every row; the score is the mean fold accuracy; no tensors leak', async () => {
  const set = blobs(90, 12, 3, 1);
  const before = tf.memory().numTensors;
  const cv = await crossValidate(set, [], 3, { head: 'softmax', epochs: 30 });
  assert.equal(tf.memory().numTensors, before);
  assert.equal(cv.folds, 5);
  assert.equal(cv.oof.length, 90 * 3);
  for (let i = 0; i < 90; i++) {
    const s = cv.oof[i * 3] + cv.oof[i * 3 + 1] + cv.oof[i * 3 + 2];
    assert.ok(Math.abs(s - 1) < 1e-4, `row ${i} sums to ${s}`);
  }
  assert.ok(cv.score > 0.9, `score ${cv.score}`);
  assert.ok(Math.abs(cv.score - cv.scores.reduce((a, b) => a + b) / 5) < 1e-12);
  assert.ok(cv.epochs >= 1 && cv.epochs <= 30);
  // The chosen epoch is the pooled curve's minimum, and the curve ran `patience` epochs past it unless the budget ended.
  const best = cv.curve.reduce((a, p) => (p.loss < a.loss ? p : a));
  assert.equal(cv.epochs, best.epoch);
  assert.equal(cv.curve.length, Math.min(30, cv.epochs + 10));
  // The out-of-fold probabilities are those of the chosen epoch: their accuracy is the curve's there.
  assert.ok(Math.abs(accuracy(cv.oof, set.y, 3) - best.accuracy) < 1e-6);
  // A class with two images: two folds.
  const two = { ...set, n: 8, x: set.x.slice(0, 8 * 12), y: Int32Array.from([0, 1, 2, 0, 1, 2, 1, 2]) };
  assert.equal(foldCount(two.y), 2);
  assert.equal((await crossValidate(two, [], 3, { head: 'softmax', epochs: 2 })).folds, 2);
  assert.equal(foldCount(Int32Array.from([0, 1, 1, 0, 2])), 0, 'a class of one image: no folds');
});

test('labels flipped on purpose come out on top of the label issues', async () => {
  const set = blobs(150, 16, 3, 2);
  const flipped = [3, 17, 40, 58, 77, 91, 110, 128, 133, 149];
  for (const i of flipped) set.y[i] = (set.y[i] + 1) % 3;
  const cv = await crossValidate(set, [], 3, { head: 'softmax', epochs: 40, seed: 1 });
  const issues = findLabelIssues(cv.oof, set.y, 3);
  const top = new Set(issues.slice(0, 15).map((i) => i.index));
  const hits = flipped.filter((i) => top.has(i)).length;
  assert.ok(hits >= 9, `${hits} of 10 flipped labels in the top 15 (${[...top].join(',')})`);
  for (const i of issues.filter((i) => flipped.includes(i.index))) assert.notEqual(i.suggested, set.y[i.index]);
});

test('the logistic head: its L2 strength chosen on these folds, one score per fold, views held out with their image', async () => {
  const set = blobs(90, 12, 3, 4);
  for (const i of [5, 20, 33, 61, 80]) set.y[i] = (set.y[i] + 1) % 3;
  // Exact copies stand in for the mirrored views: held out with its image, a copy gets the image's probabilities.
  const copy: FeatureSet = { ...set, x: set.x.slice() };
  const before = tf.memory().numTensors;
  const cv = await crossValidate(set, [copy], 3, { head: 'logistic' });
  assert.equal(tf.memory().numTensors, before);
  assert.ok(cv.lambda !== undefined && LAMBDA_GRID.includes(cv.lambda), `lambda ${cv.lambda}`);
  const row = cv.lambdaSearch?.rows.find((r) => r.lambda === cv.lambda);
  assert.ok(row, 'the chosen strength is a row of the search');
  assert.equal(cv.folds, 5);
  assert.equal(cv.scores.length, 5);
  assert.ok(Math.abs(cv.score - cv.scores.reduce((a, b) => a + b) / 5) < 1e-12);
  // The out-of-fold probabilities are those of the chosen strength: their accuracy is the search's there.
  assert.ok(Math.abs(accuracy(cv.oof, set.y, 3) - (row?.accuracy ?? Number.NaN)) < 1e-9);
  assert.deepEqual(cv.viewsOof[0], cv.oof);
  assert.equal(cv.epochs, 1);
  // The folds are cross-validation's own: the same seed gives the same search, another seed other folds.
  const again = await crossValidate(set, [copy], 3, { head: 'logistic' });
  assert.deepEqual(again.oof, cv.oof);
  const other = await crossValidate(set, [copy], 3, { head: 'logistic' }, { seed: 7 });
  assert.notDeepEqual(other.oof, cv.oof);
});

test('views are predicted out of fold by the head that did not see their image', async () => {
  // Noise labels and exact copies as views: a 1-nearest-neighbour head that had seen an image (or its copy) would
  // predict it perfectly; out of fold it is at chance, and an image and its copy get the same prediction.
  const rng = mulberry32(3);
  const n = 80;
  const x = Float32Array.from({ length: n * 12 }, () => gaussian(rng));
  const set: FeatureSet = { x, n, dim: 12, y: Int32Array.from({ length: n }, () => (rng() < 0.5 ? 0 : 1)) };
  const cv = await crossValidate(set, [{ ...set, x: x.slice() }], 2, { head: 'knn', k: 1 });
  assert.ok(
    accuracy(cv.viewsOof[0], set.y, 2) < 0.7,
    `out-of-fold accuracy on noise ${accuracy(cv.viewsOof[0], set.y, 2)}`,
  );
  assert.deepEqual(cv.viewsOof[0], cv.oof);
  const softmax = await crossValidate(set, [{ ...set, x: x.slice() }], 2, { head: 'softmax', epochs: 3 });
  assert.equal(softmax.viewsOof.length, 1);
  assert.ok(accuracy(softmax.viewsOof[0], set.y, 2) < 0.7);
});

test('earlyStopping false runs every epoch and keeps the last weights', async () => {
  const set = blobs(60, 8, 2, 3);
  const h = await trainHead(set, set, 2, { head: 'softmax', epochs: 7, patience: 1, earlyStopping: false });
  try {
    assert.equal(h.history.length, 7);
    assert.equal(h.bestEpoch, 7);
    assert.ok(
      h.history.every((l) => l.valLoss !== undefined),
      'validation is still measured',
    );
  } finally {
    h.dispose();
  }
});
