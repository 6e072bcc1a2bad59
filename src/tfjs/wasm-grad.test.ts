/**
 * The WASM gradient kernels against TF.js's CPU backend, whose scalar-loop kernels serve as the reference: each case
 * builds the same seeded random inputs on both backends, differentiates through public ops, and compares.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { loadLayersBase } from '../base/base.ts';
// The CPU backend is the reference these kernels are checked against.
import '@tensorflow/tfjs-backend-cpu';
import { initTf, tf, tfl } from './tf.ts';
import { registerWasmGradients, WASM_GRADIENT_KERNELS } from './wasm-grad.ts';

type Shape = number[];
type PadArg = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

/** mulberry32: small, seedable, and the same stream on every run, so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Values in [-1, 1) without exact zeros, so no gradient entry can agree by both being zero. */
function randomValues(shape: Shape, seed: number): Float32Array {
  const next = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (next() * 2 - 1) * 0.999 + (next() < 0.5 ? -0.001 : 0.001);
  return v;
}

function rand(shape: Shape, seed: number): tf.Tensor {
  return tf.tensor(randomValues(shape, seed), shape);
}

/** Runs `fn` on WASM then on CPU, returning the data of its outputs from each; nothing is left allocated. */
async function onBoth(fn: () => tf.Tensor[]): Promise<{ wasm: Float32Array[]; cpu: Float32Array[] }> {
  const run = () => {
    const outs = tf.tidy(fn);
    const data = outs.map((t) => t.dataSync() as Float32Array);
    tf.dispose(outs);
    return data;
  };
  assert.equal(tf.getBackend(), 'wasm');
  const wasm = run();
  await tf.setBackend('cpu');
  try {
    return { wasm, cpu: run() };
  } finally {
    await tf.setBackend('wasm');
  }
}

function relError(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  assert.ok(scale > 0, 'reference gradient is all zeros: the case tests nothing');
  return diff / scale;
}

function assertClose(r: { wasm: Float32Array[]; cpu: Float32Array[] }, what: string[], tol = 1e-4): void {
  r.cpu.forEach((ref, i) => {
    const e = relError(r.wasm[i], ref);
    assert.ok(e <= tol, `${what[i]}: relative error ${e.toExponential(2)} > ${tol}`);
  });
}

before(async () => {
  await initTf('wasm');
  registerWasmGradients();
});

describe('registerWasmGradients', () => {
  test('registers the missing kernels once and is idempotent', () => {
    const fns = WASM_GRADIENT_KERNELS.map((k) => tf.getKernel(k, 'wasm')?.kernelFunc);
    assert.ok(fns.every((f) => typeof f === 'function'));
    registerWasmGradients();
    registerWasmGradients();
    assert.deepEqual(
      WASM_GRADIENT_KERNELS.map((k) => tf.getKernel(k, 'wasm')?.kernelFunc),
      fns,
    );
  });
});

interface ConvCase {
  batch: number;
  h: number;
  w: number;
  ci: number;
  co: number;
  k: number;
  stride: number | [number, number];
  pad: PadArg;
}

