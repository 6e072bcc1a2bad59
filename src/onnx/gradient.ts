/**
 * @file Reverse-mode differentiation of an ONNX graph, written as more ONNX: the graph is extended with the nodes
 * that compute the gradient of a scalar loss with respect to chosen inputs, and those gradients become outputs. The
 * result is an ordinary inference graph, so an inference build of ONNX Runtime (which has no training operators
 * such as ConvGrad or ReluGrad) runs a whole training step in one `session.run`.
 *
 * Each operator's backward rule is written with standard operators only, chosen for what ONNX Runtime's CPU kernels
 * do fast (measured; see the comment above the convolution rule): a convolution's input gradient is a ConvTranspose
 * with the same weight and attributes, or a plain Conv where that is faster (1x1, depthwise at stride 1); its filter
 * gradient a convolution with the batch as the contracted axis, or matrix products. Only values that lie on a path
 * from a requested input to the loss are differentiated, so the first layer of a tail gets no input gradient.
 *
 * Rules follow the definitions ONNX Runtime training and TF.js give their gradients; where they differ at a single
 * point (Relu6's gradient at exactly 6), this follows the continuous definition, which both agree on elsewhere.
 */

import { GraftError, InternalError } from '../util/errors.ts';
import { type Attribute, AttrType, DataType, type GraphMsg, type NodeMsg, type TensorMsg } from './proto.ts';
import { floatAttr, type GraphFacts, inferShapes, intAttr, intsAttr, type Shape } from './shapes.ts';

/**
 * An operator (or an attribute of one) that the gradient builder has no rule for: a network that cannot train this
 * way, not a bug (kind 'base', code 'no-gradient').
 */
export class GradientError extends GraftError {
  readonly kind = 'base';
  constructor(
    readonly op: string,
    readonly node: string,
    reason: string,
  ) {
    super(`cannot differentiate ${op} node '${node}': ${reason}`, 'no-gradient');
    this.name = 'GradientError';
  }
}

export interface GradientRequest {
  /** A scalar float value of the graph. */
  loss: string;
  /** Graph inputs (or initializers) whose gradients are wanted. */
  wrt: string[];
}

export interface GradientGraph {
  graph: GraphMsg;
  /** Output names of the gradients, in the order of `wrt`; each has the shape of its input. */
  gradients: string[];
}

/** The name a gradient output gets. */
export const gradientName = (input: string): string => `${input}__grad`;

const attr = {
  int: (name: string, i: number): Attribute => ({ name, type: AttrType.INT, i }),
  ints: (name: string, ints: number[]): Attribute => ({ name, type: AttrType.INTS, ints }),
  float: (name: string, f: number): Attribute => ({ name, type: AttrType.FLOAT, f }),
  string: (name: string, s: string): Attribute => ({ name, type: AttrType.STRING, s: new TextEncoder().encode(s) }),
};

/** Operators whose outputs carry no gradient (integer or boolean results, shapes). */
const NOT_DIFFERENTIABLE = new Set(['Shape', 'Gather', 'Cast', 'ArgMax', 'Greater', 'Less', 'Equal', 'And', 'Size']);

/** Builds backward nodes into a list, with fresh names and shared constants. */
class Backward {
  readonly nodes: NodeMsg[] = [];
  readonly initializers: TensorMsg[] = [];
  private readonly used: Set<string>;
  private readonly constants = new Map<string, string>();

  constructor(
    graph: GraphMsg,
    readonly facts: GraphFacts,
  ) {
    this.used = new Set([
      ...graph.input.map((v) => v.name),
      ...graph.initializer.map((t) => t.name),
      ...graph.node.flatMap((n) => n.output),
    ]);
  }

  fresh(hint: string): string {
    let name = hint;
    for (let k = 1; this.used.has(name); k++) name = `${hint}_${k}`;
    this.used.add(name);
    return name;
  }

  node(op: string, inputs: string[], hint: string, attributes: Attribute[] = [], outputs = 1): string[] {
    const out = Array.from({ length: outputs }, (_, i) => this.fresh(outputs > 1 ? `${hint}_${i}` : hint));
    this.nodes.push({ op_type: op, input: inputs, output: out, name: out[0], attribute: attributes });
    return out;
  }

  one(op: string, inputs: string[], hint: string, attributes: Attribute[] = []): string {
    return this.node(op, inputs, hint, attributes)[0];
  }

  int64s(values: number[], dims = [values.length]): string {
    const key = `i${dims.join('x')}:${values.join(',')}`;
    let name = this.constants.get(key);
    if (!name) {
      name = this.fresh('grad_const_i64');
      const raw = new Uint8Array(BigInt64Array.from(values.map((v) => BigInt(v))).buffer);
      this.initializers.push({ name, dims, data_type: DataType.INT64, raw_data: raw });
      this.constants.set(key, name);
    }
    return name;
  }

