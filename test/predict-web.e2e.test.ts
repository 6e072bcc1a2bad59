/**
 * `graft/predict` (src/predict/web.ts) in Node: a model folder loaded by path and by URL gives the probabilities the
 * Node Predictor gives for the same image; raw RGB, RGBA and ImageData-like inputs agree; what it refuses, it refuses
 * in one line. The browser side is test/predict-browser.e2e.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { before, test } from 'node:test';
import sharp from 'sharp';
import { Predictor, train } from '../src/index.ts';
import { loadModel } from '../src/predict/web.ts';
import { tf } from '../src/tfjs/tf.ts';
import { seededPixels, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

let out: string;
let knnOut: string;
let image: string;
let common: Parameters<typeof train>[0];

before(async () => {
  const dir = tmpDir();
  const base = await writeTinyBase(path.join(dir, 'base'));
  const data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green', 'blue'], 10);
  common = {
    data,
    base,
    cut: 'top_relu',
    cacheDir: path.join(dir, 'cache'),
    valSplit: 0.3,
    engine: 'wasm' as const,
  };
  out = path.join(dir, 'model');
  await train({ ...common, out, epochs: 40, crop: 0.875 });
  knnOut = path.join(dir, 'knn');
  await train({ ...common, out: knnOut, head: 'knn' });
  image = path.join(data, 'green', 'green-0.png');
});

async function rgbOf(file: string): Promise<{ data: Uint8Array; width: number; height: number }> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

test('loaded by path: the same probabilities as the Predictor, for RGB, RGBA and ImageData-like pixels', async () => {
  const model = await loadModel(out);
  const predictor = await Predictor.load(out, { engine: 'wasm' });
  try {
    assert.deepEqual(model.labels, ['blue', 'green', 'red']);
    assert.equal(model.preprocessing.crop, 0.875);
    const rgb = await rgbOf(image);
    const want = (await predictor.predictFiles([image], { topK: 3 })).probabilities[0];
    const [got] = await model.probabilities([rgb]);
    got.forEach((v, i) => {
      assert.ok(Math.abs(v - want[i]) < 1e-5, `${i}: ${v} vs ${want[i]}`);
    });
    const rgba = new Uint8ClampedArray(rgb.width * rgb.height * 4);
    for (let i = 0; i < rgb.width * rgb.height; i++) rgba.set([...rgb.data.subarray(i * 3, i * 3 + 3), 255], i * 4);
    assert.deepEqual(model.networkInput({ data: rgba, width: rgb.width, height: rgb.height }), model.networkInput(rgb));
    const top = await model.predict(rgb, { topK: 1 });
    assert.deepEqual(
      top.map((t) => t.label),
      ['green'],
    );
    const before = tf.memory().numTensors;
    await model.predict(rgb);
    assert.equal(tf.memory().numTensors, before, 'predicting leaks no tensors');
  } finally {
    model.dispose();
    predictor.dispose();
  }
});

test('a recorded test-time flip is applied, as the Predictor applies it: each image averaged with its mirror', async () => {
  const flipped = path.join(path.dirname(out), 'flip');
  await train({ ...common, out: flipped, tta: 'flip' });
  const model = await loadModel(flipped);
  const predictor = await Predictor.load(flipped, { engine: 'wasm' });
  try {
    assert.equal(model.tta, 'flip');
    // Noise, so the mirror differs from the image (the colour images are nearly symmetric).
    const rgb = { data: Uint8Array.from(seededPixels(40 * 40 * 3, 9)), width: 40, height: 40 };
    const input = Float32Array.from(model.networkInput(rgb));
    const [h, w] = model.preprocessing.size;
    const mirrored = new Float32Array(input.length);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let c = 0; c < 3; c++) mirrored[(y * w + x) * 3 + c] = input[(y * w + (w - 1 - x)) * 3 + c];
    const [alone] = await model.probabilitiesOfPixels(input, 1, { tta: 'none' });
    const [mirror] = await model.probabilitiesOfPixels(mirrored, 1, { tta: 'none' });
    const [got] = await model.probabilities([rgb]);
    const want = await predictor.predictPixels(input, 1);
    got.forEach((v, i) => {
      assert.ok(Math.abs(v - (alone[i] + mirror[i]) / 2) < 1e-6, `${i}: ${v} is not the mean of the two views`);
      assert.ok(Math.abs(v - want[i]) < 1e-5, `${i}: ${v} vs the Predictor's ${want[i]}`);
    });
    assert.ok(Math.max(...alone.map((v, i) => Math.abs(v - mirror[i]))) > 1e-4, 'the mirror changes the answer');
    await assert.rejects(model.probabilities([rgb], { tta: 'rotate' as never }), /tta must be flip or none/);
  } finally {
    model.dispose();
    predictor.dispose();
  }
});

test('loaded by URL, as a page would; refusals are one line', async () => {
  const server = createServer((req, res) => {
    try {
      res.end(readFileSync(path.join(out, new URL(req.url ?? '/', 'http://x').pathname)));
    } catch {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const model = await loadModel(url);
    const byPath = await loadModel(out);
    const rgb = await rgbOf(image);
    assert.deepEqual(await model.probabilities([rgb]), await byPath.probabilities([rgb]));
    model.dispose();
    byPath.dispose();
    await assert.rejects(loadModel(`${url}missing/`), /graft\.json: HTTP 404/);
  } finally {
    server.close();
  }
  await assert.rejects(loadModel(knnOut), /a knn head runs in Node only/);
  const m = await loadModel(out);
  assert.throws(() => m.networkInput({ data: new Uint8Array(10), width: 2, height: 2 }), /10 values for a 2x2 image/);
  m.dispose();
});
