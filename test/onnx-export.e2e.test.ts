/**
 * `graft export --format onnx`: the exported file runs in stock onnxruntime-node (no graft code on that side) and
 * gives the same probabilities as graft's own predictor; the trunk engines share one activation cache.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { resizeImage } from '../src/dataset/resize.ts';
import { Predictor, train } from '../src/index.ts';
import { runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

let base: string;
let data: string;
let model: string;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green', 'blue'], 10);
  model = path.join(dir, 'model');
  await train({ data, base, out: model, engine: 'wasm', cacheDir: path.join(dir, 'cache'), head: 'mlp', epochs: 15 });
});

test("exported ONNX gives graft predict's top-1 and probabilities within 1e-4", async () => {
  const out = path.join(tmpDir(), 'm.onnx');
  const r = runCli(['export', model, '--format', 'onnx', '--out', out, '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.json?.input, 'pixels');
  const session = await ort.InferenceSession.create(out);
  const predictor = await Predictor.load(model, { engine: 'wasm' });
  const [h, w] = predictor.metadata.preprocessing.size;
  const files = readdirSync(path.join(data, 'green'))
    .map((f) => path.join(data, 'green', f))
    .slice(0, 4);
  // The exported network is single-view: compare without the test-time flip the folder may record.
  const ours = await predictor.predictFiles(files, { topK: 3, tta: 'none' });
  for (const [i, file] of files.entries()) {
    // The user's side, as the README shows it: decode with sharp, resize with graft's resampler (graft/predict) to
    // the recorded preprocessing, feed raw 0..255 pixels.
    const { data: full, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const rgb = resizeImage(
      { data: full, width: info.width, height: info.height, channels: 3 },
      predictor.metadata.preprocessing,
    );
    const feeds = { pixels: new ort.Tensor('float32', Float32Array.from(rgb), [1, h, w, 3]) };
    const res = await session.run(feeds);
    const probs = res[session.outputNames[0]].data as Float32Array;
    const mine = ours.probabilities[i];
    for (let c = 0; c < 3; c++)
      assert.ok(Math.abs(probs[c] - mine[c]) < 1e-4, `${file} class ${c}: ${probs[c]} vs ${mine[c]}`);
    const top = [...probs.keys()].sort((a, b) => probs[b] - probs[a])[0];
    assert.equal(predictor.labels[top], ours.predictions[i].top[0].label);
  }
  predictor.dispose();
});

test('graft predict on the onnx engine agrees with the wasm engine', async () => {
  const files = ['red', 'green', 'blue'].map((c) => path.join(data, c, `${c}-1.png`));
  const a = await Predictor.load(model, { engine: 'onnx' });
  const b = await Predictor.load(model, { engine: 'wasm' });
  assert.equal(a.engine, 'onnx');
  assert.equal(b.engine, 'wasm');
  const pa = await a.predictFiles(files);
  const pb = await b.predictFiles(files);
  pa.probabilities.forEach((row, i) => {
    row.forEach((v, c) => {
      assert.ok(Math.abs(v - pb.probabilities[i][c]) < 1e-4);
    });
  });
  a.dispose();
  b.dispose();
});

test('activations from either engine share the cache', async () => {
  const cacheDir = path.join(tmpDir(), 'cache');
  const first = await train({ data, base, cacheDir, engine: 'onnx', epochs: 3 });
  assert.equal(first.engine, 'onnx');
  // every image, plus the flipped view of every training image
  const activations = 30 + first.trainImages;
  assert.equal(first.cache.misses, activations);
  const second = await train({ data, base, cacheDir, engine: 'wasm', epochs: 3 });
  assert.deepEqual(second.cache, { hits: activations, misses: 0, damaged: [] });
});

test('a k-NN model cannot be exported to ONNX: one-line error, no file', () => {
  const dir = tmpDir();
  const knn = path.join(dir, 'knn');
  const t = runCli(['train', data, '--base', base, '--head', 'knn', '--engine', 'wasm', '--out', knn], {
    GRAFT_CACHE_DIR: path.join(dir, 'c'),
  });
  assert.equal(t.status, 0, t.stderr);
  const r = runCli(['export', knn, '--format', 'onnx', '--out', path.join(dir, 'k.onnx')]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /knn head/);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith('.onnx') || f.endsWith('.tmp')),
    [],
  );
});
