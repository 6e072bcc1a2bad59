import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initTf } from '../tfjs/tf.ts';
import type { FeatureSet } from './features.ts';
import { accuracy } from './metrics.ts';
import { gaussian, mulberry32 } from './random.ts';
import { judgeTta, outOfFold, parseTta } from './tta.ts';

before(async () => {
  await initTf();
});

test('judgeTta: an image alone against its mean with its views, over images only', () => {
  // Two images (rows 0, 1) and their views (rows 2, 3); two classes, both labelled 0.
  const train: FeatureSet = {
    x: new Float32Array(4),
    n: 4,
    dim: 1,
    y: Int32Array.of(0, 0, 0, 0),
    source: Int32Array.of(0, 1, 0, 1),
  };
  // Image 1 is wrong alone (0.4) and right with its view (mean 0.6); image 0 right either way.
  const oof = Float32Array.of(0.9, 0.1, 0.4, 0.6, 0.7, 0.3, 0.8, 0.2);
  const t = judgeTta(oof, train, 2, 'test');
  assert.equal(t.images, 2);
  assert.equal(t.single.accuracy, 0.5);
  assert.equal(t.flip.accuracy, 1);
  assert.ok(Math.abs(t.single.logLoss - -(Math.log(0.9) + Math.log(0.4)) / 2) < 1e-6);
  assert.ok(Math.abs(t.flip.logLoss - -(Math.log(0.8) + Math.log(0.6)) / 2) < 1e-6);
  assert.ok(t.helps);
  // Views that only blur confident right answers: lower accuracy never counts as help, even with a lower log loss.
  const worse = judgeTta(Float32Array.of(0.9, 0.1, 0.6, 0.4, 0.7, 0.3, 0.2, 0.8), train, 2, 'test');
  assert.equal(worse.flip.accuracy, 0.5);
  assert.equal(worse.helps, false);
});

test('outOfFold: every row is predicted by a head that saw neither it nor its image', async () => {
  // Noise labels and exact copies as views: a 1-nearest-neighbour head that had seen an image (or its copy) would
  // predict it perfectly; out of fold it is at chance.
  const rng = mulberry32(3);
  const n = 80;
  const dim = 12;
  const x = new Float32Array(2 * n * dim);
  for (let i = 0; i < n * dim; i++) x[i] = x[n * dim + i] = gaussian(rng);
  const y = Int32Array.from({ length: 2 * n }, (_, r) => (r < n ? (rng() < 0.5 ? 0 : 1) : 0));
  for (let r = n; r < 2 * n; r++) y[r] = y[r - n];
  const train: FeatureSet = { x, n: 2 * n, dim, y, source: Int32Array.from({ length: 2 * n }, (_, r) => r % n) };
  const oof = await outOfFold(train, 2, { head: 'knn', k: 1 });
  const acc = accuracy(oof.subarray(0, 2 * n), train.y.subarray(0, n), 2);
  assert.ok(acc < 0.7, `out-of-fold accuracy on noise ${acc}`);
  // An image and its copy were held out together: same neighbours, same prediction.
  for (let r = 0; r < n; r++)
    assert.deepEqual(oof.subarray(2 * r, 2 * r + 2), oof.subarray(2 * (r + n), 2 * (r + n) + 2));
});

test('parseTta', () => {
  assert.equal(parseTta(undefined), 'none');
  assert.equal(parseTta(undefined, true), 'auto');
  assert.equal(parseTta('flip'), 'flip');
  assert.throws(() => parseTta('auto'), /tta must be flip or none \(got 'auto'\)/);
  assert.throws(() => parseTta('crop', true), /tta must be auto, flip or none/);
});
