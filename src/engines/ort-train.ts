/**
 * @file The ONNX Runtime training engine for tails: a tail (base layers above a cut, pooled) plus graft's softmax head,
 * compiled once per stage into inference graphs whose inputs are the cut activations and the current weights.
 *
 *   features: cut activations → pooled tail output (stage 1 fits a head on it)
 *   predict:  cut activations → class probabilities (validation, inference mode)
 *   step:     cut activations, weighted one-hot labels, dropout mask → loss, logits, and the gradient of every weight
 *
 * The step graph is the forward graph from the TF.js → ONNX converter (trainable weights as graph inputs, BatchNorm in
 * inference mode folded into its convolution by nodes, so gamma and beta still get gradients) with the backward graph
 * derived from it by onnx/gradient.ts. Weights cross into the session as inputs on every call, so nothing is rebuilt
 * per step; Adam runs in JavaScript over the returned gradients (see train/adam.ts for why there).
 */
import os from 'node:os';
import type { LayersModel } from '@tensorflow/tfjs-layers';
import { convertLayers, type WeightInput, weightFromGraph, weightToGraph } from '../onnx/convert.ts';
import { addGradients } from '../onnx/gradient.ts';
import { AttrType, DataType, encodeModel, type GraphMsg, type ModelMsg, type NodeMsg } from '../onnx/proto.ts';
import { loadOrt, type Ort } from '../onnx/runtime.ts';
import { tf } from '../tfjs/tf.ts';
import { FloatAdam } from '../train/adam.ts';
import type { JointHead, TailData, TailEngine, TailRunner } from '../train/tail-trainer.ts';

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
  return {
    name,
    type: {
      tensor_type: {
        elem_type: DataType.FLOAT,
        shape: {
          dim: dims.map((d, i) => (d === null ? { dim_param: i === 0 ? 'batch' : `${name}_${i}` } : { dim_value: d })),
        },
      },
    },
  };
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

/** The head's fixed standardisation and sizes (its kernel and bias are weights, fed per call). */
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
    throw new Error('a tail for ONNX Runtime must have one output of pooled features (batch × features)');
  const { model, weightInputs } = convertLayers(tail, { trainableAsInputs: true, inputName: 'graft_cut' });
  return { model, weights: weightInputs, features: model.graph.output[0].name };
}