  floats(values: Float32Array, dims: number[]): string {
    const name = this.fresh('grad_const');
    this.initializers.push({ name, dims, data_type: DataType.FLOAT, raw_data: new Uint8Array(values.slice().buffer) });
    return name;
  }

  scalar(value: number): string {
    const key = `f:${value}`;
    let name = this.constants.get(key);
    if (!name) {
      name = this.floats(Float32Array.of(value), []);
      this.constants.set(key, name);
    }
    return name;
  }

  shape(value: string, node: NodeMsg): Shape {
    const s = this.facts.shapes.get(value);
    if (!s) throw new GradientError(node.op_type, node.name, `the shape of '${value}' is not known`);
    return s;
  }

  /** A constant shape for Reshape: known dims as they are, the one unknown (batch) dim as -1. */
  reshapeTarget(s: Shape, node: NodeMsg): string {
    if (s.filter((d) => d === null).length > 1)
      throw new GradientError(node.op_type, node.name, `more than one unknown dimension in [${s}]`);
    return this.int64s(s.map((d) => (d === null ? -1 : d)));
  }

  /** Sums a gradient over the axes that broadcasting added or stretched, so it has the shape `to`. */
  unbroadcast(g: string, from: Shape, to: Shape, node: NodeMsg): string {
    const lead = from.length - to.length;
    const axes: number[] = [];
    for (let i = 0; i < from.length; i++) {
      if (i < lead) axes.push(i);
      else if (to[i - lead] === 1 && from[i] !== 1) axes.push(i);
    }
    if (axes.length === 0) return g;
    const summed = this.one('ReduceSum', [g, this.int64s(axes)], `${g}_sum`, [attr.int('keepdims', 1)]);
    return lead > 0 ? this.one('Reshape', [summed, this.reshapeTarget(to, node)], `${g}_as_input`) : summed;
  }
}

/** Gradients of a node's inputs from the gradients of its outputs (undefined: none flows there). */
type Rule = (b: Backward, node: NodeMsg, g: (string | undefined)[], need: boolean[]) => (string | undefined)[];

function binary(op: 'Add' | 'Sub' | 'Mul' | 'Div'): Rule {
  return (b, node, [g], need) => {
    const [x, y] = node.input;
    const out = b.shape(node.output[0], node);
    const sx = b.shape(x, node);
    const sy = b.shape(y, node);
    const gx = () => {
      const pre =
        op === 'Mul'
          ? b.one('Mul', [g!, y], `${node.name}_gx`)
          : op === 'Div'
            ? b.one('Div', [g!, y], `${node.name}_gx`)
            : g!;
      return b.unbroadcast(pre, out, sx, node);
    };
    const gy = () => {
      if (op === 'Div') throw new GradientError(op, node.name, 'the divisor needs a gradient');
      const pre = op === 'Mul' ? b.one('Mul', [g!, x], `${node.name}_gy`) : g!;
      const r = b.unbroadcast(pre, out, sy, node);
      return op === 'Sub' ? b.one('Neg', [r], `${node.name}_gy_neg`) : r;
    };
    return [need[0] ? gx() : undefined, need[1] ? gy() : undefined];
  };
}

const identity: Rule = (_b, _node, [g]) => [g];

const reshapeBack: Rule = (b, node, [g]) => [
  b.one('Reshape', [g!, b.reshapeTarget(b.shape(node.input[0], node), node)], `${node.name}_grad`),
];

function sameWindowAttrs(node: NodeMsg): { kernel: number[]; strides: number[]; pads: number[] } {
  const dil = intsAttr(node, 'dilations', [1, 1]);
  if (dil.some((d) => d !== 1))
    throw new GradientError(node.op_type, node.name, `dilations [${dil}] are not supported`);
  return {
    kernel: intsAttr(node, 'kernel_shape', []),
    strides: intsAttr(node, 'strides', [1, 1]),
    pads: intsAttr(node, 'pads', [0, 0, 0, 0]),
  };
}

/**
 * The rows and columns at the end of the padded input that a strided window never reached: (H + pads - k) mod s.
 * A ConvTranspose given them as output_padding reproduces the input's size exactly.
 */
function leftOver(x: Shape, w: { kernel: number[]; strides: number[]; pads: number[] }, node: NodeMsg): number[] {
  return [0, 1].map((i) => {
    const n = x[2 + i];
    if (n === null) throw new GradientError(node.op_type, node.name, 'spatial sizes must be static');
    return (n + w.pads[i] + w.pads[i + 2] - w.kernel[i]) % w.strides[i];
  });
}

