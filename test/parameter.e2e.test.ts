/**
 * Parameter transfer and fine-tuning end to end: spatial activations cached apart from pooled ones, the base restored
 * after training, and one exported model that predicts exactly like the in-training model.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { loadLayersBase } from '../src/base/base.ts';
import { serialiseLayersModel } from '../src/export/model-files.ts';
import { Predictor, train } from '../src/index.ts';
import { initTf, tf, tfl } from '../src/tfjs/tf.ts';
import { runCli, tmpDir, writeColourDataset } from './helpers.ts';

/** Like helpers' tiny base, with BatchNorm after every convolution (moving statistics away from 0/1). */
export async function writeTinyBnBase(dir: string): Promise<string> {
  await initTf();
  const init = (s: number) => tfl.initializers.glorotUniform({ seed: 700 + s });
  const bn = (name: string, s: number) =>
    tfl.layers.batchNormalization({
      name,
      momentum: 0.9,
      movingMeanInitializer: tfl.initializers.randomUniform({ minval: -0.1, maxval: 0.1, seed: 800 + s }),
      movingVarianceInitializer: tfl.initializers.randomUniform({ minval: 0.5, maxval: 1.5, seed: 900 + s }),
    });
  const input = tfl.input({ shape: [32, 32, 3], name: 'input_1' });
  let x = tfl.layers
    .conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'same', name: 'stem_conv', kernelInitializer: init(1) })
    .apply(input);
  x = bn('stem_bn', 1).apply(x);
  const r1 = tfl.layers.reLU({ name: 'stem_relu' }).apply(x);
  let b = tfl.layers
    .conv2d({ filters: 8, kernelSize: 3, padding: 'same', name: 'block_1_conv', kernelInitializer: init(2) })
    .apply(r1);
  b = bn('block_1_bn', 2).apply(b);
  b = tfl.layers.reLU({ name: 'block_1_relu' }).apply(b);
  const add = tfl.layers.add({ name: 'block_1_add' }).apply([r1, b] as never);
  let t = tfl.layers
    .depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'same', name: 'top_dw', depthwiseInitializer: init(3) })
    .apply(add);
  t = bn('top_dw_bn', 3).apply(t);
  t = tfl.layers.conv2d({ filters: 16, kernelSize: 1, name: 'top_conv', kernelInitializer: init(4) }).apply(t);
  t = bn('top_bn', 4).apply(t);
  t = tfl.layers.reLU({ name: 'top_relu' }).apply(t);
  const gap = tfl.layers.globalAveragePooling2d({ name: 'pool' }).apply(t);
  const out = tfl.layers
    .dense({ units: 4, activation: 'softmax', name: 'predictions', kernelInitializer: init(5) })
    .apply(gap);
  const model = tfl.model({ inputs: input, outputs: out as never, name: 'tiny_bn' });
  const { modelJson, weights } = await serialiseLayersModel(model);
  model.dispose();
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'model.json'), JSON.stringify(modelJson));
  writeFileSync(path.join(dir, 'weights.bin'), weights);
  return path.join(dir, 'model.json');
}

let basePath: string;
let data: string;
let dir: string;

before(async () => {
  dir = tmpDir('graft-param-');
  basePath = await writeTinyBnBase(path.join(dir, 'base'));
  data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green', 'blue'], 12);
});

/** Exported model, loaded with the Predictor on the validation files, against the in-training probabilities. */
async function assertExportMatches(out: string, r: Awaited<ReturnType<typeof train>>): Promise<void> {
  assert.ok(r.valPredictions && r.valPredictions.length === r.valImages && r.valImages > 0);
  const predictor = await Predictor.load(out);
  try {
    const { probabilities } = await predictor.predictFiles(r.valPredictions.map((p) => p.file));
    r.valPredictions.forEach((p, i) => {
      for (let c = 0; c < p.probabilities.length; c++) {
        const d = Math.abs(probabilities[i][c] - p.probabilities[c]);
        assert.ok(
          d < 1e-4,
          `${p.file} class ${c}: exported ${probabilities[i][c]} vs in training ${p.probabilities[c]}`,
        );
      }
    });
  } finally {
    predictor.dispose();
  }
}

