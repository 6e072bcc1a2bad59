/**
 * The central crop (`--crop`): training, the saved preprocessing, prediction and the cache all use the same cropped
 * pixels, and a bad value is a one-line error.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { decodeImage } from '../src/dataset/decode.ts';
import { exportOnnx, Predictor, train } from '../src/index.ts';
import { decodeModel } from '../src/onnx/proto.ts';
import { initTf } from '../src/tfjs/tf.ts';
import { runCli, tmpDir, writeRampDataset, writeTinyBase } from './helpers.ts';
import { writeTinyOnnx } from './other-bases-fixtures.ts';

let base: string;
let data: string;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeRampDataset(path.join(dir, 'data'), ['rising', 'falling'], 8);
});

test('a cropped model saves its crop, predicts on cropped pixels and caches apart from the uncropped one', async () => {
  await initTf('wasm');
  const cacheDir = path.join(tmpDir(), 'cache');
  const out = path.join(tmpDir(), 'model');
  const plain = await train({ data, base, cut: 'block_1_add', cacheDir, engine: 'wasm', epochs: 3 });
  const cropped = await train({ data, base, cut: 'block_1_add', cacheDir, engine: 'wasm', epochs: 3, crop: 0.5, out });
  assert.equal(plain.cache.hits, 0);
  // Different pixels, different activations: nothing of the uncropped run is reused.
  assert.equal(cropped.cache.hits, 0);
  assert.equal(cropped.cache.misses, plain.cache.misses);
  const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.equal(meta.preprocessing.crop, 0.5);

  const predictor = await Predictor.load(out);
  const file = path.join(data, 'rising', 'rising-0.png');
  const bytes = readFileSync(file);
  const { size } = meta.preprocessing;
  const viaFile = (await predictor.predictFiles([file])).probabilities[0];
  const px = async (crop?: number) =>
    Float32Array.from(await decodeImage(bytes, file, { size, resize: 'cover', crop }));
  const viaCrop = await predictor.predictPixels(await px(0.5), 1);
  const viaWhole = await predictor.predictPixels(await px(), 1);
  for (const [c, p] of viaFile.entries()) {
    assert.ok(Math.abs(p - viaCrop[c]) < 1e-6, `class ${c}: ${p} vs ${viaCrop[c]} on cropped pixels`);
  }
  assert.ok(
    Math.abs(viaFile[0] - viaWhole[0]) > 1e-6,
    'the predictor gives the same answer on uncropped pixels: crop not applied?',
  );
  predictor.dispose();

  // --resize fill stretches instead of cutting the centre: saved, and cached apart from the 'cover' activations.
  const fill = await train({
    data,
    base,
    cut: 'block_1_add',
    cacheDir,
    engine: 'wasm',
    epochs: 3,
    resize: 'fill',
    out: `${out}-fill`,
  });
  assert.equal(fill.cache.hits, 0);
  assert.equal(JSON.parse(readFileSync(path.join(`${out}-fill`, 'graft.json'), 'utf8')).preprocessing.resize, 'fill');
});

test('--crop outside (0, 1] and an unknown --resize are one-line errors', () => {
  const bad = runCli(['train', data, '--base', base, '--resize', 'squash']);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr.trim(), /--resize must be cover or fill \(got 'squash'\)$/);
  const r = runCli(['train', data, '--base', base, '--crop', '1.5']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.trim(), /^.*--crop must be a fraction in \(0, 1\] \(got 1\.5\)$/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
});

test('the ONNX export of a model on an ONNX base records its crop (issue 15)', async () => {
  const dir = tmpDir();
  const { onnx } = await writeTinyOnnx(dir);
  const out = path.join(dir, 'model');
  await train({ data, base: onnx, crop: 0.875, epochs: 3, out, cacheDir: path.join(dir, 'cache') });
  const file = path.join(dir, 'model.onnx');
  await exportOnnx(out, file);
  const meta = Object.fromEntries(decodeModel(readFileSync(file)).metadata_props.map((p) => [p.key, p.value]));
  assert.equal(meta['graft.crop'], '0.875');
  assert.equal(meta['graft.resize'], 'cover');
});
