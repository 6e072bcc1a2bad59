import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { tmpDir, writeNchwReluOnnx, writeTinyOnnx } from '../../test/other-bases-fixtures.ts';
import { initTf } from '../engines/tf.ts';
import { buildTrunkModel, tfjsTrunkRunner } from '../engines/trunk.ts';
import { decodeModel } from '../export/onnx/proto.ts';
import { disposeBase, loadBase } from './base.ts';
import { inspectBase } from './inspect.ts';
import { wireFields, withOutputs } from './onnx-base.ts';

before(() => initTf('wasm'));

function pixels(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32) * 255;
  });
}

test('withOutputs adds graph outputs by appending a graph field, leaving the original bytes untouched', () => {
  const file = writeNchwReluOnnx(path.join(tmpDir(), 'relu.onnx'));
  const bytes = new Uint8Array(readFileSync(file));
  const more = withOutputs(bytes, ['x']);
  assert.equal(Buffer.compare(more.subarray(0, bytes.length), bytes), 0);
  assert.deepEqual(
    decodeModel(more).graph.output.map((o) => o.name),
    ['y', 'x'],
    'protobuf merges the two graph fields',
  );
  assert.deepEqual(
    wireFields(bytes).map((f) => f.field),
    wireFields(more)
      .map((f) => f.field)
      .slice(0, -1),
  );
});

test('an ONNX base converted from a Layers base: same cut points, and the same activations as the TF.js trunk', async () => {
  const { onnx, layers } = await writeTinyOnnx(tmpDir());
  const ob = await loadBase(onnx, { inputRange: [-1, 1] });
  const lb = await loadBase(layers, { inputRange: [-1, 1] });
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
    assert.throws(() => ob.foreign!.requireCut('block_1_relu'), /not a cut point/);
    assert.throws(() => ob.foreign!.requireCut('nope'), /no tensor named 'nope'/);
    assert.throws(
      () => ob.model.layers,
      /an ONNX model: feature transfer only/,
      'Layers-only code gets a one-line error',
    );

    const cuts = ['stem_relu', 'top_relu'];
    const runner = await ob.foreign!.runner(cuts);
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
    await assert.rejects(() => ob.foreign!.runner(cuts, 'wasm'), /ONNX Runtime only/);
  } finally {
    disposeBase(ob);
    disposeBase(lb);
  }
});

test('NCHW input, dynamic size, mean/std from flags or metadata: pooled Relu(x) is the normalised colour', async () => {
  const dir = tmpDir();
  const dynamic = writeNchwReluOnnx(path.join(dir, 'dyn.onnx'), { dynamic: true });
  await assert.rejects(() => loadBase(dynamic), /input size is dynamic; give --input-size/);
  const b = await loadBase(dynamic, { inputSize: [4, 6], mean: [0.5, 0.25, 0], std: [0.25, 0.5, 2] });
  assert.equal(b.preprocessing.layout, 'nchw');
  assert.deepEqual(b.preprocessing.size, [4, 6]);
  const runner = await b.foreign!.runner([b.defaultCut]);
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