test('parameter mode: spatial cache apart from pooled, tail trains, export predicts like training, base restored', async () => {
  await initTf('wasm');
  const base = await loadLayersBase(basePath);
  const cacheDir = path.join(dir, 'cache-1');
  const before = base.model.getLayer('top_conv').getWeights()[0].dataSync().slice();
  // A pooled activation at the same cut is cached first; the tail must not read it as its spatial one.
  const feat = await train({ data, base, cut: 'block_1_add', cacheDir, engine: 'wasm', valSplit: 0.3, epochs: 5 });
  // every image, plus the flipped view of every training image
  const activations = 36 + feat.trainImages;
  assert.equal(feat.cache.misses, activations);
  const out = path.join(tmpDir(), 'model');
  const opts = {
    data,
    base,
    mode: 'parameter' as const,
    retrainLayers: 2,
    cacheDir,
    engine: 'wasm' as const,
    valSplit: 0.3,
    epochs: 40,
    tailEpochs: 8,
  };
  const r = await train({ ...opts, out });
  assert.equal(r.cut, 'block_1_add');
  assert.equal(r.parameter?.top, 'top_relu');
  assert.deepEqual(r.cache, { hits: 0, misses: activations, damaged: [] });
  assert.deepEqual(
    r.parameter?.stages.map((s) => s.stage),
    ['head', 'tail'],
  );
  assert.ok(r.trainAccuracy >= 0.9, `train accuracy ${r.trainAccuracy}`);
  await assertExportMatches(out, r);
  const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.equal(meta.mode, 'parameter');
  assert.equal(meta.cut, 'top_relu');
  // Every epoch of both stages is recorded, in order, in the result and in graft.json; the stages stop early on the
  // validation set, and the result says so.
  assert.deepEqual(
    r.stages.map((s) => [s.stage, s.epochs]),
    r.parameter?.stages.map((s) => [s.stage, s.epochs]),
  );
  assert.deepEqual(
    r.history.map((h) => h.stage),
    r.stages.flatMap((s) => Array.from({ length: s.epochs }, () => s.stage)),
  );
  assert.deepEqual(meta.training.history, JSON.parse(JSON.stringify(r.history)));
  assert.equal(r.selection?.usedValidation, true);
  assert.match(r.selection?.method ?? '', /early stopping on the validation set/);
  // The caller's base is left as it came: pretrained weights back in place, no tensors left behind.
  assert.deepEqual(base.model.getLayer('top_conv').getWeights()[0].dataSync(), before);
  const tensors = tf.memory().numTensors;
  const again = await train(opts);
  assert.equal(tf.memory().numTensors, tensors, 'a parameter run leaves tensors behind');
  assert.deepEqual(again.cache, { hits: activations, misses: 0, damaged: [] });
  assert.equal(again.valAccuracy, r.valAccuracy, 'same seed, same result');
  base.model.dispose();
});

test('fine-tune from the stem: BatchNorm frozen, export predicts like training', async () => {
  await initTf('wasm');
  const out = path.join(tmpDir(), 'model');
  const r = await train({
    data,
    base: basePath,
    mode: 'parameter',
    retrainLayers: 2,
    fineTune: true,
    cacheDir: path.join(dir, 'cache-2'),
    engine: 'wasm',
    valSplit: 0.3,
    epochs: 40,
    tailEpochs: 3,
    fineTuneEpochs: 3,
    fineTuneLr: 1e-3,
    out,
  });
  assert.equal(r.parameter?.unfreezeFrom, 'stem_relu', 'default: the candidate below the split');
  assert.deepEqual(
    r.parameter?.stages.map((s) => s.stage),
    ['head', 'tail', 'fine-tune'],
  );
  await assertExportMatches(out, r);
});

test('fine-tune all layers from feature mode, images through the whole base each step', async () => {
  await initTf('wasm');
  const out = path.join(tmpDir(), 'model');
  const r = await train({
    data,
    base: basePath,
    fineTune: true,
    unfreezeFrom: 'all',
    trainBn: true,
    cacheDir: path.join(dir, 'cache-3'),
    engine: 'wasm',
    valSplit: 0.3,
    epochs: 30,
    fineTuneEpochs: 2,
    fineTuneLr: 1e-3,
    out,
  });
  assert.equal(r.mode, 'feature');
  assert.equal(r.parameter?.unfreezeFrom, 'input_1');
  assert.deepEqual(
    r.parameter?.stages.map((s) => s.stage),
    ['head', 'fine-tune'],
  );
  await assertExportMatches(out, r);
});

test('bundled InceptionV3, whose BatchNorm layers have no gamma: parameter mode retrains mixed10 and exports', async () => {
  await initTf('wasm');
  const small = await writeColourDataset(path.join(dir, 'data-small'), ['red', 'blue'], 4);
  const base = await loadLayersBase('nsfw-inception-v3');
  const out = path.join(tmpDir(), 'model');
  const r = await train({
    data: small,
    base,
    mode: 'parameter',
    cacheDir: path.join(dir, 'cache-inception'),
    engine: 'wasm',
    valSplit: 0.5,
    epochs: 5,
    tailEpochs: 1,
    out,
  });
  assert.equal(r.cut, 'mixed9');
  assert.equal(r.parameter?.top, 'mixed10');
  assert.deepEqual(
    r.parameter?.stages.map((s) => [s.stage, s.epochs]),
    [
      ['head', r.parameter?.stages[0].epochs],
      ['tail', 1],
    ],
  );
  await assertExportMatches(out, r);
  base.model.dispose();
});

test('bad combinations fail with a clear message', async () => {
  await assert.rejects(
    train({ data, base: basePath, retrainLayers: 2 }),
    /UsageError: retrainLayers needs mode parameter$/,
  );
  await assert.rejects(
    train({ data, base: basePath, unfreezeFrom: 'all' }),
    /UsageError: unfreezeFrom needs fineTune$/,
  );
  await assert.rejects(
    train({ data, base: basePath, mode: 'parameter', retrainLayers: 2, fineTune: true, unfreezeFrom: 'top_relu' }),
    /must lie below/,
  );
  await assert.rejects(train({ data, base: basePath, mode: 'parameter', head: 'knn' }), /softmax head/);
});