const convCases: ConvCase[] = [
  { batch: 1, h: 7, w: 5, ci: 3, co: 4, k: 1, stride: 1, pad: 'same' },
  { batch: 3, h: 9, w: 8, ci: 5, co: 2, k: 1, stride: 2, pad: 'valid' },
  { batch: 3, h: 8, w: 11, ci: 4, co: 6, k: 3, stride: 1, pad: 'same' },
  { batch: 1, h: 9, w: 9, ci: 3, co: 5, k: 3, stride: 2, pad: 'same' },
  { batch: 1, h: 10, w: 10, ci: 3, co: 5, k: 3, stride: 2, pad: 'same' },
  { batch: 3, h: 10, w: 7, ci: 2, co: 3, k: 3, stride: 2, pad: 'valid' },
  { batch: 1, h: 6, w: 9, ci: 3, co: 4, k: 3, stride: 1, pad: 1 },
  {
    batch: 1,
    h: 9,
    w: 8,
    ci: 3,
    co: 4,
    k: 3,
    stride: 2,
    pad: [
      [0, 0],
      [1, 0],
      [0, 2],
      [0, 0],
    ],
  },
  { batch: 1, h: 11, w: 13, ci: 2, co: 3, k: 5, stride: 2, pad: 'same' },
  { batch: 1, h: 13, w: 12, ci: 3, co: 2, k: 7, stride: 1, pad: 'valid' },
  { batch: 3, h: 15, w: 14, ci: 2, co: 3, k: 7, stride: 2, pad: 'same' },
  { batch: 3, h: 9, w: 10, ci: 3, co: 2, k: 3, stride: [2, 1], pad: 'same' },
  { batch: 3, h: 5, w: 6, ci: 7, co: 9, k: 1, stride: 1, pad: 'valid' },
  { batch: 2, h: 7, w: 6, ci: 3, co: 4, k: 1, stride: 1, pad: 1 },
  { batch: 2, h: 8, w: 9, ci: 3, co: 4, k: 2, stride: 2, pad: 'same' },
];

const label = (c: object) => JSON.stringify(c).replace(/"/g, '');

describe('Conv2D gradients match the CPU backend', () => {
  convCases.forEach((c, n) => {
    test(label(c), async () => {
      const r = await onBoth(() => {
        const x = rand([c.batch, c.h, c.w, c.ci], 100 + n);
        const f = rand([c.k, c.k, c.ci, c.co], 200 + n);
        const probe = (a: tf.Tensor4D) => tf.conv2d(a, f as tf.Tensor4D, c.stride, c.pad as 'same');
        const weights = rand(probe(x as tf.Tensor4D).shape, 300 + n);
        const loss = (a: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad as 'same'), weights));
        return tf.grads(loss)([x, f]);
      });
      assertClose(r, ['dx', 'dfilter']);
    });
  });

  test('fused conv2d with bias and relu (the path tfjs-layers takes)', async () => {
    const r = await onBoth(() => {
      const x = rand([2, 9, 7, 3], 1);
      const f = rand([3, 3, 3, 4], 2);
      const b = rand([4], 3);
      const weights = rand([2, 5, 4, 4], 4);
      const loss = (x1: tf.Tensor, f1: tf.Tensor, b1: tf.Tensor) =>
        tf.sum(
          tf.mul(
            tf.fused.conv2d({
              x: x1 as tf.Tensor4D,
              filter: f1 as tf.Tensor4D,
              bias: b1,
              strides: 2,
              pad: 'same',
              activation: 'relu',
            }),
            weights,
          ),
        );
      return tf.grads(loss)([x, f, b]);
    });
    assertClose(r, ['dx', 'dfilter', 'dbias']);
  });

  test('NCHW input gradient through the kernel directly', async () => {
    for (const [k, stride] of [
      [1, 1],
      [3, 2],
    ] as const) {
      const r = await onBoth(() => {
        const dy = rand([2, 4, 5, 4], 20 + k);
        const filter = rand([k, k, 3, 4], 21 + k);
        const attrs = {
          strides: stride,
          pad: 'same',
          dataFormat: 'NCHW',
          inputShape: [2, 3, 4 * stride + 1, 4 * stride],
        };
        return [tf.engine().runKernel('Conv2DBackpropInput', { dy, filter }, attrs as never) as tf.Tensor];
      });
      assertClose(r, [`dx ${k}x${k} stride ${stride}`]);
    }
  });

  test('conv2dTranspose, the public op on the same kernel', async () => {
    const r = await onBoth(() => {
      const x = rand([2, 4, 5, 6], 22);
      const f = rand([3, 3, 3, 6], 23);
      return [
        tf.conv2dTranspose(x as tf.Tensor4D, f as tf.Tensor4D, [2, 8, 10, 3], 2, 'same'),
        tf.conv2dTranspose(x as tf.Tensor4D, f as tf.Tensor4D, [2, 9, 11, 3], 2, 'valid'),
      ];
    });
    assertClose(r, ['same', 'valid']);
  });

  test('NCHW filter gradient through the kernel directly', async () => {
    const r = await onBoth(() => {
      const x = rand([2, 3, 9, 8], 5);
      const dy = rand([2, 4, 5, 4], 6);
      const attrs = { strides: 2, pad: 'same', dataFormat: 'NCHW', filterShape: [3, 3, 3, 4] };
      return [tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, attrs as never) as tf.Tensor];
    });
    assertClose(r, ['dfilter']);
  });
});

