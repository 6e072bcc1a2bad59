/**
 * Trains a tail (base layers above a cut, fed cached cut activations) jointly with a dense softmax head.
 *
 * The tail is given as a forward function plus the layers whose weights train, so this module knows nothing of graphs
 * or cuts: the workflow decides which layers run, and in which mode BatchNorm runs (inference mode by default, the
 * Keras rule for fine-tuning: moving statistics neither used-from-batch nor updated). The loop is written out, like
 * the head trainer's, so batch order comes from the seeded generator and early stopping can keep the best weights.
 */
import { tf, type tfl } from '../tfjs/tf.ts';
import { registerGradientFixes, registerWasmGradients } from '../tfjs/wasm-grad.ts';
import { InternalError, opt, shown, UsageError, words } from '../util/errors.ts';
import { checkAbort } from '../util/progress.ts';
import type { EpochLog, TrainedHead } from './features.ts';
import { DenseHead } from './heads.ts';
import { mulberry32, type Rng, shuffleInPlace } from './random.ts';
import { balancedClassWeights } from './trainer.ts';

type Layer = tfl.layers.Layer;
type LayerVariable = Layer['weights'][number];

export const TAIL_DEFAULTS = {
  batchSize: 32,
  seed: 42,
  /** Rows per forward call when only predicting (no activations kept for backprop, so larger than a training batch). */
  evalBatchSize: 64,
  /**
   * No feature is scaled up more than this many times the median feature when the head's standardisation carries over
   * to joint training. A feature that is nearly constant on the training images (std 1e-5 where the median is 0.08,
   * as some ReLU6 channels of a pretrained top are) gets a huge 1/std; once the tail moves it by a hair, that feature
   * swamps the logits (first-epoch losses of 5-7 against 0.45 at the start). Capped, it just stops mattering.
   */
  maxGainOverMedian: 10,
  /**
   * Dropout on the head's (standardised) input while training, as the Keras transfer-learning guide puts before its
   * classifier: with a few hundred images a retrained tail reaches 100% training accuracy within a few epochs.
   */
  dropout: 0.2,
} as const;

/** The trainable part below the head. */
export interface Tail {
  /** Layers whose weights train; their trainable weights are the optimiser's variables. */
  layers: Layer[];
  /** Shape of one input row (the cut activation), without the batch dimension. */
  inputShape: number[];
  /** batch × inputShape → batch × features (pooled). `training` is true for optimisation steps only. */
  forward(x: tf.Tensor, training: boolean): tf.Tensor2D;
  /**
   * The same computation as a Layers model (cut activation in, pooled features out) sharing the tail's layers, for
   * engines that compile graphs. Absent when the tail cannot be expressed as one.
   */
  toModel?(): tfl.LayersModel;
}

/** Rows of cut activations with their labels. */
export interface TailData {
  /** n × prod(inputShape), row-major. */
  x: Float32Array;
  n: number;
  y: Int32Array;
}

/**
 * A softmax head on standardised features: logits = ((f - mean) * invStd) · kernel + bias. The standardisation is
 * the one the head was first fitted with and stays fixed while the tail moves, so the warm start is not thrown away.
 */
export interface JointHead {
  kernel: tf.Variable;
  bias: tf.Variable;
  mean: tf.Tensor1D;
  invStd: tf.Tensor1D;
  dim: number;
  numClasses: number;
}

function b64(s: unknown, n: number): Float32Array {
  const b = Buffer.from(String(s), 'base64');
  if (b.byteLength !== n * 4) throw new InternalError(`head JSON holds ${b.byteLength / 4} values, expected ${n}`);
  const out = new Float32Array(n);
  new Uint8Array(out.buffer).set(b);
  return out;
}

/** invStd with every entry capped at `cap` times the median of the non-zero entries. */
export function capInvStd(invStd: Float32Array, cap: number = TAIL_DEFAULTS.maxGainOverMedian): Float32Array {
  const nonZero = Array.from(invStd)
    .filter((v) => v > 0)
    .sort((a, b) => a - b);
  if (nonZero.length === 0) return invStd;
  const limit = cap * nonZero[nonZero.length >> 1];
  return invStd.map((v) => Math.min(v, limit));
}

/**
 * Variables initialised from a trained softmax head (copied: the head may be disposed afterwards), its
 * standardisation capped (see TAIL_DEFAULTS.maxGainOverMedian).
 */
