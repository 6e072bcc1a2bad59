import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { seededPixels as pixels } from '../../test/helpers.ts';
import { loadLayersBase } from '../base/base.ts';
import { initTf } from '../tfjs/tf.ts';
import { onnxAvailable, onnxTrunkRunner } from './onnx.ts';
import { buildTrunkModel, tfjsTrunkRunner } from './trunk.ts';

before(() => initTf('wasm'));

test('onnxAvailable is true here and answers from its cache the second time', async () => {
  assert.equal(await onnxAvailable(), true);
  const again = onnxAvailable();
  assert.equal(again, onnxAvailable(), 'the same promise: the probe runs once per process');
  assert.equal(await again, true);
});

test('the ONNX runner matches the TF.js WASM runner on a two-cut MobileNetV2 trunk, across split batches', async () => {
  const base = await loadLayersBase('nsfw-mobilenet-v2');
  const model = buildTrunkModel(base, ['block_13_expand_relu', 'out_relu']);
  const onnx = await onnxTrunkRunner(model, { batchSize: 2 });
  const ref = tfjsTrunkRunner(model);
  try {
    assert.equal(onnx.engine, 'onnx');
    assert.equal(onnx.batchSize, 2);
    assert.deepEqual(onnx.featureSizes, ref.featureSizes);
    assert.deepEqual(onnx.featureSizes, [576, 1280]);
    const n = 3; // more than batchSize: run() splits the call in two and joins the results
    const px = pixels(n * 224 * 224 * 3, 42);
    const [got, want] = await Promise.all([onnx.run(px, n), ref.run(px, n)]);
    got.forEach((g, k) => {
      assert.equal(g.length, n * onnx.featureSizes[k]);
      let diff = 0;
      let scale = 0;
      for (let i = 0; i < g.length; i++) {
        diff = Math.max(diff, Math.abs(g[i] - want[k][i]));
        scale = Math.max(scale, Math.abs(want[k][i]));
      }
      assert.ok(scale > 0 && diff / scale <= 1e-4, `cut ${k}: relative error ${diff / scale}`);
    });
    await assert.rejects(onnx.run(px.subarray(1), n), /expected 3 × 224 × 224 × 3/);
  } finally {
    await onnx.dispose();
    ref.dispose();
  }
});
