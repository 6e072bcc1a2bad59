/**
 * The heads themselves: what a trained head holds, how it predicts, how it becomes TF.js layers and JSON.
 * The training loop lives in trainer.ts; it builds the dense heads' variables and hands them over to DenseHead.
 */
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';
import { tf, tfl } from '../tfjs/tf.ts';
import { DataError, InternalError, UsageError } from '../util/errors.ts';
import type { EpochLog, HeadJson, LogisticFitInfo, TrainedHead } from './features.ts';

const JSON_VERSION = 1;

/** Below this a dimension counts as constant on the training set. */
const MIN_STD = 1e-6;

/** knn vote temperature: neighbour weight is exp((cos - cos_nearest) / KNN_TEMPERATURE). */
export const KNN_TEMPERATURE = 0.1;

/** Rows per block when comparing against stored features, so the similarity matrix stays small. */
const KNN_BLOCK = 512;

export interface Standardisation {
  mean: Float32Array;
  invStd: Float32Array;
}

/**
 * Per-dimension mean and 1/std over the training rows (`rows` of x when given). A dimension that is constant on the
 * training set (common for ReLU features: a channel that never fires) gets invStd 0 rather than 1/floor: it carries no
 * information to learn from, and a tiny floor would multiply the first nonzero value seen at prediction time by a
 * million.
 */
export function computeStandardisation(
  x: Float32Array,
  n: number,
  dim: number,
  rows?: ArrayLike<number>,
): Standardisation {
  const m = rows ? rows.length : n;
  const sum = new Float64Array(dim);
  for (let r = 0; r < m; r++) for (let d = 0, o = (rows ? rows[r] : r) * dim; d < dim; d++) sum[d] += x[o + d];
  const mean = new Float64Array(dim);
  for (let d = 0; d < dim; d++) mean[d] = m > 0 ? sum[d] / m : 0;
  // Two passes: the one-pass E[x^2]-E[x]^2 loses the variance of features with a large offset.
  const ss = new Float64Array(dim);
  for (let r = 0; r < m; r++) {
    for (let d = 0, o = (rows ? rows[r] : r) * dim; d < dim; d++) {
      const v = x[o + d] - mean[d];
      ss[d] += v * v;
    }
  }
  const invStd = new Float32Array(dim);
  for (let d = 0; d < dim; d++) {
    const std = m > 0 ? Math.sqrt(ss[d] / m) : 0;
    invStd[d] = std > MIN_STD * Math.max(1, Math.abs(mean[d])) ? 1 / std : 0;
  }
  return { mean: Float32Array.from(mean), invStd };
}

/** Logits of a dense head on already-standardised rows; `mask` is an inverted-dropout mask for the hidden layer. */
export function denseLogits(xStd: tf.Tensor2D, params: tf.Tensor[], mask?: tf.Tensor2D): tf.Tensor2D {
  let h: tf.Tensor2D = xStd;
  const layers = params.length / 2;
  for (let l = 0; l < layers; l++) {
    h = tf.add(tf.matMul(h, params[2 * l] as tf.Tensor2D), params[2 * l + 1]);
    if (l < layers - 1) {
      h = tf.relu(h);
      if (mask) h = tf.mul(h, mask);
    }
  }
  return h;
}

/** One training batch on the device; `yw` is one-hot times each sample's weight / batch size, `w` those weights. */
export interface DenseBatch {
  x: tf.Tensor2D;
  /** x transposed, uploaded separately so no transposeA matMul is needed (see denseGradients). */
  xT: tf.Tensor2D;
  yw: tf.Tensor2D;
  w: tf.Tensor2D;
  mask?: tf.Tensor2D;
}

/**
 * Gradients of sum_i w_i/b * CE_i + weightDecay/2 * sum(kernel^2) for every training param.
 *
 * Layout: WASM's matMul repacks its right-hand operand whenever that tensor is new, and a kernel is new after every
 * update. For a wide first layer (an mlp's [dim, 256]) x @ W would repack the largest matrix each step, about 4x the
 * multiply itself, so with `firstTransposed` the first kernel is held as [units, dim] and W^T @ x^T repacks only the
 * batch. For a narrow one (softmax over a few classes) repacking W is cheaper than the extra transposes.
 * Backpropagation is written out for the same reason, per-op overhead: autodiff goes through matMul's slow transposeA
 * path and tape bookkeeping, in a step that is otherwise a few dozen small ops. Checked against tf.variableGrads in
 * heads.test.ts.
 */
