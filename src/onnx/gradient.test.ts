/**
 * Gradient parity, one layer type at a time: the converter's graph (trainable weights as inputs) with the backward
 * graph added, run on ONNX Runtime, against tf.variableGrads on TF.js's CPU backend. The loss is a random linear
 * functional of the model's output, sum(y · r), so every output element sends a different gradient back. The input's
 * own gradient is compared too, which exercises each rule's input path (a tail's first layer never needs it).
 */
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import * as ort from 'onnxruntime-node';
import { convertLayers, weightFromGraph, weightToGraph } from './convert.ts';
import { addGradients, GradientError } from './gradient.ts';
import { AttrType, DataType, encodeModel } from './proto.ts';

type Layer = tfl.layers.Layer;
type ST = tfl.SymbolicTensor;

before(async () => {
  await tf.setBackend('cpu');
});

function random(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    out[i] = lo + ((s >>> 8) / 2 ** 24) * (hi - lo);
  }
  return out;
}

/** Every weight random (variances positive), so that BatchNorm folding and every weight's gradient are exercised. */
function randomizeWeights(model: tfl.LayersModel, seed: number): void {
  let k = seed;
  for (const layer of model.layers) {
    const ws = layer.getWeights();
    if (!ws.length) continue;
    layer.setWeights(
      ws.map((w, i) => {
        const variance = /moving_variance/.test(layer.weights[i].originalName);
        return tf.tensor(random(w.size, k++, variance ? 0.3 : -0.8, variance ? 1.5 : 0.8), w.shape);
      }),
    );
  }
}

interface Bn {
  gamma: { read(): tf.Tensor } | null;
  beta: { read(): tf.Tensor } | null;
  movingMean: { read(): tf.Tensor };
  movingVariance: { read(): tf.Tensor };
  epsilon: number;
}

/**
 * TF.js's 'same' average pooling divides each window by the number of real pixels under it, but its AvgPoolGrad
 * kernels (CPU and WASM) divide by the window size everywhere, so its gradient is not that of its own forward pass at
 * the borders. The reference is the same forward written as a sum over the window (a depthwise convolution with
 * ones) divided by the pixel count, which TF.js differentiates exactly.
 */
function samePaddedAverage(layer: Layer, x: tf.Tensor): tf.Tensor {
  const c = layer.getConfig() as { poolSize: [number, number]; strides: [number, number] };
  const channels = x.shape[3] as number;
  const ones = tf.ones([...c.poolSize, channels, 1]) as tf.Tensor4D;
  const sum = (t: tf.Tensor) => tf.depthwiseConv2d(t as tf.Tensor4D, ones, c.strides, 'same');
  const y = tf.div(sum(x), sum(tf.onesLike(tf.slice(x, 0, 1))));
  const own = layer.apply(x) as tf.Tensor;
  assert.ok(tf.max(tf.abs(tf.sub(y, own))).dataSync()[0] < 1e-5, 'the reference is not the layer');
  return y;
}

/**
 * The model's forward pass in inference mode, layer by layer, with BatchNorm layers that lack gamma or beta computed
 * with ones and zeros standing in (TF.js cannot differentiate those layers as they are) and 'same' average pooling as
 * below.
 */
