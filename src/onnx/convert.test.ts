import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';
import * as ort from 'onnxruntime-node';
import { seededPixels as pixels } from '../../test/helpers.ts';
import { loadLayersBase } from '../base/base.ts';
import { buildTrunkModel } from '../engines/trunk.ts';
import { initTf, tf, tfl } from '../tfjs/tf.ts';
import { layersToOnnx } from './convert.ts';
import { decodeModel } from './proto.ts';

// ../shared sits beside the repository (tests run from its root), wherever that is checked out.
const SHARED_V1 = path.resolve('../shared/models/mobilenet_v1_1.0_224_imagenet_trunc/model.json');
const SHARED_V2_035 = path.resolve(
  '../shared/models/mirror/teachable-machine-models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top/model.json',
);

before(() => initTf('wasm'));

function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  assert.ok(scale > 0, 'reference output is all zeros: the test would prove nothing');
  return diff / scale;
}

/** Runs `model` on TF.js WASM and, converted, on ONNX Runtime; every output must agree to 1e-4 of its range. */
async function parity(model: tfl.LayersModel, n: number, seed = 1): Promise<Uint8Array> {
  const bytes = layersToOnnx(model);
  const session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all' });
  try {
    const feeds: Record<string, ort.Tensor> = {};
    const xs = model.inputs.map((t, i) => {
      const dims = [n, ...(t.shape.slice(1) as number[])];
      const data = pixels(
        dims.reduce((a, b) => a * b, 1),
        seed + i,
      );
      feeds[session.inputNames[i]] = new ort.Tensor('float32', data, dims);
      return tf.tensor(data, dims);
    });
    const got = await session.run(feeds);
    const ys = tf.tidy(() => {
      const y = model.predict(xs.length === 1 ? xs[0] : xs);
      return Array.isArray(y) ? y : [y];
    });
    const want = ys.map((y) => y.dataSync() as Float32Array);
    const wantShapes = ys.map((y) => y.shape);
    tf.dispose([...xs, ...ys]);
    assert.equal(session.outputNames.length, want.length);
    session.outputNames.forEach((name, i) => {
      const out = got[name];
      assert.deepEqual(out.dims, wantShapes[i], `${name}: shape`);
      const err = relErr(out.data as Float32Array, want[i]);
      assert.ok(err <= 1e-4, `${name}: max|onnx − tfjs| / max|tfjs| = ${err}`);
    });
  } finally {
    await session.release();
  }
  return bytes;
}

const apply = (layer: tfl.layers.Layer, x: SymbolicTensor | SymbolicTensor[]) => layer.apply(x) as SymbolicTensor;

/** Gives every BatchNormalization non-trivial statistics, so that folding is actually exercised. */
function randomizeBatchNorms(model: tfl.LayersModel, seed = 7): void {
  let k = 0;
  for (const layer of model.layers) {
    if (layer.getClassName() !== 'BatchNormalization') continue;
    layer.setWeights(
      layer.getWeights().map((w, i) => {
        const r = pixels(w.size, seed + 100 * k++ + i).map((v) => v / 255);
        const isVariance = i === layer.getWeights().length - 1;
        return tf.tensor(isVariance ? r.map((v) => 0.5 + v) : r.map((v) => v - 0.5), w.shape);
      }),
    );
  }
}

function opCounts(bytes: Uint8Array): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const n of decodeModel(bytes).graph.node) counts[n.op_type] = (counts[n.op_type] ?? 0) + 1;
  return counts;
}

