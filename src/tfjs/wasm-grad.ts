/**
 * Gradient kernels for TF.js's WASM backend (4.22), so that convolutional networks can be fine-tuned on it.
 *
 * Without them `tf.grads` through a Conv2D or DepthwiseConv2D fails on WASM with "Kernel '...' not registered", and
 * the only fallback is the pure-JS CPU backend, whose backprop kernels are scalar loops many times slower. Each kernel
 * here is composed of ops that WASM runs through XNNPACK or plain memory copies (conv2d, depthwiseConv2d, matMul,
 * pad, reshape, rank-4 transpose), never element loops in JavaScript.
 *
 * Found missing by running gradients through every layer type of the bundled bases on WASM:
 *   Conv2DBackpropFilter, DepthwiseConv2dNativeBackpropFilter, DepthwiseConv2dNativeBackpropInput.
 * Replaced although present: Conv2DBackpropInput. WASM's own is a direct loop that took ~60% of a MobileNetV2 tail
 * step (0.4 s for one 1x1 conv of 16x7x7x1280 → 320); as a matMul or a conv2d it is one XNNPACK call.
 * Replaced gradient (all backends, same arithmetic): FusedBatchNorm, whose tfjs-core gradient materialises the
 * per-channel factor with Tile (a generic element loop on WASM, ~40% of a full-network step) and computes full-size
 * products for inputs nobody asked the gradient of.
 * Corrected gradient (all backends): AvgPool with padding, whose kernels ignore the forward pass's border rule (see
 * avgPoolGradient).
 * Present already (and so left alone): AvgPoolGrad, MaxPoolGrad; ReLU/ReLU6, Add, Concatenate, ZeroPadding2D and
 * Dense have gradients composed of ordinary ops in tfjs-core.
 */
// Imported from tfjs-core directly rather than through ./tf.ts, which loads this module: no import cycle.
import * as tf from '@tensorflow/tfjs-core';
import { backend_util } from '@tensorflow/tfjs-core';

type Conv2DInfo = ReturnType<typeof backend_util.computeConv2DInfo>;
type Pad = 'same' | 'valid' | number | backend_util.ExplicitPadding;
type Pair = number | [number, number];
type KernelArgs = Parameters<tf.KernelFunc>[0];

/**
 * t'[n, r, c, :] = t[n, r - top, c - left, :] for r < height, c < width, zero where that falls outside t. One slice and
 * one pad express TensorFlow's (possibly asymmetric or explicit) padding, and the cropping of rows a strided conv never
 * reads, in a single shape-exact step.
 */
/**
 * Inserts stride-1 zeros after every row and column of an NHWC gradient, so a strided convolution's dy lines up with
 * its input grid: one reshape + pad + reshape, no element loop.
 */
function spreadByStride(t: tf.Tensor4D, sh: number, sw: number): tf.Tensor4D {
  if (sh === 1 && sw === 1) return t;
  const [n, ho, wo, ch] = t.shape;
  const spread = tf.pad(tf.reshape(t, [n * ho, 1, wo, 1, ch]), [
    [0, 0],
    [0, sh - 1],
    [0, 0],
    [0, sw - 1],
    [0, 0],
  ]);
  return tf.reshape(spread, [n, ho * sh, wo * sw, ch]);
}

function placeWindow(t: tf.Tensor4D, top: number, left: number, height: number, width: number): tf.Tensor4D {
  const [n, h, w, c] = t.shape;
  const r0 = Math.max(0, -top);
  const c0 = Math.max(0, -left);
  const padT = Math.max(0, top);
  const padL = Math.max(0, left);
  const keepH = Math.min(h - r0, height - padT);
  const keepW = Math.min(w - c0, width - padL);
  if (keepH <= 0 || keepW <= 0) return tf.zeros([n, height, width, c]);
  const kept = keepH === h && keepW === w ? t : tf.slice(t, [0, r0, c0, 0], [n, keepH, keepW, c]);
  if (padT === 0 && padL === 0 && keepH === height && keepW === width) return kept;
  return tf.pad(kept, [
    [0, 0],
    [padT, height - padT - keepH],
    [padL, width - padL - keepW],
    [0, 0],
  ]);
}

