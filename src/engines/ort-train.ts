/**
 * @file Tails on ONNX Runtime: a tail (base layers above a cut, pooled) plus a softmax head on standardised features,
 * compiled once per training stage into inference graphs whose inputs are the cut activations and the current weights.
 *
 *   features: cut activations → pooled tail output (stage 1 fits a head on it)
 *   predict:  cut activations → class probabilities (validation, inference mode)
 *   step:     cut activations, weighted one-hot labels, dropout mask → loss, logits, and the gradient of every weight
 *
 * The step graph is the forward graph from the TF.js → ONNX converter (trainable weights as graph inputs, BatchNorm in
 * inference mode folded into its convolution by nodes, so gamma and beta still get gradients) with the backward graph
 * derived from it by onnx/gradient.ts. Weights cross into the session as inputs on every call, so nothing is rebuilt
 * per step. The optimiser is the caller's (train/ort-tail.ts runs Adam over the returned gradients).
 */
import os from 'node:os';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { convertLayers, type WeightInput, weightFromGraph, weightToGraph } from '../onnx/convert.ts';
import { addGradients } from '../onnx/gradient.ts';
import {
  AttrType,
  DataType,
  encodeModel,
  floatInfo,
  type GraphMsg,
  type ModelMsg,
  type NodeMsg,
} from '../onnx/proto.ts';
import { loadOrt, type Ort } from '../onnx/runtime.ts';
import { tf } from '../tfjs/tf.ts';
import { InternalError } from '../util/errors.ts';

type Session = import('onnxruntime-node').InferenceSession;

export interface OrtTrainOptions {
  /** Intra-op threads; default every core (os.availableParallelism()). */
  threads?: number;
}

const NAMES = {
  labels: 'graft_labels',
  mask: 'graft_dropout_mask',
  kernel: 'graft_head_kernel',
  bias: 'graft_head_bias',
  loss: 'graft_loss',
  logits: 'graft_logits',
  probabilities: 'graft_probabilities',
} as const;

function info(name: string, dims: (number | null)[]) {
  return floatInfo(
    name,
    dims.map((d, i) => (d === null ? (i === 0 ? 'batch' : `${name}_${i}`) : d)),
  );
}

/** Appends nodes to a graph copy; names are the caller's to keep unique (every one here starts with graft_). */
class Nodes {
  readonly graph: GraphMsg;
  constructor(graph: GraphMsg) {
    this.graph = {
      ...graph,
      node: [...graph.node],
      initializer: [...graph.initializer],
      input: [...graph.input],
      output: [],
    };
  }
  add(op: string, input: string[], output: string, attribute: NodeMsg['attribute'] = []): string {
    this.graph.node.push({ op_type: op, input, output: [output], name: output, attribute });
    return output;
  }
  floats(name: string, data: Float32Array, dims: number[]): string {
    this.graph.initializer.push({
      name,
      dims,
      data_type: DataType.FLOAT,
      raw_data: new Uint8Array(data.slice().buffer),
    });
    return name;
  }
  int64s(name: string, data: number[]): string {
    const raw = new Uint8Array(BigInt64Array.from(data.map((d) => BigInt(d))).buffer);
    this.graph.initializer.push({ name, dims: [data.length], data_type: DataType.INT64, raw_data: raw });
    return name;
  }
}

/** The head's fixed standardisation and its size (its kernel and bias are weights, fed per call). */
export interface HeadShape {
  mean: Float32Array;
  invStd: Float32Array;
  numClasses: number;
}

/**
 * logits = ((f - mean) · invStd [· mask]) · kernel + bias, as tail-trainer's headLogits computes it. `mask` holds the
 * dropout mask (0 or 1/(1 - rate) per element), drawn by the trainer so that both engines see the same one.
 */
function appendHead(n: Nodes, features: string, head: HeadShape, withMask: boolean): string {
  const dim = head.mean.length;
  const C = head.numClasses;
  const centred = n.add('Sub', [features, n.floats('graft_head_mean', head.mean, [dim])], 'graft_head_centred');
  let z = n.add('Mul', [centred, n.floats('graft_head_inv_std', head.invStd, [dim])], 'graft_head_standardised');
  if (withMask) {
    n.graph.input.push(info(NAMES.mask, [null, dim]));
    z = n.add('Mul', [z, NAMES.mask], 'graft_head_dropped');
  }
  n.graph.input.push(info(NAMES.kernel, [dim, C]), info(NAMES.bias, [C]));
  return n.add('Gemm', [z, NAMES.kernel, NAMES.bias], NAMES.logits);
}