/** Crops the last two axes of a [.., .., kh + r, kw + r] filter gradient to [kh, kw]. */
function cropKernel(b: Backward, t: string, kernel: number[], extra: number[], hint: string): string {
  if (extra[0] === 0 && extra[1] === 0) return t;
  return b.one('Slice', [t, b.int64s([0, 0]), b.int64s(kernel), b.int64s([2, 3])], hint);
}

/** The filter flipped in both spatial axes (the kernel of a stride-1 convolution's input gradient). */
function flipped(b: Backward, w: string, kernel: number[], hint: string): string {
  return b.one(
    'Slice',
    [w, b.int64s([-1, -1]), b.int64s([-kernel[0] - 1, -kernel[1] - 1]), b.int64s([2, 3]), b.int64s([-1, -1])],
    hint,
  );
}

/** A one-hot filter [C·K, 1, kh, kw] whose output channel c·K + t copies tap t of channel c (K = kh·kw). */
function tapPicker(b: Backward, C: number, kernel: number[]): string {
  const K = kernel[0] * kernel[1];
  const e = new Float32Array(C * K * K);
  for (let c = 0; c < C; c++) for (let t = 0; t < K; t++) e[(c * K + t) * K + t] = 1;
  return b.floats(e, [C * K, 1, ...kernel]);
}

/*
 * Convolution gradients, formulations chosen by measurement on ONNX Runtime's CPU provider (1 thread, CPU time, batch
 * 16, MobileNetV2 shapes):
 * - depthwise dX, stride 1: a depthwise Conv of dy with the flipped filter, about 2x faster than ConvTranspose with
 *   groups; at stride 2 ConvTranspose stays (spreading dy with zeros first costs more than it saves).
 * - depthwise dW: the K = kh·kw shifted copies of x that the window reads, made by one grouped Conv with a constant
 *   one-hot filter, then a batched MatMul with dy: 1.4-1.8x faster than a grouped Conv with dy as the filter, and than
 *   K slices multiplied and summed one by one (those are memory-bound passes over K times the input).
 * - 1x1 stride-1 dW: a MatMul per image of dy by xᵀ (ORT fuses the transpose into it), summed over the batch, when
 *   that sum (N·O·I values) is smaller than the activations (N·(O + I)·HW) it reads; else both transposed into one
 *   GEMM over every position. 2.3x faster than the other on 112x112 maps, 2x slower on 7x7 maps with 1280 channels.
 */