export function jointHeadFrom(head: TrainedHead): JointHead {
  if (head.kind !== 'softmax')
    throw new UsageError('invalid-value', words`a tail trains with a softmax ${opt('head')} (got ${shown(head.kind)})`);
  const j = head.toJSON() as unknown as { mean: string; invStd: string; layers: { kernel: string; bias: string }[] };
  const { dim, numClasses: C } = head;
  const variable = (t: tf.Tensor) => {
    const v = tf.variable(t, true);
    t.dispose();
    return v;
  };
  return {
    kernel: variable(tf.tensor2d(b64(j.layers[0].kernel, dim * C), [dim, C])),
    bias: variable(tf.tensor1d(b64(j.layers[0].bias, C))),
    mean: tf.tensor1d(b64(j.mean, dim)),
    invStd: tf.tensor1d(capInvStd(b64(j.invStd, dim))),
    dim,
    numClasses: C,
  };
}

/** Hands the head's tensors over to a DenseHead (for prediction on features and export as layers). */
export function toDenseHead(h: JointHead, history: EpochLog[], bestEpoch: number): DenseHead {
  const std = { mean: h.mean.dataSync() as Float32Array, invStd: h.invStd.dataSync() as Float32Array };
  tf.dispose([h.mean, h.invStd]);
  return new DenseHead('softmax', h.numClasses, h.dim, std, [h.kernel, h.bias], history, bestEpoch);
}

export function disposeJointHead(h: JointHead): void {
  tf.dispose([h.kernel, h.bias, h.mean, h.invStd]);
}

/** logits = ((f - mean) · invStd [· mask]) · kernel + bias; `mask` is a dropout mask (0 or 1 / (1 - rate) each). */
function headLogits(h: JointHead, f: tf.Tensor2D, mask?: tf.Tensor2D): tf.Tensor2D {
  let z = tf.mul(tf.sub(f, h.mean), h.invStd) as tf.Tensor2D;
  if (mask) z = tf.mul(z, mask);
  return tf.add(tf.matMul(z, h.kernel as tf.Tensor2D), h.bias);
}

function rowSize(tail: Tail): number {
  return tail.inputShape.reduce((a, b) => a * b, 1);
}

function checkData(tail: Tail, d: TailData, what: string): void {
  if (d.x.length !== d.n * rowSize(tail) || d.y.length !== d.n) {
    throw new UsageError(
      'invalid-value',
      `${what}: ${d.x.length} values and ${d.y.length} labels for ${d.n} rows of ${rowSize(tail)}`,
    );
  }
}

function batchTensor(tail: Tail, d: TailData, idx: ArrayLike<number>): tf.Tensor {
  const size = rowSize(tail);
  // A fresh array each time: the CPU backend keeps a reference to the array a tensor was made from.
  const xb = new Float32Array(idx.length * size);
  for (let r = 0; r < idx.length; r++) xb.set(d.x.subarray(idx[r] * size, (idx[r] + 1) * size), r * size);
  return tf.tensor(xb, [idx.length, ...tail.inputShape]);
}

/** Runs `fn` over the rows in batches (inference mode) and concatenates its per-row outputs. */
function mapRows(tail: Tail, d: TailData, width: number, fn: (x: tf.Tensor) => tf.Tensor, batch: number): Float32Array {
  const out = new Float32Array(d.n * width);
  for (let s = 0; s < d.n; s += batch) {
    const idx = Array.from({ length: Math.min(batch, d.n - s) }, (_, i) => s + i);
    const y = tf.tidy(() => fn(batchTensor(tail, d, idx)));
    out.set(y.dataSync() as Float32Array, s * width);
    y.dispose();
  }
  return out;
}

/** The tail's pooled output features for every row (inference mode): what a head reads. */
export function tailFeatures(
  tail: Tail,
  d: TailData,
  dim: number,
  batch: number = TAIL_DEFAULTS.evalBatchSize,
): Float32Array {
  checkData(tail, d, 'tailFeatures');
  return mapRows(tail, d, dim, (x) => tail.forward(x, false), batch);
}

/** Class probabilities of tail + head for every row (inference mode). */
export function tailPredict(
  tail: Tail,
  head: JointHead,
  d: TailData,
  batch: number = TAIL_DEFAULTS.evalBatchSize,
): Float32Array {
  checkData(tail, d, 'tailPredict');
  return mapRows(tail, d, head.numClasses, (x) => tf.softmax(headLogits(head, tail.forward(x, false))), batch);
}

/** Weighted mean cross-entropy and accuracy of probabilities. */
function score(p: Float32Array, y: Int32Array, C: number, classW: Float32Array): { loss: number; accuracy: number } {
  let loss = 0;
  let wsum = 0;
  let right = 0;
  for (let i = 0; i < y.length; i++) {
    const w = classW[y[i]];
    loss -= w * Math.log(Math.max(1e-15, p[i * C + y[i]]));
    wsum += w;
    let best = 0;
    for (let c = 1; c < C; c++) if (p[i * C + c] > p[i * C + best]) best = c;
    if (best === y[i]) right++;
  }
  return { loss: wsum > 0 ? loss / wsum : Number.NaN, accuracy: y.length ? right / y.length : Number.NaN };
}

