/**
 * Whole-tail gradient parity: a tail of each bundled network with graft's head and loss, compiled for ONNX Runtime,
 * against tf.variableGrads of the same tail (graph.runSegment, BatchNorm in inference mode) on TF.js's CPU backend,
 * on random cut activations, labels, class weights and dropout masks. The InceptionV3 tail runs on a 3x3 map instead
 * of 8x8 (its layers take any size), which keeps the CPU reference to seconds and puts every 'same' window on a border.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type LayersBase, loadBase } from '../base/base.ts';
import { layerIndex, poolIfSpatial, reapply, runSegment } from '../base/graph.ts';
import { weightFromGraph } from '../onnx/convert.ts';
import { initTf, tf, tfl } from '../tfjs/tf.ts';
import { registerGradientFixes } from '../tfjs/wasm-grad.ts';
import { compileTail } from './ort-train.ts';

const bases: LayersBase[] = [];

before(async () => {
  await initTf('cpu');
  // The reference is TF.js with the gradients graft registers when a tail trains (tfjs/wasm-grad.ts): its AvgPool
  // gradient follows the forward pass at the borders, as TF.js's own kernels do not.
  registerGradientFixes();
});

after(() => {
  for (const b of bases) b.model.dispose();
});

function random(n: number, seed: number, lo: number, hi: number): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return lo + ((s >>> 8) / 2 ** 24) * (hi - lo);
  });
}

function relErr(got: Float32Array, want: Float32Array): number {
  assert.equal(got.length, want.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  assert.ok(scale > 0, 'reference gradient is all zeros: the test would prove nothing');
  return diff / scale;
}

/**
 * Checks every weight's gradient and the loss of the tail (from, top] of `base` on an h × w map. `sparsity`: the
 * fraction of cut activations left at zero (InceptionV3's mixed9 output is about 94% zeros on images; dense random
 * input drives almost every ReLU of mixed10 below zero, and a weight whose ReLUs are all off has no gradient to check).
 */
async function tailParity(
  base: LayersBase,
  from: string,
  top: string,
  h: number,
  w: number,
  n: number,
  sparsity: number,
): Promise<void> {
  const model = base.model;
  const fromIdx = layerIndex(model, from);
  const topIdx = layerIndex(model, top);
  const layers = model.layers.slice(fromIdx + 1, topIdx + 1);
  const flags = layers.map((l) => l.trainable);
  for (const l of layers) l.trainable = true;
  try {
    const channels = (model.layers[fromIdx].outputShape as number[])[3];
    const input = tfl.input({ shape: [h, w, channels] });
    const tail = tfl.model({ inputs: input, outputs: poolIfSpatial(reapply(model, fromIdx, topIdx, input), 'pool') });
    const dim = tail.outputs[0].shape[1] as number;
    const C = 3;
    // Cut activations as a ReLU leaves them: non-negative, many zeros.
    const on = random(n * h * w * channels, 7, 0, 1);
    const x = random(n * h * w * channels, 1, 0, 2).map((v, i) => (on[i] < sparsity ? 0 : v));
    const mean = random(dim, 2, -0.2, 0.5);
    const invStd = random(dim, 3, 0.5, 2);
    const kernel = random(dim * C, 4, -0.1, 0.1);
    const bias = random(C, 5, -0.1, 0.1);
    const labels = new Float32Array(n * C);
    for (let r = 0; r < n; r++) labels[r * C + (r % C)] = (0.5 + r) / n; // class weight / batch size
    const mask = random(n * dim, 6, 0, 1).map((v) => (v < 0.2 ? 0 : 1 / 0.8));

    const compiled = await compileTail(tail, { threads: 1 });
    const stage = await compiled.stage({ mean, invStd, numClasses: C, kernel, bias });
    const got = await stage.step(stage.initial, x, n, labels, mask);
    await stage.release();
    await compiled.release();
    assert.equal(stage.weights.length, layers.flatMap((l) => l.trainableWeights).length);

    // TF.js reference: graft's head and loss written out, every trainable weight of the tail a variable.
    const before = tf.memory().numTensors;
    const variable = (t: tf.Tensor) => {
      const v = tf.variable(t);
      t.dispose();
      return v;
    };
    const K = variable(tf.tensor2d(kernel, [dim, C]));
    const B = variable(tf.tensor1d(bias));
    const vars = stage.weights.map((wi) => wi.variable.read() as tf.Variable);
    const { value, grads } = tf.variableGrads(() => {
      const y = runSegment(model, fromIdx, topIdx, tf.tensor4d(x, [n, h, w, channels]), () => false);
      const f = tf.mean(y, [1, 2]);
      const z = tf.mul(tf.mul(tf.sub(f, tf.tensor1d(mean)), tf.tensor1d(invStd)), tf.tensor2d(mask, [n, dim]));
      const logits = tf.add(tf.matMul(z, K), B);
      return tf.neg(tf.sum(tf.mul(tf.tensor2d(labels, [n, C]), tf.logSoftmax(logits)))) as tf.Scalar;
    }, [...vars, K, B]);
    const loss = value.dataSync()[0];
    const want = [...vars, K, B].map((v) => grads[v.name].dataSync() as Float32Array);
    tf.dispose([value, ...Object.values(grads), K, B]);
    assert.equal(tf.memory().numTensors, before, 'the reference leaks tensors');

    assert.ok(Math.abs(got.loss - loss) <= 1e-4 * Math.abs(loss), `loss ${got.loss} against ${loss}`);
    got.grads.forEach((g, i) => {
      const name =
        i < stage.weights.length ? stage.weights[i].name : i === want.length - 2 ? 'head kernel' : 'head bias';
      const inTf = i < stage.weights.length ? weightFromGraph(stage.weights[i], g) : g;
      const err = relErr(inTf, want[i]);
      assert.ok(err <= 1e-4, `${name}: max|ort - tfjs| / max|tfjs| = ${err.toExponential(2)}`);
    });
  } finally {
    layers.forEach((l, i) => {
      l.trainable = flags[i];
    });
  }
}

test('MobileNetV2 fine-tune tail (block_11_add → out_relu: stride-2 depthwise, residual adds, ReLU6, folded BatchNorm)', async () => {
  const base = (await loadBase('nsfw-mobilenet-v2')) as LayersBase;
  bases.push(base);
  await tailParity(base, 'block_11_add', 'out_relu', 6, 6, 3, 0.3);
});

test("InceptionV3 two-block tail (mixed8 → mixed10: BatchNorm without gamma, 1x3/3x1 convs, 'same' average pooling, concatenations)", async () => {
  const base = (await loadBase('nsfw-inception-v3')) as LayersBase;
  bases.push(base);
  await tailParity(base, 'mixed8', 'mixed10', 3, 3, 2, 0.9);
});