const conv: Rule = (b, node, [g], need) => {
  const [x, w, bias] = node.input;
  const xs = b.shape(x, node);
  const ws = b.shape(w, node);
  const group = intAttr(node, 'group', 1);
  const win = sameWindowAttrs(node);
  const kernel = win.kernel.length ? win.kernel : (ws.slice(2) as number[]);
  const wa = { ...win, kernel };
  const [inC, outC] = [xs[1] as number, ws[0] as number];
  const ys = b.shape(node.output[0], node);
  const stride1 = wa.strides.every((s) => s === 1);
  const pointwise = kernel.every((k) => k === 1) && stride1 && wa.pads.every((p) => p === 0) && group === 1;
  const depthwise = group > 1 && group === inC && ws[1] === 1;
  if (group > 1 && !depthwise)
    throw new GradientError('Conv', node.name, `grouped convolution with ${group} groups of ${ws[1]} channels`);
  const [h, wd] = xs.slice(2) as number[];
  const [ho, wo] = ys.slice(2) as number[];
  if ([h, wd, ho, wo].some((d) => d === null))
    throw new GradientError('Conv', node.name, 'spatial sizes must be static');
  const extra = leftOver(xs, wa, node);
  const M = outC / inC;
  const out: (string | undefined)[] = [undefined, undefined, undefined];
  const transposed = (v: string, hint: string) =>
    b.one('Transpose', [v], `${node.name}_${hint}`, [attr.ints('perm', [1, 0, 2, 3])]);
  if (need[0]) {
    if (pointwise) {
      out[0] = b.one('Conv', [g!, transposed(w, 'wT')], `${node.name}_gx`, [attr.ints('kernel_shape', [1, 1])]);
    } else if (depthwise && stride1) {
      // A stride-1 correlation's transpose is the correlation with the flipped filter, padded by k - 1 - pad.
      const f = flipped(b, w, kernel, `${node.name}_wflip`);
      const fw = M === 1 ? f : b.one('Reshape', [f, b.int64s([inC, M, ...kernel])], `${node.name}_wflip_grouped`);
      const [pt, pl, pb, pr] = wa.pads;
      out[0] = b.one('Conv', [g!, fw], `${node.name}_gx`, [
        attr.int('group', inC),
        attr.ints('kernel_shape', kernel),
        attr.ints('pads', [kernel[0] - 1 - pt, kernel[1] - 1 - pl, kernel[0] - 1 - pb, kernel[1] - 1 - pr]),
      ]);
    } else {
      out[0] = b.one('ConvTranspose', [g!, w], `${node.name}_gx`, [
        attr.int('group', group),
        attr.ints('kernel_shape', kernel),
        attr.ints('strides', wa.strides),
        attr.ints('pads', wa.pads),
        attr.ints('output_padding', extra),
      ]);
    }
  }
  if (need[1]) {
    if (pointwise) {
      const P = h * wd;
      if (outC * inC <= (outC + inC) * P) {
        const g3 = b.one('Reshape', [g!, b.int64s([-1, outC, P])], `${node.name}_g3`);
        const x3 = b.one('Reshape', [x, b.int64s([-1, inC, P])], `${node.name}_x3`);
        const xt = b.one('Transpose', [x3], `${node.name}_x3T`, [attr.ints('perm', [0, 2, 1])]);
        const per = b.one('MatMul', [g3, xt], `${node.name}_gw_per_image`);
        const dw = b.one('ReduceSum', [per, b.int64s([0])], `${node.name}_gw2`, [attr.int('keepdims', 0)]);
        out[1] = b.one('Reshape', [dw, b.int64s([outC, inC, 1, 1])], `${node.name}_gw`);
      } else {
        // [O, N·HW] · [I, N·HW]ᵀ: one GEMM over every position of every image.
        const g2 = b.one('Reshape', [transposed(g!, 'gT'), b.int64s([outC, -1])], `${node.name}_g2`);
        const x2 = b.one('Reshape', [transposed(x, 'xT'), b.int64s([inC, -1])], `${node.name}_x2`);
        const dw = b.one('Gemm', [g2, x2], `${node.name}_gw2`, [attr.int('transB', 1)]);
        out[1] = b.one('Reshape', [dw, b.int64s([outC, inC, 1, 1])], `${node.name}_gw`);
      }
    } else if (depthwise) {
      // patches[n, c, t, p]: tap t of the window at output position p; dW[c·M + m, t] = sum over n, p of
      // patches[n, c, t, p] · dy[n, c·M + m, p].
      const K = kernel[0] * kernel[1];
      const P = ho * wo;
      const picked = b.one('Conv', [x, tapPicker(b, inC, kernel)], `${node.name}_taps`, [
        attr.int('group', inC),
        attr.ints('kernel_shape', kernel),
        attr.ints('strides', wa.strides),
        attr.ints('pads', wa.pads),
      ]);
      const patches = b.one('Reshape', [picked, b.int64s([-1, inC, K, P])], `${node.name}_patches`);
      let gm = b.one('Reshape', [g!, b.int64s([-1, inC, M, P])], `${node.name}_g4`);
      gm = b.one('Transpose', [gm], `${node.name}_g4T`, [attr.ints('perm', [0, 1, 3, 2])]);
      const per = b.one('MatMul', [patches, gm], `${node.name}_gw_per_image`);
      const dw = b.one('ReduceSum', [per, b.int64s([0])], `${node.name}_gw_ckm`, [attr.int('keepdims', 0)]);
      const cmk = M === 1 ? dw : b.one('Transpose', [dw], `${node.name}_gw_cmk`, [attr.ints('perm', [0, 2, 1])]);
      out[1] = b.one('Reshape', [cmk, b.int64s([outC, 1, ...kernel])], `${node.name}_gw`);
    } else {
      // The batch becomes the contracted channel axis and dy the filter (dilated by the stride):
      // dW[o, i, a, c] = sum over n, y, x of xpad[n, i, a + y·s, c + x·s] · dy[n, o, y, x].
      const dw = b.one('Conv', [transposed(x, 'xT'), transposed(g!, 'gT')], `${node.name}_gwT`, [
        attr.ints('kernel_shape', [ho, wo]),
        attr.ints('dilations', wa.strides),
        attr.ints('pads', wa.pads),
      ]);
      const cropped = cropKernel(b, dw, kernel, extra, `${node.name}_gw_crop`);
      out[1] = b.one('Transpose', [cropped], `${node.name}_gw`, [attr.ints('perm', [1, 0, 2, 3])]);
    }
  }
  if (bias && need[2])
    out[2] = b.one('ReduceSum', [g!, b.int64s([0, 2, 3])], `${node.name}_gb`, [attr.int('keepdims', 0)]);
  return out;
};