/** Every weight of the layers (moving statistics included) and of the head, as copies. */
function snapshot(vars: LayerVariable[], head: JointHead): tf.Tensor[] {
  return [...vars.map((v) => tf.clone(v.read())), tf.clone(head.kernel), tf.clone(head.bias)];
}

function restore(vars: LayerVariable[], head: JointHead, saved: tf.Tensor[]): void {
  vars.forEach((v, i) => {
    v.write(saved[i]);
  });
  head.kernel.assign(saved[vars.length]);
  head.bias.assign(saved[vars.length + 1]);
}

/** Copies of every weight of `layers` (moving statistics included), to put back with `restoreLayerWeights`. */
export function saveLayerWeights(layers: Layer[]): tf.Tensor[][] {
  return layers.map((l) => l.weights.map((w) => tf.clone(w.read())));
}

/** Puts saved weights back and disposes the copies. */
export function restoreLayerWeights(layers: Layer[], saved: tf.Tensor[][]): void {
  layers.forEach((l, i) => {
    l.weights.forEach((w, k) => {
      w.write(saved[i][k]);
    });
  });
  tf.dispose(saved.flat());
}

/**
 * Re-initialises layers as Keras would build them fresh, from the seeded generator: kernels Glorot-uniform, biases
 * and BatchNorm beta zero, BatchNorm gamma one, moving mean 0 and variance 1 (so BatchNorm starts as the identity).
 */
export function reinitialiseLayers(layers: Layer[], seed: number): void {
  const rng: Rng = mulberry32(seed);
  for (const layer of layers) {
    for (const w of layer.weights) {
      const shape = w.shape as number[];
      const size = shape.reduce((a, b) => a * b, 1);
      const kind = w.originalName.split('/').pop() ?? '';
      const values = new Float32Array(size);
      if (shape.length >= 2 && /kernel/.test(kind)) {
        const receptive = shape.slice(0, -2).reduce((a, b) => a * b, 1);
        const fanIn = shape[shape.length - 2] * receptive;
        const fanOut = shape[shape.length - 1] * receptive;
        const limit = Math.sqrt(6 / (fanIn + fanOut));
        for (let i = 0; i < size; i++) values[i] = (2 * rng() - 1) * limit;
      } else if (/gamma|moving_variance/.test(kind)) {
        values.fill(1);
      }
      const t = tf.tensor(values, shape);
      w.write(t);
      t.dispose();
    }
  }
}

/**
 * One stage's training on some engine: the optimiser state and the weights in training live in the runner, which
 * writes them back into the tail's layers and the head on finish().
 */
export interface TailRunner {
  /** 'wasm', 'cpu' or 'onnx'. */
  readonly engine: string;
  /**
   * One Adam step on a batch. x: n rows of cut activations; labels: n × C one-hot rows scaled by class weight / n;
   * mask: n × features dropout mask of the head input. Returns the weighted loss (summed over the batch's labels)
   * and the class each row was predicted as.
   */
  step(
    x: Float32Array,
    n: number,
    labels: Float32Array,
    mask: Float32Array,
  ): Promise<{ loss: number; pred: ArrayLike<number> }>;
  /** Class probabilities of tail + head for every row (inference mode). */
  predict(d: TailData): Promise<Float32Array>;
  /** A copy of every weight that training changes; give it to restore() or discard(). */
  save(): unknown;
  restore(saved: unknown): void;
  discard(saved: unknown): void;
  /** Leaves the weights held now in the tail's layers and the head's variables, and releases the runner. */
  finish(): Promise<void>;
  /** Releases the runner without writing anything back (error paths). */
  release(): Promise<void>;
}

/** What runs a tail: TF.js through the tail's own forward function, or a compiled graph (engines/ort-train.ts). */
export interface TailEngine {
  readonly name: string;
  /** Pooled tail output of every row (inference mode): what a head reads. */
  features(d: TailData, dim: number): Promise<Float32Array>;
  /** Class probabilities of tail + head for every row (inference mode). */
  predict(head: JointHead, d: TailData): Promise<Float32Array>;
  /** Starts a training stage at learning rate `lr` from the tail's and the head's current weights. */
  runner(head: JointHead, lr: number): Promise<TailRunner>;
  /** Releases what the engine holds (compiled sessions); the tail's layers are untouched. */
  release(): Promise<void>;
}