/** The tail's forward graph with its trainable weights as inputs; its one output is the pooled feature vector. */
function tailGraph(tail: LayersModel): { model: ModelMsg; weights: WeightInput[]; features: string } {
  if (tail.outputs.length !== 1 || tail.outputs[0].shape.length !== 2)
    throw new InternalError('a tail for ONNX Runtime must have one output of pooled features (batch × features)');
  const { model, weightInputs } = convertLayers(tail, { trainableAsInputs: true, inputName: 'graft_cut' });
  return { model, weights: weightInputs, features: model.graph.output[0].name };
}

/** The step and predict graphs of a stage, serialised (compileTail's stage() runs them). */
export function tailGraphs(tail: LayersModel, head: HeadShape, withStep = true) {
  const { model, weights, features } = tailGraph(tail);
  const dim = head.mean.length;
  const asModel = (graph: GraphMsg) => encodeModel({ ...model, graph });

  const f = new Nodes(model.graph);
  f.graph.output = [info(features, [null, dim])];

  const p = new Nodes(model.graph);
  const logitsP = appendHead(p, features, head, false);
  p.add('Softmax', [logitsP], NAMES.probabilities, [{ name: 'axis', type: AttrType.INT, i: 1 }]);
  p.graph.output = [info(NAMES.probabilities, [null, head.numClasses])];

  // loss = -sum(labels · logSoftmax(logits)), labels already weighted by class and divided by the batch size.
  const s = new Nodes(model.graph);
  const logits = appendHead(s, features, head, true);
  s.graph.input.push(info(NAMES.labels, [null, head.numClasses]));
  const logp = s.add('LogSoftmax', [logits], 'graft_log_probabilities', [{ name: 'axis', type: AttrType.INT, i: 1 }]);
  const weighted = s.add('Mul', [logp, NAMES.labels], 'graft_weighted_log_probabilities');
  const sum = s.add('ReduceSum', [weighted], 'graft_loss_sum', [{ name: 'keepdims', type: AttrType.INT, i: 0 }]);
  s.add('Neg', [sum], NAMES.loss);
  s.graph.output = [info(NAMES.loss, []), info(NAMES.logits, [null, head.numClasses])];
  const params = [...weights.map((w) => w.name), NAMES.kernel, NAMES.bias];
  const { graph: stepGraph, gradients } = withStep
    ? addGradients(s.graph, { loss: NAMES.loss, wrt: params })
    : { graph: undefined, gradients: [] as string[] };

  return {
    features: asModel(f.graph),
    predict: asModel(p.graph),
    step: stepGraph ? asModel(stepGraph) : undefined,
    weights,
    gradients,
    featureName: features,
    dim,
  };
}

async function session(ort: Ort, bytes: Uint8Array, threads: number): Promise<Session> {
  return ort.InferenceSession.create(bytes, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  });
}

type Feeds = Record<string, import('onnxruntime-node').Tensor>;

/** One training stage's compiled graphs. Parameters are arrays in the graph's layout: the tail's, then head kernel, bias. */
export interface OrtStage {
  /** The tail's parameters, in order (the head's kernel and bias follow them in every parameter list). */
  readonly weights: WeightInput[];
  /** The starting values of every parameter (read from the layers, and the head values given). */
  readonly initial: Float32Array[];
  /**
   * Loss, logits and the gradient of every parameter for a batch. labels: n × C (one-hot × class weight / n); mask:
   * n × features, the head input's dropout mask.
   */
  step(
    params: Float32Array[],
    x: Float32Array,
    n: number,
    labels: Float32Array,
    mask: Float32Array,
  ): Promise<{ loss: number; logits: Float32Array; grads: Float32Array[] }>;
  /** Class probabilities (inference mode) for n rows. */
  predict(params: Float32Array[], x: Float32Array, n: number): Promise<Float32Array>;
  /** Writes the tail's parameters into its layers' variables; returns the head's kernel and bias. */
  writeBack(params: Float32Array[]): { kernel: Float32Array; bias: Float32Array };
  release(): Promise<void>;
}

/** A tail compiled for ONNX Runtime (see the file comment). */
export interface OrtTail {
  /** Shape of one input row, without the batch dimension. */
  readonly inputShape: number[];
  /** Pooled tail features of n rows (inference mode), with the layers' current weights. */
  features(x: Float32Array, n: number): Promise<Float32Array>;
  /**
   * Compiles a training stage with this head; the tail's weights are read from its layers now. `training` false
   * compiles the predict graph only (step() then throws).
   */
  stage(head: HeadShape & { kernel: Float32Array; bias: Float32Array }, training?: boolean): Promise<OrtStage>;
  release(): Promise<void>;
}