/** Per-position 1 / (number of real input pixels under the window), as AveragePool without count_include_pad. */
function averageCounts(x: Shape, y: Shape, win: { kernel: number[]; strides: number[]; pads: number[] }): Float32Array {
  const [h, w] = [x[2] as number, x[3] as number];
  const [ho, wo] = [y[2] as number, y[3] as number];
  const out = new Float32Array(ho * wo);
  const span = (o: number, k: number, s: number, p: number, n: number) =>
    Math.min(n, o * s - p + k) - Math.max(0, o * s - p);
  for (let r = 0; r < ho; r++)
    for (let c = 0; c < wo; c++)
      out[r * wo + c] =
        1 /
        (span(r, win.kernel[0], win.strides[0], win.pads[0], h) *
          span(c, win.kernel[1], win.strides[1], win.pads[1], w));
  return out;
}

const averagePool: Rule = (b, node, [g]) => {
  const x = node.input[0];
  const xs = b.shape(x, node);
  const ys = b.shape(node.output[0], node);
  const win = sameWindowAttrs(node);
  if (intAttr(node, 'ceil_mode', 0)) throw new GradientError('AveragePool', node.name, 'ceil_mode is not supported');
  const C = xs[1] as number;
  const includePad = intAttr(node, 'count_include_pad', 0) === 1 || win.pads.every((p) => p === 0);
  const scale = includePad
    ? b.scalar(1 / (win.kernel[0] * win.kernel[1]))
    : b.floats(averageCounts(xs, ys, win), [1, 1, ys[2] as number, ys[3] as number]);
  const spread = b.floats(new Float32Array(C * win.kernel[0] * win.kernel[1]).fill(1), [C, 1, ...win.kernel]);
  return [
    b.one('ConvTranspose', [b.one('Mul', [g!, scale], `${node.name}_scaled`), spread], `${node.name}_gx`, [
      attr.int('group', C),
      attr.ints('kernel_shape', win.kernel),
      attr.ints('strides', win.strides),
      attr.ints('pads', win.pads),
      attr.ints('output_padding', leftOver(xs, win, node)),
    ]),
  ];
};

/**
 * MaxPool routes each output's gradient to the input it took (ONNX Runtime's Indices output: positions in the whole
 * flattened input, padding not counted), summed where windows overlap.
 */
const maxPool: Rule = (b, node, [g]) => {
  sameWindowAttrs(node);
  if (intAttr(node, 'ceil_mode', 0) || intAttr(node, 'storage_order', 0))
    throw new GradientError('MaxPool', node.name, 'ceil_mode and storage_order are not supported');
  if (!node.output[1]) node.output[1] = b.fresh(`${node.output[0]}_indices`);
  const x = node.input[0];
  const flat = b.int64s([-1]);
  const zeros = b.one(
    'ConstantOfShape',
    [b.one('Shape', [b.one('Reshape', [x, flat], `${node.name}_xflat`)], `${node.name}_n`)],
    `${node.name}_zeros`,
  );
  const scattered = b.one(
    'ScatterElements',
    [
      zeros,
      b.one('Reshape', [node.output[1], flat], `${node.name}_iflat`),
      b.one('Reshape', [g!, flat], `${node.name}_gflat`),
    ],
    `${node.name}_scatter`,
    [attr.int('axis', 0), attr.string('reduction', 'add')],
  );
  return [b.one('Reshape', [scattered, b.reshapeTarget(b.shape(x, node), node)], `${node.name}_gx`)];
};

const globalAveragePool: Rule = (b, node, [g]) => {
  const xs = b.shape(node.input[0], node);
  const spatial = xs.slice(2) as number[];
  if (spatial.some((d) => d === null)) throw new GradientError(node.op_type, node.name, 'spatial sizes must be static');
  const scaled = b.one('Mul', [g!, b.scalar(1 / spatial.reduce((a, c) => a * c, 1))], `${node.name}_scaled`);
  // Expand broadcasts both ways: [N, C, 1, 1] against [1, C, H, W] gives [N, C, H, W].
  return [b.one('Expand', [scaled, b.int64s([1, xs[1] as number, ...spatial])], `${node.name}_gx`)];
};

/** Every input equal to the maximum of its window gets the gradient, as TF.js's max gradient does. */
const globalMaxPool: Rule = (b, node, [g]) => {
  const mask = b.one('Equal', [node.input[0], node.output[0]], `${node.name}_argmax`);
  return [b.one('Where', [mask, g!, b.scalar(0)], `${node.name}_gx`)];
};

// Masks as float factors: Sign of a Relu output is its 0/1 derivative (0 at 0, as TF.js's step), and a Clip's
// in-range test is cast to float and multiplied, both measured faster than Where on ORT's CPU provider.
const relu: Rule = (b, node, [g]) => [
  b.one('Mul', [g!, b.one('Sign', [node.output[0]], `${node.name}_on`)], `${node.name}_gx`),
];