/** The TF.js engine: the tail's forward function, tf.train.adam, on whatever backend TF.js runs. */
export function tfjsTailEngine(tail: Tail): TailEngine {
  return {
    name: tf.getBackend(),
    features: async (d, dim) => tailFeatures(tail, d, dim),
    predict: async (head, d) => tailPredict(tail, head, d),
    release: async () => {},
    async runner(head, lr) {
      const allWeights = tail.layers.flatMap((l) => l.weights);
      const varList = [
        ...tail.layers.flatMap((l) => l.trainableWeights.map((w) => w.read() as tf.Variable)),
        head.kernel,
        head.bias,
      ];
      const optimizer = tf.train.adam(lr);
      const C = head.numClasses;
      return {
        engine: tf.getBackend(),
        async step(x, n, labels, mask) {
          let pred: tf.Tensor | undefined;
          const cost = tf.tidy((): tf.Scalar => {
            const xt = tf.tensor(x, [n, ...tail.inputShape]);
            const lt = tf.tensor2d(labels, [n, C]);
            const mt = tf.tensor2d(mask, [n, head.dim]);
            const c = optimizer.minimize(
              () => {
                const logits = headLogits(head, tail.forward(xt, true), mt);
                pred = tf.keep(tf.argMax(logits, 1));
                return tf.neg(tf.sum(tf.mul(lt, tf.logSoftmax(logits)))) as tf.Scalar;
              },
              true,
              varList,
            );
            if (!c) throw new InternalError('optimizer returned no cost');
            return c;
          });
          const loss = cost.dataSync()[0];
          cost.dispose();
          const p = pred!.dataSync();
          pred!.dispose();
          return { loss, pred: p };
        },
        predict: async (d) => tailPredict(tail, head, d),
        save: () => snapshot(allWeights, head),
        restore: (saved) => restore(allWeights, head, saved as tf.Tensor[]),
        discard: (saved) => tf.dispose(saved as tf.Tensor[]),
        async finish() {
          optimizer.dispose();
        },
        async release() {
          optimizer.dispose();
        },
      };
    },
  };
}

export interface TrainTailOptions {
  lr: number;
  /** Maximum epochs. */
  epochs: number;
  /** Epochs without improvement of the validation loss (training loss without validation) before stopping. */
  patience: number;
  batchSize?: number;
  seed?: number;
  /** Dropout rate on the head input during training steps (default TAIL_DEFAULTS.dropout). */
  dropout?: number;
  /** Default 'balanced', as for heads. */
  classWeights?: 'balanced' | 'none';
  /** What runs the passes; default TF.js (tfjsTailEngine). */
  engine?: TailEngine;
  signal?: AbortSignal;
  onEpoch?: (log: EpochLog, total: number) => void;
}