function forward(model: tfl.LayersModel, x: tf.Tensor): tf.Tensor {
  const values = new Map<ST, tf.Tensor>([[model.inputs[0], x]]);
  const pending = model.layers.filter((l) => l.getClassName() !== 'InputLayer');
  for (const layer of pending) {
    const node = (layer as unknown as { inboundNodes: { inputTensors: ST[]; outputTensors: ST[] }[] }).inboundNodes[0];
    const ins = node.inputTensors.map((t) => values.get(t)!);
    let y: tf.Tensor;
    const bn = layer as unknown as Bn;
    if (layer.getClassName() === 'BatchNormalization' && (!bn.gamma || !bn.beta)) {
      const mean = bn.movingMean.read();
      y = tf.batchNorm(
        ins[0],
        mean,
        bn.movingVariance.read(),
        bn.beta ? bn.beta.read() : tf.zerosLike(mean),
        bn.gamma ? bn.gamma.read() : tf.onesLike(mean),
        bn.epsilon,
      );
    } else if (
      layer.getClassName() === 'AveragePooling2D' &&
      (layer.getConfig() as { padding: string }).padding === 'same'
    ) {
      y = samePaddedAverage(layer, ins[0]);
    } else y = layer.apply(ins.length === 1 ? ins[0] : ins, { training: false }) as tf.Tensor;
    values.set(node.outputTensors[0], y);
  }
  return values.get(model.outputs[0])!;
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

const info = (name: string, dims: (number | null)[]) => ({
  name,
  type: {
    tensor_type: {
      elem_type: DataType.FLOAT,
      shape: { dim: dims.map((d, i) => (d === null ? { dim_param: `${name}_${i}` } : { dim_value: d })) },
    },
  },
});

/** Builds in → layers → out, and checks every trainable weight's gradient and the input's. */
async function parity(
  inputShape: number[],
  build: (x: ST) => ST,
  opts: { n?: number; seed?: number; expectOps?: string[] } = {},
): Promise<void> {
  const n = opts.n ?? 3;
  const seed = opts.seed ?? 5;
  const input = tfl.input({ shape: inputShape, name: 'x' });
  const model = tfl.model({ inputs: input, outputs: build(input) });
  randomizeWeights(model, seed);
  const outShape = [n, ...(model.outputs[0].shape.slice(1) as number[])];
  const xData = random(n * inputShape.reduce((a, b) => a * b, 1), seed + 100, -2, 2);
  const rData = random(
    outShape.reduce((a, b) => a * b, 1),
    seed + 200,
  );

  // TF.js reference.
  const before = tf.memory().numTensors;
  const x0 = tf.tensor(xData, [n, ...inputShape]);
  const xVar = tf.variable(x0);
  x0.dispose();
  const r = tf.tensor(rData, outShape);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const { value, grads } = tf.variableGrads(
    () => tf.sum(tf.mul(forward(model, xVar), r)) as tf.Scalar,
    [...vars, xVar],
  );
  const want = new Map(Object.entries(grads).map(([k, t]) => [k, t.dataSync() as Float32Array]));
  tf.dispose([...Object.values(grads), value, xVar, r]);
  assert.equal(tf.memory().numTensors, before, 'the reference leaks tensors');

  // ONNX: the converter's graph + loss = ReduceSum(y · r) + the backward graph.
  const { model: m, weightInputs } = convertLayers(model, { trainableAsInputs: true });
  assert.equal(weightInputs.length, vars.length, 'every trainable weight is a graph input');
  const graph = m.graph;
  const y = graph.output[0].name;
  graph.input.push(info('r', [null, ...outShape.slice(1)]));
  graph.node.push(
    { op_type: 'Mul', input: [y, 'r'], output: ['yr'], name: 'yr', attribute: [] },
    {
      op_type: 'ReduceSum',
      input: ['yr'],
      output: ['loss'],
      name: 'loss',
      attribute: [{ name: 'keepdims', type: AttrType.INT, i: 0 }],
    },
  );
  const inputName = graph.input[0].name;
  const { graph: full, gradients } = addGradients(graph, {
    loss: 'loss',
    wrt: [...weightInputs.map((w) => w.name), inputName],
  });
  for (const op of opts.expectOps ?? [])
    assert.ok(
      full.node.some((nd) => nd.op_type === op),
      `the backward graph uses ${op}`,
    );
  const session = await ort.InferenceSession.create(encodeModel({ ...m, graph: full }), { logSeverityLevel: 3 });
  try {
    const feeds: Record<string, ort.Tensor> = {
      [inputName]: new ort.Tensor('float32', xData, [n, ...inputShape]),
      r: new ort.Tensor('float32', rData, outShape),
    };
    for (const w of weightInputs)
      feeds[w.name] = new ort.Tensor('float32', weightToGraph(w, w.variable.read().dataSync() as Float32Array), w.dims);
    const out = await session.run(feeds, gradients);
    const names = [...weightInputs.map((w) => (w.variable.read() as tf.Variable).name), xVar.name];
    gradients.forEach((g, i) => {
      const got = out[g].data as Float32Array;
      const err = relErr(i < weightInputs.length ? weightFromGraph(weightInputs[i], got) : got, want.get(names[i])!);
      assert.ok(
        err <= 1e-4,
        `${model.layers.map((l) => l.getClassName()).join('>')}: gradient of ${i < weightInputs.length ? weightInputs[i].name : 'the input'}: ${err}`,
      );
    });
  } finally {
    await session.release();
    model.dispose();
  }
}

const L = tfl.layers;
const on = (layer: Layer, x: ST | ST[]) => layer.apply(x) as ST;

test('Conv2D: 3x3 same with bias and relu; stride 2 valid on an odd size; stride 2 same; 5x3 kernel, strides 2x1', async () => {
  await parity([7, 7, 3], (x) => on(L.conv2d({ filters: 4, kernelSize: 3, padding: 'same', activation: 'relu' }), x), {
    expectOps: ['ConvTranspose'],
  });
  await parity([9, 9, 2], (x) => on(L.conv2d({ filters: 3, kernelSize: 3, strides: 2, useBias: false }), x));
  await parity([8, 8, 2], (x) => on(L.conv2d({ filters: 3, kernelSize: 3, strides: 2, padding: 'same' }), x));
  await parity([9, 6, 2], (x) => on(L.conv2d({ filters: 2, kernelSize: [5, 3], strides: [2, 1], padding: 'same' }), x));
});

test('Conv2D 1x1 stride 1: dW as a per-image MatMul (large maps) and as one GEMM (many channels); stride 2', async () => {
  await parity([5, 5, 6], (x) => on(L.conv2d({ filters: 4, kernelSize: 1, useBias: false }), x), {
    expectOps: ['MatMul'],
  });
  await parity([2, 2, 12], (x) => on(L.conv2d({ filters: 10, kernelSize: 1 }), x), { expectOps: ['Gemm'] });
  await parity([5, 5, 3], (x) => on(L.conv2d({ filters: 4, kernelSize: 1, strides: 2 }), x));
});

test('DepthwiseConv2D: same, stride 2 after ZeroPadding2D (absorbed into the pads), depth multiplier 2; SeparableConv2D', async () => {
  await parity([6, 6, 4], (x) => on(L.depthwiseConv2d({ kernelSize: 3, padding: 'same' }), x));
  await parity([8, 8, 3], (x) =>
    on(
      L.depthwiseConv2d({ kernelSize: 3, strides: 2, useBias: false }),
      on(
        L.zeroPadding2d({
          padding: [
            [0, 1],
            [0, 1],
          ],
        }),
        x,
      ),
    ),
  );
  await parity([5, 5, 2], (x) => on(L.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2, padding: 'same' }), x));
  await parity([7, 7, 2], (x) => on(L.depthwiseConv2d({ kernelSize: [3, 2], depthMultiplier: 3, strides: 2 }), x));
  await parity([6, 6, 3], (x) => on(L.separableConv2d({ filters: 4, kernelSize: 3, padding: 'same' }), x));
});

