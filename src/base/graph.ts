/**
 * Graph analysis of a Layers model: where it can be cut, and rebuilding pieces of it (trunks, tails, stitched models).
 *
 * A layer is a cut point when its output is the only tensor that crosses that position of the (topologically
 * ordered) graph: everything before it feeds only it, so the network splits cleanly in two there. Layers inside a
 * residual or inception block are never cut points, because the block's input still crosses them on a skip branch.
 */

import type { Tensor } from '@tensorflow/tfjs-core';
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';
import { tf, tfl } from '../tfjs/tf.ts';
import { InternalError, opt, shown, UsageError, words } from '../util/errors.ts';

type Layer = tfl.layers.Layer;

/** Parents of a layer in the graph (single-node layers; graft's bases never share a layer between two calls). */
export function inboundLayers(layer: Layer): Layer[] {
  const nodes = (layer as unknown as { inboundNodes: { inboundLayers: Layer[] }[] }).inboundNodes;
  return nodes.length ? nodes[0].inboundLayers : [];
}

/** Indices (into model.layers) of every layer that is a cut point. The input layer is excluded. */
export function cutPointIndices(model: tfl.LayersModel): number[] {
  const layers = model.layers;
  const index = new Map(layers.map((l, i) => [l, i]));
  const lastUse = new Array<number>(layers.length).fill(-1);
  layers.forEach((layer, i) => {
    for (const p of inboundLayers(layer)) {
      const j = index.get(p);
      if (j === undefined) throw new InternalError(`layer ${layer.name}: input from a layer outside the model`);
      lastUse[j] = Math.max(lastUse[j], i);
    }
  });
  for (const out of model.outputLayers) lastUse[index.get(out)!] = Number.POSITIVE_INFINITY;
  const cuts: number[] = [];
  let crossing = -1; // the furthest consumer of any layer strictly before i
  for (let i = 0; i < layers.length; i++) {
    if (i > 0 && crossing <= i && layers[i].getClassName() !== 'InputLayer') cuts.push(i);
    crossing = Math.max(crossing, lastUse[i]);
  }
  return cuts;
}

// Layers whose output is only a lightly transformed copy of their input: cutting right before them gives
// activations no user wants (pre-BatchNorm, pre-activation), so such positions are folded into the next one.
const ABSORBED_AFTER = new Set([
  'BatchNormalization',
  'Activation',
  'ReLU',
  'LeakyReLU',
  'ELU',
  'Softmax',
  'ThresholdedReLU',
]);
// Layers that only pad or reorder values; a cut at their output duplicates the cut before them.
const NOT_A_CUT = new Set(['ZeroPadding2D', 'Dropout', 'SpatialDropout2D', 'GaussianNoise', 'GaussianDropout']);

export interface CutPoint {
  name: string;
  /** Position in model.layers. */
  index: number;
  className: string;
  /** Output shape without the batch dimension. */
  shape: number[];
  /** Features the head sees: channels for spatial outputs (after global average pooling), else the flat size. */
  featureSize: number;
}

/**
 * What feature transfer asks of a base of any format (Layers, graph model, ONNX): where it can be cut and how wide its
 * pooled activations are there. Everything else (tails, fine-tuning, stitching) needs the Layers model itself.
 */
export interface TrunkSource {
  /** Cut points fit for a head, bottom to top, up to and including the base's default cut. */
  readonly candidates: CutPoint[];
  /** Throws a one-line error unless `cut` is a usable cut point. */
  requireCut(cut: string): void;
  /** Pooled feature size at each cut. */
  featureSizes(cuts: string[]): number[];
  /** Layers (or graph nodes) in topological order: the scale of CutPoint.index. */
  readonly depth: number;
}

/** The TrunkSource of a Layers model whose head input is `top`. */
export function layersTrunk(model: tfl.LayersModel, top: string): TrunkSource {
  let candidates: CutPoint[] | undefined;
  return {
    get candidates() {
      candidates ??= candidateCuts(model, top);
      return candidates;
    },
    requireCut: (cut) => {
      requireCutPoint(model, cut);
    },
    featureSizes: (cuts) => cuts.map((cut) => describe(model.getLayer(cut), 0).featureSize),
    depth: model.layers.length,
  };
}

/**
 * The candidate cut points a user chooses from, up to `top` (default: the layer below the base's own classifier):
 * cut points, minus positions that sit just before a BatchNorm or activation of the same block, or on a pure padding
 * layer. Any cut point, candidate or not, can still be named with `--cut`.
 */
