/**
 * TF.js Graph models (model.json with `format: graph-model`, as TF Hub and Kaggle publish feature vectors) as bases for
 * feature transfer. A graph model is a frozen GraphDef: graft can run it up to any node but cannot rebuild layers from
 * it, so tails, fine-tuning and TF.js Layers export are refused.
 *
 * Cut points: nodes whose output is the only tensor crossing that position of the topologically sorted graph (weights
 * and anything computed from weights alone do not count), producing a float tensor of rank 2 or 4. The default cut is
 * the model's output node: feature-vector models end at their features. Preprocessing (range or mean/std) is applied in
 * JS before the input; rank-4 outputs are globally average-pooled (TF graphs are NHWC).
 */

import { type GraphModel, loadGraphModel } from '@tensorflow/tfjs-converter';
import type { io } from '@tensorflow/tfjs-core';
import { tf } from '../tfjs/tf.ts';
import { BaseError, oneLine, opt, shown, UsageError, words } from '../util/errors.ts';
import { fingerprint, type ModelJson } from './artifacts.ts';
import type { BaseKind, BaseMetadataFile, BaseOptions, GraphBase } from './base.ts';
import { cutPositions, type ForeignNode, type ForeignTrunk, type SeqNode } from './foreign.ts';
import type { CutPoint } from './graph.ts';
import { fromRange, type Preprocessing } from './preprocessing.ts';

interface GraphNodeDef {
  name: string;
  op: string;
  input?: string[];
}

const ABSORBED_AFTER = new Set([
  'FusedBatchNorm',
  'FusedBatchNormV3',
  'Relu',
  'Relu6',
  'BiasAdd',
  'Identity',
  'Elu',
  'Sigmoid',
  'Softmax',
  'LeakyRelu',
]);
const SOURCE_OPS = new Set(['Const', 'VarHandleOp', 'VariableV2', 'ReadVariableOp']);

/** `node:0` and `node` name the same tensor; `^node` is a control edge, not data. */
function tensorOf(input: string): string | undefined {
  if (input.startsWith('^')) return undefined;
  const m = /^(.*):(\d+)$/.exec(input);
  return m && m[2] === '0' ? m[1] : input;
}

/** Topological order (Kahn, stable in file order), the graph's nodes split into constants and the data path. */
export function graphSequence(
  nodes: GraphNodeDef[],
  inputNames: string[],
  weightSize: Map<string, number> = new Map(),
): { seq: SeqNode[]; params: Map<string, number> } {
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const constant = new Set<string>();
  const order: GraphNodeDef[] = [];
  const indeg = new Map<string, number>();
  const children = new Map<string, string[]>();
  for (const n of nodes) {
    const deps = (n.input ?? []).map((i) => i.replace(/^\^/, '').replace(/:\d+$/, '')).filter((d) => byName.has(d));
    indeg.set(n.name, deps.length);
    for (const d of deps) children.set(d, [...(children.get(d) ?? []), n.name]);
  }
  const ready = nodes.filter((n) => indeg.get(n.name) === 0).map((n) => n.name);
  while (ready.length) {
    const name = ready.shift()!;
    order.push(byName.get(name)!);
    for (const c of children.get(name) ?? []) {
      indeg.set(c, indeg.get(c)! - 1);
      if (indeg.get(c) === 0) ready.push(c);
    }
  }
  if (order.length !== nodes.length)
    throw new BaseError(
      'unsupported-graph',
      'graph model',
      'the graph has a cycle (control flow): graft cannot find cut points in it',
    );
  const seq: SeqNode[] = [];
  const params = new Map<string, number>();
  for (const n of order) {
    const data = (n.input ?? []).map(tensorOf).filter((t): t is string => t !== undefined);
    const fromNodes = data.map((t) => t.replace(/:\d+$/, ''));
    if (
      !inputNames.includes(n.name) &&
      (SOURCE_OPS.has(n.op) || (fromNodes.length > 0 && fromNodes.every((t) => constant.has(t))))
    ) {
      constant.add(n.name);
      continue;
    }
    if (inputNames.includes(n.name)) continue;
    seq.push({
      name: n.name,
      op: n.op,
      inputs: data.filter((t) => !constant.has(t.replace(/:\d+$/, ''))),
      outputs: [],
    });
    params.set(
      n.name,
      fromNodes.filter((t) => constant.has(t)).reduce((a, t) => a + (weightSize.get(t) ?? 0), 0),
    );
  }
  // Outputs: whatever tensors of the node anything reads, plus its first.
  const outs = new Map(seq.map((s) => [s.name, new Set([s.name])]));
  for (const s of seq) for (const t of s.inputs) outs.get(t.replace(/:\d+$/, ''))?.add(t);
  for (const s of seq) s.outputs = [...outs.get(s.name)!];
  return { seq, params };
}

