/**
 * ONNX files as bases (feature transfer only), run by ONNX Runtime: a network exported from PyTorch, timm, Hugging
 * Face, or by graft's own converter.
 *
 * The file is never re-encoded through graft's onnx.proto subset, which would drop every field the subset leaves out
 * (external data, sparse initializers, subgraphs…). To read an intermediate tensor, graft appends a second `graph`
 * field holding only extra `output` entries: protobuf parsers merge repeated occurrences of a message field, so ONNX
 * Runtime sees the original graph with more outputs. Exports rewrite the graph field by field the same way.
 *
 * Input: layout NCHW or NHWC (flag, `graft.layout` metadata, or the dimension of size 3), size from the input shape
 * (or flag / `graft.size` when dynamic), normalisation by range or per-channel mean/std (flags, or `graft.range`,
 * `graft.mean`, `graft.std` metadata), default range [0, 1]. All of it is applied in JS before the network.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeModel, type ModelMsg, scalarValue, type TensorMsg } from '../onnx/proto.ts';
import { requireOrt } from '../onnx/runtime.ts';
import { withOutputs } from '../onnx/wire.ts';
import { BaseError, errnoOf, oneLine, opt, shown, UsageError, words } from '../util/errors.ts';
import type { BaseOptions, OnnxBase } from './base.ts';
import { cutPositions, type ForeignNode, type ForeignTrunk, guessLayout, pooledSize, type SeqNode } from './foreign.ts';
import type { CutPoint } from './graph.ts';
import { fromRange, type Preprocessing, parseRange } from './preprocessing.ts';

type Layout = 'nchw' | 'nhwc';

// ---------------------------------------------------------------------------------------------------------------------
// Reading the graph

export interface OnnxGraphInfo {
  model: ModelMsg;
  inputName: string;
  /** Input dimensions; 0 where symbolic. */
  inputDims: number[];
  outputs: string[];
  metadata: Record<string, string>;
  /** Nodes in file order (ONNX requires topological order), Constant nodes left out. */
  seq: SeqNode[];
  /** Parameters per sequence node (elements of the initializers and constants it reads). */
  params: number[];
}