test('BatchNormalization in inference mode: folded into a conv and a dense layer, standalone, without gamma or beta', async () => {
  await parity([5, 5, 3], (x) =>
    on(
      L.reLU({ maxValue: 6 }),
      on(L.batchNormalization({}), on(L.conv2d({ filters: 4, kernelSize: 3, useBias: false }), x)),
    ),
  );
  await parity([5, 5, 3], (x) =>
    on(
      L.batchNormalization({ scale: false, center: false }),
      on(L.conv2d({ filters: 4, kernelSize: 1, padding: 'same' }), x),
    ),
  );
  await parity([5, 5, 3], (x) => on(L.batchNormalization({}), on(L.reLU({}), x)));
  await parity([5, 5, 3], (x) => on(L.batchNormalization({ scale: false }), on(L.reLU({}), x)));
  await parity([6], (x) => on(L.batchNormalization({}), on(L.dense({ units: 4 }), x)));
});

test('activations: ReLU, ReLU6 (Clip), LeakyReLU, sigmoid, tanh, softmax', async () => {
  await parity([4, 4, 3], (x) => on(L.reLU({ maxValue: 6 }), on(L.conv2d({ filters: 3, kernelSize: 1 }), x)), {
    expectOps: ['Clip', 'Less', 'Greater'],
  });
  await parity([4, 4, 3], (x) => on(L.leakyReLU({ alpha: 0.2 }), on(L.conv2d({ filters: 3, kernelSize: 1 }), x)));
  for (const activation of ['sigmoid', 'tanh', 'softmax'] as const)
    await parity([6], (x) => on(L.dense({ units: 5, activation }), x));
});

