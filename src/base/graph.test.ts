import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { serialiseLayersModel } from '../export/model-files.ts';
import { tf, tfl } from '../tfjs/tf.ts';
import { type LayersBase, loadLayersBase } from './base.ts';
import { candidateCuts, cutPointIndices, defaultCut, requireCutPoint } from './graph.ts';
import { cutForRetrainLayers, inspectBase } from './inspect.ts';

let mnv2: LayersBase;
let inception: LayersBase;

before(async () => {
  mnv2 = await loadLayersBase('nsfw-mobilenet-v2');
  inception = await loadLayersBase('nsfw-inception-v3');
});

test('bundled MobileNetV2: block boundaries are cut points, layers inside residual blocks are not', () => {
  const names = candidateCuts(mnv2.model).map((c) => c.name);
  for (const n of ['block_2_add', 'block_5_add', 'block_13_expand_relu', 'block_15_add', 'out_relu'])
    assert.ok(names.includes(n), n);
  const cuts = new Set(cutPointIndices(mnv2.model).map((i) => mnv2.model.layers[i].name));
  // block_14 is residual: its expand/depthwise/project layers run beside the skip branch from block_13_project_BN
  for (const n of ['block_14_expand_relu', 'block_14_depthwise_relu', 'block_14_project_BN', 'block_15_expand'])
    assert.ok(!cuts.has(n), n);
  assert.throws(() => requireCutPoint(mnv2.model, 'block_14_expand_relu'), /not a cut point/);
});

test('bundled InceptionV3: the mixed blocks are the cut points, branches inside them are not', () => {
  const names = candidateCuts(inception.model).map((c) => c.name);
  for (let i = 0; i <= 10; i++) assert.ok(names.includes(`mixed${i}`), `mixed${i}`);
  const cuts = new Set(cutPointIndices(inception.model).map((i) => inception.model.layers[i].name));
  // activation_20 .. lie inside inception blocks (parallel branches)
  const inside = inception.model.layers.filter(
    (l) => /^(conv2d|activation|batch_normalization)_\d+$/.test(l.name) && l.outputShape[1] === 17,
  );
  assert.ok(inside.length > 10);
  for (const l of inside) assert.ok(!cuts.has(l.name), l.name);
});

test("the default cut is the layer below the base's own classifier", () => {
  assert.equal(defaultCut(mnv2.model), 'out_relu');
  assert.equal(defaultCut(inception.model), 'mixed10');
  assert.equal(mnv2.defaultCut, 'out_relu');
});

test('the default cut walks down a Keras MobileNet v1 top (pool, reshape, dropout, 1x1 conv, softmax) from model.json', async () => {
  // The tfjs-models MobileNet v1 ends in global_average_pooling2d_1 > reshape_1 > dropout > conv_preds (a 1x1
  // convolution on a 1x1 map) > act_softmax > reshape_2; rebuilt from JSON as a zoo download is.
  const input = tfl.input({ shape: [8, 8, 3] });
  const conv = tfl.layers.conv2d({ filters: 6, kernelSize: 3, name: 'conv_pw_13' }).apply(input);
  const relu = tfl.layers.activation({ activation: 'relu', name: 'conv_pw_13_relu' }).apply(conv);
  const pool = tfl.layers.globalAveragePooling2d({ name: 'global_average_pooling2d_1' }).apply(relu);
  const r1 = tfl.layers.reshape({ targetShape: [1, 1, 6], name: 'reshape_1' }).apply(pool);
  const drop = tfl.layers.dropout({ rate: 0.001, name: 'dropout' }).apply(r1);
  const preds = tfl.layers.conv2d({ filters: 4, kernelSize: 1, name: 'conv_preds' }).apply(drop);
  const soft = tfl.layers.activation({ activation: 'softmax', name: 'act_softmax' }).apply(preds);
  const out = tfl.layers.reshape({ targetShape: [4], name: 'reshape_2' }).apply(soft) as tfl.SymbolicTensor;
  const built = tfl.model({ inputs: input, outputs: out });
  const { modelJson, weights } = await serialiseLayersModel(built);
  const loaded = await tfl.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: (modelJson as { modelTopology: object }).modelTopology,
      weightSpecs: (modelJson as { weightsManifest: { weights: tf.io.WeightsManifestEntry[] }[] }).weightsManifest[0]
        .weights,
      weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength) as ArrayBuffer,
    }),
  );
  try {
    assert.equal(defaultCut(built), 'conv_pw_13_relu');
    assert.equal(defaultCut(loaded), 'conv_pw_13_relu');
  } finally {
    built.dispose();
    loaded.dispose();
  }
});

test('inspect numbers every candidate with its --retrain-layers depth', () => {
  const info = inspectBase(mnv2);
  const top = info.candidates[info.candidates.length - 1];
  assert.equal(top.name, 'out_relu');
  assert.equal(top.blocksBelowHead, 0);
  assert.equal(top.paramsAbove, 0);
  assert.equal(cutForRetrainLayers(mnv2, 1), info.candidates[info.candidates.length - 2].name);
  assert.equal(cutForRetrainLayers(mnv2, 1), 'block_16_project_BN');
  const b13 = info.candidates.find((c) => c.name === 'block_13_expand_relu')!;
  assert.equal(cutForRetrainLayers(mnv2, b13.blocksBelowHead), 'block_13_expand_relu');
  assert.ok(b13.paramsAbove > 0);
  assert.equal(info.params, mnv2.model.countParams());
  assert.throws(() => cutForRetrainLayers(mnv2, 999), { name: 'UsageError', message: /^retrainLayers must be/ });
});