test('bundled MobileNetV2 trunk at block_13_expand_relu and out_relu matches TF.js; BN folded, one transpose', async () => {
  const base = await loadLayersBase('nsfw-mobilenet-v2');
  const bytes = await parity(buildTrunkModel(base, ['block_13_expand_relu', 'out_relu']), 2);
  const ops = opCounts(bytes);
  assert.equal(ops.BatchNormalization, undefined);
  assert.equal(ops.Transpose, 1, 'NHWC → NCHW once, after the input');
  assert.equal(ops.Pad, undefined, 'ZeroPadding2D is absorbed into the convolutions');
  assert.equal(ops.Mul, 1, 'only the Rescaling multiplies: every BatchNorm is folded');
  const model = decodeModel(bytes);
  assert.equal(model.ir_version, 8);
  assert.deepEqual(model.opset_import, [{ domain: '', version: 17 }]);
  const dims = model.graph.input[0].type.tensor_type.shape.dim;
  assert.deepEqual(dims, [{ dim_param: 'batch' }, { dim_value: 224 }, { dim_value: 224 }, { dim_value: 3 }]);
  for (const n of model.graph.node)
    assert.ok(!n.attribute?.some((a) => a.name === 'auto_pad'), `${n.name} uses auto_pad`);
});

test('bundled InceptionV3 trunk at mixed5 and mixed10 matches TF.js', async () => {
  const base = await loadLayersBase('nsfw-inception-v3');
  await parity(buildTrunkModel(base, ['mixed5', 'mixed10']), 1);
});

test('shared ImageNet MobileNets (v1 trunc, v2 0.35) match TF.js', {
  skip: !existsSync(SHARED_V1) && '../shared is absent',
}, async () => {
  for (const file of [SHARED_V1, SHARED_V2_035]) {
    if (!existsSync(file)) continue;
    const base = await loadLayersBase(file);
    await parity(buildTrunkModel(base, [base.defaultCut]), 2);
  }
});

test('SeparableConv2D, depthwise multiplier, unfoldable BatchNorm, merges and Dense on a spatial map', async () => {
  const x = tfl.input({ shape: [12, 11, 3] });
  const scaled = apply(tfl.layers.rescaling({ scale: 1 / 127.5, offset: -1 }), x);
  const sep = apply(
    tfl.layers.separableConv2d({ filters: 8, kernelSize: 3, strides: 2, padding: 'same', depthMultiplier: 2 }),
    scaled,
  );
  const sepBn = apply(tfl.layers.reLU({ maxValue: 6 }), apply(tfl.layers.batchNormalization(), sep));
  const dw = apply(
    tfl.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', depthMultiplier: 2, useBias: true }),
    sepBn,
  );
  // dw feeds both a BatchNorm and a Multiply: the BatchNorm cannot be folded and becomes Mul + Add.
  const dwBn = apply(tfl.layers.batchNormalization(), dw);
  const prod = apply(tfl.layers.multiply(), [dw, dwBn]);
  const sum = apply(tfl.layers.add(), [prod, dwBn, dw]);
  const cat = apply(tfl.layers.concatenate(), [
    sum,
    apply(tfl.layers.maximum(), [dw, dwBn]),
    apply(tfl.layers.average(), [dw, dwBn]),
  ]);
  const dilated = apply(
    tfl.layers.conv2d({ filters: 6, kernelSize: 3, dilationRate: 2, padding: 'same', activation: 'relu' }),
    cat,
  );
  const dense = apply(tfl.layers.dense({ units: 5, activation: 'tanh' }), dilated);
  const gmp = apply(tfl.layers.globalMaxPooling2d({}), dense);
  const head = apply(tfl.layers.batchNormalization(), apply(tfl.layers.dense({ units: 4 }), gmp));
  const model = tfl.model({ inputs: x, outputs: [dense, head] });
  randomizeBatchNorms(model);
  const ops = opCounts(await parity(model, 3));
  assert.equal(ops.Gemm, 1);
});