test('Add, Concatenate and a residual block (a value read twice sums its gradients)', async () => {
  await parity([5, 5, 4], (x) => {
    const a = on(L.conv2d({ filters: 4, kernelSize: 1 }), x);
    const b = on(L.reLU({ maxValue: 6 }), on(L.depthwiseConv2d({ kernelSize: 3, padding: 'same' }), a));
    return on(L.add(), [a, on(L.conv2d({ filters: 4, kernelSize: 1 }), b)]);
  });
  await parity([4, 4, 2], (x) =>
    on(L.concatenate({ axis: -1 }), [
      on(L.conv2d({ filters: 3, kernelSize: 1 }), x),
      on(L.conv2d({ filters: 2, kernelSize: 3, padding: 'same' }), x),
    ]),
  );
});

test('pooling: max and average, same and valid (average over real pixels only), global, ZeroPadding2D as a Pad', async () => {
  await parity(
    [7, 7, 3],
    (x) => on(L.maxPooling2d({ poolSize: 3, strides: 2 }), on(L.conv2d({ filters: 3, kernelSize: 1 }), x)),
    {
      expectOps: ['ScatterElements'],
    },
  );
  await parity([6, 6, 2], (x) =>
    on(L.maxPooling2d({ poolSize: 3, strides: 1, padding: 'same' }), on(L.conv2d({ filters: 2, kernelSize: 1 }), x)),
  );
  await parity([7, 7, 2], (x) =>
    on(
      L.averagePooling2d({ poolSize: 3, strides: 1, padding: 'same' }),
      on(L.conv2d({ filters: 2, kernelSize: 1 }), x),
    ),
  );
  await parity([8, 8, 2], (x) =>
    on(L.averagePooling2d({ poolSize: 2, strides: 2 }), on(L.conv2d({ filters: 2, kernelSize: 1 }), x)),
  );
  await parity([5, 5, 3], (x) => on(L.globalAveragePooling2d({}), on(L.conv2d({ filters: 4, kernelSize: 3 }), x)));
  await parity([5, 5, 3], (x) => on(L.globalMaxPooling2d({}), on(L.conv2d({ filters: 4, kernelSize: 3 }), x)));
  await parity(
    [4, 4, 2],
    (x) =>
      on(
        L.averagePooling2d({ poolSize: 2, strides: 2 }),
        on(L.zeroPadding2d({ padding: 1 }), on(L.conv2d({ filters: 2, kernelSize: 1 }), x)),
      ),
    { expectOps: ['Slice'] },
  );
});

test('Dense on flattened and on spatial input (MatMul), Flatten, Reshape', async () => {
  await parity([3, 3, 2], (x) =>
    on(L.dense({ units: 4 }), on(L.flatten(), on(L.conv2d({ filters: 2, kernelSize: 1 }), x))),
  );
  await parity([3, 3, 2], (x) => on(L.dense({ units: 4, activation: 'relu' }), x), { expectOps: ['MatMul'] });
  await parity([3, 3, 2], (x) => on(L.dense({ units: 3 }), on(L.reshape({ targetShape: [9, 2] }), x)));
});

test('an operator without a backward rule is named', () => {
  const graph = {
    name: 'g',
    node: [
      { op_type: 'Erf', input: ['x'], output: ['y'], name: 'my_erf', attribute: [] },
      {
        op_type: 'ReduceSum',
        input: ['y'],
        output: ['loss'],
        name: 'loss',
        attribute: [{ name: 'keepdims', type: AttrType.INT, i: 0 }],
      },
    ],
    initializer: [],
    input: [info('x', [3])],
    output: [info('loss', [])],
  };
  assert.throws(
    () => addGradients(graph, { loss: 'loss', wrt: ['x'] }),
    (e: unknown) => {
      assert.ok(e instanceof GradientError);
      assert.match((e as Error).message, /Erf node 'my_erf'/);
      return true;
    },
  );
});