/** x padded (or cropped) to exactly the rows and columns the forward convolution read. */
function paddedInput(x: tf.Tensor4D, info: Conv2DInfo): tf.Tensor4D {
  const needH = (info.outHeight - 1) * info.strideHeight + info.filterHeight;
  const needW = (info.outWidth - 1) * info.strideWidth + info.filterWidth;
  return placeWindow(x, info.padInfo.top, info.padInfo.left, needH, needW);
}

function assertNoDilation(dilations: Pair | undefined, kernel: string): void {
  const [dh, dw] = typeof dilations === 'number' ? [dilations, dilations] : (dilations ?? [1, 1]);
  if (dh !== 1 || dw !== 1) {
    throw new Error(`${kernel} on the WASM backend (graft): dilations [${dh}, ${dw}] are not supported, only 1`);
  }
}

/*
 * Both filter gradients are correlations of the padded input with dy, summed over the batch:
 *   dW[i, j, ci, co] = sum over b, y, x of xpad[b, i + y*sh, j + x*sw, ci] * dy[b, y, x, co].
 * Read with dy as the filter (outH x outW taps, dilated by the forward stride) and the batch as the contracted channel
 * axis, that is one stride-1 convolution whose output is the filter-sized gradient; XNNPACK runs it as a single GEMM.
 * Measured on WASM it is 3-20x faster than slicing out each filter tap (WASM's StridedSlice, and Transpose above rank
 * 4, are generic element loops: ~0.5 s for one stride-2 tap of a MobileNetV2 layer) and contracting with matMul.
 */

