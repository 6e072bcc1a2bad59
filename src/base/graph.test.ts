import assert from 'node:assert/strict';
import { before, test } from 'node:test';
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