test('MaxPooling2D / AveragePooling2D, same and valid, odd sizes (TF same-average excludes padding)', async () => {
  const x = tfl.input({ shape: [11, 13, 3] });
  const f = apply(tfl.layers.conv2d({ filters: 4, kernelSize: 1 }), x);
  const outs = [
    tfl.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same' }),
    tfl.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'valid' }),
    tfl.layers.averagePooling2d({ poolSize: 3, strides: 2, padding: 'same' }),
    tfl.layers.averagePooling2d({ poolSize: 3, strides: 1, padding: 'same' }),
    tfl.layers.averagePooling2d({ poolSize: [2, 3], strides: [2, 2], padding: 'valid' }),
    tfl.layers.maxPooling2d({ poolSize: 2, padding: 'same' }),
  ].map((l) => apply(l, f));
  await parity(tfl.model({ inputs: x, outputs: outs }), 2);
});

test('Flatten of a 3×3×4 map keeps NHWC order before Dense + softmax; Reshape both ways; squeeze-excite broadcast', async () => {
  const x = tfl.input({ shape: [7, 7, 3] });
  const scaled = apply(tfl.layers.rescaling({ scale: 1 / 255 }), x);
  const map = apply(tfl.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2 }), scaled); // 3×3×4
  const probs = apply(tfl.layers.dense({ units: 5, activation: 'softmax' }), apply(tfl.layers.flatten(), map));
  const squeezed = apply(tfl.layers.globalAveragePooling2d({}), map);
  const gate = apply(
    tfl.layers.conv2d({ filters: 4, kernelSize: 1, activation: 'sigmoid' }),
    apply(tfl.layers.reshape({ targetShape: [1, 1, 4] }), squeezed),
  );
  const excited = apply(tfl.layers.multiply(), [map, gate]);
  const reshaped = apply(tfl.layers.reshape({ targetShape: [9, 4] }), excited);
  const back = apply(
    tfl.layers.conv2d({ filters: 2, kernelSize: 1 }),
    apply(tfl.layers.reshape({ targetShape: [6, 6, 1] }), reshaped),
  );
  const flat = apply(tfl.layers.reshape({ targetShape: [-1] }), back);
  await parity(tfl.model({ inputs: x, outputs: [probs, reshaped, back, flat] }), 3);
});

test('activation functions and activation layers', async () => {
  const x = tfl.input({ shape: [5, 6, 3] });
  const f = apply(
    tfl.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same' }),
    apply(tfl.layers.rescaling({ scale: 1 / 64, offset: -2 }), x),
  );
  const names = [
    'relu',
    'relu6',
    'linear',
    'sigmoid',
    'tanh',
    'softmax',
    'swish',
    'hardSigmoid',
    'elu',
    'selu',
    'softplus',
    'softsign',
    'mish',
    'gelu',
    'gelu_new',
  ] as const;
  const outs = names.map((activation) => apply(tfl.layers.activation({ activation }), f));
  outs.push(
    apply(tfl.layers.reLU({}), f),
    apply(tfl.layers.leakyReLU({ alpha: 0.2 }), f),
    apply(tfl.layers.elu({}), f),
    apply(tfl.layers.thresholdedReLU({ theta: 0.3 }), f),
    apply(tfl.layers.softmax({ axis: -1 }), f),
    apply(tfl.layers.dense({ units: 3, activation: 'softmax' }), apply(tfl.layers.globalAveragePooling2d({}), f)),
    apply(tfl.layers.conv2d({ filters: 2, kernelSize: 1, activation: 'swish' }), f),
  );
  await parity(tfl.model({ inputs: x, outputs: outs }), 2);
});