interface DepthwiseCase {
  batch: number;
  h: number;
  w: number;
  c: number;
  mult: number;
  k: number;
  stride: number | [number, number];
  pad: PadArg;
}

const depthwiseCases: DepthwiseCase[] = [
  { batch: 1, h: 8, w: 8, c: 4, mult: 1, k: 3, stride: 1, pad: 'same' },
  { batch: 3, h: 9, w: 7, c: 3, mult: 2, k: 3, stride: 2, pad: 'same' },
  { batch: 1, h: 10, w: 10, c: 5, mult: 1, k: 3, stride: 2, pad: 'same' },
  { batch: 3, h: 11, w: 9, c: 4, mult: 1, k: 3, stride: 2, pad: 'valid' },
  { batch: 1, h: 7, w: 6, c: 3, mult: 2, k: 1, stride: 1, pad: 'valid' },
  { batch: 3, h: 7, w: 9, c: 3, mult: 1, k: 1, stride: 2, pad: 'same' },
  { batch: 1, h: 8, w: 7, c: 2, mult: 2, k: 3, stride: 1, pad: 1 },
  { batch: 1, h: 12, w: 13, c: 3, mult: 1, k: 5, stride: 2, pad: 'same' },
  { batch: 3, h: 11, w: 10, c: 2, mult: 2, k: 7, stride: 1, pad: 'same' },
  { batch: 1, h: 15, w: 13, c: 2, mult: 1, k: 7, stride: 2, pad: 'valid' },
  { batch: 3, h: 8, w: 11, c: 3, mult: 2, k: 3, stride: [1, 2], pad: 'valid' },
];

describe('DepthwiseConv2D gradients match the CPU backend', () => {
  depthwiseCases.forEach((c, n) => {
    test(label(c), async () => {
      const r = await onBoth(() => {
        const x = rand([c.batch, c.h, c.w, c.c], 400 + n);
        const f = rand([c.k, c.k, c.c, c.mult], 500 + n);
        const conv = (a: tf.Tensor, b: tf.Tensor) =>
          tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad as 'same');
        const weights = rand(conv(x, f).shape, 600 + n);
        return tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(a, b), weights)))([x, f]);
      });
      assertClose(r, ['dx', 'dfilter']);
    });
  });

  test('explicit asymmetric pads through the kernels directly', async () => {
    const pad = [
      [0, 0],
      [2, 0],
      [1, 2],
      [0, 0],
    ];
    const r = await onBoth(() => {
      const x = rand([2, 9, 8, 3], 7);
      const filter = rand([3, 3, 3, 2], 8);
      const dy = rand([2, 5, 5, 6], 9);
      const common = { strides: 2, pad, dilations: 1 };
      return [
        tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x, dy }, {
          ...common,
          filterShape: [3, 3, 3, 2],
        } as never) as tf.Tensor,
        tf.engine().runKernel('DepthwiseConv2dNativeBackpropInput', { dy, filter }, {
          ...common,
          inputShape: [2, 9, 8, 3],
        } as never) as tf.Tensor,
      ];
    });
    assertClose(r, ['dfilter', 'dx']);
  });

  test('dilations above 1 fail with a clear error', () => {
    const x = tf.ones([1, 7, 7, 2]);
    const dy = tf.ones([1, 3, 3, 2]);
    assert.throws(
      () =>
        tf.engine().runKernel('DepthwiseConv2dNativeBackpropFilter', { x, dy }, {
          strides: 1,
          pad: 'valid',
          dilations: 2,
          filterShape: [3, 3, 2, 1],
        } as never),
      /dilations \[2, 2\] are not supported/,
    );
    tf.dispose([x, dy]);
  });
});

