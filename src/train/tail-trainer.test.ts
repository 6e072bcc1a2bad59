import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { layerIndex, runSegment } from '../base/graph.ts';
import { initTf, tf, tfl } from '../tfjs/tf.ts';
import { mulberry32 } from './random.ts';
import {
  capInvStd,
  disposeJointHead,
  type JointHead,
  reinitialiseLayers,
  type Tail,
  type TailData,
  tailPredict,
  trainTail,
} from './tail-trainer.ts';

before(async () => {
  await initTf('wasm');
});

/**
 * conv-BN-relu twice; cut after the first relu, so the tail is the second conv-BN-relu. `bare`: the second BatchNorm
 * has neither gamma nor beta (scale and center off), as Keras' InceptionV3 builds its BatchNorm layers.
 */
function network(bare = false): tfl.LayersModel {
  const init = (s: number) => tfl.initializers.glorotUniform({ seed: s });
  const input = tfl.input({ shape: [8, 8, 3], name: 'in' });
  let x = tfl.layers
    .conv2d({ filters: 6, kernelSize: 3, padding: 'same', name: 'conv_a', kernelInitializer: init(1) })
    .apply(input);
  x = tfl.layers.batchNormalization({ name: 'bn_a', momentum: 0.5 }).apply(x);
  x = tfl.layers.reLU({ name: 'relu_a' }).apply(x);
  x = tfl.layers
    .depthwiseConv2d({ kernelSize: 3, padding: 'same', name: 'dw_b', depthwiseInitializer: init(2) })
    .apply(x);
  x = tfl.layers.conv2d({ filters: 8, kernelSize: 1, name: 'conv_b', kernelInitializer: init(3) }).apply(x);
  x = tfl.layers
    .batchNormalization({ name: 'bn_b', momentum: 0.5, ...(bare ? { scale: false, center: false } : {}) })
    .apply(x);
  x = tfl.layers.reLU({ name: 'relu_b' }).apply(x);
  return tfl.model({ inputs: input, outputs: x as tfl.SymbolicTensor });
}

function tailOf(model: tfl.LayersModel, trainBn: boolean): Tail {
  const from = layerIndex(model, 'relu_a');
  const to = layerIndex(model, 'relu_b');
  return {
    layers: model.layers.slice(from + 1, to + 1),
    inputShape: [8, 8, 6],
    forward: (x, training) =>
      tf.mean(
        runSegment(model, from, to, x, (l) =>
          l.getClassName() === 'BatchNormalization' ? training && trainBn : training,
        ),
        [1, 2],
      ) as tf.Tensor2D,
  };
}

function dataset(n: number, seed: number): TailData {
  const rng = mulberry32(seed);
  const x = new Float32Array(n * 8 * 8 * 6);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % 2;
    // Class 1 lights up the first channels; noise everywhere.
    for (let p = 0; p < 64 * 6; p++) x[i * 384 + p] = Math.max(0, rng() - 0.5 + (y[i] === 1 && p % 6 < 3 ? 0.6 : 0));
  }
  return { x, n, y };
}

function zeroHead(dim: number, C: number): JointHead {
  return {
    kernel: tf.variable(tf.zeros([dim, C]), true),
    bias: tf.variable(tf.zeros([C]), true),
    mean: tf.zeros([dim]),
    invStd: tf.ones([dim]),
    dim,
    numClasses: C,
  };
}

const weightsOf = (model: tfl.LayersModel, name: string) =>
  Object.fromEntries(
    model.getLayer(name).weights.map((w) => [w.originalName.split('/').pop()!, Array.from(w.read().dataSync())]),
  );

async function run(trainBn: boolean, bare = false) {
  const model = network(bare);
  const tail = tailOf(model, trainBn);
  const names = ['conv_a', 'bn_a', 'dw_b', 'conv_b', 'bn_b'];
  const before = Object.fromEntries(names.map((n) => [n, weightsOf(model, n)]));
  const head = zeroHead(8, 2);
  const tensors = tf.memory().numTensors;
  const r = await trainTail(tail, head, dataset(24, 1), dataset(12, 2), {
    lr: 0.01,
    epochs: 4,
    patience: 4,
    batchSize: 8,
    seed: 3,
  });
  assert.equal(tf.memory().numTensors, tensors, 'trainTail leaks tensors');
  const after = Object.fromEntries(names.map((n) => [n, weightsOf(model, n)]));
  return { model, tail, head, before, after, r };
}

