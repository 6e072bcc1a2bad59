/**
 * TF.js Layers model → ONNX ModelProto, written in TypeScript so a trunk (or a whole exported model) can run on ONNX
 * Runtime without Python.
 *
 * Format: ONNX IR version 8 with the default opset 17 (ONNX 1.12). Every operator used exists unchanged from opset 13
 * to 22, so `opset` may be anything in 13..22; the IR version follows the opset (17 → 8, 18–19 → 9, 20–21 → 10, 22 → 11).
 *
 * Layout: the graph's inputs and outputs keep TF.js's NHWC order, so the same pixel buffers feed both engines and the
 * outputs compare element by element. Inside, a rank-4 tensor is kept in whichever order its producer wrote it and is
 * transposed only where a consumer needs the other one: convolutions and pooling need NCHW; Flatten, Reshape, Dense on
 * spatial input and graph outputs need NHWC; element-wise and per-channel operators run in either order (with the
 * channel axis remapped). A trunk thus transposes once after the input and never back, as its outputs are pooled.
 *
 * Folding: a BatchNormalization whose input is the sole output of a Conv2D, DepthwiseConv2D, SeparableConv2D or Dense
 * with a linear activation (and read by nothing else) is folded into that layer's weights and bias; any other becomes
 * a per-channel Mul + Add. A ZeroPadding2D read only by a convolution becomes part of that convolution's `pads`.
 * Padding 'same' is always written as explicit `pads` computed from static shapes the way TensorFlow does (the odd
 * pixel goes at the end), never as `auto_pad`, whose SAME_UPPER/SAME_LOWER runtimes disagree on.
 */
import type { LayersModel, LayerVariable, SymbolicTensor } from '@tensorflow/tfjs-layers';
import { BaseError, InternalError, opt, UsageError, words } from '../util/errors.ts';
import {
  type Attribute,
  AttrType,
  DataType,
  encodeModel,
  type ModelMsg,
  type NodeMsg,
  type TensorMsg,
  type ValueInfoMsg,
} from './proto.ts';

export interface OnnxExportOptions {
  /** ONNX default-domain opset, 13..22 (default 17). */
  opset?: number;
  /** Written to ModelProto.producer_version (producer_name is 'graft'). */
  producerVersion?: string;
  /** Written to ModelProto.metadata_props. */
  metadata?: Record<string, string>;
  /** Name of the graph input (the first one if the model has several); default the TF.js input layer's name. */
  inputName?: string;
  /**
   * Every trainable weight (of a trainable layer) becomes a graph input in TF.js's layout instead of a constant, and
   * the layout changes and BatchNorm folding that involve it become nodes: the graph then runs with weights given per
   * call, as a training step needs. Default false.
   */
  trainableAsInputs?: boolean;
}

/**
 * A trainable weight that the graph takes as an input (see OnnxExportOptions.trainableAsInputs), in the layout the
 * graph's operator wants (a convolution kernel as OIHW), so that no step transposes weights: the graph's values are
 * the variable's transposed by `perm`, then read as `dims` (weightToGraph / weightFromGraph convert).
 */
export interface WeightInput {
  /** Graph input name: the variable's name. */
  name: string;
  variable: LayerVariable;
  /** TF.js shape of the variable. */
  shape: number[];
  /** Axis order of the graph's layout, in TF.js axes. */
  perm: number[];
  /** The graph input's shape. */
  dims: number[];
}

/** A variable's values (TF.js layout) as the graph input wants them. */
export function weightToGraph(w: WeightInput, data: Float32Array): Float32Array {
  return w.perm.every((p, i) => p === i) ? data.slice() : transposeData(data, w.shape, w.perm);
}

/** A graph-layout array (a weight or its gradient) back in the variable's TF.js layout. */
export function weightFromGraph(w: WeightInput, data: Float32Array): Float32Array {
  if (w.perm.every((p, i) => p === i)) return data.slice();
  const inverse = new Array<number>(w.perm.length);
  w.perm.forEach((p, i) => {
    inverse[p] = i;
  });
  return transposeData(
    data,
    w.perm.map((p) => w.shape[p]),
    inverse,
  );
}

export const DEFAULT_OPSET = 17;

/** Layer class names the converter understands (nested LayersModels are inlined on top of these). */
export const SUPPORTED_LAYERS = [
  'InputLayer',
  'Rescaling',
  'Conv2D',
  'DepthwiseConv2D',
  'SeparableConv2D',
  'BatchNormalization',
  'ReLU',
  'LeakyReLU',
  'ELU',
  'ThresholdedReLU',
  'Softmax',
  'Activation',
  'Add',
  'Multiply',
  'Average',
  'Maximum',
  'Minimum',
  'Concatenate',
  'ZeroPadding2D',
  'MaxPooling2D',
  'AveragePooling2D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Flatten',
  'Reshape',
  'Dense',
  'Dropout',
  'SpatialDropout1D',
  'GaussianNoise',
  'GaussianDropout',
  'AlphaDropout',
] as const;

type Layer = SymbolicTensor['sourceLayer'];
type Shape = (number | null)[];
type Pads4 = [number, number, number, number]; // top, bottom, left, right

/** A TF.js tensor as it exists in the ONNX graph. `shape` is always the TF (NHWC) shape, whatever the layout. */
interface Value {
  name: string;
  shape: Shape;
  /** Rank-4 only: the ONNX tensor holds the data as NCHW. */
  nchw: boolean;
  /** A ZeroPadding2D not yet applied, left for the convolution that reads this value to absorb. */
  pads?: Pads4;
}

