/**
 * A base found in the wild: the ONNX model zoo's int8 MobileNetV2 (QOperator format: every activation between layers
 * is a uint8 tensor, written by QLinear ops with their own scale and zero point). graft reads those activations by
 * undoing the quantisation, so the file has cut points below its logits, trains, predicts and exports.
 * Reads ../shared/models/onnx/mobilenetv2-12-int8.onnx; skipped when it is absent.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { loadBase } from '../src/base/base.ts';
import { poolRows } from '../src/base/foreign.ts';
import { normalisePixels } from '../src/base/preprocessing.ts';
import { onnxBaseRunner } from '../src/engines/onnx-base.ts';
import { Predictor } from '../src/index.ts';
import { withOutputs } from '../src/onnx/wire.ts';
import { runCli, SHARED, seededPixels, tmpDir, writeColourDataset } from './helpers.ts';

const FILE = path.join(SHARED, 'models', 'onnx', 'mobilenetv2-12-int8.onnx');
const skip = existsSync(FILE) ? false : `${FILE} is absent`;
const NORM = {
  mean: [0.485, 0.456, 0.406] as [number, number, number],
  std: [0.229, 0.224, 0.225] as [number, number, number],
};

let dir: string;
before(() => {
  dir = tmpDir();
});

test('cut points below the logits: every block output, read as floats', { skip }, async () => {
  const base = await loadBase(FILE, NORM);
  assert.equal(base.format, 'onnx');
  const cuts = base.trunk.candidates.map((c) => c.name);
  assert.ok(cuts.length > 30, `${cuts.length} candidates`);
  // the last feature map (7x7x1280) and its pooled, flattened form, below the classifier
  for (const c of ['627_quantized', '472_quantized', '594_quantized'])
    assert.ok(cuts.includes(c), `${c} in ${cuts.join(', ')}`);
  assert.deepEqual(base.trunk.featureSizes(['627_quantized', '472_quantized']), [1280, 1280]);
  assert.ok(cuts.indexOf('472_quantized') < cuts.indexOf('output'));
});

test('a quantised activation is read exactly as the graph’s own DequantizeLinear computes it', { skip }, async () => {
  const base = await loadBase(FILE, NORM);
  if (base.format !== 'onnx') throw new Error('expected an ONNX base');
  const px = seededPixels(2 * 224 * 224 * 3, 17);
  const runner = await onnxBaseRunner(base.onnx, ['627_quantized', '472_quantized']);
  const [ours, pooled] = await runner.run(px, 2);
  await runner.dispose();
  // The file dequantises 627_quantized into the float tensor '627' (for a Shape op): read that directly.
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(withOutputs(readFileSync(FILE), ['627']));
  try {
    const x = normalisePixels(px, 2, base.preprocessing, 'nchw');
    const res = await session.run({ input: new ort.Tensor('float32', x, [2, 3, 224, 224]) }, ['627']);
    const want = poolRows(res['627'].data as Float32Array, [...res['627'].dims], 'nchw');
    assert.equal(ours.length, want.length);
    let worst = 0;
    ours.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - want[i]));
    });
    assert.ok(worst < 1e-5, `largest difference ${worst}`);
    // The pooled tensor is requantised by the model: within one quantisation step of our pooling.
    const step = base.onnx.quantized!['472_quantized'].scale;
    pooled.forEach((v, i) => {
      assert.ok(Math.abs(v - want[i]) <= step * 0.51 + 1e-6, `${i}: ${v} vs ${want[i]} (step ${step})`);
    });
  } finally {
    await session.release();
  }
});

test('trains at a quantised cut; the model folder predicts and exports to ONE ONNX graph that agrees', {
  skip,
}, async () => {
  const data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green'], 6);
  const out = path.join(dir, 'model');
  const env = { GRAFT_CACHE_DIR: path.join(dir, 'cache') };
  const args = ['--mean', NORM.mean.join(','), '--std', NORM.std.join(',')];
  const r = runCli(
    ['train', data, '--base', FILE, ...args, '--cut', '472_quantized', '--epochs', '5', '--out', out, '--json'],
    env,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.json!.cut, '472_quantized');
  const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.equal(meta.foreign.cutQuant.scaleName, '464_scale');

  const file = path.join(dir, 'exported.onnx');
  const x = runCli(['export', out, '--out', file, '--json'], env);
  assert.equal(x.status, 0, x.stderr);
  const predictor = await Predictor.load(out);
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(readFileSync(file));
  try {
    const px = seededPixels(2 * 224 * 224 * 3, 5);
    const want = await predictor.predictPixels(px, 2);
    const got = (await session.run({ pixels: new ort.Tensor('float32', px, [2, 224, 224, 3]) })).probabilities
      .data as Float32Array;
    assert.equal(got.length, 4);
    got.forEach((v, k) => {
      assert.ok(Math.abs(v - want[k]) < 1e-4, `${k}: ${v} vs ${want[k]}`);
    });
  } finally {
    await session.release();
    predictor.dispose();
  }
});