test('asymmetric ZeroPadding2D: absorbed by a convolution, a Pad node elsewhere', async () => {
  const x = tfl.input({ shape: [9, 10, 3] });
  const padded = apply(
    tfl.layers.zeroPadding2d({
      padding: [
        [1, 2],
        [0, 3],
      ],
    }),
    x,
  );
  const conv = apply(tfl.layers.conv2d({ filters: 3, kernelSize: 3, strides: 2 }), padded);
  const pooled = apply(
    tfl.layers.maxPooling2d({ poolSize: 2 }),
    apply(
      tfl.layers.zeroPadding2d({
        padding: [
          [0, 1],
          [2, 0],
        ],
      }),
      conv,
    ),
  );
  const twice = apply(
    tfl.layers.depthwiseConv2d({ kernelSize: 2 }),
    apply(
      tfl.layers.zeroPadding2d({ padding: 1 }),
      apply(
        tfl.layers.zeroPadding2d({
          padding: [
            [0, 1],
            [0, 1],
          ],
        }),
        conv,
      ),
    ),
  );
  const model = tfl.model({
    inputs: x,
    outputs: [
      conv,
      pooled,
      twice,
      apply(
        tfl.layers.zeroPadding2d({
          padding: [
            [2, 0],
            [1, 1],
          ],
        }),
        x,
      ),
    ],
  });
  const ops = opCounts(await parity(model, 2));
  assert.equal(ops.Pad, 2, 'before MaxPool and before the output; stacked paddings before a convolution are absorbed');
});

test('a layer shared by two models and a nested model: each conversion follows its own graph', async () => {
  const conv = tfl.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', activation: 'relu' });
  const a = tfl.input({ shape: [8, 8, 3] });
  const modelA = tfl.model({ inputs: a, outputs: apply(conv, apply(tfl.layers.rescaling({ scale: 0.01 }), a)) });
  const b = tfl.input({ shape: [8, 8, 3] });
  const inner = tfl.sequential({
    layers: [tfl.layers.conv2d({ inputShape: [8, 8, 4], filters: 2, kernelSize: 1 }), tfl.layers.flatten()],
  });
  const bConv = apply(conv, apply(tfl.layers.rescaling({ scale: 0.02, offset: -1 }), b));
  const modelB = tfl.model({ inputs: b, outputs: [bConv, apply(inner, bConv)] });
  await parity(modelA, 2, 3);
  await parity(modelB, 2, 4);
});

test('a batch size other than the one converted with runs (symbolic batch) and options reach the ModelProto', async () => {
  const x = tfl.input({ shape: [4, 4, 3] });
  const model = tfl.model({
    inputs: x,
    outputs: apply(tfl.layers.globalAveragePooling2d({}), apply(tfl.layers.conv2d({ filters: 2, kernelSize: 3 }), x)),
  });
  const bytes = layersToOnnx(model, {
    opset: 18,
    inputName: 'pixels',
    producerVersion: '9.9.9',
    metadata: { labels: 'a,b' },
  });
  const m = decodeModel(bytes);
  assert.equal(m.ir_version, 9);
  assert.equal(m.producer_version, '9.9.9');
  assert.deepEqual(m.metadata_props, [{ key: 'labels', value: 'a,b' }]);
  const session = await ort.InferenceSession.create(bytes);
  for (const n of [1, 5]) {
    const y = await session.run({ pixels: new ort.Tensor('float32', pixels(n * 48, n), [n, 4, 4, 3]) });
    assert.deepEqual(y[session.outputNames[0]].dims, [n, 2]);
  }
  await session.release();
  assert.throws(() => layersToOnnx(model, { opset: 11 }), /opset 11 is not supported/);
});

test('an unsupported layer names itself and its type', () => {
  const x = tfl.input({ shape: [10, 3] });
  const y = apply(tfl.layers.conv1d({ filters: 2, kernelSize: 3, name: 'my_conv1d' }), x);
  assert.throws(() => layersToOnnx(tfl.model({ inputs: x, outputs: y })), {
    message: 'layer my_conv1d: type Conv1D is not supported by the ONNX converter',
  });
  const seq = tfl.input({ shape: [5, 2] });
  const lstm = apply(tfl.layers.lstm({ units: 3, name: 'my_lstm', recurrentInitializer: 'glorotNormal' }), seq);
  assert.throws(
    () => layersToOnnx(tfl.model({ inputs: seq, outputs: lstm })),
    /layer my_lstm: type LSTM is not supported/,
  );
});
