/**
 * TF.js graph models and ONNX files as bases (feature transfer only): train, predict, evaluate, inspect and export
 * through the CLI, the one-line refusals of Layers-only features, and the acceptance check on hymenoptera: an ONNX
 * base converted by graft's own converter scores what the same network scores as a TF.js Layers base.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { disposeBase, loadLayersBase } from '../src/base/base.ts';
import { Predictor, train } from '../src/index.ts';
import { layersToOnnx } from '../src/onnx/convert.ts';
import { tfl } from '../src/tfjs/tf.ts';
import { HAVE_SHARED, HYMENOPTERA, runCli, tmpDir, writeColourDataset } from './helpers.ts';
import { writeTinyGraphModel, writeTinyOnnx } from './other-bases-fixtures.ts';

let dir: string;
let data: string;
let graph: string;
let onnx: string;
let env: Record<string, string>;

before(async () => {
  dir = tmpDir();
  data = await writeColourDataset(path.join(dir, 'data'), ['red', 'green', 'blue'], 8);
  graph = writeTinyGraphModel(path.join(dir, 'graph'));
  onnx = (await writeTinyOnnx(path.join(dir, 'onnx'))).onnx;
  env = { GRAFT_CACHE_DIR: path.join(dir, 'cache') };
});

function assertOneLineError(r: ReturnType<typeof runCli>, ...mentions: string[]) {
  assert.notEqual(r.status, 0, 'exit status must be non-zero');
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  for (const m of mentions) assert.ok(lines[0].includes(m), `'${lines[0]}' should mention '${m}'`);
}

const image = () => path.join(data, 'red', 'red-0.png');

test('a TF.js graph-model base trains end to end; parameter mode, fine-tuning and ONNX export are one-line errors', async () => {
  const out = path.join(dir, 'graph-model');
  const r = runCli(
    ['train', data, '--base', graph, '--input-range', '-1,1', '--epochs', '40', '--out', out, '--json'],
    env,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.json!.cut, 'features');
  assert.ok((r.json!.trainAccuracy as number) > 0.8, `train accuracy ${r.json!.trainAccuracy}`);
  assert.ok(existsSync(path.join(out, 'base-model.json')) && !existsSync(path.join(out, 'model.json')));

  const p = runCli(['predict', out, image(), '--json'], env);
  assert.equal(p.status, 0, p.stderr);
  const e = runCli(['evaluate', out, data, '--json'], env);
  assert.equal(e.status, 0, e.stderr);
  assert.equal(e.json!.images, 24);
  assert.ok((e.json!.accuracy as number) > 0.7, `accuracy ${e.json!.accuracy}`);

  const auto = runCli(['train', data, '--base', graph, '--mode', 'auto', '--epochs', '10', '--json'], env);
  assert.equal(auto.status, 0, auto.stderr);
  assert.deepEqual(
    (auto.json!.sweep as { cut: string }[]).map((s) => s.cut),
    ['stem/relu', 'block/add', 'top/relu', 'features'],
  );

  assertOneLineError(
    runCli(['train', data, '--base', graph, '--mode', 'parameter'], env),
    '--mode parameter needs a TF.js Layers base',
    'graph-model',
  );
  assertOneLineError(
    runCli(['train', data, '--base', graph, '--fine-tune'], env),
    '--fine-tune needs a TF.js Layers base',
  );
  assertOneLineError(runCli(['train', data, '--base', graph, '--cut', 'block/relu'], env), 'not a cut point');
  assertOneLineError(runCli(['export', out, '--out', path.join(dir, 'g.onnx')], env), 'cannot convert to ONNX');

  const i = runCli(['inspect', graph], env);
  assert.equal(i.status, 0, i.stderr);
  assert.match(i.stdout, /TF.js graph model: feature transfer only/);
  assert.match(i.stdout, /^block\/add\s/m);
});

test('an ONNX base trains end to end; its model predicts, evaluates and exports to ONE ONNX graph that agrees', async () => {
  const out = path.join(dir, 'onnx-model');
  const r = runCli(
    ['train', data, '--base', onnx, '--input-range', '-1,1', '--epochs', '40', '--out', out, '--json'],
    env,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.json!.engine, 'onnx');
  assert.equal(r.json!.cut, 'top_relu');
  const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.equal(meta.base.format, 'onnx');
  assert.equal(meta.preprocessing.inModel, false);
  assert.ok(existsSync(path.join(out, 'base.onnx')));

  assertOneLineError(
    runCli(['train', data, '--base', onnx, '--mode', 'parameter'], env),
    'an ONNX model: feature transfer only',
  );
  assertOneLineError(runCli(['train', data, '--base', onnx, '--engine', 'wasm'], env), 'ONNX Runtime only');

  const file = path.join(dir, 'exported.onnx');
  const x = runCli(['export', out, '--out', file, '--json'], env);
  assert.equal(x.status, 0, x.stderr);
  assert.equal(x.json!.input, 'pixels');

  // The exported graph (raw pixels in) and the model folder give the same probabilities.
  const predictor = await Predictor.load(out);
  const ort = await import('onnxruntime-node');
  const session = await ort.InferenceSession.create(readFileSync(file));
  try {
    const px = Float32Array.from({ length: 2 * 32 * 32 * 3 }, (_, k) => (k * 53) % 256);
    const want = await predictor.predictPixels(px, 2, { tta: 'none' });
    const got = (await session.run({ pixels: new ort.Tensor('float32', px, [2, 32, 32, 3]) })).probabilities
      .data as Float32Array;
    assert.equal(got.length, 6);
    got.forEach((v, k) => {
      assert.ok(Math.abs(v - want[k]) < 1e-4, `${k}: ${v} vs ${want[k]}`);
    });
    const { predictions } = await predictor.predictFiles([image()]);
    assert.equal(predictions.length, 1);
  } finally {
    await session.release();
    predictor.dispose();
  }
});

test('acceptance: MobileNetV2 converted to ONNX by graft trains on hymenoptera within 0.01 of the Layers base', {
  skip: !HAVE_SHARED && 'needs ../shared',
}, async () => {
  const base = await loadLayersBase('nsfw-mobilenet-v2');
  const trunk = tfl.model({ inputs: base.model.inputs, outputs: base.model.getLayer('out_relu').output as never });
  const file = path.join(dir, 'mobilenet_v2_out_relu.onnx');
  // No Rescaling layer inside: the ONNX file takes preprocessed input, so it needs the range the Layers base uses.
  writeFileSync(file, layersToOnnx(trunk));
  const common = {
    data: path.join(HYMENOPTERA, 'train'),
    val: path.join(HYMENOPTERA, 'val'),
    cut: 'out_relu',
    cacheDir: path.join(dir, 'hcache'),
  };
  const layers = await train({ ...common, base });
  const viaOnnx = await train({ ...common, base: file, inputRange: [0, 1] });
  assert.equal(viaOnnx.engine, 'onnx');
  assert.equal(viaOnnx.valImages, layers.valImages);
  disposeBase(base);
  assert.ok(
    Math.abs(viaOnnx.valAccuracy! - layers.valAccuracy!) <= 0.01,
    `ONNX ${viaOnnx.valAccuracy} vs Layers ${layers.valAccuracy}`,
  );
});
