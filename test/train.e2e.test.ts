/**
 * End to end through the library: train → export → load with plain @tensorflow/tfjs → predict; cache reuse;
 * determinism; evaluate; tensor leaks.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { before, test } from 'node:test';
import { evaluateModel, Predictor, train } from '../src/index.ts';
import { tf } from '../src/tfjs/tf.ts';
import { tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

let base: string;
let data: string;
let cacheDir: string;

before(async () => {
  const dir = tmpDir();
  base = await writeTinyBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green', 'blue'], 14);
  cacheDir = path.join(dir, 'cache');
});

test('train exports one model that plain @tensorflow/tfjs loads over http and that predicts like graft', async () => {
  const out = path.join(tmpDir(), 'model');
  const r = await train({ data, base, cut: 'top_relu', out, cacheDir, valSplit: 0.3, engine: 'wasm', epochs: 60 });
  assert.deepEqual(r.classes, ['blue', 'green', 'red']);
  assert.equal(r.trainImages + r.valImages, 42);
  assert.ok(r.valImages > 0);
  assert.ok(r.trainAccuracy >= 0.9, `train accuracy ${r.trainAccuracy}`);
  assert.deepEqual(readdirSync(out).sort(), ['graft.json', 'model.json', 'report.html', 'report.json', 'weights.bin']);
  const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.deepEqual(meta.labels, ['blue', 'green', 'red']);
  assert.equal(meta.cut, 'top_relu');
  assert.equal(meta.preprocessing.inModel, true);

  // Serve the folder the way a web page would and load it with the stock TF.js package, no graft code involved.
  const server = createServer((req, res) => {
    try {
      res.end(readFileSync(path.join(out, path.basename(req.url ?? ''))));
    } catch {
      res.statusCode = 404;
      res.end();
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const port = (server.address() as AddressInfo).port;
  try {
    const plain = await import('@tensorflow/tfjs');
    await plain.setBackend('cpu');
    const model = await plain.loadLayersModel(`http://127.0.0.1:${port}/model.json`);
    const [h, w] = meta.preprocessing.size;
    const pixels = new Float32Array(2 * h * w * 3).map((_, i) => (i * 7919) % 256);
    const plainOut = (
      model.predict(plain.tensor4d(pixels, [2, h, w, 3])) as import('@tensorflow/tfjs').Tensor
    ).dataSync();
    const predictor = await Predictor.load(out);
    // The network itself: one view, whatever test-time augmentation the model folder records for graft's predictor.
    const ours = await predictor.predictPixels(pixels, 2, { tta: 'none' });
    assert.equal(plainOut.length, 6);
    for (let i = 0; i < 6; i++) assert.ok(Math.abs(plainOut[i] - ours[i]) < 1e-4, `${plainOut[i]} vs ${ours[i]}`);
    // and the files through graft's predictor, with top-k labels
    const files = ['red', 'green', 'blue'].map((c) => path.join(data, c, `${c}-0.png`));
    const { predictions } = await predictor.predictFiles(files, { topK: 2 });
    assert.deepEqual(
      predictions.map((p) => p.top[0].label),
      ['red', 'green', 'blue'],
    );
    assert.equal(predictions[0].top.length, 2);
    predictor.dispose();
  } finally {
    server.close();
  }
});

test('a second run over unchanged images computes no activation', async () => {
  const dir = tmpDir();
  const opts = {
    data,
    base,
    cut: 'block_1_add',
    cacheDir: path.join(dir, 'cache'),
    engine: 'wasm' as const,
    epochs: 5,
  };
  const first = await train(opts);
  assert.equal(first.cache.hits, 0);
  // every image, plus the flipped view of every training image
  assert.equal(first.cache.misses, 42 + first.trainImages);
  const second = await train(opts);
  assert.deepEqual(second.cache, { hits: 42 + first.trainImages, misses: 0, damaged: [] });
  assert.ok(second.seconds.extract < first.seconds.extract, `${second.seconds.extract} vs ${first.seconds.extract}`);
});

test('same seed and data give the same result; evaluate agrees with train', async () => {
  const dir = tmpDir();
  const common = {
    data,
    base,
    cacheDir,
    valSplit: 0.3,
    engine: 'wasm' as const,
    epochs: 20,
    head: 'mlp' as const,
    seed: 7,
  };
  const a = await train({ ...common, out: path.join(dir, 'a') });
  const b = await train({ ...common, out: path.join(dir, 'b') });
  assert.deepEqual(
    a.history.map((h) => h.loss),
    b.history.map((h) => h.loss),
  );
  assert.equal(
    readFileSync(path.join(dir, 'a', 'weights.bin')).equals(readFileSync(path.join(dir, 'b', 'weights.bin'))),
    true,
  );
  // evaluate on the training folder: its accuracy over all images must combine train and val accuracies
  const predictor = await Predictor.load(path.join(dir, 'a'));
  const e = await evaluateModel(predictor, data);
  const expected =
    (a.trainAccuracy * a.trainImages + (a.valAccuracy ?? 0) * a.valImages) / (a.trainImages + a.valImages);
  assert.ok(Math.abs(e.accuracy - expected) < 1e-6, `${e.accuracy} vs ${expected}`);
  assert.equal(
    e.confusion.flat().reduce((x, y) => x + y, 0),
    42,
  );
  assert.equal(e.perClass.length, 3);
  predictor.dispose();
});

test('k-NN head trains without epochs and predicts through the exported model', async () => {
  const out = path.join(tmpDir(), 'knn');
  const r = await train({ data, base, cacheDir, head: 'knn', out, engine: 'wasm', valSplit: 0.3 });
  assert.equal(r.head, 'knn');
  const predictor = await Predictor.load(out);
  const e = await evaluateModel(predictor, data);
  assert.ok(e.accuracy > 0.9, `knn accuracy ${e.accuracy}`);
  predictor.dispose();
});

test('tensors do not leak across training epochs and repeated predictions', async () => {
  const out = path.join(tmpDir(), 'leak');
  await train({ data, base, cacheDir, out, engine: 'wasm', epochs: 3 });
  const baseline = tf.memory().numTensors;
  const r = await train({
    data,
    base,
    cacheDir,
    engine: 'wasm',
    head: 'softmax',
    epochs: 40,
    patience: 100,
    out: path.join(tmpDir(), 'leak2'),
  });
  assert.equal(r.history.length, 40);
  // The base this run loaded, its head, optimiser state, every batch and the exported model are released.
  assert.equal(tf.memory().numTensors, baseline, 'a training run leaves tensors behind');
  const predictor = await Predictor.load(out);
  const loaded = tf.memory().numTensors;
  const files = [path.join(data, 'red', 'red-1.png')];
  await predictor.predictFiles(files);
  for (let i = 0; i < 5; i++) await predictor.predictFiles(files);
  assert.equal(tf.memory().numTensors, loaded, 'predictions leak tensors');
  predictor.dispose();
  assert.equal(tf.memory().numTensors, baseline, 'dispose releases the model');
});
