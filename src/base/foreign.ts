/**
 * What TF.js Graph models and ONNX files have in common as bases: graft cannot rebuild them layer by layer, so they
 * serve feature transfer only. Each format supplies a ForeignTrunk (cut points, feature sizes, the files a trained
 * model folder keeps); the engines run them (engines/graph-model.ts, engines/onnx-base.ts). Base's type keeps them
 * away from Layers-only code (tails, fine-tuning, TF.js export).
 */

import { InternalError, opt, shown, UsageError, words } from '../util/errors.ts';
import type { TrunkSource } from './graph.ts';

export type ForeignFormat = 'graph' | 'onnx';

/** Words for error messages: "a TF.js graph model" / "an ONNX model". */
export function formatWords(format: ForeignFormat): string {
  return format === 'graph' ? 'a TF.js graph model (format graph-model)' : 'an ONNX model';
}

export interface ForeignNode {
  /** The tensor a cut at this node reads (graph models: the node name; ONNX: the node's first output). */
  name: string;
  op: string;
  /** Rank of the output without pooling, and its shape without the batch dimension (from a probe run). */
  shape: number[];
  /** Parameters in the constants this node reads. */
  params: number;
  cutPoint: boolean;
}

/** The TrunkSource of a graph or ONNX base, with what inspection and model folders need besides. */
export interface ForeignTrunk extends TrunkSource {
  /** Every node in topological order (for `graft inspect --all`). */
  nodes: ForeignNode[];
  /** The activation's shape at a cut (without batch), for rank 4 its layout, and its quantisation when it holds
   *  quantised values (ONNX QOperator files). */
  cutInfo(cut: string): {
    shape: number[];
    layout: 'nchw' | 'nhwc';
    quant?: { scale: number; zeroPoint: number; scaleName: string; zeroPointName: string };
  };
  /** Files a trained model folder keeps so the predictor can rebuild the trunk, and what to record in graft.json. */
  modelFiles(): { files: Record<string, Uint8Array | string>; record: Record<string, unknown> };
  /** Releases the network (graph models); sessions belong to the runners that open them. */
  dispose(): void;
}

export interface SeqNode {
  name: string;
  op: string;
  /** Tensors read, constants excluded. */
  inputs: string[];
  /** Tensors written. */
  outputs: string[];
}

/**
 * Positions (into `nodes`, topologically ordered) whose node writes the only tensor that crosses that point: nothing
 * written earlier is read later, so the network splits cleanly there. The same rule as graph.ts applies to Layers.
 * `keep` names tensors read from outside (graph outputs), which cross every later position.
 */
export function cutPositions(nodes: SeqNode[], graphInputs: string[], keep: string[]): number[] {
  const producer = new Map<string, number>();
  for (const t of graphInputs) producer.set(t, -1);
  for (const [i, n] of nodes.entries()) for (const t of n.outputs) producer.set(t, i);
  const lastUse = new Map<string, number>();
  for (const [i, n] of nodes.entries()) for (const t of n.inputs) if (producer.has(t)) lastUse.set(t, i);
  for (const t of keep) lastUse.set(t, Number.POSITIVE_INFINITY);
  // crossing[i]: the furthest reader of any tensor written before node i (graph inputs count as written at -1).
  let crossing = -1;
  for (const t of graphInputs) crossing = Math.max(crossing, lastUse.get(t) ?? -1);
  const cuts: number[] = [];
  nodes.forEach((n, i) => {
    const own = n.outputs.filter((t) => (lastUse.get(t) ?? -1) > i);
    // A cut reads one tensor: nodes with several live outputs (or none) are not cut points.
    if (crossing <= i && own.length <= 1 && n.outputs.length > 0) cuts.push(i);
    for (const t of n.outputs) crossing = Math.max(crossing, lastUse.get(t) ?? -1);
  });
  return cuts;
}

/**
 * Global average pooling of a rank-4 batch in `layout`, or a copy of rank-2 rows. Returns n × channels.
 */
export function poolRows(data: Float32Array, dims: number[], layout: 'nchw' | 'nhwc'): Float32Array {
  if (dims.length === 2) return data;
  if (dims.length !== 4)
    throw new InternalError(`cut output has rank ${dims.length}; graft reads rank 2 (features) or 4 (feature maps)`);
  const [n, a, b, c] = dims;
  if (layout === 'nchw') {
    const hw = b * c;
    const out = new Float32Array(n * a);
    for (let i = 0; i < n * a; i++) {
      let s = 0;
      for (let k = i * hw, e = k + hw; k < e; k++) s += data[k];
      out[i] = s / hw;
    }
    return out;
  }
  const hw = a * b;
  const out = new Float32Array(n * c);
  const acc = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    for (let p = 0, o = i * hw * c; p < hw; p++, o += c) for (let ch = 0; ch < c; ch++) acc[ch] += data[o + ch];
    for (let ch = 0; ch < c; ch++) out[i * c + ch] = acc[ch] / hw;
  }
  return out;
}

/**
 * The layout of a rank-4 activation (shape without batch): the two equal dimensions are the spatial ones. When that
 * does not decide it (non-square maps), the input's layout is assumed, which holds for networks that never transpose.
 */
export function guessLayout(shape: number[], inputLayout: 'nchw' | 'nhwc'): 'nchw' | 'nhwc' {
  const [a, b, c] = shape;
  if (b === c && a !== b) return 'nchw';
  if (a === b && c !== a) return 'nhwc';
  return inputLayout;
}

/** Pooled feature size of an activation shape (without batch). */
export function pooledSize(shape: number[], layout: 'nchw' | 'nhwc'): number {
  if (shape.length === 3) return layout === 'nchw' ? shape[0] : shape[2];
  return shape.reduce((a, b) => a * b, 1);
}

/** `--input-size H,W` or `--input-size S`. */
export function parseSize(text: string): [number, number] {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.length === 1) parts.push(parts[0]);
  if (parts.length !== 2 || parts.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new UsageError(
      'invalid-value',
      words`${opt('inputSize')} must be SIZE or HEIGHT,WIDTH in pixels (got ${shown(text)})`,
    );
  }
  return [parts[0], parts[1]];
}

/** `--mean R,G,B` / `--std R,G,B`. */
export function parseTriple(option: 'mean' | 'std', text: string): [number, number, number] {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.length !== 3 || parts.some((n) => !Number.isFinite(n)) || (option === 'std' && parts.some((n) => n <= 0))) {
    throw new UsageError(
      'invalid-value',
      words`${opt(option)} must be three numbers R,G,B${option === 'std' ? ' above 0' : ''} (got ${shown(text)})`,
    );
  }
  return [parts[0], parts[1], parts[2]];
}