export interface TailTrainResult {
  history: EpochLog[];
  /** 0 when no epoch beat the starting weights on validation loss (they are then kept). */
  bestEpoch: number;
  /** Validation loss and accuracy of the starting weights, when there is validation data. */
  start?: { valLoss: number; valAccuracy: number };
  /** The engine that ran the stage. */
  engine: string;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Trains the tail's layers and the head together with Adam, in place; on return they hold the weights of the epoch
 * with the lowest validation loss. Layers not in `tail.layers` are never written: only their weights are given to
 * the optimiser, and only BatchNorm layers the forward function runs in training mode update their moving statistics.
 * The batch order and the dropout masks come from seeded generators here, not from the engine, so the same seed
 * gives the same data order and the same masks on every engine.
 */
export async function trainTail(
  tail: Tail,
  head: JointHead,
  train: TailData,
  val: TailData | undefined,
  opts: TrainTailOptions,
): Promise<TailTrainResult> {
  checkData(tail, train, 'train');
  if (train.n === 0) throw new UsageError('invalid-value', 'train: no examples');
  // Convolution gradients on WASM exist only once graft registers them: here, when a tail is first trained. The
  // corrected BatchNorm and AvgPool gradients apply on every backend.
  if (tf.getBackend() === 'wasm') registerWasmGradients();
  else registerGradientFixes();
  if (val) checkData(tail, val, 'val');
  const useVal = val && val.n > 0 ? val : undefined;
  const C = head.numClasses;
  const { epochs, patience, lr } = opts;
  if (!(lr > 0))
    throw new UsageError('invalid-value', words`${opt('lr')} must be a positive number (got ${shown(lr)})`);
  if (!(Number.isInteger(epochs) && epochs > 0))
    throw new UsageError('invalid-value', words`${opt('epochs')} must be a positive integer (got ${shown(epochs)})`);
  if (!(Number.isInteger(patience) && patience > 0))
    throw new UsageError(
      'invalid-value',
      words`${opt('patience')} must be a positive integer (got ${shown(patience)})`,
    );
  const batchSize = opts.batchSize ?? TAIL_DEFAULTS.batchSize;
  const seed = opts.seed ?? TAIL_DEFAULTS.seed;
  const rng = mulberry32(seed);
  const maskRng = mulberry32(seed ^ 0x5bd1e995);
  const dropoutRate = opts.dropout ?? TAIL_DEFAULTS.dropout;
  if (!(dropoutRate >= 0 && dropoutRate < 1))
    throw new UsageError('invalid-value', words`${opt('dropout')} must be in [0, 1) (got ${shown(dropoutRate)})`);
  const classW =
    (opts.classWeights ?? 'balanced') === 'balanced' ? balancedClassWeights(train.y, C) : new Float32Array(C).fill(1);
  const size = rowSize(tail);
  const keep = 1 / (1 - dropoutRate);

  const runner = await (opts.engine ?? tfjsTailEngine(tail)).runner(head, lr);
  const history: EpochLog[] = [];
  let best: unknown;
  let bestLoss = Number.POSITIVE_INFINITY;
  let bestEpoch = 0;
  const order = Int32Array.from({ length: train.n }, (_, i) => i);
  let start: TailTrainResult['start'];
  let finished = false;

  try {
    // The starting weights compete with every epoch: a warm start that training only makes worse is kept.
    if (useVal) {
      const v = score(await runner.predict(useVal), useVal.y, C, classW);
      start = { valLoss: v.loss, valAccuracy: v.accuracy };
      if (Number.isFinite(v.loss)) {
        bestLoss = v.loss;
        best = runner.save();
      }
    }
    for (let epoch = 1; epoch <= epochs; epoch++) {
      const t0 = performance.now();
      shuffleInPlace(order, rng);
      let lossSum = 0;
      let weightSum = 0;
      let right = 0;
      for (let s = 0; s < train.n; s += batchSize) {
        checkAbort(opts.signal);
        const idx = order.subarray(s, Math.min(train.n, s + batchSize));
        const b = idx.length;
        const yw = new Float32Array(b * C);
        // A fresh array each time: the CPU backend keeps a reference to the array a tensor was made from.
        const xb = new Float32Array(b * size);
        for (let r = 0; r < b; r++) {
          const w = classW[train.y[idx[r]]];
          yw[r * C + train.y[idx[r]]] = w / b;
          weightSum += w;
          xb.set(train.x.subarray(idx[r] * size, (idx[r] + 1) * size), r * size);
        }
        // A fresh mask per step, drawn from the seeded generator: reruns are bit-identical.
        const mask = new Float32Array(b * head.dim);
        for (let i = 0; i < mask.length; i++) mask[i] = maskRng() < dropoutRate ? 0 : keep;
        const { loss, pred } = await runner.step(xb, b, yw, mask);
        lossSum += loss * b;
        for (let r = 0; r < b; r++) if (pred[r] === train.y[idx[r]]) right++;
        await tick();
      }
      // Training numbers are the running ones of the epoch (a second pass over the training set would cost as much
      // as a third of the epoch); validation is scored on the whole set in inference mode.
      const log: EpochLog = {
        epoch,
        loss: lossSum / Math.max(weightSum, 1e-12),
        accuracy: right / train.n,
        seconds: 0,
      };
      if (useVal) {
        const v = score(await runner.predict(useVal), useVal.y, C, classW);
        log.valLoss = v.loss;
        log.valAccuracy = v.accuracy;
      }
      const watched = useVal ? log.valLoss! : log.loss;
      if (watched < bestLoss) {
        bestLoss = watched;
        bestEpoch = epoch;
        if (best !== undefined) runner.discard(best);
        best = runner.save();
      }
      log.seconds = (performance.now() - t0) / 1000;
      history.push(log);
      opts.onEpoch?.(log, epochs);
      if (!Number.isFinite(watched) && best === undefined)
        throw new UsageError(
          'diverged',
          `training diverged at epoch ${epoch} (loss ${watched}); lower the learning rate`,
        );
      if (epoch - bestEpoch >= patience) break;
    }
    checkAbort(opts.signal);
    if (best !== undefined && bestEpoch !== history.length) runner.restore(best);
    await runner.finish();
    finished = true;
    return { history, bestEpoch, start, engine: runner.engine };
  } finally {
    if (best !== undefined) runner.discard(best);
    if (!finished) await runner.release();
  }
}