const clip: Rule = (b, node, [g]) => {
  const [, lo, hi] = node.input;
  const y = node.output[0];
  let mask: string | undefined;
  if (lo) mask = b.one('Greater', [y, lo], `${node.name}_above`);
  if (hi) {
    const below = b.one('Less', [y, hi], `${node.name}_below`);
    mask = mask ? b.one('And', [mask, below], `${node.name}_inside`) : below;
  }
  if (!mask) return [g, undefined, undefined];
  const factor = b.one('Cast', [mask], `${node.name}_factor`, [attr.int('to', DataType.FLOAT)]);
  return [b.one('Mul', [g!, factor], `${node.name}_gx`), undefined, undefined];
};

const leakyRelu: Rule = (b, node, [g]) => {
  const alpha = floatAttr(node, 'alpha', 0.01);
  const mask = b.one('Greater', [node.input[0], b.scalar(0)], `${node.name}_on`);
  return [b.one('Where', [mask, g!, b.one('Mul', [g!, b.scalar(alpha)], `${node.name}_leak`)], `${node.name}_gx`)];
};

const sigmoid: Rule = (b, node, [g]) => {
  const y = node.output[0];
  const slope = b.one('Mul', [y, b.one('Sub', [b.scalar(1), y], `${node.name}_1my`)], `${node.name}_slope`);
  return [b.one('Mul', [g!, slope], `${node.name}_gx`)];
};

const tanh: Rule = (b, node, [g]) => {
  const y = node.output[0];
  const slope = b.one('Sub', [b.scalar(1), b.one('Mul', [y, y], `${node.name}_y2`)], `${node.name}_slope`);
  return [b.one('Mul', [g!, slope], `${node.name}_gx`)];
};

function lastAxis(b: Backward, node: NodeMsg): number {
  const rank = b.shape(node.input[0], node).length;
  const axis = intAttr(node, 'axis', -1);
  return axis < 0 ? axis + rank : axis;
}

const softmax: Rule = (b, node, [g]) => {
  const y = node.output[0];
  const axis = lastAxis(b, node);
  const dot = b.one('ReduceSum', [b.one('Mul', [g!, y], `${node.name}_gy`), b.int64s([axis])], `${node.name}_dot`, [
    attr.int('keepdims', 1),
  ]);
  return [b.one('Mul', [y, b.one('Sub', [g!, dot], `${node.name}_centred`)], `${node.name}_gx`)];
};

const logSoftmax: Rule = (b, node, [g]) => {
  const axis = lastAxis(b, node);
  const total = b.one('ReduceSum', [g!, b.int64s([axis])], `${node.name}_gsum`, [attr.int('keepdims', 1)]);
  const p = b.one('Exp', [node.output[0]], `${node.name}_p`);
  return [b.one('Sub', [g!, b.one('Mul', [p, total], `${node.name}_pg`)], `${node.name}_gx`)];
};

const transpose: Rule = (b, node, [g]) => {
  const rank = b.shape(node.input[0], node).length;
  const perm = intsAttr(node, 'perm', [...Array(rank).keys()].reverse());
  const inverse = new Array<number>(rank);
  perm.forEach((p, i) => {
    inverse[p] = i;
  });
  return [b.one('Transpose', [g!], `${node.name}_gx`, [attr.ints('perm', inverse)])];
};

const pad: Rule = (b, node, [g]) => {
  const mode = node.attribute.find((a) => a.name === 'mode')?.s;
  if (mode && new TextDecoder().decode(mode) !== 'constant')
    throw new GradientError('Pad', node.name, 'only constant padding is supported');
  const xs = b.shape(node.input[0], node);
  const pads = b.facts.ints.get(node.input[1]);
  if (!pads) throw new GradientError('Pad', node.name, 'pads must be a constant');
  const r = xs.length;
  const axes = [...Array(r).keys()].filter((i) => pads[i] !== 0 || pads[i + r] !== 0);
  if (axes.some((i) => pads[i] < 0 || pads[i + r] < 0 || xs[i] === null))
    throw new GradientError('Pad', node.name, 'negative padding or padding of an unknown dimension');
  const starts = axes.map((i) => pads[i]);
  const ends = axes.map((i) => pads[i] + (xs[i] as number));
  return [
    b.one('Slice', [g!, b.int64s(starts), b.int64s(ends), b.int64s(axes)], `${node.name}_gx`),
    undefined,
    undefined,
  ];
};

