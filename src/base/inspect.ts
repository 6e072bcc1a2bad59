/**
 * A plain-data description of a base: layers, parameter counts, and the candidate cut points with their depth.
 */

import { opt, UsageError, words } from '../util/errors.ts';
import type { Base, ForeignBase, LayersBase } from './base.ts';
import { type CutPoint, candidateCuts, cutPointIndices, layerIndex } from './graph.ts';

export interface LayerInfo {
  name: string;
  className: string;
  shape: (number | null)[];
  params: number;
  /** True when the layer is a cut point of the graph. */
  cutPoint: boolean;
}

export interface CandidateInfo extends CutPoint {
  /**
   * How many candidate cut points lie between this one and the head input (the default cut), counting this one:
   * the value of `--retrain-layers` that puts the split here. 0 for the default cut itself.
   */
  blocksBelowHead: number;
  /** Parameters of the base layers above this cut, up to the default cut: what parameter transfer would retrain. */
  paramsAbove: number;
}

export interface BaseInspection {
  name: string;
  id: string;
  source: string;
  inputSize: [number, number];
  preprocessing: Base['preprocessing'];
  defaultCut: string;
  params: number;
  layers: LayerInfo[];
  candidates: CandidateInfo[];
  /** 'graph' or 'onnx' for bases that serve feature transfer only; absent for TF.js Layers bases. */
  format?: 'graph' | 'onnx';
}

/** The inspection of any base from its layer list and candidate cuts (positions index into `layers`). */
function describeBase(
  base: Base,
  layers: LayerInfo[],
  candidates: CutPoint[],
  top: number,
  params: number,
  format?: BaseInspection['format'],
): BaseInspection {
  const n = candidates.length;
  return {
    name: base.name,
    id: base.id,
    source: base.source,
    inputSize: base.preprocessing.size,
    preprocessing: base.preprocessing,
    defaultCut: base.defaultCut,
    params,
    layers,
    candidates: candidates.map((c, k) => ({
      ...c,
      blocksBelowHead: n - 1 - k,
      paramsAbove: layers.slice(c.index + 1, top + 1).reduce((a, l) => a + l.params, 0),
    })),
    ...(format ? { format } : {}),
  };
}

/** Graph and ONNX bases: their nodes stand for layers (parameters = elements of the constants a node reads). */
function inspectForeign(base: ForeignBase): BaseInspection {
  const f = base.trunk;
  const layers: LayerInfo[] = f.nodes.map((n) => ({
    name: n.name,
    className: n.op,
    shape: n.shape,
    params: n.params,
    cutPoint: n.cutPoint,
  }));
  const top = f.candidates.find((c) => c.name === base.defaultCut)?.index ?? layers.length - 1;
  return describeBase(
    base,
    layers,
    f.candidates,
    top,
    layers.reduce((a, l) => a + l.params, 0),
    base.format,
  );
}

export function inspectBase(base: Base): BaseInspection {
  if (base.format !== 'layers') return inspectForeign(base);
  const model = base.model;
  const cuts = new Set(cutPointIndices(model));
  const layers: LayerInfo[] = model.layers.map((l, i) => ({
    name: l.name,
    className: l.getClassName(),
    shape: (l.outputShape as (number | null)[]).slice(1),
    params: l.countParams(),
    cutPoint: cuts.has(i),
  }));
  const top = layerIndex(model, base.defaultCut);
  return describeBase(base, layers, candidateCuts(model, base.defaultCut), top, model.countParams());
}

/** The candidate `n` blocks below the head (what `--retrain-layers n` means). */
export function cutForRetrainLayers(base: LayersBase, n: number): string {
  const candidates = base.trunk.candidates;
  if (!Number.isInteger(n) || n < 0 || n >= candidates.length) {
    throw new UsageError(
      'out-of-range',
      words`${opt('retrainLayers')} must be an integer from 0 to ${candidates.length - 1} for this base (got ${n})`,
    );
  }
  return candidates[candidates.length - 1 - n].name;
}