interface Call {
  layer: Layer;
  inputs: SymbolicTensor[];
  outputs: SymbolicTensor[];
  done?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------------
// Graph building

const attr = {
  int: (name: string, i: number): Attribute => ({ name, type: AttrType.INT, i }),
  float: (name: string, f: number): Attribute => ({ name, type: AttrType.FLOAT, f }),
  ints: (name: string, ints: number[]): Attribute => ({ name, type: AttrType.INTS, ints }),
};

class GraphBuilder {
  readonly nodes: NodeMsg[] = [];
  readonly initializers: TensorMsg[] = [];
  private readonly used = new Set<string>();
  private readonly scalars = new Map<number, string>();
  private readonly transposes = new Map<string, string>();

  /** A name no other value has: the hint itself when free. */
  fresh(hint: string): string {
    let name = hint;
    for (let k = 1; this.used.has(name); k++) name = `${hint}_${k}`;
    this.used.add(name);
    return name;
  }

  floats(hint: string, data: Float32Array, dims: number[]): string {
    const name = this.fresh(hint);
    const raw = new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    this.initializers.push({ name, dims, data_type: DataType.FLOAT, raw_data: raw });
    return name;
  }

  int64s(hint: string, data: number[], dims = [data.length]): string {
    const name = this.fresh(hint);
    const raw = new Uint8Array(BigInt64Array.from(data.map((d) => BigInt(d))).buffer);
    this.initializers.push({ name, dims, data_type: DataType.INT64, raw_data: raw });
    return name;
  }

  /** A float scalar constant, shared by every node that needs the same number. */
  scalar(value: number): string {
    let name = this.scalars.get(value);
    if (!name) {
      name = this.floats(`const_${value}`.replace(/[^\w.-]/g, '_'), Float32Array.of(value), []);
      this.scalars.set(value, name);
    }
    return name;
  }

  node(op: string, inputs: string[], hint: string, attributes: Attribute[] = []): string {
    const out = this.fresh(hint);
    this.nodes.push({ op_type: op, input: inputs, output: [out], name: out, attribute: attributes });
    return out;
  }

  /** Name of the graph input whose (symbolic) batch size dynamicZero reads. */
  batchSource = '';
  private zero?: string;

  /**
   * A float 0 that ONNX Runtime cannot prove constant (it is computed from the symbolic batch size). Used as a Pad's
   * constant value so that ORT's PadFusion leaves the Pad alone: it would merge a zero Pad into a following MaxPool
   * or AveragePool, whose own padding is -inf or excluded from the average, which changes the result (and fails
   * outright when a pad reaches the kernel size).
   */
  dynamicZero(): string {
    if (!this.zero) {
      const shape = this.node('Shape', [this.batchSource], 'graft_input_shape');
      const batch = this.node('Gather', [shape, this.int64s('graft_batch_axis', [0], [])], 'graft_batch');
      const zero = this.node('Sub', [batch, batch], 'graft_zero_int');
      this.zero = this.node('Cast', [zero], 'graft_zero', [attr.int('to', DataType.FLOAT)]);
    }
    return this.zero;
  }