test('frozen layers stay bit-identical, tail weights move, BatchNorm statistics frozen in inference mode', async () => {
  const { model, before, after, r, head } = await run(false);
  assert.ok(r.history.length >= 1 && r.bestEpoch >= 1);
  assert.deepEqual(after.conv_a, before.conv_a);
  assert.deepEqual(after.bn_a, before.bn_a);
  assert.notDeepEqual(after.conv_b.kernel, before.conv_b.kernel);
  assert.notDeepEqual(after.dw_b.depthwise_kernel, before.dw_b.depthwise_kernel);
  assert.notDeepEqual(after.bn_b.gamma, before.bn_b.gamma, 'gamma still trains in inference mode');
  assert.notDeepEqual(after.bn_b.beta, before.bn_b.beta);
  assert.deepEqual(after.bn_b.moving_mean, before.bn_b.moving_mean);
  assert.deepEqual(after.bn_b.moving_variance, before.bn_b.moving_variance);
  disposeJointHead(head);
  model.dispose();
});

test('trainBn: BatchNorm moving statistics of the tail update, frozen layers still untouched', async () => {
  const { model, before, after, head } = await run(true);
  assert.deepEqual(after.conv_a, before.conv_a);
  assert.deepEqual(after.bn_a, before.bn_a);
  assert.notDeepEqual(after.bn_b.moving_mean, before.bn_b.moving_mean);
  assert.notDeepEqual(after.bn_b.moving_variance, before.bn_b.moving_variance);
  disposeJointHead(head);
  model.dispose();
});

test('BatchNorm without gamma and beta: runSegment matches the layer in inference mode and its moving-average rule in training mode', () => {
  const model = network(true);
  const bn = model.getLayer('bn_b');
  const rng = mulberry32(9);
  // Non-trivial moving statistics, so a wrong mean, variance or epsilon shows.
  const mm = Float32Array.from({ length: 8 }, () => rng() - 0.5);
  const mv = Float32Array.from({ length: 8 }, () => 0.2 + rng());
  bn.setWeights([tf.tensor1d(mm), tf.tensor1d(mv)]);
  const x = tf.tensor4d(
    Float32Array.from({ length: 3 * 8 * 8 * 6 }, () => rng() * 2 - 1),
    [3, 8, 8, 6],
  );
  const from = layerIndex(model, 'relu_a');
  const to = layerIndex(model, 'relu_b');
  const pre = tf.tidy(() => model.getLayer('conv_b').apply(model.getLayer('dw_b').apply(x)) as tf.Tensor);
  const ref = tf.tidy(() => model.getLayer('relu_b').apply(bn.apply(pre, { training: false })) as tf.Tensor);
  const got = tf.tidy(() => runSegment(model, from, to, x, () => false));
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(got, ref))).dataSync()[0]);
  assert.ok(diff < 1e-5, `inference differs from the layer by ${diff}`);
  assert.ok(tf.tidy(() => tf.max(ref).dataSync()[0]) > 0.1, 'the reference is not all zeros');
  // Training mode: one forward pass moves the statistics halfway (momentum 0.5) to the batch moments.
  const { mean, variance } = tf.tidy(() => tf.moments(pre, [0, 1, 2]));
  tf.dispose(tf.tidy(() => runSegment(model, from, to, x, () => true)));
  const [m2, v2] = bn.getWeights().map((w) => w.dataSync());
  const bm = mean.dataSync();
  const bv = variance.dataSync();
  for (let c = 0; c < 8; c++) {
    assert.ok(Math.abs(m2[c] - (mm[c] + bm[c]) / 2) < 1e-5, `moving mean ${c}`);
    assert.ok(Math.abs(v2[c] - (mv[c] + bv[c]) / 2) < 1e-5, `moving variance ${c}`);
  }
  tf.dispose([x, pre, ref, got, mean, variance]);
  model.dispose();
});