export function denseGradients(
  params: tf.Tensor[],
  batch: DenseBatch,
  weightDecay: number,
  firstTransposed = false,
): tf.Tensor[] {
  const mlp = params.length === 4;
  const [w1, b1] = params as [tf.Tensor2D, tf.Tensor1D];
  const z1 = tf.add(
    firstTransposed ? tf.transpose(tf.matMul(w1, batch.xT)) : tf.matMul(batch.x, w1),
    b1,
  ) as tf.Tensor2D;
  let h: tf.Tensor2D | undefined;
  let logits = z1;
  if (mlp) {
    const a = tf.relu(z1);
    h = batch.mask ? (tf.mul(a, batch.mask) as tf.Tensor2D) : a;
    logits = tf.add(tf.matMul(h, params[2] as tf.Tensor2D), params[3]) as tf.Tensor2D;
  }
  // d loss / d logits = w_i/b * (softmax - onehot)
  const g = tf.sub(tf.mul(tf.softmax(logits), batch.w), batch.yw) as tf.Tensor2D;
  const decay = (k: tf.Tensor, grad: tf.Tensor) => (weightDecay > 0 ? tf.add(grad, tf.mul(k, weightDecay)) : grad);
  const firstKernelGrad = (dz: tf.Tensor2D) =>
    decay(w1, firstTransposed ? tf.matMul(tf.transpose(dz), batch.x) : tf.matMul(batch.xT, dz));
  if (!mlp || !h) return [firstKernelGrad(g), tf.sum(g, 0)];
  const w2 = params[2] as tf.Tensor2D;
  const gw2 = decay(w2, tf.matMul(tf.transpose(h), g));
  const gb2 = tf.sum(g, 0);
  let dz1 = tf.mul(tf.matMul(g, tf.transpose(w2)), tf.step(z1)) as tf.Tensor2D;
  if (batch.mask) dz1 = tf.mul(dz1, batch.mask);
  return [firstKernelGrad(dz1), tf.sum(dz1, 0), gw2, gb2];
}

/** [class-weighted mean cross-entropy, accuracy] of a dense head on standardised rows, as one tensor. */
export function denseEvaluate(params: tf.Tensor[], x: tf.Tensor2D, oneHot: tf.Tensor2D, w: tf.Tensor1D): tf.Tensor1D {
  return tf.tidy(() => {
    const logits = denseLogits(x, params);
    const ce = tf.neg(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1));
    const loss = tf.div(tf.sum(tf.mul(ce, w)), tf.maximum(tf.sum(w), 1e-12));
    const acc = tf.mean(tf.cast(tf.equal(tf.argMax(logits, 1), tf.argMax(oneHot, 1)), 'float32'));
    return tf.stack([loss, acc]) as tf.Tensor1D;
  });
}

/** [sum of weighted cross-entropies, sum of weights, correct rows] of a dense head on a chunk of standardised rows. */
export function denseEvaluateSums(
  params: tf.Tensor[],
  x: tf.Tensor2D,
  oneHot: tf.Tensor2D,
  w: tf.Tensor1D,
): tf.Tensor1D {
  return tf.tidy(() => {
    const logits = denseLogits(x, params);
    const ce = tf.neg(tf.sum(tf.mul(oneHot, tf.logSoftmax(logits)), 1));
    const right = tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), tf.argMax(oneHot, 1)), 'float32'));
    return tf.stack([tf.sum(tf.mul(ce, w)), tf.sum(w), right]) as tf.Tensor1D;
  });
}

/** Rows per call when predicting, so that a large set never becomes one tensor of its own size. */
const PREDICT_CHUNK_ROWS = 4096;