function preprocessingFor(size: [number, number], o: BaseOptions, meta: BaseMetadataFile): Preprocessing {
  const resize = meta.resize ?? 'cover';
  const mean = o.mean ?? (o.inputRange ? undefined : meta.mean);
  const std = o.std ?? (o.inputRange ? undefined : meta.std);
  if (mean || std) return { size, scale: 1 / 255, offset: 0, resize, mean: mean ?? [0, 0, 0], std: std ?? [1, 1, 1] };
  const range = o.inputRange ?? meta.inputRange ?? [0, 1];
  return fromRange(size, range[0], range[1], resize);
}

/** Loads a parsed graph-model model.json (+ weights) as a base. */
export async function loadGraphModelBase(
  name: string,
  kind: BaseKind,
  source: string,
  json: ModelJson,
  artifacts: io.ModelArtifacts,
  o: BaseOptions,
  meta: BaseMetadataFile,
): Promise<GraphBase> {
  const full: io.ModelArtifacts = {
    ...artifacts,
    signature: json.signature as object | undefined,
    userDefinedMetadata: json.userDefinedMetadata as Record<string, object> | undefined,
    modelInitializer: json.modelInitializer as object | undefined,
  };
  let model: GraphModel;
  try {
    model = await loadGraphModel(tf.io.fromMemory(full));
  } catch (e) {
    throw new BaseError(
      'not-a-model',
      source,
      `cannot build a TF.js graph model (${oneLine((e as Error).message)})`,
      e,
    );
  }
  try {
    return await describeGraphBase(name, kind, source, model, full, o, meta);
  } catch (e) {
    model.dispose();
    throw e;
  }
}