test('BatchNorm without gamma and beta trains (InceptionV3-style tails): weights move, statistics frozen unless trainBn', async () => {
  const frozen = await run(false, true);
  assert.deepEqual(Object.keys(frozen.before.bn_b).sort(), ['moving_mean', 'moving_variance']);
  assert.ok(frozen.r.bestEpoch >= 1, 'training improved on the start');
  assert.notDeepEqual(frozen.after.conv_b.kernel, frozen.before.conv_b.kernel);
  assert.deepEqual(frozen.after.bn_b, frozen.before.bn_b);
  assert.deepEqual(frozen.after.conv_a, frozen.before.conv_a);
  const moving = await run(true, true);
  assert.notDeepEqual(moving.after.bn_b.moving_mean, moving.before.bn_b.moving_mean);
  assert.notDeepEqual(moving.after.bn_b.moving_variance, moving.before.bn_b.moving_variance);
  assert.deepEqual(moving.after.bn_a, moving.before.bn_a);
  for (const r of [frozen, moving]) {
    disposeJointHead(r.head);
    r.model.dispose();
  }
});

test('same seed, same weights; best epoch restored', async () => {
  const a = await run(false);
  const b = await run(false);
  assert.deepEqual(a.after.conv_b, b.after.conv_b);
  assert.deepEqual(Array.from(a.head.kernel.dataSync()), Array.from(b.head.kernel.dataSync()));
  // The weights held at the end score the best epoch's validation loss.
  const val = dataset(12, 2);
  const p = tailPredict(a.tail, a.head, val);
  let loss = 0;
  for (let i = 0; i < val.n; i++) loss -= Math.log(p[i * 2 + val.y[i]]);
  assert.ok(Math.abs(loss / val.n - a.r.history[a.r.bestEpoch - 1].valLoss!) < 1e-4);
  for (const x of [a, b]) {
    disposeJointHead(x.head);
    x.model.dispose();
  }
});

test('the starting weights compete as epoch 0: training that only makes things worse leaves everything as it was', async () => {
  const model = network();
  const tail = tailOf(model, false);
  const head = zeroHead(8, 2);
  const before = weightsOf(model, 'conv_b');
  // A learning rate this large throws every weight far off: no epoch beats the start on validation loss.
  const r = await trainTail(tail, head, dataset(24, 1), dataset(12, 2), {
    lr: 1000,
    epochs: 3,
    patience: 2,
    batchSize: 8,
    seed: 3,
  });
  assert.equal(r.bestEpoch, 0);
  assert.ok(r.start && Math.abs(r.start.valLoss - Math.log(2)) < 1e-6, 'a zero head scores log 2 at the start');
  assert.deepEqual(weightsOf(model, 'conv_b'), before);
  assert.ok(Array.from(head.kernel.dataSync()).every((v) => v === 0));
  disposeJointHead(head);
  model.dispose();
});

test('capInvStd: no feature scaled up more than 10x the median one; constant features stay at 0', () => {
  const inv = Float32Array.from([0, 1, 2, 3, 4, 5, 1e5]);
  // Median of the non-zero entries [1, 2, 3, 4, 5, 1e5] taken at index 3: 4.
  assert.deepEqual(Array.from(capInvStd(inv)), [0, 1, 2, 3, 4, 5, 40]);
  assert.deepEqual(Array.from(capInvStd(new Float32Array(3))), [0, 0, 0]);
});

test('reinitialise: Glorot kernels from the seed, BatchNorm as the identity', () => {
  const m1 = network();
  const m2 = network();
  const layers = (m: tfl.LayersModel) => tailOf(m, false).layers;
  const pretrained = weightsOf(m1, 'conv_b').kernel;
  reinitialiseLayers(layers(m1), 9);
  reinitialiseLayers(layers(m2), 9);
  const k = weightsOf(m1, 'conv_b').kernel;
  assert.notDeepEqual(k, pretrained);
  assert.deepEqual(k, weightsOf(m2, 'conv_b').kernel);
  const limit = Math.sqrt(6 / (6 + 8));
  assert.ok(k.every((v) => Math.abs(v) <= limit) && k.some((v) => Math.abs(v) > limit / 2));
  const bn = weightsOf(m1, 'bn_b');
  assert.ok(bn.gamma.every((v) => v === 1) && bn.moving_variance.every((v) => v === 1));
  assert.ok(bn.beta.every((v) => v === 0) && bn.moving_mean.every((v) => v === 0));
  m1.dispose();
  m2.dispose();
});