  /** Transposes are cached so that several consumers needing the other layout share one. */
  transpose(name: string, perm: number[]): string {
    const key = `${name}|${perm.join(',')}`;
    let out = this.transposes.get(key);
    if (!out) {
      out = this.node('Transpose', [name], `${name}_${perm.join('') === '0312' ? 'nchw' : 'nhwc'}`, [
        attr.ints('perm', perm),
      ]);
      this.transposes.set(key, out);
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Small helpers

function unsupported(layer: Layer): Error {
  return new BaseError(
    'unsupported-layer',
    `layer ${layer.name}`,
    `type ${layer.getClassName()} is not supported by the ONNX converter`,
  );
}

function pair(v: unknown, what: string, layer: Layer): [number, number] {
  if (typeof v === 'number') return [v, v];
  if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')) return [v[0], v[1]];
  throw new BaseError('unsupported-layer', `layer ${layer.name}`, `${what} ${JSON.stringify(v)} is not a 2-D size`);
}

function requireChannelsLast(layer: Layer, config: Record<string, unknown>): void {
  const f = config.dataFormat ?? config.data_format;
  if (typeof f === 'string' && /first/i.test(f)) {
    throw new BaseError(
      'unsupported-layer',
      `layer ${layer.name}`,
      `data format ${f} is not supported by the ONNX converter (channels-last only)`,
    );
  }
}

function normAxis(axis: unknown, rank: number, layer: Layer): number {
  const a = Array.isArray(axis) && axis.length === 1 ? axis[0] : axis;
  if (typeof a !== 'number' || a < -rank || a >= rank)
    throw new BaseError('unsupported-layer', `layer ${layer.name}`, `axis ${JSON.stringify(axis)} is not supported`);
  return a < 0 ? a + rank : a;
}

const NHWC_TO_NCHW_AXIS = [0, 2, 3, 1];

/** The ONNX axis that holds TF axis `a` of value `v`. */
function onnxAxis(v: Value, a: number): number {
  return v.shape.length === 4 && v.nchw ? NHWC_TO_NCHW_AXIS[a] : a;
}

/** TensorFlow 'same' padding for one spatial dimension: [begin, end], the odd pixel at the end. */
function samePads(
  size: number | null,
  kernel: number,
  stride: number,
  dilation: number,
  layer: Layer,
): [number, number] {
  if (size == null)
    throw new BaseError(
      'unsupported-layer',
      `layer ${layer.name}`,
      `padding 'same' needs a static spatial size for the ONNX converter`,
    );
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

/** ONNX `pads` ([top, left, bottom, right]) for a 2-D window op on a TF NHWC shape, plus any absorbed padding. */
function windowPads(
  padding: unknown,
  shape: Shape,
  kernel: [number, number],
  strides: [number, number],
  dilations: [number, number],
  extra: Pads4 | undefined,
  layer: Layer,
): number[] {
  let [t, b, l, r] = [0, 0, 0, 0];
  if (padding === 'same') {
    [t, b] = samePads(shape[1], kernel[0], strides[0], dilations[0], layer);
    [l, r] = samePads(shape[2], kernel[1], strides[1], dilations[1], layer);
  } else if (padding !== 'valid') {
    throw new BaseError(
      'unsupported-layer',
      `layer ${layer.name}`,
      `padding '${String(padding)}' is not supported by the ONNX converter`,
    );
  }
  if (extra) {
    t += extra[0];
    b += extra[1];
    l += extra[2];
    r += extra[3];
  }
  return [t, l, b, r];
}

/**
 * A weight-sized tensor on its way into the graph: values known here, transformed in JavaScript and written as an
 * initializer where a node reads them, or a graph value (a trainable weight given as an input) transformed by nodes.
 * The same code thus folds BatchNorm and reorders kernels for an inference graph and for a training graph.
 */
type Param =
  | { dims: number[]; data: Float32Array; name?: undefined }
  | { dims: number[]; name: string; data?: undefined };

const count = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

function stridesOf(dims: number[]): number[] {
  const st = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) st[i] = st[i + 1] * dims[i + 1];
  return st;
}

function transposeData(data: Float32Array, dims: number[], perm: number[]): Float32Array {
  const outDims = perm.map((p) => dims[p]);
  const inSt = stridesOf(dims);
  const step = perm.map((p) => inSt[p]);
  const out = new Float32Array(data.length);
  const idx = new Array<number>(dims.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let k = 0; k < idx.length; k++) src += idx[k] * step[k];
    out[o] = data[src];
    for (let k = idx.length - 1; k >= 0; k--) {
      if (++idx[k] < outDims[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

/** Element-wise a ∘ b with numpy broadcasting (b's dims right-aligned, each 1 or equal to a's). */
function broadcastData(
  a: Param & { data: Float32Array },
  b: Param & { data: Float32Array },
  f: (x: number, y: number) => number,
): Float32Array {
  const lead = a.dims.length - b.dims.length;
  const bDims = [...new Array(lead).fill(1), ...b.dims];
  const bSt = stridesOf(bDims).map((s, i) => (bDims[i] === 1 ? 0 : s));
  const out = new Float32Array(a.data.length);
  const idx = new Array<number>(a.dims.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let j = 0;
    for (let k = 0; k < idx.length; k++) j += idx[k] * bSt[k];
    out[o] = f(a.data[o], b.data[j]);
    for (let k = idx.length - 1; k >= 0; k--) {
      if (++idx[k] < a.dims[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

function activationName(config: Record<string, unknown>): string {
  const a = config.activation;
  if (a == null) return 'linear';
  const name = typeof a === 'string' ? a : String((a as { className?: string }).className ?? JSON.stringify(a));
  return name.toLowerCase().replace(/_/g, '');
}

function isContainer(layer: Layer): layer is Layer & { inputs: SymbolicTensor[]; outputs: SymbolicTensor[] } {
  const l = layer as unknown as { inputs?: unknown; outputs?: unknown; layers?: unknown };
  return Array.isArray(l.layers) && Array.isArray(l.inputs) && Array.isArray(l.outputs);
}

// ---------------------------------------------------------------------------------------------------------------------
// Traversal: this model's own graph, from its outputs back through each SymbolicTensor's producing call. A layer shared
// with other models has inbound nodes that belong to them; following tensors never meets those.

function collect(outputs: SymbolicTensor[], bound: Set<SymbolicTensor>) {
  const order: Call[] = [];
  const callOf = new Map<SymbolicTensor, Call>();
  const byLayer = new Map<Layer, Map<unknown, Call>>();
  const consumers = new Map<SymbolicTensor, Call[]>();
  const visit = (t: SymbolicTensor): void => {
    if (bound.has(t) || callOf.has(t)) return;
    const layer = t.sourceLayer;
    if (layer.getClassName() === 'InputLayer') {
      throw new InternalError(
        `tensor ${t.name}: comes from input layer ${layer.name}, which is not an input of the model`,
      );
    }
    // Every output of one call shares the `inputs` object that call was given.
    let calls = byLayer.get(layer);
    if (!calls) {
      calls = new Map();
      byLayer.set(layer, calls);
    }
    const existing = calls.get(t.inputs);
    if (existing) {
      existing.outputs[t.outputTensorIndex ?? 0] = t;
      callOf.set(t, existing);
      return;
    }
    const inputs = (Array.isArray(t.inputs) ? t.inputs : [t.inputs]) as SymbolicTensor[];
    const call: Call = { layer, inputs, outputs: [] };
    call.outputs[t.outputTensorIndex ?? 0] = t;
    calls.set(t.inputs, call);
    callOf.set(t, call);
    for (const i of inputs) {
      visit(i);
      consumers.set(i, [...(consumers.get(i) ?? []), call]);
    }
    order.push(call);
  };
  for (const o of outputs) visit(o);
  return { order, consumers };
}

// ---------------------------------------------------------------------------------------------------------------------
// Conversion of one (possibly nested) model

class Converter {
  /** Trainable weights given as graph inputs (OnnxExportOptions.trainableAsInputs), in the order they were first read. */
  readonly weightInputs: WeightInput[] = [];

  constructor(
    readonly g: GraphBuilder,
    private readonly asInputs = false,
  ) {}

  /**
   * The layer's k-th weight (layer.weights order), its axes reordered by `perm` and then read as `dims`: an input in
   * that layout when it trains and trainableAsInputs is set, else the values.
   */
  weight(layer: Layer, k: number, perm?: number[], dims?: number[]): Param {
    const v = layer.weights[k];
    const shape = [...v.shape] as number[];
    const order = perm ?? shape.map((_, i) => i);
    const graphDims = dims ?? order.map((i) => shape[i]);
    if (this.asInputs && layer.trainableWeights.includes(v)) {
      let input = this.weightInputs.find((i) => i.variable === v);
      if (!input) {
        input = { name: this.g.fresh(v.name), variable: v, shape, perm: order, dims: graphDims };
        this.weightInputs.push(input);
      } else if (input.perm.join() !== order.join() || input.dims.join() !== graphDims.join()) {
        throw new InternalError(`layer ${layer.name}: weight ${v.name} is read in two layouts`);
      }
      return { name: input.name, dims: graphDims };
    }
    const data = Float32Array.from(v.read().dataSync() as Float32Array);
    return { data: perm ? transposeData(data, shape, order) : data, dims: graphDims };
  }

  /** The name a node reads: the graph value, or the values written as an initializer named after `hint`. */
  use(p: Param, hint: string): string {
    return p.name ?? this.g.floats(hint, p.data, p.dims);
  }

  reshape(p: Param, dims: number[], hint: string): Param {
    if (count(dims) !== count(p.dims)) throw new InternalError(`${hint}: cannot reshape [${p.dims}] to [${dims}]`);
    if (p.data) return { dims, data: p.data };
    return { dims, name: this.g.node('Reshape', [p.name, this.g.int64s(`${hint}_shape`, dims)], hint) };
  }

  /** a ∘ b, b broadcast against a (right-aligned); the result has a's dims. */
  combine(op: 'Mul' | 'Add' | 'Sub', a: Param, b: Param, hint: string): Param {
    if (a.data && b.data) {
      const f =
        op === 'Mul'
          ? (x: number, y: number) => x * y
          : op === 'Add'
            ? (x: number, y: number) => x + y
            : (x: number, y: number) => x - y;
      return { dims: a.dims, data: broadcastData(a, b, f) };
    }
    return { dims: a.dims, name: this.g.node(op, [this.use(a, `${hint}_a`), this.use(b, `${hint}_b`)], hint) };
  }

  /** y = x·scale + shift per channel: what an inference-mode BatchNormalization computes. */
  bnAffine(layer: Layer): { scale: Param; shift: Param } {
    const config = layer.getConfig() as { center?: boolean; scale?: boolean; epsilon?: number };
    let k = 0;
    const gamma = config.scale === false ? undefined : this.weight(layer, k++);
    const beta = config.center === false ? undefined : this.weight(layer, k++);
    const mean = this.weight(layer, k++);
    const variance = this.weight(layer, k++);
    if (!mean.data || !variance.data)
      throw new BaseError(
        'unsupported-layer',
        `layer ${layer.name}`,
        'trainable moving statistics are not supported by the ONNX converter',
      );
    const eps = config.epsilon ?? 1e-3;
    const invStd: Param = { dims: variance.dims, data: variance.data.map((v) => 1 / Math.sqrt(v + eps)) };
    const scale = gamma ? this.combine('Mul', gamma, invStd, `${layer.name}_scale`) : invStd;
    const centred = this.combine('Mul', mean, scale, `${layer.name}_centred`);
    const shift = beta
      ? this.combine('Sub', beta, centred, `${layer.name}_shift`)
      : this.combine('Mul', centred, { dims: [], data: Float32Array.of(-1) }, `${layer.name}_shift`);
    return { scale, shift };
  }

  toNchw(v: Value): Value {
    if (v.shape.length !== 4) throw new InternalError(`tensor ${v.name}: expected rank 4, got shape [${v.shape}]`);
    return v.nchw ? v : { ...v, name: this.g.transpose(v.name, [0, 3, 1, 2]), nchw: true };
  }

  toNhwc(v: Value): Value {
    return v.shape.length === 4 && v.nchw ? { ...v, name: this.g.transpose(v.name, [0, 2, 3, 1]), nchw: false } : v;
  }

  /** Applies padding that was left for a convolution, for any consumer that is not one. */
  materialize(v: Value): Value {
    if (!v.pads) return v;
    const x = this.toNchw(v);
    const [t, b, l, r] = v.pads;
    const pads = this.g.int64s(`${x.name}_pads`, [0, 0, t, l, 0, 0, b, r]);
    return {
      name: this.g.node('Pad', [x.name, pads, this.g.dynamicZero()], `${x.name}_padded`),
      shape: v.shape,
      nchw: true,
    };
  }

  activation(fn: string, v: Value, hint: string, layer: Layer): Value {
    const g = this.g;
    const x = v.name;
    const out = (name: string): Value => ({ ...v, name });
    switch (fn) {
      case 'linear':
        return v;
      case 'relu':
        return out(g.node('Relu', [x], hint));
      case 'relu6':
        return out(g.node('Clip', [x, g.scalar(0), g.scalar(6)], hint));
      case 'sigmoid':
        return out(g.node('Sigmoid', [x], hint));
      case 'tanh':
        return out(g.node('Tanh', [x], hint));
      case 'softplus':
        return out(g.node('Softplus', [x], hint));
      case 'softsign':
        return out(g.node('Softsign', [x], hint));
      case 'elu':
        return out(g.node('Elu', [x], hint, [attr.float('alpha', 1)]));
      case 'selu':
        return out(g.node('Selu', [x], hint));
      case 'hardsigmoid':
        // TF.js: clip(0.2·x + 0.5, 0, 1), ONNX HardSigmoid's defaults written out.
        return out(g.node('HardSigmoid', [x], hint, [attr.float('alpha', 0.2), attr.float('beta', 0.5)]));
      case 'softmax':
      case 'logsoftmax': {
        const axis = onnxAxis(v, v.shape.length - 1);
        return out(g.node(fn === 'softmax' ? 'Softmax' : 'LogSoftmax', [x], hint, [attr.int('axis', axis)]));
      }
      case 'swish':
        return out(g.node('Mul', [x, g.node('Sigmoid', [x], `${hint}_sigmoid`)], hint));
      case 'mish': {
        const t = g.node('Tanh', [g.node('Softplus', [x], `${hint}_softplus`)], `${hint}_tanh`);
        return out(g.node('Mul', [x, t], hint));
      }
      case 'gelu': {
        const e = g.node('Erf', [g.node('Mul', [x, g.scalar(Math.SQRT1_2)], `${hint}_scaled`)], `${hint}_erf`);
        const cdf = g.node('Mul', [g.node('Add', [e, g.scalar(1)], `${hint}_1p`), g.scalar(0.5)], `${hint}_cdf`);
        return out(g.node('Mul', [x, cdf], hint));
      }
      case 'gelunew': {
        const x3 = g.node('Mul', [g.node('Mul', [x, x], `${hint}_x2`), x], `${hint}_x3`);
        const inner = g.node('Add', [x, g.node('Mul', [x3, g.scalar(0.044715)], `${hint}_cx3`)], `${hint}_inner`);
        const t = g.node(
          'Tanh',
          [g.node('Mul', [inner, g.scalar(Math.sqrt(2 / Math.PI))], `${hint}_arg`)],
          `${hint}_tanh`,
        );
        const half = g.node('Mul', [g.node('Add', [t, g.scalar(1)], `${hint}_1p`), g.scalar(0.5)], `${hint}_half`);
        return out(g.node('Mul', [x, half], hint));
      }
      default:
        throw new BaseError(
          'unsupported-layer',
          `layer ${layer.name}`,
          `activation ${fn} is not supported by the ONNX converter`,
        );
    }
  }

  /** Per-channel y = x·scale + shift along TF axis `axis`. */
  affine(v: Value, axis: number, scale: Param, shift: Param, hint: string): Value {
    const a = onnxAxis(v, axis);
    const dims = [count(scale.dims), ...new Array(v.shape.length - 1 - a).fill(1)];
    const s = this.use(this.reshape(scale, dims, `${hint}_scale_shaped`), `${hint}_scale`);
    const mul = this.g.node('Mul', [v.name, s], `${hint}_mul`);
    const t = this.use(this.reshape(shift, dims, `${hint}_shift_shaped`), `${hint}_shift`);
    return { ...v, name: this.g.node('Add', [mul, t], hint) };
  }

  /** Element-wise ops broadcast alike in both layouts, as long as all operands share one. */
  align(vs: Value[], layer: Layer): Value[] {
    const rank = vs[0].shape.length;
    if (vs.some((v) => v.shape.length !== rank)) {
      throw new BaseError(
        'unsupported-layer',
        `layer ${layer.name}`,
        `inputs of different ranks are not supported by the ONNX converter`,
      );
    }
    if (rank === 4 && vs.some((v) => v.nchw)) return vs.map((v) => this.toNchw(v));
    return vs.map((v) => this.toNhwc(v));
  }

  run(model: { inputs: SymbolicTensor[]; outputs: SymbolicTensor[] }, inputValues: Value[]): Value[] {
    const { order, consumers } = collect(model.outputs, new Set(model.inputs));
    const values = new Map<SymbolicTensor, Value>();
    model.inputs.forEach((t, i) => {
      values.set(t, inputValues[i]);
    });
    const isOutput = new Set(model.outputs);
    const soleConsumer = (t: SymbolicTensor): Call | undefined => {
      const c = consumers.get(t) ?? [];
      return !isOutput.has(t) && c.length === 1 ? c[0] : undefined;
    };
    for (const call of order) {
      if (call.done) continue;
      const raw = call.inputs.map((t) => {
        const v = values.get(t);
        if (!v) throw new InternalError(`layer ${call.layer.name}: input ${t.name} was not computed`);
        return v;
      });
      const folded = this.folded.get(call);
      const outs = folded ? [folded] : this.layer(call, raw, soleConsumer);
      call.done = true;
      if (outs.length !== call.outputs.length && !isContainer(call.layer)) {
        throw new InternalError(
          `layer ${call.layer.name}: produced ${outs.length} outputs, expected ${call.outputs.length}`,
        );
      }
      call.outputs.forEach((t, i) => {
        if (t) values.set(t, outs[i]);
      });
    }
    return model.outputs.map((t) => this.materialize(values.get(t)!));
  }

  private layer(call: Call, raw: Value[], soleConsumer: (t: SymbolicTensor) => Call | undefined): Value[] {
    const { layer } = call;
    const g = this.g;
    const cls = layer.getClassName();
    const config = layer.getConfig() as Record<string, unknown>;
    const outShape = call.outputs[0]?.shape as Shape;
    const name = layer.name;
    const input = (i = 0) => this.materialize(raw[i]);

    if (isContainer(layer)) {
      const inner = this.run(
        layer,
        raw.map((v) => this.materialize(v)),
      );
      return call.outputs.map((t) => inner[t.outputTensorIndex ?? 0]);
    }

    switch (cls) {
      case 'Dropout':
      case 'SpatialDropout1D':
      case 'GaussianNoise':
      case 'GaussianDropout':
      case 'AlphaDropout':
        return [raw[0]];

      case 'Rescaling': {
        let v = input();
        const scale = Number(config.scale ?? 1);
        const offset = Number(config.offset ?? 0);
        if (scale !== 1)
          v = { ...v, name: g.node('Mul', [v.name, g.scalar(scale)], offset !== 0 ? `${name}_mul` : name) };
        if (offset !== 0) v = { ...v, name: g.node('Add', [v.name, g.scalar(offset)], name) };
        return [v];
      }

      case 'Conv2D':
      case 'DepthwiseConv2D':
      case 'SeparableConv2D':
        return [this.conv(call, raw[0], config, soleConsumer)];

      case 'Dense': {
        let kernel = this.weight(layer, 0);
        let bias = config.useBias === false ? undefined : this.weight(layer, 1);
        const fold = this.foldableBn(call, config, soleConsumer);
        if (fold) {
          const { scale, shift } = this.bnAffine(fold.layer);
          kernel = this.combine('Mul', kernel, scale, `${name}_kernel_folded`);
          bias = bias
            ? this.combine('Add', this.combine('Mul', bias, scale, `${name}_bias_scaled`), shift, `${name}_bias_folded`)
            : shift;
        }
        const hint = fold ? fold.layer.name : name;
        const x = this.toNhwc(input());
        const w = this.use(kernel, `${name}_kernel`);
        const b = bias ? this.use(bias, `${name}_bias`) : undefined;
        const act = activationName(config);
        const pre = act === 'linear' ? hint : `${hint}_linear`;
        let y: string;
        if (x.shape.length === 2) {
          y = g.node('Gemm', b ? [x.name, w, b] : [x.name, w], pre);
        } else {
          y = b
            ? g.node('Add', [g.node('MatMul', [x.name, w], `${pre}_matmul`), b], pre)
            : g.node('MatMul', [x.name, w], pre);
        }
        const v = this.activation(act, { name: y, shape: outShape, nchw: false }, hint, layer);
        if (fold) this.finishFold(fold, v);
        return [v];
      }

      case 'BatchNormalization': {
        const x = input();
        const axis = normAxis(config.axis ?? -1, x.shape.length, layer);
        const { scale, shift } = this.bnAffine(layer);
        return [this.affine(x, axis, scale, shift, name)];
      }

      case 'ReLU': {
        const x = input();
        const max = config.maxValue;
        if (max == null) return [{ ...x, name: g.node('Relu', [x.name], name) }];
        return [{ ...x, name: g.node('Clip', [x.name, g.scalar(0), g.scalar(Number(max))], name) }];
      }
      case 'LeakyReLU': {
        const x = input();
        return [
          { ...x, name: g.node('LeakyRelu', [x.name], name, [attr.float('alpha', Number(config.alpha ?? 0.3))]) },
        ];
      }
      case 'ELU': {
        const x = input();
        return [{ ...x, name: g.node('Elu', [x.name], name, [attr.float('alpha', Number(config.alpha ?? 1))]) }];
      }
      case 'ThresholdedReLU': {
        const x = input();
        return [
          { ...x, name: g.node('ThresholdedRelu', [x.name], name, [attr.float('alpha', Number(config.theta ?? 1))]) },
        ];
      }
      case 'Softmax': {
        const x = input();
        const axis = onnxAxis(x, normAxis(config.axis ?? -1, x.shape.length, layer));
        return [{ ...x, name: g.node('Softmax', [x.name], name, [attr.int('axis', axis)]) }];
      }
      case 'Activation':
        return [this.activation(activationName(config), input(), name, layer)];

      case 'Add':
      case 'Multiply':
      case 'Maximum':
      case 'Minimum':
      case 'Average': {
        const xs = this.align(
          raw.map((v) => this.materialize(v)),
          layer,
        );
        const op = { Add: 'Add', Multiply: 'Mul', Maximum: 'Max', Minimum: 'Min', Average: 'Add' }[cls]!;
        let acc = xs[0].name;
        for (let i = 1; i < xs.length; i++) {
          const last = i === xs.length - 1 && cls !== 'Average';
          acc = g.node(op, [acc, xs[i].name], last ? name : `${name}_${i}`);
        }
        if (cls === 'Average') acc = g.node('Mul', [acc, g.scalar(1 / xs.length)], name);
        return [{ name: acc, shape: outShape, nchw: xs[0].nchw }];
      }

      case 'Concatenate': {
        const xs = this.align(
          raw.map((v) => this.materialize(v)),
          layer,
        );
        const axis = onnxAxis(xs[0], normAxis(config.axis ?? -1, xs[0].shape.length, layer));
        return [
          {
            name: g.node(
              'Concat',
              xs.map((v) => v.name),
              name,
              [attr.int('axis', axis)],
            ),
            shape: outShape,
            nchw: xs[0].nchw,
          },
        ];
      }

      case 'ZeroPadding2D': {
        requireChannelsLast(layer, config);
        const p = config.padding as unknown;
        let pads: Pads4;
        if (typeof p === 'number') pads = [p, p, p, p];
        else if (Array.isArray(p) && p.length === 2 && typeof p[0] === 'number') pads = [p[0], p[0], p[1], p[1]];
        else if (Array.isArray(p) && p.length === 2) {
          const [[t, b], [l, r]] = p as number[][];
          pads = [t, b, l, r];
        } else
          throw new BaseError('unsupported-layer', `layer ${name}`, `padding ${JSON.stringify(p)} is not supported`);
        const next = soleConsumer(call.outputs[0]);
        const x = raw[0];
        const deferred: Value = {
          ...x,
          shape: outShape,
          pads: x.pads ? (x.pads.map((q, i) => q + pads[i]) as Pads4) : pads,
        };
        // A convolution absorbs zero padding into its own pads (stacked paddings add up first); anything else gets a
        // Pad node.
        if (
          next &&
          ['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'ZeroPadding2D'].includes(next.layer.getClassName())
        ) {
          return [deferred];
        }
        return [this.materialize(deferred)];
      }

      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        requireChannelsLast(layer, config);
        const x = this.toNchw(input());
        const kernel = pair(config.poolSize, 'pool size', layer);
        const strides = pair(config.strides ?? config.poolSize, 'strides', layer);
        const pads = windowPads(config.padding, x.shape, kernel, strides, [1, 1], undefined, layer);
        const attrs = [attr.ints('kernel_shape', kernel), attr.ints('strides', strides), attr.ints('pads', pads)];
        // TF's 'same' average pooling divides by the number of real pixels under the window, not the window size.
        if (cls === 'AveragePooling2D') attrs.push(attr.int('count_include_pad', 0));
        const op = cls === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool';
        return [{ name: g.node(op, [x.name], name, attrs), shape: outShape, nchw: true }];
      }

      case 'GlobalAveragePooling2D':
      case 'GlobalMaxPooling2D': {
        requireChannelsLast(layer, config);
        const x = this.toNchw(input());
        const op = cls === 'GlobalAveragePooling2D' ? 'GlobalAveragePool' : 'GlobalMaxPool';
        if (config.keepDims) return [{ name: g.node(op, [x.name], name), shape: outShape, nchw: true }];
        const pooled = g.node(op, [x.name], `${name}_4d`);
        return [{ name: g.node('Flatten', [pooled], name, [attr.int('axis', 1)]), shape: outShape, nchw: false }];
      }

      case 'Flatten': {
        requireChannelsLast(layer, config);
        // Flatten order is TF's (H, W, C): back to NHWC first.
        const x = this.toNhwc(input());
        if (x.shape.length === 2) return [x];
        return [{ name: g.node('Flatten', [x.name], name, [attr.int('axis', 1)]), shape: outShape, nchw: false }];
      }

      case 'Reshape': {
        const x = this.toNhwc(input());
        const target = (config.targetShape as number[]).map((d) => (d == null ? -1 : d));
        // 0 copies the batch size from the input (allowzero = 0).
        const shape = g.int64s(`${name}_shape`, [0, ...target]);
        return [{ name: g.node('Reshape', [x.name, shape], name), shape: outShape, nchw: false }];
      }

      default:
        throw unsupported(layer);
    }
  }

  /** The BatchNormalization that may be folded into this conv/dense call, if any. */
  private foldableBn(
    call: Call,
    config: Record<string, unknown>,
    soleConsumer: (t: SymbolicTensor) => Call | undefined,
  ): Call | undefined {
    if (activationName(config) !== 'linear') return undefined;
    const next = soleConsumer(call.outputs[0]);
    if (next?.layer.getClassName() !== 'BatchNormalization') return undefined;
    const rank = call.outputs[0].shape.length;
    const axis = (next.layer.getConfig() as { axis?: unknown }).axis ?? -1;
    try {
      return normAxis(axis, rank, next.layer) === rank - 1 ? next : undefined;
    } catch {
      return undefined;
    }
  }

  /** Folded BatchNormalizations: the value their convolution wrote with the normalisation built in. */
  private readonly folded = new Map<Call, Value>();

  private finishFold(bn: Call, v: Value): void {
    this.folded.set(bn, v);
  }

  private conv(
    call: Call,
    raw: Value,
    config: Record<string, unknown>,
    soleConsumer: (t: SymbolicTensor) => Call | undefined,
  ): Value {
    const { layer } = call;
    const g = this.g;
    const cls = layer.getClassName();
    requireChannelsLast(layer, config);
    const kernelSize = pair(config.kernelSize, 'kernel size', layer);
    const strides = pair(config.strides ?? 1, 'strides', layer);
    const dilations = pair(config.dilationRate ?? 1, 'dilation rate', layer);
    const x = this.toNchw(raw);
    const pads = windowPads(config.padding, x.shape, kernelSize, strides, dilations, raw.pads, layer);
    const [kh, kw] = kernelSize;
    const inC = x.shape[3] as number;
    const useBias = config.useBias !== false;
    const fold = this.foldableBn(call, config, soleConsumer);
    const hint = fold ? fold.layer.name : layer.name;
    const act = activationName(config);
    const convName = act === 'linear' ? hint : `${hint}_linear`;
    const windowAttrs = [
      attr.ints('kernel_shape', kernelSize),
      attr.ints('strides', strides),
      attr.ints('dilations', dilations),
      attr.ints('pads', pads),
    ];

    let bias = useBias ? this.weight(layer, layer.weights.length - 1) : undefined;
    let weight: Param;
    let inputName = x.name;
    let outC: number;
    let group = 1;
    let attrs = windowAttrs;
    if (cls === 'Conv2D') {
      outC = Number(config.filters);
      // HWIO → OIHW.
      weight = this.weight(layer, 0, [3, 2, 0, 1]);
    } else {
      // HW·C·M → (C·M)·1·H·W, the weight of a Conv with group = C; output channel c·M + m. SeparableConv2D's config
      // omits depthMultiplier in TF.js: read it off the kernel's shape.
      const m = (layer.weights[0].shape[3] as number) ?? 1;
      const dw = this.weight(layer, 0, [2, 3, 0, 1], [inC * m, 1, kh, kw]);
      if (cls === 'DepthwiseConv2D') {
        weight = dw;
        outC = inC * m;
        group = inC;
      } else {
        // SeparableConv2D: the depthwise step (no bias), then a 1×1 pointwise Conv2D that carries the bias.
        inputName = g.node(
          'Conv',
          [x.name, this.use(dw, `${layer.name}_depthwise_kernel`)],
          `${layer.name}_depthwise`,
          [...windowAttrs, attr.int('group', inC)],
        );
        outC = Number(config.filters);
        weight = this.weight(layer, 1, [3, 2, 0, 1]);
        attrs = [attr.ints('kernel_shape', [1, 1])];
      }
    }
    if (fold) {
      const { scale, shift } = this.bnAffine(fold.layer);
      weight = this.combine(
        'Mul',
        weight,
        this.reshape(scale, [outC, 1, 1, 1], `${hint}_scale_oihw`),
        `${layer.name}_kernel_folded`,
      );
      bias = bias
        ? this.combine(
            'Add',
            this.combine('Mul', bias, scale, `${layer.name}_bias_scaled`),
            shift,
            `${layer.name}_bias_folded`,
          )
        : shift;
    }
    if (group > 1) attrs = [...attrs, attr.int('group', group)];
    const inputs = [inputName, this.use(weight, `${layer.name}_kernel`)];
    if (bias) inputs.push(this.use(bias, `${layer.name}_bias`));
    const y = g.node('Conv', inputs, convName, attrs);
    const v = this.activation(act, { name: y, shape: call.outputs[0].shape as Shape, nchw: true }, hint, layer);
    if (fold) this.finishFold(fold, v);
    return v;
  }
}

// ---------------------------------------------------------------------------------------------------------------------

function valueInfo(name: string, shape: Shape): ValueInfoMsg {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: DataType.FLOAT,
        shape: {
          dim: shape.map((d, i) =>
            d == null ? { dim_param: i === 0 ? 'batch' : `${name}_dim${i}` } : { dim_value: d },
          ),
        },
      },
    },
  };
}

function irVersionFor(opset: number): number {
  if (opset <= 17) return 8;
  if (opset <= 19) return 9;
  if (opset <= 21) return 10;
  return 11;
}

/**
 * Converts a TF.js Layers model to an ONNX ModelProto message (IR 8, opset 17 by default). Inputs and outputs are
 * float32 with TF.js's shapes (NHWC for images) and a symbolic batch dimension; with `trainableAsInputs` the trainable
 * weights follow as further inputs (listed in `weightInputs`). Throws on a layer type, activation, padding or data
 * format it does not cover, naming the layer.
 */
export function convertLayers(
  model: LayersModel,
  opts: OnnxExportOptions = {},
): { model: ModelMsg; weightInputs: WeightInput[] } {
  const opset = opts.opset ?? DEFAULT_OPSET;
  if (!Number.isInteger(opset) || opset < 13 || opset > 22)
    throw new UsageError('invalid-value', words`${opt('opset')} ${opset} is not supported (13..22)`);
  const g = new GraphBuilder();
  const inputNames = model.inputs.map((_t, i) =>
    g.fresh(i === 0 && opts.inputName ? opts.inputName : (model.inputNames[i] ?? `input_${i}`)),
  );
  const outputNames = model.outputs.map((_t, i) => g.fresh(model.outputNames[i] ?? `output_${i}`));
  g.batchSource = inputNames[0];
  const conv = new Converter(g, opts.trainableAsInputs ?? false);
  const inputs: Value[] = model.inputs.map((t, i) => ({ name: inputNames[i], shape: t.shape as Shape, nchw: false }));
  const results = conv.run(model, inputs);
  results.forEach((v, i) => {
    const y = conv.toNhwc(v);
    g.nodes.push({
      op_type: 'Identity',
      input: [y.name],
      output: [outputNames[i]],
      name: outputNames[i],
      attribute: [],
    });
  });
  const message: ModelMsg = {
    ir_version: irVersionFor(opset),
    producer_name: 'graft',
    producer_version: opts.producerVersion ?? '',
    opset_import: [{ domain: '', version: opset }],
    metadata_props: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: model.name || 'graft',
      node: g.nodes,
      initializer: g.initializers,
      input: [
        ...model.inputs.map((t, i) => valueInfo(inputNames[i], t.shape as Shape)),
        ...conv.weightInputs.map((w) => valueInfo(w.name, w.dims)),
      ],
      output: model.outputs.map((t, i) => valueInfo(outputNames[i], t.shape as Shape)),
    },
  };
  return { model: message, weightInputs: conv.weightInputs };
}

/** convertLayers, serialised: the bytes of an .onnx file. */
export function layersToOnnx(model: LayersModel, opts: OnnxExportOptions = {}): Uint8Array {
  return encodeModel(convertLayers(model, opts).model);
}