export function candidateCuts(model: tfl.LayersModel, top: string = defaultCut(model)): CutPoint[] {
  const layers = model.layers;
  const topIndex = layerIndex(model, top);
  const consumers = new Map<Layer, Layer[]>();
  for (const l of layers) for (const p of inboundLayers(l)) consumers.set(p, [...(consumers.get(p) ?? []), l]);
  return cutPointIndices(model)
    .filter((i) => {
      if (i > topIndex) return false;
      if (i === topIndex) return true;
      const layer = layers[i];
      if (NOT_A_CUT.has(layer.getClassName())) return false;
      const next = consumers.get(layer) ?? [];
      return !(next.length === 1 && ABSORBED_AFTER.has(next[0].getClassName()));
    })
    .map((i) => describe(layers[i], i));
}

function describe(layer: Layer, index: number): CutPoint {
  const shape = (layer.outputShape as number[]).slice(1);
  const featureSize = shape.length === 3 ? shape[2] : shape.reduce((a, b) => a * b, 1);
  return { name: layer.name, index, className: layer.getClassName(), shape, featureSize };
}

// Layer types that belong to a classifier on top of the features rather than to the feature extractor.
const CLASSIFIER_TYPES = new Set([
  'Dense',
  'Dropout',
  'Flatten',
  'Reshape',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Softmax',
]);

function isClassifierLayer(layer: Layer): boolean {
  const cls = layer.getClassName();
  if (CLASSIFIER_TYPES.has(cls)) return true;
  if (cls === 'Activation') {
    const fn = String((layer.getConfig() as { activation?: unknown }).activation ?? '');
    return fn === 'softmax' || fn === 'sigmoid';
  }
  // A node lists its input shapes as one shape or as an array of them (what a loaded model.json gives).
  const shapes = layer.inboundNodes?.[0]?.inputShapes as (number | null)[] | (number | null)[][] | undefined;
  const inShape = Array.isArray(shapes?.[0]) ? (shapes[0] as (number | null)[]) : (shapes as (number | null)[]);
  const spatial1x1 = Array.isArray(inShape) && inShape.length === 4 && inShape[1] === 1 && inShape[2] === 1;
  // A 1x1 convolution on a 1x1 map is a Dense layer in disguise (Keras MobileNet's conv_preds); pooling down to
  // 1x1 is global pooling spelled as AveragePooling2D (as in nsfwjs's networks).
  if (cls === 'Conv2D' && spatial1x1) return true;
  if ((cls === 'AveragePooling2D' || cls === 'MaxPooling2D') && (layer.outputShape as number[])[1] === 1) return true;
  return false;
}

/** The layer just below the base's own classifier: walk down from the output over classifier-type layers. */
export function defaultCut(model: tfl.LayersModel): string {
  let layer: Layer = model.outputLayers[0];
  while (isClassifierLayer(layer)) {
    const parents = inboundLayers(layer);
    if (parents.length !== 1) break;
    layer = parents[0];
  }
  return layer.name;
}

/** The index of layer `name`; a UsageError naming `option` (the option that named the layer) when there is none. */
export function layerIndex(model: tfl.LayersModel, name: string, option = 'cut'): number {
  const i = model.layers.findIndex((l) => l.name === name);
  if (i < 0)
    throw new UsageError(
      'unknown-layer',
      words`${opt(option)} ${shown(name)}: no layer of that name in the base (see \`graft inspect\` for its layers)`,
    );
  return i;
}

/** Checks that `name` is a cut point of the model and returns its index. */
export function requireCutPoint(model: tfl.LayersModel, name: string, option = 'cut'): number {
  const i = layerIndex(model, name, option);
  if (!cutPointIndices(model).includes(i)) {
    throw new UsageError(
      'not-a-cut-point',
      words`${opt(option)} ${shown(name)} is not a cut point: other tensors cross the graph there (inside a residual or branched block)`,
    );
  }
  return i;
}

/**
 * Walks the layers of `model` with index in (fromIndex, toIndex], calling each on the values its parents produced,
 * starting from `input` as the output of layer `fromIndex`. Works for symbolic tensors (building models) and concrete
 * ones (running them).
 */
