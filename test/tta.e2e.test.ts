/**
 * Test-time flip end to end: training measures it on the training images and records it in graft.json when it helps
 * (or when asked to); the predictor applies what the model records unless told otherwise; the CLI takes --tta.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { decodeImage } from '../src/dataset/decode.ts';
import { evaluateModel, Predictor, train } from '../src/index.ts';
import { runCli, seededPixels, tmpDir, writeRampDataset, writeTinyBase } from './helpers.ts';

let base: string;
let data: string;
let cacheDir: string;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeRampDataset(path.join(dir, 'data'), ['left', 'right'], 12);
  cacheDir = path.join(dir, 'cache');
});

/** Mirrors NHWC images with plain index arithmetic (independent of graft's mirrorImages). */
function mirror(px: Float32Array, n: number, h: number, w: number): Float32Array {
  const out = new Float32Array(px.length);
  for (let i = 0; i < n; i++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let c = 0; c < 3; c++) out[((i * h + y) * w + x) * 3 + c] = px[((i * h + y) * w + (w - 1 - x)) * 3 + c];
  return out;
}

test('--tta flip is recorded in graft.json and the predictor averages each image with its mirror by default', async () => {
  const out = path.join(tmpDir(), 'model');
  const r = await train({ data, base, cacheDir, out, engine: 'wasm', valSplit: 0.25, tta: 'flip' });
  assert.equal(r.tta, 'flip');
  assert.equal(r.ttaCheck, undefined, 'asked for, not measured');
  assert.equal(JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8')).tta, 'flip');
  const predictor = await Predictor.load(out);
  try {
    assert.equal(predictor.tta, 'flip');
    const [h, w] = predictor.metadata.preprocessing.size;
    // Images of the data set plus noise: their mirrors look like the other class, so the probabilities move.
    const files = ['left/left-0.png', 'right/right-1.png', 'left/left-2.png'];
    const n = files.length;
    const px = seededPixels(n * h * w * 3, 5).map((v) => (v - 128) / 8);
    for (const [i, f] of files.entries()) {
      const rgb = await decodeImage(readFileSync(path.join(data, f)), f, predictor.metadata.preprocessing);
      for (let k = 0; k < rgb.length; k++) px[i * rgb.length + k] += rgb[k];
    }
    const single = await predictor.predictPixels(px, n, { tta: 'none' });
    const mirrored = await predictor.predictPixels(mirror(px, n, h, w), n, { tta: 'none' });
    const flip = await predictor.predictPixels(px, n);
    assert.deepEqual(await predictor.predictPixels(px, n, { tta: 'flip' }), flip);
    let moved = 0;
    for (let i = 0; i < flip.length; i++) {
      assert.ok(Math.abs(flip[i] - (single[i] + mirrored[i]) / 2) < 1e-6, `probability ${i}`);
      moved = Math.max(moved, Math.abs(flip[i] - single[i]));
    }
    assert.ok(moved > 1e-4, 'the mirror changes the probabilities, so the test can tell the two apart');
    const e = await evaluateModel(predictor, data);
    assert.equal(e.tta, 'flip');
    assert.equal((await evaluateModel(predictor, data, { tta: 'none' })).tta, 'none');
  } finally {
    predictor.dispose();
  }
});

test('--tta auto measures on the training images and records flip only when it helps; none neither measures nor records', async () => {
  const out = path.join(tmpDir(), 'auto');
  const r = await train({ data, base, cacheDir, out, engine: 'wasm', valSplit: 0.25 });
  const t = r.ttaCheck;
  assert.ok(t, 'measured by default');
  assert.equal(t.images, r.trainImages);
  assert.equal(t.helps, t.flip.logLoss < t.single.logLoss && t.flip.accuracy >= t.single.accuracy);
  assert.equal(r.tta, t.helps ? 'flip' : 'none');
  const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.deepEqual(meta.metrics.tta, t);
  assert.equal(meta.tta, t.helps ? 'flip' : undefined);
  const none = await train({ data, base, cacheDir, engine: 'wasm', valSplit: 0.25, tta: 'none' });
  assert.equal(none.ttaCheck, undefined);
  assert.equal(none.tta, 'none');
  // Without flipped training views there is nothing to measure on.
  const plain = await train({ data, base, cacheDir, engine: 'wasm', valSplit: 0.25, augment: 'none' });
  assert.equal(plain.ttaCheck, undefined);
});

test('evaluate and predict take --tta; a bad value is a one-line error', async () => {
  const out = path.join(tmpDir(), 'cli');
  const t = runCli(['train', data, '--base', base, '--engine', 'wasm', '--tta', 'none', '--out', out, '--json'], {
    GRAFT_CACHE_DIR: cacheDir,
  });
  assert.equal(t.status, 0, t.stderr);
  assert.equal(t.json?.tta, 'none');
  const e = runCli(['evaluate', out, data, '--tta', 'flip', '--json']);
  assert.equal(e.status, 0, e.stderr);
  assert.equal(e.json?.tta, 'flip');
  const human = runCli(['evaluate', out, data, '--tta', 'flip']);
  assert.match(human.stdout, /test-time flip/);
  const p = runCli(['predict', out, path.join(data, 'left', 'left-0.png'), '--json']);
  assert.equal(p.json?.tta, 'none', 'auto: what the model records');
  const bad = runCli(['evaluate', out, data, '--tta', 'rotate']);
  assert.notEqual(bad.status, 0);
  assert.equal(bad.stderr.trim().split('\n').length, 1);
  assert.match(bad.stderr, /tta must be auto, flip or none/);
});
