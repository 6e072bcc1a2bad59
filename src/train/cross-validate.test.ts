import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initTf, tf } from '../tfjs/tf.ts';
import { crossValidate, foldCount } from './cross-validate.ts';
import type { FeatureSet } from './features.ts';
import { findLabelIssues } from './label-issues.ts';
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
  const cv = await crossValidate(set, [], 3, { epochs: 30 });
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
  assert.equal((await crossValidate(two, [], 3, { epochs: 2 })).folds, 2);
  assert.equal(foldCount(Int32Array.from([0, 1, 1, 0, 2])), 0, 'a class of one image: no folds');
});

test('labels flipped on purpose come out on top of the label issues', async () => {
  const set = blobs(150, 16, 3, 2);
  const flipped = [3, 17, 40, 58, 77, 91, 110, 128, 133, 149];
  for (const i of flipped) set.y[i] = (set.y[i] + 1) % 3;
  const cv = await crossValidate(set, [], 3, { epochs: 40, seed: 1 });
  const issues = findLabelIssues(cv.oof, set.y, 3);
  const top = new Set(issues.slice(0, 15).map((i) => i.index));
  const hits = flipped.filter((i) => top.has(i)).length;
  assert.ok(hits >= 9, `${hits} of 10 flipped labels in the top 15 (${[...top].join(',')})`);
  for (const i of issues.filter((i) => flipped.includes(i.index))) assert.notEqual(i.suggested, set.y[i.index]);
});

test('earlyStopping false runs every epoch and keeps the last weights', async () => {
  const set = blobs(60, 8, 2, 3);
  const h = await trainHead(set, set, 2, { epochs: 7, patience: 1, earlyStopping: false });
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