function walkSegment<T>(
  model: tfl.LayersModel,
  fromIndex: number,
  toIndex: number,
  input: T,
  call: (layer: Layer, args: T | T[]) => T,
): T {
  const layers = model.layers;
  const produced = new Map<string, T>([[layers[fromIndex].name, input]]);
  for (let i = fromIndex + 1; i <= toIndex; i++) {
    const layer = layers[i];
    const args = inboundLayers(layer).map((p) => {
      const t = produced.get(p.name);
      if (t === undefined)
        throw new InternalError(`layer ${layer.name} reads ${p.name}, which lies below the cut: not a clean split`);
      return t;
    });
    produced.set(layer.name, call(layer, args.length === 1 ? args[0] : args));
  }
  return produced.get(layers[toIndex].name)!;
}

/**
 * Re-applies the layers of `model` with index in (fromIndex, toIndex] to a new input tensor that stands for the output
 * of layer `fromIndex`. The layers (and so their weights) are shared with `model`, not copied.
 */
export function reapply(
  model: tfl.LayersModel,
  fromIndex: number,
  toIndex: number,
  input: SymbolicTensor,
): SymbolicTensor {
  return walkSegment(model, fromIndex, toIndex, input, (layer, args) => layer.apply(args) as SymbolicTensor);
}

/** Global average pooling for spatial outputs, identity otherwise: what the head reads at a cut. */
export function poolIfSpatial(t: SymbolicTensor, name: string): SymbolicTensor {
  return t.shape.length === 4 ? (tfl.layers.globalAveragePooling2d({ name }).apply(t) as SymbolicTensor) : t;
}

/**
 * Runs the layers of `model` with index in (fromIndex, toIndex] on a concrete tensor standing for the output of layer
 * `fromIndex`, passing each layer its own `training` flag. A LayersModel built with `reapply` cannot do this: when
 * called on tensors it hands its layers the arguments recorded at build time, never a training flag, so BatchNorm and
 * Dropout could not be switched between modes per call. Intermediate tensors are the caller's to dispose (tf.tidy).
 */
export function runSegment(
  model: tfl.LayersModel,
  fromIndex: number,
  toIndex: number,
  x: Tensor,
  training: (layer: Layer) => boolean,
): Tensor {
  return walkSegment(model, fromIndex, toIndex, x, (layer, args) =>
    partialBatchNorm(layer, (args as Tensor).rank)
      ? filledBatchNorm(layer as unknown as BatchNormLayer, args as Tensor, training(layer))
      : (layer.apply(args, { training: training(layer) }) as Tensor),
  );
}

interface LayerVariableLike {
  read(): Tensor;
  write(t: Tensor): void;
}

interface BatchNormLayer {
  axis: number;
  epsilon: number;
  momentum: number;
  gamma: LayerVariableLike | null;
  beta: LayerVariableLike | null;
  movingMean: LayerVariableLike;
  movingVariance: LayerVariableLike;
}

/** A BatchNormalization over the last axis without gamma (scale: false) or beta (center: false), as InceptionV3 has. */
function partialBatchNorm(layer: Layer, rank: number): boolean {
  if (layer.getClassName() !== 'BatchNormalization') return false;
  const bn = layer as unknown as BatchNormLayer;
  // The input's rank, not the layer's outputShape, which is ill-defined once the layer was applied at two sizes.
  return (!bn.gamma || !bn.beta) && (bn.axis === -1 || bn.axis === rank - 1);
}

/**
 * The layer's own arithmetic with ones standing in for a missing gamma and zeros for a missing beta. TF.js's layer
 * cannot be differentiated without them: the batch-norm kernel saves its absent inputs for the backward pass and
 * fails on them, and training mode reads gamma unconditionally. Training mode normalises with the batch moments and
 * moves the moving statistics toward them by (1 - momentum), as the layer does.
 */
function filledBatchNorm(bn: BatchNormLayer, x: Tensor, training: boolean): Tensor {
  const movingMean = bn.movingMean.read();
  const gamma = bn.gamma ? bn.gamma.read() : tf.onesLike(movingMean);
  const beta = bn.beta ? bn.beta.read() : tf.zerosLike(movingMean);
  if (!training) return tf.batchNorm(x, movingMean, bn.movingVariance.read(), beta, gamma, bn.epsilon);
  const { mean, variance } = tf.moments(
    x,
    Array.from({ length: x.rank - 1 }, (_, i) => i),
  );
  const moveToward = (v: LayerVariableLike, batch: Tensor) =>
    tf.tidy(() => {
      v.write(tf.sub(v.read(), tf.mul(tf.sub(v.read(), batch), 1 - bn.momentum)));
    });
  moveToward(bn.movingMean, mean);
  moveToward(bn.movingVariance, variance);
  return tf.batchNorm(x, mean, variance, beta, gamma, bn.epsilon);
}