/** The three graphs of a stage, serialised. Exported for tests; trainers use OrtTail. */
export function tailGraphs(tail: LayersModel, head: HeadShape) {
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
  const { graph: stepGraph, gradients } = addGradients(s.graph, { loss: NAMES.loss, wrt: params });

  return {
    features: asModel(f.graph),
    predict: asModel(p.graph),
    step: asModel(stepGraph),
    weights,
    gradients,
    featureName: features,
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

const rowsOf = (d: TailData, from: number, to: number, size: number) => d.x.slice(from * size, to * size);

/**
 * A tail compiled for ONNX Runtime. `tail` maps one cut activation (the model's input) to pooled features; its
 * trainable weights are read when a runner starts and written back when it finishes.
 */
export class OrtTail implements TailEngine {
  readonly name = 'onnx';

  private constructor(
    private readonly ort: Ort,
    private readonly tail: LayersModel,
    private readonly threads: number,
    readonly inputShape: number[],
  ) {}

  static async create(tail: LayersModel, opts: OrtTrainOptions = {}): Promise<OrtTail> {
    const ort = await loadOrt();
    // Converting now surfaces an unsupported layer before any training starts.
    tailGraph(tail);
    return new OrtTail(ort, tail, opts.threads ?? os.availableParallelism(), tail.inputs[0].shape.slice(1) as number[]);
  }

  private get rowSize(): number {
    return this.inputShape.reduce((a, b) => a * b, 1);
  }

  /** Pooled tail features of every row (inference mode), with the tail's current weights. */
  async features(d: TailData, dim: number, batch = 64): Promise<Float32Array> {
    const { model, weights, features } = tailGraph(this.tail);
    const s = await session(this.ort, encodeModel(model), this.threads);
    try {
      const feeds = weightFeeds(
        this.ort,
        weights,
        weights.map((w) => readWeight(w)),
      );
      const out = new Float32Array(d.n * dim);
      for (let i = 0; i < d.n; i += batch) {
        const m = Math.min(batch, d.n - i);
        feeds.graft_cut = new this.ort.Tensor('float32', rowsOf(d, i, i + m, this.rowSize), [m, ...this.inputShape]);
        const r = await s.run(feeds, [features]);
        out.set(r[features].data as Float32Array, i * dim);
      }
      return out;
    } finally {
      await s.release();
    }
  }

  /** Class probabilities of tail + head for every row (inference mode), with the current weights of both. */
  async predict(head: JointHead, d: TailData): Promise<Float32Array> {
    const r = await this.runner(head, 1);
    try {
      return await r.predict(d);
    } finally {
      await r.release();
    }
  }

  /**
   * A runner for one training stage: the tail's weights and the head's are copied out now, trained as arrays, and
   * written back by finish().
   */
  async runner(head: JointHead, lr: number): Promise<TailRunner> {
    const mean = head.mean.dataSync() as Float32Array;
    const shape: HeadShape = { mean, invStd: head.invStd.dataSync() as Float32Array, numClasses: head.numClasses };
    const g = tailGraphs(this.tail, shape);
    const [step, predict] = await Promise.all([
      session(this.ort, g.step, this.threads),
      session(this.ort, g.predict, this.threads),
    ]);
    const ort = this.ort;
    const params = [
      ...g.weights.map((w) => readWeight(w)),
      Float32Array.from(head.kernel.dataSync() as Float32Array),
      Float32Array.from(head.bias.dataSync() as Float32Array),
    ];
    const shapes = [...g.weights.map((w) => w.dims), [head.dim, head.numClasses], [head.numClasses]];
    const names = [...g.weights.map((w) => w.name), NAMES.kernel, NAMES.bias];
    const adam = new FloatAdam(
      params.map((p) => p.length),
      lr,
    );
    const C = head.numClasses;
    const size = this.rowSize;
    const inputShape = this.inputShape;
    const feedsFor = () =>
      Object.fromEntries(names.map((nm, i) => [nm, new ort.Tensor('float32', params[i], shapes[i])])) as Record<
        string,
        import('onnxruntime-node').Tensor
      >;
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      await Promise.all([step.release(), predict.release()]);
    };
    return {
      engine: 'onnx',
      async step(x, n, labels, mask) {
        const feeds = feedsFor();
        feeds.graft_cut = new ort.Tensor('float32', x, [n, ...inputShape]);
        feeds[NAMES.labels] = new ort.Tensor('float32', labels, [n, C]);
        feeds[NAMES.mask] = new ort.Tensor('float32', mask, [n, head.dim]);
        const r = await step.run(feeds, [NAMES.loss, NAMES.logits, ...g.gradients]);
        adam.update(
          params,
          g.gradients.map((gr) => r[gr].data as Float32Array),
        );
        const logits = r[NAMES.logits].data as Float32Array;
        const pred = new Int32Array(n);
        for (let i = 0; i < n; i++)
          for (let c = 1; c < C; c++) if (logits[i * C + c] > logits[i * C + pred[i]]) pred[i] = c;
        return { loss: (r[NAMES.loss].data as Float32Array)[0], pred };
      },
      async predict(d) {
        const batch = 64;
        const out = new Float32Array(d.n * C);
        const feeds = feedsFor();
        for (let i = 0; i < d.n; i += batch) {
          const m = Math.min(batch, d.n - i);
          feeds.graft_cut = new ort.Tensor('float32', rowsOf(d, i, i + m, size), [m, ...inputShape]);
          const r = await predict.run(feeds, [NAMES.probabilities]);
          out.set(r[NAMES.probabilities].data as Float32Array, i * C);
        }
        return out;
      },
      save: () => params.map((p) => p.slice()),
      discard() {},
      restore(saved) {
        (saved as Float32Array[]).forEach((s, i) => {
          params[i].set(s);
        });
      },
      async finish() {
        g.weights.forEach((w, i) => {
          writeWeight(w, params[i]);
        });
        const [kernel, bias] = [params[params.length - 2], params[params.length - 1]];
        tf.tidy(() => {
          head.kernel.assign(tf.tensor2d(kernel, [head.dim, C]));
          head.bias.assign(tf.tensor1d(bias));
        });
        await release();
      },
      release,
    };
  }
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

function weightFeeds(
  ort: Ort,
  weights: WeightInput[],
  data: Float32Array[],
): Record<string, import('onnxruntime-node').Tensor> {
  return Object.fromEntries(weights.map((w, i) => [w.name, new ort.Tensor('float32', data[i], w.dims)]));
}