function conv2DBackpropFilter({ inputs, attrs }: KernelArgs): tf.Tensor {
  const { x, dy } = inputs as unknown as { x: tf.Tensor4D; dy: tf.Tensor4D };
  const a = attrs as unknown as {
    strides: Pair;
    pad: Pad;
    dataFormat?: 'NHWC' | 'NCHW';
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
  const info = backend_util.computeConv2DInfo(
    x.shape,
    a.filterShape,
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
    false,
    backend_util.convertConv2DDataFormat(a.dataFormat ?? 'NHWC'),
  );
  const { filterHeight: fh, filterWidth: fw, inChannels: ci, outChannels: co } = info;
  const { strideHeight: sh, strideWidth: sw } = info;
  const first = info.dataFormat === 'channelsFirst';
  return tf.tidy(() => {
    const positions = info.batchSize * info.outHeight * info.outWidth;
    if (fh === 1 && fw === 1 && sh === 1 && sw === 1 && !first && isZeroPad(info)) {
      // A pointwise conv is a plain matrix product; transposing the narrower operand beats matMul's transposeA.
      const x2 = tf.reshape(x, [positions, ci]) as tf.Tensor2D;
      const dy2 = tf.reshape(dy, [positions, co]) as tf.Tensor2D;
      const dw = co <= ci ? tf.transpose(tf.matMul(tf.transpose(dy2), x2)) : tf.matMul(tf.transpose(x2), dy2);
      return tf.reshape(dw, [1, 1, ci, co]);
    }
    // Channels become the batch, the batch becomes the channels: [ci, H, W, batch] and [outH, outW, batch, co].
    const xp = paddedInput(first ? tf.transpose(x, [0, 2, 3, 1]) : x, info);
    const xt = tf.transpose(xp, [3, 1, 2, 0]) as tf.Tensor4D;
    const dyt = tf.transpose(dy, first ? [2, 3, 0, 1] : [1, 2, 0, 3]) as tf.Tensor4D;
    const g = tf.conv2d(xt, dyt, 1, 'valid', 'NHWC', [sh, sw]);
    return tf.transpose(g, [1, 2, 0, 3]);
  });
}

function depthwiseBackpropFilter({ inputs, attrs }: KernelArgs): tf.Tensor {
  const { x, dy } = inputs as unknown as { x: tf.Tensor4D; dy: tf.Tensor4D };
  const a = attrs as unknown as {
    strides: Pair;
    dilations?: Pair;
    pad: Pad;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    filterShape: [number, number, number, number];
  };
  assertNoDilation(a.dilations, 'DepthwiseConv2dNativeBackpropFilter');
  const info = backend_util.computeConv2DInfo(x.shape, a.filterShape, a.strides, 1, a.pad, a.dimRoundingMode, true);
  const { batchSize: n, filterHeight: fh, filterWidth: fw, inChannels: c, outChannels: k } = info;
  const { outHeight: ho, outWidth: wo, strideHeight: sh, strideWidth: sw } = info;
  const m = k / c;
  return tf.tidy(() => {
    // Batch and channels share the channel axis, (b, c) as its own depthwise group, with dy's multiplier channels
    // (b, c, 0..M-1) as that group's filters; the per-batch results are then summed.
    const xp = paddedInput(x, info);
    const [, hp, wp] = xp.shape;
    const xt = tf.reshape(tf.transpose(xp, [1, 2, 0, 3]), [1, hp, wp, n * c]) as tf.Tensor4D;
    const dyt = tf.reshape(tf.transpose(dy, [1, 2, 0, 3]), [ho, wo, n * c, m]) as tf.Tensor4D;
    const g = tf.depthwiseConv2d(xt, dyt, 1, 'valid', 'NHWC', [sh, sw]);
    return tf.reshape(n === 1 ? g : tf.sum(tf.reshape(g, [fh, fw, n, k]), 2), [fh, fw, c, m]);
  });
}

function isZeroPad(info: Conv2DInfo): boolean {
  const p = info.padInfo;
  return p.top === 0 && p.left === 0 && p.bottom === 0 && p.right === 0;
}

/**
 * dx is the transposed depthwise convolution of dy: dy with (stride - 1) zeros inserted between its values, padded so
 * that output row r lines up with input row r, then a stride-1 depthwiseConv2d with the spatially flipped filter (every
 * one of the c*M output channels as its own input channel), and finally the M multiplier channels of each input
 * channel summed.
 */
function depthwiseBackpropInput({ inputs, attrs }: KernelArgs): tf.Tensor {
  const { dy, filter } = inputs as unknown as { dy: tf.Tensor4D; filter: tf.Tensor4D };
  const a = attrs as unknown as {
    strides: Pair;
    dilations?: Pair;
    pad: Pad;
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    inputShape: [number, number, number, number];
  };
  assertNoDilation(a.dilations, 'DepthwiseConv2dNativeBackpropInput');
  const info = backend_util.computeConv2DInfo(a.inputShape, filter.shape, a.strides, 1, a.pad, a.dimRoundingMode, true);
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: c, outChannels: k } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw } = info;
  const m = k / c;
  return tf.tidy(() => {
    const up = spreadByStride(dy, sh, sw);
    const z = placeWindow(up, fh - 1 - info.padInfo.top, fw - 1 - info.padInfo.left, h + fh - 1, w + fw - 1);
    const flipped = tf.reshape(tf.reverse(filter, [0, 1]), [fh, fw, k, 1]) as tf.Tensor4D;
    const dx = tf.depthwiseConv2d(z, flipped, 1, 'valid');
    return m === 1 ? dx : tf.sum(tf.reshape(dx, [n, h, w, c, m]), 4);
  });
}

/**
 * dx of a convolution. A pointwise stride-1 conv is a matrix product with the filter transposed. Otherwise dx is the
 * transposed convolution: dy spread out by the stride, placed so that output row r lines up with input row r (as for
 * the depthwise case), then a stride-1 conv2d with the spatially flipped filter whose in and out channels swap roles.
 */