async function describeGraphBase(
  name: string,
  kind: BaseKind,
  source: string,
  model: GraphModel,
  artifacts: io.ModelArtifacts,
  o: BaseOptions,
  meta: BaseMetadataFile,
): Promise<GraphBase> {
  if (model.inputs.length !== 1)
    throw new BaseError(
      'not-an-image-model',
      source,
      `graft feeds one image input; this graph has ${model.inputs.length} inputs`,
    );
  const input = model.inputs[0];
  const shape = input.shape ?? [];
  if (shape.length !== 4 || (shape[3] !== 3 && shape[3] !== -1)) {
    throw new BaseError(
      'not-an-image-model',
      source,
      `expected an image input [batch, height, width, 3], found ${JSON.stringify(shape)}`,
    );
  }
  if (input.dtype !== 'float32')
    throw new BaseError(
      'not-an-image-model',
      source,
      `the graph's input is ${input.dtype}; graft feeds float32 images`,
    );
  const fixed: [number, number] | undefined = shape[1] > 0 && shape[2] > 0 ? [shape[1], shape[2]] : undefined;
  const size = o.inputSize ?? meta.inputSize ?? fixed;
  if (!size)
    throw new UsageError(
      'needs-option',
      words`${source}: the input size is dynamic; give ${opt('inputSize')} HEIGHT,WIDTH`,
    );
  if (fixed && (size[0] !== fixed[0] || size[1] !== fixed[1]))
    throw new UsageError(
      'conflict',
      words`${source}: ${opt('inputSize')} ${size.join(',')} does not match the graph's fixed input ${fixed.join('x')}`,
    );
  const preprocessing = preprocessingFor(size, o, meta);
  const inputName = input.name.replace(/:0$/, '');
  const topology = artifacts.modelTopology as { node?: GraphNodeDef[] };
  const weightSize = new Map((artifacts.weightSpecs ?? []).map((w) => [w.name, w.shape.reduce((a, b) => a * b, 1)]));
  const { seq, params } = graphSequence(topology.node ?? [], [inputName], weightSize);
  const outputs = model.outputNodes.map((t) => t.replace(/:0$/, ''));
  const positions = cutPositions(seq, [inputName], outputs);
  const names = positions.map((i) => seq[i].name);

  // One probe image gives every cut point's shape and type.
  const x = tf.zeros([1, size[0], size[1], 3]);
  const shapes = new Map<string, { dims: number[]; dtype: string }>();
  try {
    const ys = await executeGraph(model, { [input.name]: x }, names);
    const list = Array.isArray(ys) ? ys : [ys];
    list.forEach((t, k) => {
      shapes.set(names[k], { dims: t.shape.slice(1), dtype: t.dtype });
    });
    tf.dispose(list);
  } catch (e) {
    throw new BaseError('cannot-run', source, `TF.js cannot run the graph (${oneLine((e as Error).message)})`, e);
  } finally {
    x.dispose();
  }
  const usable = new Map<string, { index: number; shape: number[]; op: string }>();
  positions.forEach((i, k) => {
    const s = shapes.get(names[k]);
    if (s && s.dtype === 'float32' && (s.dims.length === 1 || s.dims.length === 3))
      usable.set(names[k], { index: i, shape: s.dims, op: seq[i].op });
  });
  if (usable.size === 0)
    throw new BaseError(
      'no-cut-point',
      source,
      'no node splits the graph cleanly with a float rank-2 or rank-4 activation',
    );
  const defaultCut = [meta.defaultCut, ...outputs].find((t) => t && usable.has(t)) ?? [...usable.keys()].at(-1)!;
  const topIndex = usable.get(defaultCut)!.index;
  const consumers = new Map<string, string[]>();
  for (const n of seq)
    for (const t of n.inputs)
      consumers.set(t.replace(/:\d+$/, ''), [...(consumers.get(t.replace(/:\d+$/, '')) ?? []), n.op]);
  const sizeOf = (cut: string) => {
    const s = usable.get(cut)!.shape;
    return s.length === 3 ? s[2] : s[0];
  };
  const candidates: CutPoint[] = [...usable.entries()]
    .filter(([t, u]) => {
      if (u.index > topIndex) return false;
      if (t === defaultCut) return true;
      const next = consumers.get(t) ?? [];
      return !(next.length === 1 && ABSORBED_AFTER.has(next[0]));
    })
    .map(([t, u]) => ({ name: t, index: u.index, className: u.op, shape: u.shape, featureSize: sizeOf(t) }));
  const nodes: ForeignNode[] = seq.map((n) => ({
    name: n.name,
    op: n.op,
    shape: shapes.get(n.name)?.dims ?? [],
    params: params.get(n.name) ?? 0,
    cutPoint: usable.has(n.name),
  }));
  const requireCut = (cut: string) => {
    if (usable.has(cut)) return;
    if (!seq.some((n) => n.name === cut))
      throw new UsageError(
        'unknown-layer',
        words`${opt('cut')} ${shown(cut)}: no node of that name in the graph model (see \`graft inspect\` for its cut points)`,
      );
    if (shapes.has(cut))
      throw new UsageError(
        'not-a-cut-point',
        words`${opt('cut')} ${shown(cut)} does not output a float activation of rank 2 or 4: graft cannot read features there`,
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
      return { shape: usable.get(cut)!.shape, layout: 'nhwc' };
    },
    featureSizes: (cuts) => {
      cuts.forEach(requireCut);
      return cuts.map(sizeOf);
    },
    modelFiles: () => {
      const data = artifacts.weightData;
      const weights =
        data instanceof ArrayBuffer
          ? new Uint8Array(data)
          : Buffer.concat((data as ArrayBuffer[]).map((d) => new Uint8Array(d)));
      const modelJson = {
        format: 'graph-model',
        modelTopology: artifacts.modelTopology,
        signature: artifacts.signature,
        userDefinedMetadata: artifacts.userDefinedMetadata,
        modelInitializer: artifacts.modelInitializer,
        weightsManifest: [{ paths: ['base-weights.bin'], weights: artifacts.weightSpecs }],
      };
      return {
        files: { 'base-model.json': JSON.stringify(modelJson), 'base-weights.bin': weights },
        record: { format: 'graph', file: 'base-model.json' },
      };
    },
    dispose: () => model.dispose(),
  };
  return {
    format: 'graph',
    name,
    id: fingerprint(artifacts),
    kind,
    source,
    preprocessing,
    defaultCut,
    artifacts,
    trunk,
    graph: { model, inputName: input.name },
  };
}

/**
 * Runs synchronously when the graph allows it (no control flow), which is faster and spares the converter's console
 * advice to do so; graphs with control flow or dynamic shapes go through executeAsync.
 */
export async function executeGraph(
  model: GraphModel,
  feeds: Record<string, tf.Tensor>,
  outputs: string[],
): Promise<tf.Tensor | tf.Tensor[]> {
  try {
    return model.execute(feeds, outputs);
  } catch (e) {
    if (!/executeAsync|control flow|dynamic/i.test((e as Error).message)) throw e;
    return (await model.executeAsync(feeds, outputs)) as tf.Tensor | tf.Tensor[];
  }
}