export function readOnnxGraph(bytes: Uint8Array, where: string): OnnxGraphInfo {
  let model: ModelMsg;
  try {
    model = decodeModel(bytes);
  } catch (e) {
    throw new BaseError('not-a-model', where, 'not an ONNX model (not a valid ONNX protobuf file)', e);
  }
  const g = model.graph;
  if (!g || !Array.isArray(g.node) || g.node.length === 0)
    throw new BaseError('not-a-model', where, 'not an ONNX model (no graph nodes)');
  const constSize = new Map<string, number>();
  for (const t of g.initializer ?? [])
    constSize.set(
      t.name,
      (t.dims ?? []).reduce((a, b) => a * Number(b), 1),
    );
  const seq: SeqNode[] = [];
  const params: number[] = [];
  for (const n of g.node) {
    if (n.op_type === 'Constant') {
      for (const o of n.output ?? []) constSize.set(o, 0);
      continue;
    }
    const inputs = (n.input ?? []).filter((t) => t && !constSize.has(t));
    seq.push({ name: n.output?.[0] ?? n.name, op: n.op_type, inputs, outputs: (n.output ?? []).filter(Boolean) });
    params.push((n.input ?? []).reduce((a, t) => a + (constSize.get(t) ?? 0), 0));
  }
  const input = (g.input ?? []).find((i) => !constSize.has(i.name));
  if (!input) throw new BaseError('not-an-image-model', where, 'the ONNX graph has no input');
  const dims = input.type?.tensor_type?.shape?.dim ?? [];
  const inputDims = dims.map((d) => Number((d as { dim_value?: number }).dim_value ?? 0));
  const metadata = Object.fromEntries((model.metadata_props ?? []).map((p) => [p.key, p.value]));
  return {
    model,
    inputName: input.name,
    inputDims,
    outputs: (g.output ?? []).map((o) => o.name),
    metadata,
    seq,
    params,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// What the ONNX Runtime engine (engines/onnx-base.ts) needs to run it

export interface OnnxTrunkSpec {
  bytes: Uint8Array;
  inputName: string;
  layout: Layout;
  preprocessing: Preprocessing;
  /** A fixed batch dimension in the file (0 when symbolic). */
  fixedBatch: number;
  /** Tensors the graph already outputs (need not be added). */
  outputs: string[];
  /** Cut tensors that hold quantised values (uint8/int8), read as (q - zeroPoint) * scale. */
  quantized?: Record<string, Quantization>;
}

/** Per-tensor linear quantisation of an activation, and the initializers that hold it (for exports). */
export interface Quantization {
  scale: number;
  zeroPoint: number;
  scaleName: string;
  zeroPointName: string;
}

/**
 * Where the output's scale and zero point sit among a quantised op's inputs (ONNX and com.microsoft QLinear ops).
 * Quantised-operator files (QOperator format, e.g. the ONNX model zoo's int8 networks) pass uint8 tensors from op to
 * op: their activations are read by undoing that quantisation, exactly what a DequantizeLinear node would compute.
 */
const QUANT_OUTPUT: Record<string, [number, number]> = {
  QuantizeLinear: [1, 2],
  QLinearConv: [6, 7],
  QLinearMatMul: [6, 7],
  QLinearAdd: [6, 7],
  QLinearMul: [6, 7],
  QLinearGlobalAveragePool: [3, 4],
  QLinearAveragePool: [3, 4],
  QLinearLeakyRelu: [3, 4],
  QLinearSigmoid: [3, 4],
  QLinearConcat: [0, 1],
};
/** Ops that move quantised values without changing them: their output keeps the input's quantisation. */
const QUANT_PASS = new Set(['Reshape', 'Flatten', 'Transpose', 'Identity', 'MaxPool', 'Squeeze', 'Unsqueeze']);

/** The quantisation of every tensor written by a quantising op with constant, per-tensor scale and zero point. */
export function quantizations(model: ModelMsg): Map<string, Quantization> {
  const g = model.graph;
  const consts = new Map((g.initializer ?? []).map((t) => [t.name, t]));
  for (const n of g.node) {
    if (n.op_type !== 'Constant') continue;
    const value = (n.attribute ?? []).find((a) => a.name === 'value') as { t?: TensorMsg } | undefined;
    if (value?.t && n.output?.[0]) consts.set(n.output[0], value.t);
  }
  const out = new Map<string, Quantization>();
  for (const n of g.node) {
    const y = n.output?.[0];
    if (!y) continue;
    const at = QUANT_OUTPUT[n.op_type];
    if (at) {
      const [scaleName, zeroPointName] = [n.input?.[at[0]], n.input?.[at[1]]];
      const scale = scaleName ? consts.get(scaleName) : undefined;
      // A missing zero point means 0 (ONNX); it must then be absent, not merely unreadable.
      const zp = zeroPointName ? consts.get(zeroPointName) : undefined;
      const s = scale && scalarValue(scale);
      const z = zeroPointName ? zp && scalarValue(zp) : 0;
      if (s !== undefined && s !== 0 && z !== undefined && scaleName)
        out.set(y, { scale: s, zeroPoint: z, scaleName, zeroPointName: zeroPointName ?? '' });
    } else if (QUANT_PASS.has(n.op_type) && n.input?.[0] && out.has(n.input[0])) {
      out.set(y, out.get(n.input[0])!);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------------
// The base

/** Positions right before these ops give activations no user wants (pre-BatchNorm, pre-activation). */
const ABSORBED_AFTER = new Set([
  'Identity',
  'Transpose',
  'BatchNormalization',
  'Relu',
  'Clip',
  'LeakyRelu',
  'Elu',
  'Sigmoid',
  'HardSigmoid',
  'HardSwish',
  'Softmax',
  'Selu',
  'Gelu',
  'PRelu',
]);

function parseList(value: string, n: number, what: string): number[] {
  let v: unknown;
  try {
    v = JSON.parse(value.trim().startsWith('[') ? value : `[${value}]`);
  } catch {
    v = undefined;
  }
  if (!Array.isArray(v) || v.length !== n || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw new BaseError('invalid-metadata', what, `must hold ${n} numbers (got ${shown(value)})`);
  }
  return v as number[];
}

/** Chooses layout, size and normalisation: flags first, then the model's metadata, then the input shape. */
export function onnxPreprocessing(
  info: OnnxGraphInfo,
  o: BaseOptions,
  where: string,
): { layout: Layout; preprocessing: Preprocessing } {
  const meta = info.metadata;
  const dims = info.inputDims;
  if (dims.length !== 4)
    throw new BaseError(
      'not-an-image-model',
      where,
      `expected an image input of rank 4 (NCHW or NHWC), found rank ${dims.length}`,
    );
  let layout: Layout | undefined = o.inputLayout ?? (meta['graft.layout'] as Layout | undefined);
  if (layout && layout !== 'nchw' && layout !== 'nhwc')
    throw new BaseError('invalid-metadata', where, `graft.layout must be nchw or nhwc (got ${shown(layout)})`);
  if (!layout) {
    if (dims[1] === 3) layout = 'nchw';
    else if (dims[3] === 3) layout = 'nhwc';
    else
      throw new UsageError(
        'needs-option',
        words`${where}: cannot tell the input layout from shape [${dims.map((d) => d || '?').join(', ')}]; give ${opt('inputLayout')} nchw or nhwc`,
      );
  }
  const channels = layout === 'nchw' ? dims[1] : dims[3];
  if (channels && channels !== 3)
    throw new BaseError(
      'not-an-image-model',
      where,
      `input has ${channels} channels in ${layout} layout; graft feeds RGB (3)`,
    );
  const fromShape: [number, number] = layout === 'nchw' ? [dims[2], dims[3]] : [dims[1], dims[2]];
  let size: [number, number] | undefined = fromShape[0] > 0 && fromShape[1] > 0 ? fromShape : undefined;
  if (o.inputSize) size = o.inputSize;
  else if (!size && meta['graft.size']) size = parseList(meta['graft.size'], 2, 'graft.size') as [number, number];
  if (!size)
    throw new UsageError(
      'needs-option',
      words`${where}: the input size is dynamic; give ${opt('inputSize')} HEIGHT,WIDTH`,
    );
  if (fromShape[0] > 0 && fromShape[1] > 0 && (size[0] !== fromShape[0] || size[1] !== fromShape[1])) {
    throw new UsageError(
      'conflict',
      words`${where}: ${opt('inputSize')} ${size.join(',')} does not match the model's fixed input ${fromShape.join('x')}`,
    );
  }
  const resize = (meta['graft.resize'] as Preprocessing['resize'] | undefined) === 'fill' ? 'fill' : 'cover';
  let preprocessing: Preprocessing;
  if (o.mean || o.std) {
    preprocessing = { size, scale: 1 / 255, offset: 0, resize, mean: o.mean ?? [0, 0, 0], std: o.std ?? [1, 1, 1] };
  } else if (o.inputRange) {
    preprocessing = fromRange(size, o.inputRange[0], o.inputRange[1], resize);
  } else if (meta['graft.mean'] || meta['graft.std']) {
    const mean = meta['graft.mean']
      ? (parseList(meta['graft.mean'], 3, 'graft.mean') as [number, number, number])
      : ([0, 0, 0] as [number, number, number]);
    const std = meta['graft.std']
      ? (parseList(meta['graft.std'], 3, 'graft.std') as [number, number, number])
      : ([1, 1, 1] as [number, number, number]);
    preprocessing = { size, scale: 1 / 255, offset: 0, resize, mean, std };
  } else if (meta['graft.range']) {
    const r = parseRange(parseList(meta['graft.range'], 2, 'graft.range').join(','));
    preprocessing = fromRange(size, r[0], r[1], resize);
  } else {
    preprocessing = fromRange(size, 0, 1, resize);
  }
  return { layout, preprocessing: { ...preprocessing, layout } };
}

/** Loads `file` (.onnx) as a base: reads the graph, probes every cut point once for its shape, lists candidates. */
export async function loadOnnxBase(file: string, o: BaseOptions = {}, name?: string): Promise<OnnxBase> {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    throw new BaseError('unreadable', file, `cannot read ONNX file (${errnoOf(e)})`, e);
  }
  const source = path.resolve(file);
  const info = readOnnxGraph(bytes, file);
  const { layout, preprocessing } = onnxPreprocessing(info, o, file);
  const spec: OnnxTrunkSpec = {
    bytes,
    inputName: info.inputName,
    layout,
    preprocessing,
    fixedBatch: info.inputDims[0] || 0,
    outputs: info.outputs,
  };

  const positions = cutPositions(info.seq, [info.inputName], info.outputs);
  const read = new Set([...info.seq.flatMap((n) => n.inputs), ...info.outputs]);
  // A cut point has at most one live output: that is the tensor a cut there reads.
  const cutTensor = (i: number) => info.seq[i].outputs.find((t) => read.has(t)) ?? info.seq[i].outputs[0];
  const cutNames = positions.map(cutTensor);
  // One probe image through a session that outputs every cut point: exact shapes and types, whatever the exporter
  // wrote (or did not write) in value_info.
  const probe = await probeShapes(spec, cutNames, file);
  const consumers = new Map<string, string[]>();
  for (const n of info.seq) for (const t of n.inputs) consumers.set(t, [...(consumers.get(t) ?? []), n.op]);
  const usable = new Map<string, { index: number; shape: number[]; op: string; quant?: Quantization }>();
  const quant = quantizations(info.model);
  positions.forEach((i, k) => {
    const p = probe.get(cutNames[k]);
    if (!p || (p.dims.length !== 2 && p.dims.length !== 4)) return;
    const q = (p.type === 'uint8' || p.type === 'int8') && quant.get(cutNames[k]);
    if (p.type === 'float32' || q)
      usable.set(cutNames[k], { index: i, shape: p.dims.slice(1), op: info.seq[i].op, ...(q ? { quant: q } : {}) });
  });
  spec.quantized = Object.fromEntries(
    [...usable.entries()].filter(([, u]) => u.quant).map(([t, u]) => [t, u.quant as Quantization]),
  );
  if (usable.size === 0)
    throw new BaseError(
      'no-cut-point',
      file,
      'no tensor in the graph splits it cleanly with a float (or dequantisable) rank-2 or rank-4 activation',
    );
  const metaCut = info.metadata['graft.cut'];
  const defaultCut = [metaCut, ...info.outputs].find((t) => t && usable.has(t)) ?? [...usable.keys()].at(-1)!;
  const topIndex = usable.get(defaultCut)!.index;
  const sizeOf = (cut: string) => {
    const u = usable.get(cut)!;
    return pooledSize(u.shape, u.shape.length === 3 ? guessLayout(u.shape, layout) : layout);
  };
  const candidates: CutPoint[] = [...usable.entries()]
    .filter(([t, u]) => {
      if (u.index > topIndex) return false;
      if (t === defaultCut) return true;
      // A transpose or copy only reorders the activation below it.
      if (u.op === 'Transpose' || u.op === 'Identity') return false;
      const next = consumers.get(t) ?? [];
      return !(next.length === 1 && ABSORBED_AFTER.has(next[0]));
    })
    .map(([t, u]) => ({ name: t, index: u.index, className: u.op, shape: u.shape, featureSize: sizeOf(t) }));
  const cutSet = new Set(cutNames);
  const nodes: ForeignNode[] = info.seq.map((n, i) => ({
    name: n.name,
    op: n.op,
    shape: probe.get(n.name)?.dims.slice(1) ?? [],
    params: info.params[i],
    cutPoint: cutSet.has(n.name) && usable.has(n.name),
  }));
  const requireCut = (cut: string) => {
    if (usable.has(cut)) return;
    if (!info.seq.some((n) => n.outputs.includes(cut)))
      throw new UsageError(
        'unknown-layer',
        words`${opt('cut')} ${shown(cut)}: no tensor of that name in the ONNX base (see \`graft inspect ${file}\`)`,
      );
    if (cutSet.has(cut))
      throw new UsageError(
        'not-a-cut-point',
        words`${opt('cut')} ${shown(cut)} is not a float (or dequantisable) activation of rank 2 or 4: graft cannot read features there`,
      );
    throw new UsageError(
      'not-a-cut-point',
      words`${opt('cut')} ${shown(cut)} is not a cut point: other tensors cross the graph there (inside a residual or branched block)`,
    );
  };
  const trunk: ForeignTrunk = {
    nodes,
    candidates,
    depth: nodes.length,
    requireCut,
    cutInfo: (cut) => {
      requireCut(cut);
      const { shape: s, quant: q } = usable.get(cut)!;
      return { shape: s, layout: s.length === 3 ? guessLayout(s, layout) : layout, ...(q ? { quant: q } : {}) };
    },
    featureSizes: (cuts) => {
      cuts.forEach(requireCut);
      return cuts.map(sizeOf);
    },
    modelFiles: () => ({
      files: { 'base.onnx': bytes },
      record: {
        format: 'onnx',
        file: 'base.onnx',
        inputName: info.inputName,
        layout,
        fixedBatch: spec.fixedBatch,
        outputs: info.outputs,
      },
    }),
    // Sessions belong to the runners that open them; the bytes go with the base.
    dispose() {},
  };
  return {
    format: 'onnx',
    name: name ?? info.metadata['graft.name'] ?? file,
    id: createHash('sha256').update(bytes).digest('hex').slice(0, 16),
    kind: 'file',
    source,
    preprocessing,
    defaultCut,
    trunk,
    onnx: spec,
  };
}

async function probeShapes(
  spec: OnnxTrunkSpec,
  names: string[],
  file: string,
): Promise<Map<string, { dims: number[]; type: string }>> {
  const o = await requireOrt('ONNX bases');
  const session = await o.InferenceSession.create(
    withOutputs(
      spec.bytes,
      names.filter((n) => !spec.outputs.includes(n)),
    ),
    {
      intraOpNumThreads: os.availableParallelism(),
      graphOptimizationLevel: 'basic',
    },
  );
  try {
    const [h, w] = spec.preprocessing.size;
    const b = spec.fixedBatch || 1;
    const dims = spec.layout === 'nchw' ? [b, 3, h, w] : [b, h, w, 3];
    const res = await session.run(
      { [spec.inputName]: new o.Tensor('float32', new Float32Array(b * 3 * h * w), dims) },
      names,
    );
    return new Map(names.map((n) => [n, { dims: [...res[n].dims], type: res[n].type }]));
  } catch (e) {
    throw new BaseError('cannot-run', file, `ONNX Runtime cannot run it (${oneLine((e as Error).message)})`, e);
  } finally {
    await session.release();
  }
}
