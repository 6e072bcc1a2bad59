/**
 * @file Static shape inference over the ONNX operators graft's converter and gradient builder write, so that a
 * backward rule knows the shapes of the values it differentiates (which axes a broadcast added, how large a padded
 * map was). A dimension that depends on the batch is `null`; everything else is a number.
 */

import { InternalError } from '../util/errors.ts';
import type { Attribute, GraphMsg, NodeMsg, TensorMsg } from './proto.ts';
import { DataType } from './proto.ts';

export type Shape = (number | null)[];

/** What is known about a graph's values: shapes, and the contents of its int64 constants (shapes, pads, axes). */
export interface GraphFacts {
  shapes: Map<string, Shape>;
  ints: Map<string, number[]>;
}

export function attribute(node: NodeMsg, name: string): Attribute | undefined {
  return node.attribute.find((a) => a.name === name);
}

export function intAttr(node: NodeMsg, name: string, fallback: number): number {
  const a = attribute(node, name);
  return a?.i !== undefined ? Number(a.i) : fallback;
}

export function intsAttr(node: NodeMsg, name: string, fallback: number[]): number[] {
  const a = attribute(node, name);
  return a?.ints?.length ? a.ints.map(Number) : fallback;
}

export function floatAttr(node: NodeMsg, name: string, fallback: number): number {
  const a = attribute(node, name);
  return a?.f !== undefined ? a.f : fallback;
}

export function int64Values(t: TensorMsg): number[] {
  const bytes = t.raw_data.slice();
  return Array.from(new BigInt64Array(bytes.buffer, 0, bytes.byteLength / 8), Number);
}

export function floatValues(t: TensorMsg): Float32Array {
  const bytes = t.raw_data.slice();
  return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
}

const size = (s: Shape): number | null =>
  s.some((d) => d === null) ? null : (s as number[]).reduce((a, b) => a * b, 1);

/** Numpy broadcasting of two shapes. */
export function broadcast(a: Shape, b: Shape): Shape {
  const r = Math.max(a.length, b.length);
  const out: Shape = [];
  for (let i = 0; i < r; i++) {
    const x = i < r - a.length ? 1 : a[i - (r - a.length)];
    const y = i < r - b.length ? 1 : b[i - (r - b.length)];
    out.push(x === 1 ? y : y === 1 ? x : x === null ? y : x);
  }
  return out;
}

/** Output size of a window op along one axis (floor mode, explicit pads). */
function windowOut(n: number | null, k: number, s: number, d: number, pb: number, pe: number): number | null {
  return n === null ? null : Math.floor((n + pb + pe - ((k - 1) * d + 1)) / s) + 1;
}

type Rule = (node: NodeMsg, ins: Shape[], facts: GraphFacts) => Shape[];

const same: Rule = (_n, ins) => [ins[0]];
const elementwise: Rule = (_n, ins) => [ins.reduce(broadcast)];

function window(node: NodeMsg, x: Shape, out: number | null, kernel: number[]): Shape {
  const strides = intsAttr(node, 'strides', [1, 1]);
  const dil = intsAttr(node, 'dilations', [1, 1]);
  const pads = intsAttr(node, 'pads', [0, 0, 0, 0]);
  const auto = attribute(node, 'auto_pad');
  if (auto?.s && new TextDecoder().decode(auto.s) !== 'NOTSET')
    throw new InternalError(`${node.name}: auto_pad is not supported`);
  return [
    x[0],
    out,
    windowOut(x[2], kernel[0], strides[0], dil[0], pads[0], pads[2]),
    windowOut(x[3], kernel[1], strides[1], dil[1], pads[1], pads[3]),
  ];
}

function reduced(node: NodeMsg, x: Shape, axes: number[] | undefined): Shape {
  const keep = intAttr(node, 'keepdims', 1) === 1;
  const all = axes === undefined || axes.length === 0;
  const set = new Set((axes ?? []).map((a) => (a < 0 ? a + x.length : a)));
  const out: Shape = [];
  x.forEach((d, i) => {
    if (all || set.has(i)) {
      if (keep) out.push(1);
    } else out.push(d);
  });
  return out;
}