function toBase64(a: Float32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function fromBase64(s: unknown, expected: number, what: string): Float32Array {
  if (typeof s !== 'string') throw new DataError('corrupt-model', 'head JSON', `${what} is missing`);
  const b = Buffer.from(s, 'base64');
  if (b.byteLength !== expected * 4) {
    throw new DataError('corrupt-model', 'head JSON', `${what} holds ${b.byteLength / 4} values, expected ${expected}`);
  }
  // Copy: the decoded buffer may start at an offset that is not a multiple of 4.
  const out = new Float32Array(expected);
  new Uint8Array(out.buffer).set(b);
  return out;
}

function checkInput(x: Float32Array, n: number, dim: number): void {
  if (!Number.isInteger(n) || n < 0 || x.length !== n * dim) {
    throw new UsageError('invalid-value', `predictProba: expected ${n}*${dim} values, got ${x.length}`);
  }
}

abstract class BaseHead {
  protected disposed = false;
  constructor(
    readonly numClasses: number,
    readonly dim: number,
    public history: EpochLog[],
    public bestEpoch: number,
  ) {}
  protected alive(): void {
    if (this.disposed) throw new UsageError('disposed', 'this head has been disposed');
  }
}

/**
 * logistic or softmax regression (one Dense: the same model, fitted two ways) or mlp (Dense-ReLU-Dense); standardisation
 * is applied before the first layer.
 */
export class DenseHead extends BaseHead implements TrainedHead {
  private readonly meanT: tf.Tensor1D;
  private readonly invStdT: tf.Tensor1D;
  outOfFold?: Float32Array;
  solution?: Float64Array;

  /** Takes ownership of `params` ([kernel, bias] per layer); they may be tf.Variables left over from training. */
  constructor(
    readonly kind: 'logistic' | 'softmax' | 'mlp',
    numClasses: number,
    dim: number,
    private readonly std: Standardisation,
    private readonly params: tf.Tensor[],
    history: EpochLog[] = [],
    bestEpoch = 0,
    readonly fit?: LogisticFitInfo,
  ) {
    super(numClasses, dim, history, bestEpoch);
    this.meanT = tf.tensor1d(std.mean);
    this.invStdT = tf.tensor1d(std.invStd);
  }

  predictProba(x: Float32Array, n: number): Float32Array {
    this.alive();
    checkInput(x, n, this.dim);
    if (n === 0) return new Float32Array(0);
    const chunk = (from: number, to: number) => {
      const p = tf.tidy(() => {
        const rows = tf.tensor2d(x.subarray(from * this.dim, to * this.dim), [to - from, this.dim]);
        const xs = tf.mul(tf.sub(rows, this.meanT), this.invStdT) as tf.Tensor2D;
        return tf.softmax(denseLogits(xs, this.params));
      });
      try {
        return p.dataSync() as Float32Array;
      } finally {
        p.dispose();
      }
    };
    if (n <= PREDICT_CHUNK_ROWS) return chunk(0, n);
    const out = new Float32Array(n * this.numClasses);
    for (let from = 0; from < n; from += PREDICT_CHUNK_ROWS) {
      const to = Math.min(n, from + PREDICT_CHUNK_ROWS);
      out.set(chunk(from, to), from * this.numClasses);
    }
    return out;
  }

  /** Layer weights as plain arrays with the standardisation folded into the first layer. */
  foldedWeights(): { kernel: Float32Array; bias: Float32Array; units: number }[] {
    this.alive();
    const out: { kernel: Float32Array; bias: Float32Array; units: number }[] = [];
    for (let l = 0; l < this.params.length / 2; l++) {
      const kernel = this.params[2 * l].dataSync() as Float32Array;
      const bias = this.params[2 * l + 1].dataSync() as Float32Array;
      const units = bias.length;
      if (l > 0) {
        out.push({ kernel: kernel.slice(), bias: bias.slice(), units });
        continue;
      }
      // ((x - m) * s) W + b = x (s W) + (b - (m s) W); accumulated in doubles to keep the fold within float32 noise.
      const { mean, invStd } = this.std;
      const k = new Float32Array(kernel.length);
      const b = new Float64Array(units);
      for (let u = 0; u < units; u++) b[u] = bias[u];
      for (let d = 0; d < this.dim; d++) {
        const s = invStd[d];
        const ms = mean[d] * s;
        for (let u = 0, o = d * units; u < units; u++) {
          k[o + u] = kernel[o + u] * s;
          b[u] -= ms * kernel[o + u];
        }
      }
      out.push({ kernel: k, bias: Float32Array.from(b), units });
    }
    return out;
  }

  apply(input: SymbolicTensor, prefix = 'head_'): SymbolicTensor {
    const last = input.shape[input.shape.length - 1];
    if (input.shape.length !== 2 || last !== this.dim) {
      throw new InternalError(
        `head.apply: expected input of shape [null, ${this.dim}], got [${input.shape.join(', ')}]`,
      );
    }
    const weights = this.foldedWeights();
    let h = input;
    weights.forEach((w, l) => {
      const isLast = l === weights.length - 1;
      const inDim = w.kernel.length / w.units;
      const kernel = tf.tensor2d(w.kernel, [inDim, w.units]);
      const bias = tf.tensor1d(w.bias);
      try {
        const layer = tfl.layers.dense({
          units: w.units,
          activation: isLast ? 'softmax' : 'relu',
          name: `${prefix}${isLast ? 'probs' : `hidden${l + 1}`}`,
          weights: [kernel, bias],
        });
        h = layer.apply(h) as SymbolicTensor;
      } finally {
        // The layer copied them into its own variables when it was built.
        kernel.dispose();
        bias.dispose();
      }
    });
    return h;
  }

  toJSON(): HeadJson {
    this.alive();
    const layers = [];
    for (let l = 0; l < this.params.length / 2; l++) {
      const bias = this.params[2 * l + 1].dataSync() as Float32Array;
      layers.push({
        units: bias.length,
        kernel: toBase64(this.params[2 * l].dataSync() as Float32Array),
        bias: toBase64(bias),
      });
    }
    return {
      kind: this.kind,
      numClasses: this.numClasses,
      dim: this.dim,
      version: JSON_VERSION,
      encoding: 'base64-float32-le',
      mean: toBase64(this.std.mean),
      invStd: toBase64(this.std.invStd),
      layers,
      history: this.history,
      bestEpoch: this.bestEpoch,
      ...(this.fit ? { fit: this.fit } : {}),
    };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose([this.meanT, this.invStdT, ...this.params]);
  }
}

/**
 * Cosine k-nearest-neighbours. Training is storing L2-normalised rows. Each of the k most similar stored rows votes for
 * its class with weight exp((cos - cos_nearest) / KNN_TEMPERATURE): near ties behave like a majority vote, while a
 * clearly closer neighbour outweighs several distant ones.
 */
export class KnnHead extends BaseHead implements TrainedHead {
  readonly kind = 'knn' as const;
  private readonly stored: tf.Tensor2D;
  readonly n: number;

  constructor(
    numClasses: number,
    dim: number,
    /** L2-normalised rows. */
    private readonly features: Float32Array,
    private readonly labels: Int32Array,
    readonly k: number,
    history: EpochLog[] = [],
    bestEpoch = 0,
  ) {
    super(numClasses, dim, history, bestEpoch);
    this.n = labels.length;
    if (this.n === 0) throw new UsageError('invalid-value', 'knn head needs at least one stored example');
    this.stored = tf.tensor2d(features, [this.n, dim]);
  }

  static normalise(x: Float32Array, n: number, dim: number): Float32Array {
    const out = new Float32Array(n * dim);
    for (let i = 0; i < n; i++) {
      const o = i * dim;
      let s = 0;
      for (let d = 0; d < dim; d++) s += x[o + d] * x[o + d];
      const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
      for (let d = 0; d < dim; d++) out[o + d] = x[o + d] * inv;
    }
    return out;
  }

  predictProba(x: Float32Array, n: number): Float32Array {
    this.alive();
    checkInput(x, n, this.dim);
    return this.vote(KnnHead.normalise(x, n, this.dim), n, -1);
  }

  /** Probabilities for the stored rows themselves, each leaving itself out. */
  leaveOneOutProba(): Float32Array {
    this.alive();
    return this.vote(this.features, this.n, 0);
  }

  /** `selfOffset` >= 0: row i of `q` is stored row selfOffset + i and must not vote for itself. */
  private vote(q: Float32Array, n: number, selfOffset: number): Float32Array {
    const C = this.numClasses;
    const out = new Float32Array(n * C);
    const exclude = selfOffset >= 0;
    const k = Math.min(this.k, exclude ? this.n - 1 : this.n);
    if (k <= 0) {
      out.fill(1 / C);
      return out;
    }
    const kk = Math.min(k + (exclude ? 1 : 0), this.n);
    for (let start = 0; start < n; start += KNN_BLOCK) {
      const rows = Math.min(KNN_BLOCK, n - start);
      const { values, indices } = tf.tidy(() => {
        const qs = tf.tensor2d(q.subarray(start * this.dim, (start + rows) * this.dim), [rows, this.dim]);
        return tf.topk(tf.matMul(qs, this.stored, false, true), kk);
      });
      const sims = values.dataSync();
      const idx = indices.dataSync();
      tf.dispose([values, indices]);
      for (let r = 0; r < rows; r++) {
        const self = exclude ? selfOffset + start + r : -1;
        let used = 0;
        let top = Number.NaN;
        let total = 0;
        const o = (start + r) * C;
        for (let j = 0; j < kk && used < k; j++) {
          const id = idx[r * kk + j];
          if (id === self) continue;
          if (used === 0) top = sims[r * kk + j];
          const w = Math.exp((sims[r * kk + j] - top) / KNN_TEMPERATURE);
          out[o + this.labels[id]] += w;
          total += w;
          used++;
        }
        for (let c = 0; c < C; c++) out[o + c] /= total;
      }
    }
    return out;
  }

  apply(_input: SymbolicTensor, _prefix?: string): SymbolicTensor {
    throw new UsageError(
      'not-exportable',
      'a knn head cannot be expressed as TF.js layers; export it as JSON or train a softmax/mlp head',
    );
  }

  toJSON(): HeadJson {
    this.alive();
    return {
      kind: 'knn',
      numClasses: this.numClasses,
      dim: this.dim,
      version: JSON_VERSION,
      encoding: 'base64-float32-le',
      k: this.k,
      temperature: KNN_TEMPERATURE,
      features: toBase64(this.features),
      labels: Array.from(this.labels),
      history: this.history,
      bestEpoch: this.bestEpoch,
    };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.stored.dispose();
  }
}

/** Rebuilds a head saved with toJSON(). Needs a TF.js backend (initTf) for its tensors. */
export function headFromJSON(json: HeadJson): TrainedHead {
  const { kind, numClasses, dim } = json;
  if (!Number.isInteger(numClasses) || numClasses < 1 || !Number.isInteger(dim) || dim < 1) {
    throw new DataError('corrupt-model', 'head JSON', 'numClasses and dim must be positive integers');
  }
  if (json.version !== undefined && json.version !== JSON_VERSION) {
    throw new DataError(
      'corrupt-model',
      'head JSON',
      `version ${String(json.version)} is not supported (expected ${JSON_VERSION})`,
    );
  }
  const history = Array.isArray(json.history) ? (json.history as EpochLog[]) : [];
  const bestEpoch = typeof json.bestEpoch === 'number' ? json.bestEpoch : 0;
  if (kind === 'knn') {
    const labels = json.labels;
    if (!Array.isArray(labels)) throw new DataError('corrupt-model', 'head JSON', 'labels is missing');
    const y = Int32Array.from(labels as number[]);
    const k = typeof json.k === 'number' ? json.k : 5;
    return new KnnHead(
      numClasses,
      dim,
      fromBase64(json.features, y.length * dim, 'features'),
      y,
      k,
      history,
      bestEpoch,
    );
  }
  if (kind !== 'logistic' && kind !== 'softmax' && kind !== 'mlp')
    throw new DataError('corrupt-model', 'head JSON', `unknown kind '${String(kind)}'`);
  const layers = json.layers as { units: number; kernel: string; bias: string }[] | undefined;
  if (!Array.isArray(layers) || layers.length !== (kind === 'mlp' ? 2 : 1)) {
    throw new DataError('corrupt-model', 'head JSON', `a ${kind} head needs ${kind === 'mlp' ? 2 : 1} layer(s)`);
  }
  const std = { mean: fromBase64(json.mean, dim, 'mean'), invStd: fromBase64(json.invStd, dim, 'invStd') };
  let inDim = dim;
  const arrays: { kernel: Float32Array; bias: Float32Array; inDim: number; units: number }[] = [];
  for (const [l, layer] of layers.entries()) {
    const units = layer.units;
    arrays.push({
      kernel: fromBase64(layer.kernel, inDim * units, `layers[${l}].kernel`),
      bias: fromBase64(layer.bias, units, `layers[${l}].bias`),
      inDim,
      units,
    });
    inDim = units;
  }
  if (inDim !== numClasses)
    throw new DataError('corrupt-model', 'head JSON', `last layer has ${inDim} units for ${numClasses} classes`);
  const params = arrays.flatMap((a) => [tf.tensor2d(a.kernel, [a.inDim, a.units]), tf.tensor1d(a.bias)]);
  const fit =
    kind === 'logistic' && json.fit && typeof json.fit === 'object' ? (json.fit as LogisticFitInfo) : undefined;
  return new DenseHead(kind, numClasses, dim, std, params, history, bestEpoch, fit);
}