const concat: Rule = (b, node, [g], need) => {
  const shapes = node.input.map((i) => b.shape(i, node));
  const r = shapes[0].length;
  const axis = (intAttr(node, 'axis', 0) + r) % r;
  const sizes = shapes.map((s) => s[axis]);
  if (sizes.some((s) => s === null))
    throw new GradientError('Concat', node.name, 'sizes along the axis must be static');
  const parts = b.node(
    'Split',
    [g!, b.int64s(sizes as number[])],
    `${node.name}_gx`,
    [attr.int('axis', axis)],
    sizes.length,
  );
  return parts.map((p, i) => (need[i] ? p : undefined));
};

const gemm: Rule = (b, node, [g], need) => {
  const [a, bb, c] = node.input;
  const alpha = floatAttr(node, 'alpha', 1);
  const beta = floatAttr(node, 'beta', 1);
  const ta = intAttr(node, 'transA', 0);
  const tb = intAttr(node, 'transB', 0);
  const mm = (x: string, y: string, tx: number, ty: number, hint: string) =>
    b.one('Gemm', [x, y], hint, [
      ...(tx ? [attr.int('transA', 1)] : []),
      ...(ty ? [attr.int('transB', 1)] : []),
      ...(alpha !== 1 ? [attr.float('alpha', alpha)] : []),
    ]);
  const out: (string | undefined)[] = [undefined, undefined, undefined];
  // Y = op(A)·op(B): d op(A) = dY·op(B)ᵀ, d op(B) = op(A)ᵀ·dY, each transposed back when the input was.
  if (need[0]) out[0] = ta ? mm(bb, g!, tb, 1, `${node.name}_ga`) : mm(g!, bb, 0, tb ? 0 : 1, `${node.name}_ga`);
  if (need[1]) out[1] = tb ? mm(g!, a, 1, ta, `${node.name}_gb`) : mm(a, g!, ta ? 0 : 1, 0, `${node.name}_gb`);
  if (c && need[2]) {
    const scaled = beta !== 1 ? b.one('Mul', [g!, b.scalar(beta)], `${node.name}_gc_scaled`) : g!;
    out[2] = b.unbroadcast(scaled, b.shape(node.output[0], node), b.shape(c, node), node);
  }
  return out;
};

const matMul: Rule = (b, node, [g], need) => {
  const [a, w] = node.input;
  const as = b.shape(a, node);
  const ws = b.shape(w, node);
  if (ws.length !== 2 || as.length < 2)
    throw new GradientError('MatMul', node.name, 'only [.., K] · [K, N] is supported');
  const [K, N] = ws as number[];
  const out: (string | undefined)[] = [undefined, undefined];
  if (need[0])
    out[0] = b.one(
      'MatMul',
      [g!, b.one('Transpose', [w], `${node.name}_wT`, [attr.ints('perm', [1, 0])])],
      `${node.name}_ga`,
    );
  if (need[1]) {
    const a2 = as.length === 2 ? a : b.one('Reshape', [a, b.int64s([-1, K])], `${node.name}_a2`);
    const g2 = as.length === 2 ? g! : b.one('Reshape', [g!, b.int64s([-1, N])], `${node.name}_g2`);
    out[1] = b.one('Gemm', [a2, g2], `${node.name}_gw`, [attr.int('transA', 1)]);
  }
  return out;
};

function reduceAxes(b: Backward, node: NodeMsg): number[] {
  const rank = b.shape(node.input[0], node).length;
  const axes =
    node.op_type === 'ReduceSum' && node.input[1] ? b.facts.ints.get(node.input[1]) : intsAttr(node, 'axes', []);
  if (!axes) throw new GradientError(node.op_type, node.name, 'axes must be a constant');
  return axes.length ? axes.map((a) => (a < 0 ? a + rank : a)) : [...Array(rank).keys()];
}

function reduce(mean: boolean): Rule {
  return (b, node, [g]) => {
    const x = node.input[0];
    const xs = b.shape(x, node);
    const axes = reduceAxes(b, node);
    let gk = g!;
    if (intAttr(node, 'keepdims', 1) === 0) gk = b.one('Unsqueeze', [gk, b.int64s(axes)], `${node.name}_gk`);
    if (mean) {
      const count = axes.reduce<number | null>(
        (s, a) => (s === null || xs[a] === null ? null : s * (xs[a] as number)),
        1,
      );
      if (count === null) throw new GradientError(node.op_type, node.name, 'a mean over an unknown dimension');
      gk = b.one('Mul', [gk, b.scalar(1 / count)], `${node.name}_gscaled`);
    }
    return [b.one('Expand', [gk, b.one('Shape', [x], `${node.name}_xshape`)], `${node.name}_gx`), undefined];
  };
}