const RULES: Record<string, Rule> = {
  ...Object.fromEntries(
    ['Erf', 'Softplus', 'Softsign', 'Selu', 'HardSigmoid', 'ThresholdedRelu', 'Abs', 'Log', 'Reciprocal'].map((op) => [
      op,
      same,
    ]),
  ),
  Identity: same,
  Relu: same,
  Clip: same,
  LeakyRelu: same,
  Elu: same,
  Sigmoid: same,
  Tanh: same,
  Neg: same,
  Exp: same,
  Sqrt: same,
  Softmax: same,
  LogSoftmax: same,
  Sign: same,
  Cast: same,
  Add: elementwise,
  Sub: elementwise,
  Mul: elementwise,
  Div: elementwise,
  Max: elementwise,
  Min: elementwise,
  Greater: elementwise,
  Less: elementwise,
  Equal: elementwise,
  And: elementwise,
  Where: elementwise,
  Conv: (node, [x, w]) => [window(node, x, w[0], intsAttr(node, 'kernel_shape', w.slice(2) as number[]))],
  MaxPool: (node, [x]) => {
    const y = window(node, x, x[1], intsAttr(node, 'kernel_shape', []));
    return [y, y];
  },
  AveragePool: (node, [x]) => [window(node, x, x[1], intsAttr(node, 'kernel_shape', []))],
  GlobalAveragePool: (_n, [x]) => [[x[0], x[1], ...x.slice(2).map(() => 1)]],
  GlobalMaxPool: (_n, [x]) => [[x[0], x[1], ...x.slice(2).map(() => 1)]],
  Transpose: (node, [x]) => {
    const perm = intsAttr(node, 'perm', [...x.keys()].reverse());
    return [perm.map((p) => x[p])];
  },
  Reshape: (node, [x], facts) => {
    const target = facts.ints.get(node.input[1]);
    if (!target) throw new InternalError(`${node.name}: Reshape to a shape that is not a constant`);
    const out: Shape = target.map((d, i) => (d === 0 ? x[i] : d === -1 ? null : d));
    const known = size(x);
    const rest = out.filter((d) => d !== null) as number[];
    const hole = target.indexOf(-1);
    if (hole >= 0 && known !== null && rest.length === out.length - 1)
      out[hole] = known / rest.reduce((a, b) => a * b, 1);
    return [out];
  },
  Flatten: (node, [x]) => {
    const axis = intAttr(node, 'axis', 1);
    return [[size(x.slice(0, axis)), size(x.slice(axis))]];
  },
  Pad: (node, [x], facts) => {
    const pads = facts.ints.get(node.input[1]);
    if (!pads) throw new InternalError(`${node.name}: Pad with pads that are not a constant`);
    return [x.map((d, i) => (d === null ? null : d + pads[i] + pads[i + x.length]))];
  },
  Slice: (node, [x], facts) => {
    const [starts, ends, axes, steps] = node.input.slice(1).map((n) => facts.ints.get(n));
    if (!starts || !ends) throw new InternalError(`${node.name}: Slice bounds that are not constants`);
    const out = [...x];
    starts.forEach((s0, k) => {
      const a = axes ? (axes[k] < 0 ? axes[k] + x.length : axes[k]) : k;
      const step = steps ? steps[k] : 1;
      const n = x[a];
      if (n === null) return;
      const clamp = (v: number) => Math.max(0, Math.min(n, v < 0 ? v + n : v));
      out[a] = Math.max(0, Math.ceil((clamp(ends[k]) - clamp(s0)) / step));
    });
    return [out];
  },
  Concat: (node, ins) => {
    const r = ins[0].length;
    const axis = (intAttr(node, 'axis', 0) + r) % r;
    const out = [...ins[0]];
    out[axis] = ins.reduce<number | null>(
      (s, x) => (s === null || x[axis] === null ? null : s + (x[axis] as number)),
      0,
    );
    return [out];
  },
  Split: (node, [x], facts) => {
    const axis = (intAttr(node, 'axis', 0) + x.length) % x.length;
    const parts = facts.ints.get(node.input[1]);
    if (!parts) throw new InternalError(`${node.name}: Split sizes that are not constants`);
    return parts.map((p) => x.map((d, i) => (i === axis ? p : d)));
  },
  Gemm: (node, [a, b]) => {
    const ta = intAttr(node, 'transA', 0);
    const tb = intAttr(node, 'transB', 0);
    return [[ta ? a[1] : a[0], tb ? b[0] : b[1]]];
  },
  MatMul: (_n, [a, b]) => {
    const batch = broadcast(a.slice(0, -2), b.slice(0, -2));
    if (b.length === 1) return [a.slice(0, -1)];
    if (a.length === 1) return [[...b.slice(0, -2), b[b.length - 1]]];
    return [[...batch, a[a.length - 2], b[b.length - 1]]];
  },
  ReduceSum: (node, [x], facts) => [reduced(node, x, node.input[1] ? facts.ints.get(node.input[1]) : undefined)],
  ReduceMean: (node, [x]) => [reduced(node, x, intsAttr(node, 'axes', []))],
  ReduceMax: (node, [x]) => [reduced(node, x, intsAttr(node, 'axes', []))],
  Shape: (_n, [x]) => [[x.length]],
  Gather: (node, [x, i]) => {
    const axis = (intAttr(node, 'axis', 0) + x.length) % x.length;
    return [[...x.slice(0, axis), ...i, ...x.slice(axis + 1)]];
  },
  ArgMax: (node, [x]) => {
    const axis = (intAttr(node, 'axis', 0) + x.length) % x.length;
    return [reduced({ ...node, attribute: node.attribute }, x, [axis])];
  },
};

function dimsOf(t: { dims: number[] }): Shape {
  return t.dims.map(Number);
}

/**
 * Shapes of every value of the graph, from the declared input shapes and the initializers; a value whose operator
 * has no rule here is simply absent (only the gradient builder asks, and it names what it could not find).
 */
export function inferShapes(graph: GraphMsg): GraphFacts {
  const shapes = new Map<string, Shape>();
  const ints = new Map<string, number[]>();
  for (const t of graph.initializer) {
    shapes.set(t.name, dimsOf(t));
    if (t.data_type === DataType.INT64) ints.set(t.name, int64Values(t));
  }
  for (const v of graph.input) {
    const dims = v.type.tensor_type.shape?.dim ?? [];
    shapes.set(
      v.name,
      dims.map((d) => ('dim_value' in d && d.dim_value !== undefined ? Number(d.dim_value) : null)),
    );
  }
  const facts = { shapes, ints };
  for (const node of graph.node) {
    const rule = RULES[node.op_type];
    const ins = node.input.map((n) => (n ? shapes.get(n) : undefined));
    if (!rule || ins.some((s, i) => node.input[i] && !s)) continue;
    const outs = rule(node, ins as Shape[], facts);
    node.output.forEach((o, i) => {
      if (o && outs[i]) shapes.set(o, outs[i]);
    });
  }
  return facts;
}