describe('BatchNorm gradient', () => {
  test('matches the gradient of BatchNorm written out in elementary ops, on WASM and CPU', async () => {
    // With a scale, as every Keras BatchNormalization layer of the bases has: without one, tfjs-core's engine fails
    // before any gradient function runs (it tries to save the missing input for the backward pass).
    const eps = 1e-3;
    const names = ['x', 'mean', 'variance', 'scale', 'offset'];
    const r = await onBoth(() => {
      const x = rand([2, 5, 4, 6], 30);
      const mean = rand([6], 31);
      const variance = tf.add(tf.abs(rand([6], 32)), 0.1);
      const scale = rand([6], 33);
      const offset = rand([6], 34);
      const weights = rand([2, 5, 4, 6], 35);
      const fused = (a: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: tf.Tensor, o: tf.Tensor) =>
        tf.sum(tf.mul(tf.batchNorm(a, m, v, o, s, eps), weights));
      const plain = (a: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: tf.Tensor, o: tf.Tensor) =>
        tf.sum(tf.mul(tf.add(tf.mul(tf.mul(tf.sub(a, m), tf.rsqrt(tf.add(v, eps))), s), o), weights));
      const inputs = [x, mean, variance, scale, offset];
      return [...tf.grads(fused)(inputs), ...tf.grads(plain)(inputs)];
    });
    for (const [backend, data] of Object.entries(r)) {
      names.forEach((n, i) => {
        const e = relError(data[i], data[i + names.length]);
        assert.ok(e <= 1e-4, `${backend} d${n}: relative error ${e.toExponential(2)}`);
      });
    }
  });
});

describe('AvgPool gradient', () => {
  test("'same' padding: the gradient of the forward pass (window sums over the pixels covered), on WASM and CPU", async () => {
    const r = await onBoth(() => {
      const x = rand([2, 7, 6, 3], 40);
      const w = rand([2, 4, 3, 3], 41);
      const pooled = (a: tf.Tensor) => tf.sum(tf.mul(tf.avgPool(a as tf.Tensor4D, 3, 2, 'same'), w));
      // The same forward written as a sum over the window divided by the pixels it covers, in ops whose gradients
      // TF.js has right: the reference.
      const ones = tf.ones([3, 3, 3, 1]) as tf.Tensor4D;
      const sum = (a: tf.Tensor) => tf.depthwiseConv2d(a as tf.Tensor4D, ones, 2, 'same');
      const written = (a: tf.Tensor) => tf.sum(tf.mul(tf.div(sum(a), sum(tf.onesLike(a))), w));
      return [tf.grad(pooled)(x), tf.grad(written)(x), pooled(x), written(x)];
    });
    for (const [backend, [got, want, y1, y2]] of Object.entries(r)) {
      assert.ok(relError(y1, y2) <= 1e-5, `${backend}: the reference is not the same forward pass`);
      const e = relError(got, want);
      assert.ok(e <= 1e-5, `${backend} dx: relative error ${e.toExponential(2)}`);
    }
  });
});

describe('other gradients the bundled bases need, on WASM', () => {
  test('average and max pooling, zero padding, ReLU6', async () => {
    const r = await onBoth(() => {
      const x = rand([2, 9, 8, 3], 10);
      // Padded to 10x9: 'same' pooling gives 5x5, 'valid' 4x4.
      const w1 = rand([2, 5, 5, 3], 11);
      const w2 = rand([2, 4, 4, 3], 12);
      const loss = (a: tf.Tensor) => {
        const p = tf.pad(tf.mul(a, 4), [
          [0, 0],
          [0, 1],
          [0, 1],
          [0, 0],
        ]) as tf.Tensor4D;
        const r6 = tf.relu6(p);
        const avg = tf.avgPool(r6, 3, 2, 'same');
        const max = tf.maxPool(r6, 3, 2, 'valid');
        return tf.add(tf.sum(tf.mul(avg, w1)), tf.sum(tf.mul(max, w2)));
      };
      return [tf.grad(loss)(x)];
    });
    assertClose(r, ['dx']);
  });
});