/**
 * Compiles `tail` (one cut activation in, pooled features out; see Tail.toModel) for ONNX Runtime. Throws, naming the
 * layer or operator, when the converter or the gradient builder does not cover it, before any training starts.
 */
export async function compileTail(tail: LayersModel, opts: OrtTrainOptions = {}): Promise<OrtTail> {
  const ort = await loadOrt();
  const threads = opts.threads ?? os.availableParallelism();
  const inputShape = tail.inputs[0].shape.slice(1) as number[];
  const probe = tailGraphs(tail, {
    mean: new Float32Array(tail.outputs[0].shape[1] as number),
    invStd: new Float32Array(tail.outputs[0].shape[1] as number),
    numClasses: 2,
  });
  const dim = probe.dim;
  let featureSession: Session | undefined;
  return {
    inputShape,
    async features(x, n) {
      featureSession ??= await session(ort, probe.features, threads);
      const feeds: Feeds = weightFeeds(ort, probe.weights, probe.weights.map(readWeight));
      feeds.graft_cut = new ort.Tensor('float32', x, [n, ...inputShape]);
      const r = await featureSession.run(feeds, [probe.featureName]);
      const out = r[probe.featureName].data as Float32Array;
      if (out.length !== n * dim)
        throw new InternalError(`tail features: ${out.length} values for ${n} rows of ${dim}`);
      return out;
    },
    async stage(head, training = true) {
      const g = tailGraphs(tail, head, training);
      const [step, predict] = await Promise.all([
        g.step ? session(ort, g.step, threads) : undefined,
        session(ort, g.predict, threads),
      ]);
      const C = head.numClasses;
      const names = [...g.weights.map((w) => w.name), NAMES.kernel, NAMES.bias];
      const shapes = [...g.weights.map((w) => w.dims), [dim, C], [C]];
      const feedsFor = (params: Float32Array[]): Feeds => {
        if (params.length !== names.length)
          throw new InternalError(`${params.length} parameters for ${names.length} inputs`);
        return Object.fromEntries(names.map((nm, i) => [nm, new ort.Tensor('float32', params[i], shapes[i])]));
      };
      return {
        weights: g.weights,
        initial: [...g.weights.map(readWeight), head.kernel.slice(), head.bias.slice()],
        async step(params, x, n, labels, mask) {
          if (!step) throw new InternalError('this stage was compiled for prediction only');
          const feeds = feedsFor(params);
          feeds.graft_cut = new ort.Tensor('float32', x, [n, ...inputShape]);
          feeds[NAMES.labels] = new ort.Tensor('float32', labels, [n, C]);
          feeds[NAMES.mask] = new ort.Tensor('float32', mask, [n, dim]);
          const r = await step.run(feeds, [NAMES.loss, NAMES.logits, ...g.gradients]);
          return {
            loss: (r[NAMES.loss].data as Float32Array)[0],
            logits: r[NAMES.logits].data as Float32Array,
            grads: g.gradients.map((name) => r[name].data as Float32Array),
          };
        },
        async predict(params, x, n) {
          const feeds = feedsFor(params);
          feeds.graft_cut = new ort.Tensor('float32', x, [n, ...inputShape]);
          const r = await predict.run(feeds, [NAMES.probabilities]);
          return r[NAMES.probabilities].data as Float32Array;
        },
        writeBack(params) {
          g.weights.forEach((w, i) => {
            writeWeight(w, params[i]);
          });
          return { kernel: params[params.length - 2].slice(), bias: params[params.length - 1].slice() };
        },
        async release() {
          await Promise.all([step?.release(), predict.release()]);
        },
      };
    },
    async release() {
      await featureSession?.release();
      featureSession = undefined;
    },
  };
}

/** A variable's current values in the graph's layout. */
function readWeight(w: WeightInput): Float32Array {
  return weightToGraph(w, w.variable.read().dataSync() as Float32Array);
}

function writeWeight(w: WeightInput, data: Float32Array): void {
  const t = tf.tensor(weightFromGraph(w, data), w.shape);
  w.variable.write(t);
  t.dispose();
}

function weightFeeds(ort: Ort, weights: WeightInput[], data: Float32Array[]): Feeds {
  return Object.fromEntries(weights.map((w, i) => [w.name, new ort.Tensor('float32', data[i], w.dims)]));
}