function conv2DBackpropInput({ inputs, attrs }: KernelArgs): tf.Tensor {
  const { dy, filter } = inputs as unknown as { dy: tf.Tensor4D; filter: tf.Tensor4D };
  const a = attrs as unknown as {
    strides: Pair;
    pad: Pad;
    dataFormat?: 'NHWC' | 'NCHW';
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    inputShape: [number, number, number, number];
  };
  const dataFormat = backend_util.convertConv2DDataFormat(a.dataFormat ?? 'NHWC');
  const info = backend_util.computeConv2DInfo(
    a.inputShape,
    filter.shape,
    a.strides,
    1,
    a.pad,
    a.dimRoundingMode,
    false,
    dataFormat,
  );
  const { batchSize: n, inHeight: h, inWidth: w, inChannels: ci, outChannels: co } = info;
  const { filterHeight: fh, filterWidth: fw, strideHeight: sh, strideWidth: sw, outHeight: ho, outWidth: wo } = info;
  const first = info.dataFormat === 'channelsFirst';
  return tf.tidy(() => {
    const g: tf.Tensor4D = first ? tf.transpose(dy, [0, 2, 3, 1]) : dy;
    let dx: tf.Tensor4D;
    if (fh === 1 && fw === 1 && sh === 1 && sw === 1 && isZeroPad(info)) {
      const wt = tf.transpose(tf.reshape(filter, [ci, co])) as tf.Tensor2D;
      dx = tf.reshape(tf.matMul(tf.reshape(g, [n * ho * wo, co]) as tf.Tensor2D, wt), [n, h, w, ci]);
    } else {
      const up = spreadByStride(g, sh, sw);
      const z = placeWindow(up, fh - 1 - info.padInfo.top, fw - 1 - info.padInfo.left, h + fh - 1, w + fw - 1);
      const flipped = tf.transpose(tf.reverse(filter, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D;
      dx = tf.conv2d(z, flipped, 1, 'valid');
    }
    return first ? tf.transpose(dx, [0, 3, 1, 2]) : dx;
  });
}

/**
 * The FusedBatchNorm gradient with the per-channel factors broadcast instead of tiled, and every full-size product
 * computed only when its input's gradient is asked for (in inference mode with frozen statistics: x, scale, offset).
 */
const batchNormGradient: tf.GradConfig = {
  kernelName: 'FusedBatchNorm',
  inputsToSave: ['x', 'mean', 'variance', 'scale'],
  gradFunc: (dy, saved, attrs) => {
    const g = dy as tf.Tensor;
    const { varianceEpsilon } = attrs as unknown as { varianceEpsilon: number };
    const [x, mean, variance, scale] = saved;
    const scaleValue = scale == null ? tf.scalar(1) : scale;
    const perChannel = mean.rank === 1;
    const axes = backend_util.getReductionAxes(mean.shape, x.shape);
    const reduce = (t: tf.Tensor) => tf.reshape(perChannel ? tf.sum(t, axes) : t, mean.shape);
    const invStd = tf.rsqrt(tf.add(variance, tf.scalar(varianceEpsilon)));
    return {
      x: () => tf.reshape(tf.mul(g, tf.mul(invStd, scaleValue)), x.shape),
      mean: () => reduce(tf.mul(g, tf.neg(tf.mul(invStd, scaleValue)))),
      variance: () => {
        const factor = tf.mul(tf.mul(tf.pow(invStd, 3), tf.scalar(-0.5)), scaleValue);
        return reduce(tf.mul(tf.mul(tf.sub(x, mean), g), factor));
      },
      scale: () => reduce(tf.mul(g, tf.mul(tf.sub(x, mean), invStd))),
      offset: () => reduce(g),
    };
  },
};

/**
 * AvgPool's gradient as its own forward pass defines it. TF.js's 'same' average pooling divides each window by the
 * pixels it covers inside the image, but its AvgPoolGrad kernels (CPU and WASM alike) divide by the whole window
 * everywhere, so next to the borders TF.js's gradient is not that of its forward pass (TensorFlow's is: its kernel
 * counts the same pixels). Each dy is first scaled by window size / pixels covered, then handed to the same kernel.
 */
const avgPoolGradient: tf.GradConfig = {
  kernelName: 'AvgPool',
  inputsToSave: ['x'],
  gradFunc: (dy, saved, attrs) => {
    const [x] = saved;
    const a = attrs as unknown as {
      filterSize: Pair;
      strides: Pair;
      pad: 'same' | 'valid' | number;
      dimRoundingMode?: 'floor' | 'round' | 'ceil';
    };
    return {
      x: () =>
        tf.tidy(() => {
          const x4 = (x.rank === 3 ? tf.expandDims(x, 0) : x) as tf.Tensor4D;
          const dy4 = ((dy as tf.Tensor).rank === 3 ? tf.expandDims(dy as tf.Tensor, 0) : dy) as tf.Tensor4D;
          const info = backend_util.computePool2DInfo(x4.shape, a.filterSize, a.strides, 1, a.pad, a.dimRoundingMode);
          const { outHeight: ho, outWidth: wo, filterHeight: fh, filterWidth: fw, padInfo } = info;
          const span = (o: number, s: number, p: number, k: number, n: number) =>
            Math.min(n, o * s - p + k) - Math.max(0, o * s - p);
          const scale = new Float32Array(ho * wo);
          let partial = false;
          for (let r = 0; r < ho; r++)
            for (let c = 0; c < wo; c++) {
              const covered =
                span(r, info.strideHeight, padInfo.top, fh, info.inHeight) *
                span(c, info.strideWidth, padInfo.left, fw, info.inWidth);
              scale[r * wo + c] = (fh * fw) / covered;
              if (covered !== fh * fw) partial = true;
            }
          const scaled = partial ? tf.mul(dy4, tf.tensor4d(scale, [1, ho, wo, 1])) : dy4;
          const dx = tf.engine().runKernel('AvgPoolGrad', { dy: scaled, input: x4 }, {
            filterSize: a.filterSize,
            strides: a.strides,
            pad: a.pad,
            dimRoundingMode: a.dimRoundingMode,
          } as unknown as tf.NamedAttrMap) as tf.Tensor;
          return x.rank === 3 ? tf.squeeze(dx, [0]) : dx;
        }),
    };
  },
};

/**
 * Gradients graft replaces on every backend (same mathematics as the forward pass, see each one's comment). Called by
 * initTf, whichever backend it sets up; idempotent.
 */
export function registerGradientFixes(): void {
  if (tf.getGradient('FusedBatchNorm') !== batchNormGradient) tf.registerGradient(batchNormGradient);
  if (tf.getGradient('AvgPool') !== avgPoolGradient) tf.registerGradient(avgPoolGradient);
}

const KERNELS: Array<[string, (args: KernelArgs) => tf.Tensor]> = [
  ['Conv2DBackpropFilter', conv2DBackpropFilter],
  ['DepthwiseConv2dNativeBackpropFilter', depthwiseBackpropFilter],
  ['DepthwiseConv2dNativeBackpropInput', depthwiseBackpropInput],
];

/** Kernels WASM has, replaced by faster compositions. */
const REPLACED: Array<[string, (args: KernelArgs) => tf.Tensor]> = [['Conv2DBackpropInput', conv2DBackpropInput]];

/**
 * Registers the gradient kernels the WASM backend lacks, replaces the slow ones, and installs the faster BatchNorm
 * gradient; safe to call any number of times, and a missing kernel that a later TF.js release provides itself is
 * left as it is. Returns nothing; `tf.getKernel(name, 'wasm')` shows the result.
 */
export function registerWasmGradients(): void {
  const register = (kernelName: string, fn: (args: KernelArgs) => tf.Tensor) =>
    // A kernel may return a Tensor instead of a TensorInfo; the engine then adopts it as the output as is. tf.tidy
    // inside each kernel has already disposed every intermediate, so nothing else outlives the call.
    tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc: fn as unknown as tf.KernelFunc });
  for (const [kernelName, fn] of KERNELS) {
    if (!tf.getKernel(kernelName, 'wasm')) register(kernelName, fn);
  }
  for (const [kernelName, fn] of REPLACED) {
    const present = tf.getKernel(kernelName, 'wasm');
    if (present?.kernelFunc === (fn as unknown)) continue;
    if (present) tf.unregisterKernel(kernelName, 'wasm');
    register(kernelName, fn);
  }
  registerGradientFixes();
}

/** The kernels this module provides (added or replaced), for reports and tests. */
export const WASM_GRADIENT_KERNELS: readonly string[] = [...KERNELS, ...REPLACED].map(([name]) => name);
