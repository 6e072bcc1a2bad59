import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { layerIndex } from '../base/graph.ts';
import { initTf, tfl } from '../tfjs/tf.ts';
import { buildTail } from './parameter.ts';
import { chooseTailEngine } from './tail-engine.ts';

before(() => initTf('wasm'));

/** conv → BN → ELU → conv → relu: ELU converts to ONNX but has no backward rule. */
function model(activation: string): tfl.LayersModel {
  const input = tfl.input({ shape: [6, 6, 3], name: 'in' });
  let x = tfl.layers.conv2d({ filters: 4, kernelSize: 3, name: 'conv_a' }).apply(input);
  x = tfl.layers.batchNormalization({ name: 'bn_a' }).apply(x);
  x = tfl.layers.activation({ activation: activation as 'relu', name: 'act_a' }).apply(x);
  x = tfl.layers.conv2d({ filters: 4, kernelSize: 1, name: 'conv_b', activation: 'relu' }).apply(x);
  return tfl.model({ inputs: input, outputs: x as tfl.SymbolicTensor });
}

const tailOf = (m: tfl.LayersModel) =>
  buildTail({ model: m } as Parameters<typeof buildTail>[0], m.layers[0].name, 'conv_b', false);

test('auto compiles a tail ONNX Runtime can differentiate; wasm never does', async () => {
  const m = model('relu');
  const auto = await chooseTailEngine(tailOf(m), 'auto', { threads: 1 });
  assert.equal(auto.engine.name, 'onnx');
  assert.equal(auto.fallback, undefined);
  await auto.engine.release();
  assert.equal((await chooseTailEngine(tailOf(m), 'wasm')).engine.name, 'wasm');
  m.dispose();
});

test('a layer without a backward rule falls back to WASM, named; onnx refuses', async () => {
  const m = model('elu');
  assert.equal(layerIndex(m, 'act_a'), 3);
  const r = await chooseTailEngine(tailOf(m), 'auto');
  assert.equal(r.engine.name, 'wasm');
  assert.match(
    r.fallback?.message ?? '',
    /^trained on WASM: ONNX Runtime cannot train this tail \(cannot differentiate Elu node 'act_a'/,
  );
  await assert.rejects(chooseTailEngine(tailOf(m), 'onnx'), /engine onnx: ONNX Runtime cannot train this tail/);
  m.dispose();
});

test('trainBn keeps BatchNorm tails on WASM and says why', async () => {
  const m = model('relu');
  const r = await chooseTailEngine(tailOf(m), 'auto', { trainBn: true });
  assert.equal(r.engine.name, 'wasm');
  assert.match(
    r.fallback?.message ?? '',
    /trainBn \(BatchNorm with batch statistics\) is not supported by the ONNX Runtime trainer/,
  );
  m.dispose();
});
