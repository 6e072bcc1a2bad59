import assert from 'node:assert/strict';
import path from 'node:path';
import { before, test } from 'node:test';
import { tmpDir, writeNchwReluOnnx, writeTinyOnnx } from '../../test/other-bases-fixtures.ts';
import { runnerFor, tfjsRunner } from '../engines/engine-choice.ts';
import { buildTrunkModel, tfjsTrunkRunner } from '../engines/trunk.ts';
import { initTf } from '../tfjs/tf.ts';
import { disposeBase, loadBase, loadLayersBase } from './base.ts';
import { inspectBase } from './inspect.ts';

before(() => initTf('wasm'));

function pixels(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 255;
  });
}

test('an ONNX base converted from a Layers base: same cut points, and the same activations as the TF.js trunk', async () => {
  const { onnx, layers } = await writeTinyOnnx(tmpDir());
  const ob = await loadBase(onnx, { inputRange: [-1, 1] });
  const lb = await loadLayersBase(layers, { inputRange: [-1, 1] });
  try {
    assert.equal(ob.format, 'onnx');
    assert.equal(ob.defaultCut, 'top_relu', 'the graph output is the default cut');
    assert.equal(ob.preprocessing.layout, 'nhwc', 'layout read from the input shape');
    const info = inspectBase(ob);
    assert.equal(info.format, 'onnx');
    assert.deepEqual(
      info.candidates.map((c) => [c.name, c.featureSize]),
      [
        ['stem_relu', 8],
        ['block_1_add', 8],
        ['top_relu', 16],
      ],
    );
    assert.throws(() => ob.trunk.requireCut('block_1_relu'), /not a cut point/);
    assert.throws(() => ob.trunk.requireCut('nope'), {
      name: 'UsageError',
      message: /cut 'nope': no tensor of that name/,
    });
    // Layers-only code cannot reach an ONNX base: the type has no Layers model (typecheck fails if it gains one).
    // @ts-expect-error an OnnxBase has no `model`
    assert.equal(ob.model, undefined);
    await assert.rejects(() => loadLayersBase(onnx), /an ONNX model, which serves feature transfer only/);

    const cuts = ['stem_relu', 'top_relu'];
    const runner = await (await runnerFor('auto', ob)).runner(ob, cuts);
    const ref = tfjsTrunkRunner(buildTrunkModel(lb, cuts));
    const n = 3;
    const px = pixels(n * 32 * 32 * 3, 5);
    const [got, want] = [await runner.run(px, n), await ref.run(px, n)];
    assert.deepEqual(runner.featureSizes, [8, 16]);
    got.forEach((g, k) => {
      assert.equal(g.length, want[k].length);
      g.forEach((v, i) => {
        assert.ok(Math.abs(v - want[k][i]) < 1e-4, `cut ${cuts[k]} [${i}]: ${v} vs ${want[k][i]}`);
      });
    });
    await runner.dispose();
    await assert.rejects(() => tfjsRunner(ob, cuts), /ONNX Runtime only/);
  } finally {
    disposeBase(ob);
    disposeBase(lb);
  }
});

test('NCHW input, dynamic size, mean/std from flags or metadata: pooled Relu(x) is the normalised colour', async () => {
  const dir = tmpDir();
  const dynamic = writeNchwReluOnnx(path.join(dir, 'dyn.onnx'), { dynamic: true });
  await assert.rejects(() => loadBase(dynamic), {
    name: 'UsageError',
    message: /input size is dynamic; give inputSize/,
  });
  const b = await loadBase(dynamic, { inputSize: [4, 6], mean: [0.5, 0.25, 0], std: [0.25, 0.5, 2] });
  assert.equal(b.preprocessing.layout, 'nchw');
  assert.deepEqual(b.preprocessing.size, [4, 6]);
  const runner = await (await runnerFor('auto', b)).runner(b, [b.defaultCut]);
  const px = new Float32Array(2 * 4 * 6 * 3);
  for (let i = 0; i < px.length; i += 3) px.set(i < px.length / 2 ? [255, 255, 255] : [51, 0, 255], i);
  const [f] = await runner.run(px, 2);
  const want = [(1 - 0.5) / 0.25, (1 - 0.25) / 0.5, 1 / 2, (0.2 - 0.5) / 0.25, (0 - 0.25) / 0.5, 1 / 2].map((v) =>
    Math.max(0, v),
  );
  f.forEach((v, i) => {
    assert.ok(Math.abs(v - want[i]) < 1e-5, `${i}: ${v} vs ${want[i]}`);
  });
  await runner.dispose();

  const meta = writeNchwReluOnnx(path.join(dir, 'meta.onnx'), {
    metadata: { 'graft.mean': '[0.485,0.456,0.406]', 'graft.std': '0.229,0.224,0.225' },
  });
  const m = await loadBase(meta);
  assert.deepEqual(m.preprocessing.mean, [0.485, 0.456, 0.406]);
  assert.deepEqual(m.preprocessing.std, [0.229, 0.224, 0.225]);
  const flagged = await loadBase(meta, { inputRange: [-1, 1] });
  assert.equal(flagged.preprocessing.mean, undefined, 'flags win over metadata');
  assert.equal(flagged.preprocessing.offset, -1);
  assert.notEqual(m.id, b.id, 'the fingerprint is the file bytes');
});