const RULES: Record<string, Rule> = {
  Identity: identity,
  Add: binary('Add'),
  Sub: binary('Sub'),
  Mul: binary('Mul'),
  Div: binary('Div'),
  Neg: (b, node, [g]) => [b.one('Neg', [g!], `${node.name}_gx`)],
  Exp: (b, node, [g]) => [b.one('Mul', [g!, node.output[0]], `${node.name}_gx`)],
  Relu: relu,
  Clip: clip,
  LeakyRelu: leakyRelu,
  Sigmoid: sigmoid,
  Tanh: tanh,
  Softmax: softmax,
  LogSoftmax: logSoftmax,
  Transpose: transpose,
  Reshape: (b, node, g) => [...reshapeBack(b, node, g, [true]), undefined],
  Flatten: reshapeBack,
  Pad: pad,
  Concat: concat,
  Conv: conv,
  AveragePool: averagePool,
  MaxPool: maxPool,
  GlobalAveragePool: globalAveragePool,
  GlobalMaxPool: globalMaxPool,
  Gemm: gemm,
  MatMul: matMul,
  ReduceSum: reduce(false),
  ReduceMean: reduce(true),
};

/** Operators with a backward rule (what a graph may contain on the path from a requested input to the loss). */
export const DIFFERENTIABLE_OPS: readonly string[] = Object.keys(RULES);

/**
 * Returns a copy of `graph` extended with the gradient of `loss` with respect to every name in `wrt`, as graph outputs
 * `gradientName(w)` after the existing ones. Throws GradientError when the path from an input to the loss crosses an
 * operator (or an attribute of one) without a rule.
 */
export function addGradients(graph: GraphMsg, request: GradientRequest): GradientGraph {
  const nodes = graph.node.map((n) => ({ ...n, input: [...n.input], output: [...n.output] }));
  const g: GraphMsg = { ...graph, node: nodes, initializer: [...graph.initializer], output: [...graph.output] };
  const facts = inferShapes(g);
  const b = new Backward(g, facts);
  const lossShape = facts.shapes.get(request.loss);
  if (lossShape?.length !== 0) throw new InternalError(`loss '${request.loss}' is not a scalar of known shape`);

  // Values that depend on a requested input, and nodes that lead to the loss: only their intersection is walked.
  const dependent = new Set(request.wrt);
  for (const n of nodes) {
    if (NOT_DIFFERENTIABLE.has(n.op_type)) continue;
    if (n.input.some((i) => dependent.has(i))) for (const o of n.output) if (o) dependent.add(o);
  }
  const useful = new Set([request.loss]);
  for (let k = nodes.length - 1; k >= 0; k--) {
    const n = nodes[k];
    if (n.output.some((o) => useful.has(o))) for (const i of n.input) if (i) useful.add(i);
  }

  const contributions = new Map<string, string[]>();
  const add = (value: string, grad: string) => contributions.set(value, [...(contributions.get(value) ?? []), grad]);
  const total = (value: string): string | undefined => {
    const parts = contributions.get(value);
    if (!parts?.length) return undefined;
    if (parts.length === 1) return parts[0];
    const sum = b.one('Sum', parts, `${value}_grad_sum`);
    contributions.set(value, [sum]);
    return sum;
  };
  add(request.loss, b.scalar(1));

  for (let k = nodes.length - 1; k >= 0; k--) {
    const node = nodes[k];
    if (!node.output.some((o) => useful.has(o) && dependent.has(o))) continue;
    const need = node.input.map((i) => !!i && dependent.has(i) && useful.has(i));
    if (!need.some(Boolean)) continue;
    const gOut = node.output.map((o) => (o ? total(o) : undefined));
    if (gOut.every((x) => x === undefined)) continue;
    const rule = RULES[node.op_type];
    if (!rule) throw new GradientError(node.op_type, node.name, 'no backward rule for this operator');
    const gIn = rule(b, node, gOut, need);
    node.input.forEach((i, j) => {
      const gi = gIn[j];
      if (need[j] && gi) add(i, gi);
    });
  }

  const gradients = request.wrt.map((w) => {
    const gw = total(w);
    if (!gw) throw new InternalError(`the loss does not depend on '${w}'`);
    const name = gradientName(w);
    b.nodes.push({ op_type: 'Identity', input: [gw], output: [name], name, attribute: [] });
    const s = facts.shapes.get(w) ?? [];
    g.output.push({
      name,
      type: {
        tensor_type: {
          elem_type: DataType.FLOAT,
          shape: { dim: s.map((d, i) => (d === null ? { dim_param: `${name}_dim${i}` } : { dim_value: d })) },
        },
      },
    });
    return name;
  });
  g.node = [...nodes, ...b.nodes];
  g.initializer = [...g.initializer, ...b.initializers];
  return { graph: g, gradients };
}