test('CLI: --mode parameter --retrain-layers --reinit --json', () => {
  const r = runCli(
    [
      'train',
      data,
      '--base',
      basePath,
      '--mode',
      'parameter',
      '--retrain-layers',
      '2',
      '--reinit',
      '--tail-epochs',
      '2',
      '--epochs',
      '5',
      '--engine',
      'wasm',
      '--json',
    ],
    { GRAFT_CACHE_DIR: path.join(dir, 'cache-cli') },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.json?.mode, 'parameter');
  assert.equal((r.json!.parameter as { reinit: boolean }).reinit, true);
  assert.equal(r.json?.cut, 'block_1_add');
});

test('ONNX Runtime trains tails and fine-tunes: export predicts like training, base restored, same seed same result, within 0.01 of WASM', async () => {
  await initTf('wasm');
  const base = await loadLayersBase(basePath);
  const before = base.model.getLayer('block_1_conv').getWeights()[0].dataSync().slice();
  const cacheDir = path.join(dir, 'cache-ort');
  const opts = {
    data,
    base,
    mode: 'parameter' as const,
    retrainLayers: 2,
    fineTune: true,
    unfreezeFrom: 'stem_relu',
    cacheDir,
    valSplit: 0.3,
    epochs: 20,
    tailEpochs: 3,
    fineTuneEpochs: 3,
    fineTuneLr: 1e-3,
    threads: 1,
  };
  const out = path.join(tmpDir(), 'model');
  const tensors = tf.memory().numTensors;
  const ort = await train({ ...opts, out });
  assert.equal(tf.memory().numTensors, tensors, 'an ONNX Runtime run leaves tensors behind');
  assert.deepEqual(
    ort.parameter?.stages.map((s) => [s.stage, s.engine]),
    [
      ['head', 'wasm'],
      ['tail', 'onnx'],
      ['fine-tune', 'onnx'],
    ],
  );
  assert.deepEqual(ort.parameter?.notes, []);
  // The trained weights were written back into the base's layers before stitching: the Layers export on TF.js
  // predicts what ONNX Runtime predicted while training.
  await assertExportMatches(out, ort);
  assert.deepEqual(base.model.getLayer('block_1_conv').getWeights()[0].dataSync(), before, 'base restored');
  const again = await train(opts);
  assert.deepEqual(
    again.history,
    ort.history.map((h, i) => ({ ...h, seconds: again.history[i].seconds })),
  );

  // The same run on TF.js: same data order, dropout masks, early stopping and best-weights rule, so the same path up
  // to float32 rounding.
  const wasm = await train({ ...opts, engine: 'wasm' });
  assert.deepEqual(
    wasm.parameter?.stages.map((s) => [s.stage, s.engine, s.epochs, s.bestEpoch]),
    ort.parameter?.stages.map((s) => [s.stage, s.engine === 'onnx' ? 'wasm' : s.engine, s.epochs, s.bestEpoch]),
  );
  assert.ok(
    Math.abs((wasm.valAccuracy ?? 0) - (ort.valAccuracy ?? 1)) <= 0.01,
    `validation accuracy ${wasm.valAccuracy} on WASM, ${ort.valAccuracy} on ONNX Runtime`,
  );
  wasm.history.forEach((h, i) => {
    const o = ort.history[i];
    assert.ok(
      Math.abs(h.loss - o.loss) <= 1e-3 * Math.abs(h.loss) + 1e-5,
      `epoch ${i + 1}: loss ${h.loss} vs ${o.loss}`,
    );
  });
  base.model.dispose();
});

test('--train-bn and layers ONNX Runtime cannot differentiate fall back to WASM, named; --engine onnx refuses instead', async () => {
  await initTf('wasm');
  const common = {
    data,
    base: basePath,
    fineTune: true,
    unfreezeFrom: 'block_1_add',
    trainBn: true,
    cacheDir: path.join(dir, 'cache-ort-bn'),
    valSplit: 0.3,
    epochs: 5,
    fineTuneEpochs: 1,
  };
  const r = await train(common);
  assert.equal(r.parameter?.stages.at(-1)?.engine, 'wasm');
  assert.equal(r.parameter?.notes.length, 1);
  assert.match(r.parameter!.notes[0].message, /trained on WASM: trainBn \(BatchNorm with batch statistics\)/);
  await assert.rejects(train({ ...common, engine: 'onnx' }), /engine onnx: trainBn \(BatchNorm/);

  const cli = runCli(
    ['train', data, '--base', basePath, '--fine-tune', '--unfreeze-from', 'block_1_add', '--train-bn', '--epochs', '3'],
    { GRAFT_CACHE_DIR: path.join(dir, 'cache-ort-bn') },
  );
  assert.equal(cli.status, 0, cli.stderr);
  assert.match(cli.stdout, /note: trained on WASM: --train-bn \(BatchNorm with batch statistics\)/);
  assert.match(cli.stdout, /stage fine-tune .*, wasm\)/);
});
