import assert from 'node:assert/strict';
import path from 'node:path';
import { before, test } from 'node:test';
import { tmpDir, writeTinyGraphModel } from '../../test/other-bases-fixtures.ts';
import { runnerFor, tfjsRunner } from '../engines/engine-choice.ts';
import { initTf, tf } from '../tfjs/tf.ts';
import { disposeBase, loadBase, loadLayersBase } from './base.ts';
import { cutPositions } from './foreign.ts';
import { graphSequence } from './graph-model.ts';
import { inspectBase } from './inspect.ts';

before(() => initTf('wasm'));

test('graphSequence sorts topologically, drops weights, and cutPositions skips nodes inside the residual block', () => {
  const nodes = [
    { name: 'out', op: 'Relu', input: ['add'] },
    { name: 'add', op: 'AddV2', input: ['a', 'b:0'] },
    { name: 'b', op: 'Relu', input: ['conv'] },
    { name: 'conv', op: 'Conv2D', input: ['a', 'w', '^ctrl'] },
    { name: 'w', op: 'Const' },
    { name: 'w_read', op: 'Identity', input: ['w'] },
    { name: 'ctrl', op: 'NoOp' },
    { name: 'a', op: 'Relu', input: ['x'] },
    { name: 'x', op: 'Placeholder' },
  ];
  const { seq } = graphSequence(nodes, ['x']);
  assert.deepEqual(
    seq.map((s) => s.name),
    ['ctrl', 'a', 'conv', 'b', 'add', 'out'],
    'Const and what reads only constants are weights',
  );
  const cuts = cutPositions(seq, ['x'], ['out']).map((i) => seq[i].name);
  assert.deepEqual(cuts, ['a', 'add', 'out']);
});

test('a hand-written graph model loads as a base: candidates, default cut at the output, pooled features', async () => {
  const file = writeTinyGraphModel(path.join(tmpDir(), 'g'));
  const b = await loadBase(file, { inputRange: [-1, 1] });
  try {
    assert.equal(b.format, 'graph');
    assert.equal(b.defaultCut, 'features');
    assert.deepEqual(b.preprocessing.size, [32, 32]);
    const info = inspectBase(b);
    assert.deepEqual(
      info.candidates.map((c) => [c.name, c.featureSize]),
      [
        ['stem/relu', 8],
        ['block/add', 8],
        ['top/relu', 16],
        ['features', 16],
      ],
    );
    assert.throws(() => b.trunk.requireCut('block/relu'), /not a cut point/);
    // Layers-only code cannot reach a graph base: the type has no Layers model (typecheck fails if it gains one).
    // @ts-expect-error a GraphBase has no `model`
    assert.equal(b.model, undefined);
    await assert.rejects(() => loadLayersBase(file), /TF.js graph model \(format graph-model\), which serves feature/);
    const runner = await tfjsRunner(b, ['top/relu', 'features']);
    const px = Float32Array.from({ length: 2 * 32 * 32 * 3 }, (_, k) => (k * 37) % 256);
    const [pooled, features] = await runner.run(px, 2);
    // The graph's own Mean over H and W is exactly graft's pooling of top/relu.
    pooled.forEach((v, i) => {
      assert.ok(Math.abs(v - features[i]) < 1e-5, `${i}: ${v} vs ${features[i]}`);
    });
    await assert.rejects(async () => (await runnerFor('onnx', b)).runner(b, ['features']), /TF.js only/);
    const before = tf.memory().numTensors;
    await runner.run(px, 2);
    assert.equal(tf.memory().numTensors, before, 'a run leaks no tensors');
  } finally {
    disposeBase(b);
  }
});

test('a dynamic-size graph model needs inputSize', async () => {
  const file = writeTinyGraphModel(path.join(tmpDir(), 'dyn'), { dynamic: true });
  await assert.rejects(() => loadBase(file), { name: 'UsageError', message: /input size is dynamic; give inputSize/ });
  const b = await loadBase(file, { inputSize: [24, 24] });
  assert.deepEqual(b.preprocessing.size, [24, 24]);
  assert.deepEqual(b.trunk.featureSizes(['features']), [16]);
  disposeBase(b);
});