/**
 * Rebuilds the layers of `model` from above `cut` up to `last` on a fresh input of the given spatial size, sharing
 * their weights. The CPU reference computes filter gradients at only a few million multiply-adds per second, and
 * tfjs-layers' convolutions (fused ops with a custom gradient) compute every filter gradient on each backward pass,
 * so the full network at 224x224 would take minutes there; the top blocks on a small feature map take seconds.
 */
function slice(model: tfl.LayersModel, cut: string, last: string, height: number, width: number): tfl.LayersModel {
  const cutLayer = model.getLayer(cut);
  const channels = (cutLayer.outputShape as number[])[3];
  const input = tfl.input({ shape: [height, width, channels] });
  const outputs = new Map<string, tfl.SymbolicTensor>([[cut, input]]);
  const layers = model.layers;
  for (const layer of layers.slice(layers.indexOf(cutLayer) + 1, layers.indexOf(model.getLayer(last)) + 1)) {
    const from = layer.inboundNodes[0].inboundLayers.map((l) => outputs.get(l.name));
    if (from.some((t) => t === undefined)) throw new Error(`${layer.name} reads from below ${cut}`);
    const args = from.length === 1 ? from[0] : from;
    outputs.set(layer.name, layer.apply(args as tfl.SymbolicTensor) as tfl.SymbolicTensor);
  }
  return tfl.model({ inputs: input, outputs: outputs.get(last) as tfl.SymbolicTensor });
}

describe('bundled MobileNetV2', () => {
  test('top blocks: weight and input gradients match the CPU backend; no tensors leak', async () => {
    const base = await loadLayersBase('nsfw-mobilenet-v2');
    // Blocks 13-16 and Conv_1: stride-2 and stride-1 depthwise, pointwise convs, ZeroPadding2D, frozen-statistics
    // BatchNormalization, ReLU6 and residual Adds.
    const top = slice(base.model, 'block_12_add', 'out_relu', 8, 6);
    const names = ['block_13_depthwise', 'block_13_expand', 'block_15_project', 'block_16_depthwise', 'Conv_1'];
    const kernels = names.map((n) => top.getLayer(n).getWeights()[0] as tf.Variable);
    const step = () => {
      // Post-ReLU activations are non-negative; so are these.
      const x = tf.variable(tf.abs(rand([1, 8, 6, 96], 13)));
      const weights = rand([1, 4, 3, 1280], 14);
      const loss = () => tf.sum(tf.mul(top.apply(x, { training: false }) as tf.Tensor, weights)) as tf.Scalar;
      const { grads } = tf.variableGrads(loss, [x, ...kernels]);
      const out = [...kernels.map((k) => grads[k.name]), grads[x.name]];
      x.dispose();
      return out;
    };
    const r = await onBoth(step);
    assertClose(r, [...names, 'input']);

    const count = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) tf.dispose(tf.tidy(step));
    assert.equal(tf.memory().numTensors, count, 'tensors leaked across gradient steps');
  });
});

describe('leaks', () => {
  test('repeated conv and depthwise gradients leave no tensors behind', () => {
    const x = rand([2, 9, 9, 3], 15);
    const f = rand([3, 3, 3, 4], 16);
    const d = rand([3, 3, 3, 2], 17);
    const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
      tf.add(
        tf.sum(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same')),
        tf.sum(tf.depthwiseConv2d(a as tf.Tensor4D, c as tf.Tensor4D, 2, 'valid')),
      );
    tf.dispose(tf.grads(loss)([x, f, d]));
    const { numTensors, numBytes } = tf.memory();
    for (let i = 0; i < 5; i++) tf.dispose(tf.grads(loss)([x, f, d]));
    assert.equal(tf.memory().numTensors, numTensors);
    assert.equal(tf.memory().numBytes, numBytes);
    tf.dispose([x, f, d]);
  });
});
