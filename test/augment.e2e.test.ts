/**
 * Augmentation views end to end: the flipped view's cached activation is the trunk's output on the mirrored image,
 * training rows are the images followed by their views, validation images are never augmented, and the cut search
 * never fits a head on a view of an image it scores.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { loadLayersBase } from '../src/base/base.ts';
import { decodeImage } from '../src/dataset/decode.ts';
import { buildTrunkModel } from '../src/engines/trunk.ts';
import { initTf, tf } from '../src/tfjs/tf.ts';
import { sweep } from '../src/workflows/autocut.ts';
import { tfjsRunner, trainingSet } from '../src/workflows/extract.ts';
import { prepareData, train } from '../src/workflows/train.ts';
import { tmpDir, writeRampDataset, writeTinyBase } from './helpers.ts';

let basePath: string;
let data: string;

before(async () => {
  const dir = tmpDir();
  basePath = await writeTinyBase(path.join(dir, 'base'));
  data = await writeRampDataset(path.join(dir, 'data'), ['rising', 'falling'], 10);
});

test('the flip view is the trunk on the mirrored image; training rows are images then views; val is not augmented', async () => {
  await initTf('wasm');
  const base = await loadLayersBase(basePath);
  try {
    const cuts = ['block_1_add'];
    const cacheDir = path.join(tmpDir(), 'cache');
    const d = await prepareData({ data, valSplit: 0.3, base, cuts, runner: tfjsRunner, cacheDir });
    const n = d.train.samples.length;
    assert.ok(n > 0 && d.val && d.val.samples.length > 0);
    assert.equal(d.augment, 'flip');
    assert.equal(d.augmented.length, 1);
    assert.deepEqual(d.augmented[0].samples, d.train.samples);
    assert.equal(d.train.hits + d.train.misses, n + d.val.samples.length + n);

    // Independently: decode, mirror with plain index arithmetic, run the trunk.
    const [h, w] = base.preprocessing.size;
    const mirrored = new Float32Array(n * h * w * 3);
    for (const [r, s] of d.train.samples.entries()) {
      const rgb = await decodeImage(readFileSync(s.file), s.file, base.preprocessing);
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++)
          for (let c = 0; c < 3; c++)
            mirrored[r * h * w * 3 + (y * w + x) * 3 + c] = rgb[(y * w + (w - 1 - x)) * 3 + c];
    }
    const trunk = buildTrunkModel(base, cuts);
    const expected = tf.tidy(() =>
      (trunk.predict(tf.tensor4d(mirrored, [n, h, w, 3])) as tf.Tensor).dataSync().slice(),
    );
    const got = d.augmented[0].features[0];
    const dim = d.train.featureSizes[0];
    let maxDiff = 0;
    let maxRef = 0;
    let origDiff = 0;
    for (let i = 0; i < expected.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(got[i] - expected[i]));
      maxRef = Math.max(maxRef, Math.abs(expected[i]));
      origDiff = Math.max(origDiff, Math.abs(d.train.features[0][i] - expected[i]));
    }
    assert.ok(maxDiff <= 1e-4 * maxRef, `flip view differs from the trunk on mirrored pixels by ${maxDiff}`);
    assert.ok(
      origDiff > 1e-2 * maxRef,
      'the mirrored images give the same activations as the originals: the test images are symmetric',
    );

    const rows = trainingSet(d, 0);
    assert.equal(rows.n, 2 * n);
    assert.deepEqual(rows.x.subarray(0, n * dim), d.train.features[0]);
    assert.deepEqual(rows.x.subarray(n * dim), got);
    assert.deepEqual(rows.y.subarray(0, n), rows.y.subarray(n));

    // A second preparation reads every view back from the cache.
    const again = await prepareData({ data, valSplit: 0.3, base, cuts, runner: tfjsRunner, cacheDir });
    assert.deepEqual(
      { hits: again.train.hits, misses: again.train.misses },
      { hits: 2 * n + d.val.samples.length, misses: 0 },
    );
    assert.deepEqual(again.augmented[0].features[0], got);

    const none = await prepareData({ data, valSplit: 0.3, base, cuts, runner: tfjsRunner, cacheDir, augment: 'none' });
    assert.equal(none.augmented.length, 0);
    assert.equal(trainingSet(none, 0).n, n);
    assert.equal(none.train.hits, n + d.val.samples.length);
    trunk.dispose();
  } finally {
    base.model.dispose();
  }
});

test('train reports the augmentation, and --augment none trains on the images alone', async () => {
  await initTf('wasm');
  const cacheDir = path.join(tmpDir(), 'cache');
  const out = path.join(tmpDir(), 'model');
  const flip = await train({ data, base: basePath, cut: 'block_1_add', cacheDir, engine: 'wasm', epochs: 3, out });
  const none = await train({
    data,
    base: basePath,
    cut: 'block_1_add',
    cacheDir,
    engine: 'wasm',
    epochs: 3,
    augment: 'none',
  });
  assert.equal(flip.augment, 'flip');
  assert.equal(none.augment, 'none');
  assert.equal(flip.trainImages, none.trainImages);
  assert.equal(flip.cache.misses, 20 + flip.trainImages);
  assert.deepEqual(none.cache, { hits: 20, misses: 0, damaged: [] });
  assert.equal(JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8')).training.augment, 'flip');
  await assert.rejects(
    train({ data, base: basePath, cacheDir, augment: 'crop' as never }),
    /augment must be flip or none \(got 'crop'\)/,
  );
});

test('the cut search fits no head on a view of an image it scores', async () => {
  await initTf('wasm');
  // Random features with random labels: nothing generalises, so held-out 1-NN accuracy stays near chance, unless the
  // held-out rows' own copies (standing in for their views) leak into the rows the head is fitted on (then it is 1).
  let s = 5;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const n = 60;
  const dim = 8;
  const x = Float32Array.from({ length: n * dim }, next);
  const y = Int32Array.from({ length: n }, () => (next() < 0.5 ? 0 : 1));
  const set = { x, n, dim, y };
  const r = await sweep({
    cuts: [{ cut: 'a', depth: 0 }],
    train: [set],
    augmented: [[{ ...set, x: x.slice() }]],
    numClasses: 2,
    head: { head: 'knn', k: 1 },
    seed: 3,
  });
  assert.equal(r.method, '5-fold');
  assert.ok(r.rows[0].score < 0.85, `held-out score ${r.rows[0].score}: views of held-out rows were fitted on`);
});
