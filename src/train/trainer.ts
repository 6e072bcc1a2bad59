/**
 * Trains a head on cached trunk features. The loop is written out rather than using model.fit so that every random
 * choice (initial weights, batch order, dropout masks) comes from one seeded generator: the same seed and data give
 * bit-identical weights. Batches are copied from JS into tensors (cheaper than tf.gather on WASM, and nothing is ever
 * downloaded per step); whole-set scoring runs on device-resident copies and reads back once per epoch.
 */
import { tf } from '../tfjs/tf.ts';
import { opt, shown, UsageError, words } from '../util/errors.ts';
import { checkAbort } from '../util/progress.ts';
import type { EpochLog, FeatureSet, TrainedHead, TrainHeadOptions } from './features.ts';
import {
  computeStandardisation,
  DenseHead,
  denseEvaluate,
  denseEvaluateSums,
  denseGradients,
  KnnHead,
} from './heads.ts';
import { accuracy, logLoss } from './metrics.ts';
import { glorotUniform, mulberry32, shuffleInPlace } from './random.ts';

export type { EpochLog, FeatureSet, HeadJson, HeadKind, TrainedHead, TrainHeadOptions } from './features.ts';
export { headFromJSON } from './heads.ts';

/** Defaults, exported so the CLI and docs can show them. */
export const HEAD_DEFAULTS = {
  head: 'softmax',
  epochs: 100,
  // Adam at 1e-3 on standardised features converges in a few dozen epochs for both heads without overshooting.
  lr: 1e-3,
  // Small data sets: more, noisier steps per epoch generalised better than 32 on the hymenoptera trunks we measured.
  batchSize: 16,
  seed: 42,
  patience: 10,
  hidden: 256,
  dropout: 0.5,
  // Light: with few images the main guard against overfitting is early stopping on held-out data.
  weightDecay: 1e-4,
  k: 5,
  classWeights: 'balanced',
} as const;

/** Yield to the event loop at least this often so aborts, timers and servers are served during training. */
const YIELD_MS = 50;

/** weight_c = n / (numClasses * count_c); classes absent from the data get 0 (no sample carries it anyway). */
export function balancedClassWeights(y: Int32Array, numClasses: number): Float32Array {
  const counts = new Float64Array(numClasses);
  for (const c of y) counts[c]++;
  const w = new Float32Array(numClasses);
  for (let c = 0; c < numClasses; c++) w[c] = counts[c] > 0 ? y.length / (numClasses * counts[c]) : 0;
  return w;
}

function checkSet(fs: FeatureSet, numClasses: number, what: string, dim?: number): void {
  if (!Number.isInteger(fs.n) || fs.n < 0 || !Number.isInteger(fs.dim) || fs.dim < 1) {
    throw new UsageError('invalid-value', `${what}: n and dim must be integers (n=${fs.n}, dim=${fs.dim})`);
  }
  if (dim !== undefined && fs.dim !== dim)
    throw new UsageError('invalid-value', `${what}: dim ${fs.dim} differs from training dim ${dim}`);
  if (fs.x.length !== fs.n * fs.dim)
    throw new UsageError('invalid-value', `${what}: x holds ${fs.x.length} values, expected n*dim = ${fs.n * fs.dim}`);
  if (fs.y.length !== fs.n)
    throw new UsageError('invalid-value', `${what}: y holds ${fs.y.length} labels for ${fs.n} rows`);
  for (const c of fs.y) {
    if (!(c >= 0 && c < numClasses))
      throw new UsageError('invalid-value', `${what}: label ${c} outside 0..${numClasses - 1}`);
  }
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Trains a head. `val` drives early stopping and the reported validation numbers; without it early stopping watches the
 * training loss. Needs a TF.js backend (initTf) to be selected.
 */
export async function trainHead(
  train: FeatureSet,
  val: FeatureSet | undefined,
  numClasses: number,
  opts: TrainHeadOptions = {},
): Promise<TrainedHead> {
  if (!Number.isInteger(numClasses) || numClasses < 1)
    throw new UsageError('invalid-value', words`${opt('numClasses')} must be a positive integer (got ${numClasses})`);
  checkSet(train, numClasses, 'train');
  if (train.n === 0) throw new UsageError('invalid-value', 'train: no examples');
  if (val) checkSet(val, numClasses, 'val', train.dim);
  const useVal = val !== undefined && val.n > 0 ? val : undefined;
  await tf.ready();
  checkAbort(opts.signal);
  const kind = opts.head ?? HEAD_DEFAULTS.head;
  if (kind === 'knn') return trainKnn(train, useVal, numClasses, opts);
  if (kind !== 'softmax' && kind !== 'mlp')
    throw new UsageError(
      'invalid-value',
      words`${opt('head')} must be softmax, mlp or knn (got ${shown(String(kind))})`,
    );
  return trainDense(kind, train, useVal, numClasses, opts);
}

function trainKnn(
  train: FeatureSet,
  val: FeatureSet | undefined,
  numClasses: number,
  opts: TrainHeadOptions,
): TrainedHead {
  const k = opts.k ?? HEAD_DEFAULTS.k;
  if (!Number.isInteger(k) || k < 1)
    throw new UsageError('invalid-value', words`${opt('k')} must be a positive integer (got ${shown(k)})`);
  const t0 = performance.now();
  const head = new KnnHead(numClasses, train.dim, KnnHead.normalise(train.x, train.n, train.dim), train.y.slice(), k);
  try {
    // Scored leave-one-out: on its own stored rows a knn head would otherwise be right by construction.
    const loo = head.leaveOneOutProba();
    const log: EpochLog = {
      epoch: 1,
      loss: logLoss(loo, train.y, numClasses),
      accuracy: accuracy(loo, train.y, numClasses),
      seconds: 0,
    };
    if (val) {
      const p = head.predictProba(val.x, val.n);
      log.valLoss = logLoss(p, val.y, numClasses);
      log.valAccuracy = accuracy(p, val.y, numClasses);
    }
    log.seconds = (performance.now() - t0) / 1000;
    head.history = [log];
    head.bestEpoch = 1;
    checkAbort(opts.signal);
    opts.onEpoch?.(log, 1);
    return head;
  } catch (e) {
    head.dispose();
    throw e;
  }
}

/**
 * Adam (Kingma & Ba, with the bias correction folded into the step size). tf.train.adam would do, but it spends about
 * twice the ops per variable (a scalar upload for every constant), and per-op overhead is what a small head's step costs.
 */
class Adam {
  private readonly m: tf.Variable[];
  private readonly v: tf.Variable[];
  private readonly consts: tf.Scalar[];
  private t = 0;
  constructor(
    private readonly params: tf.Variable[],
    private readonly lr: number,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    epsilon = 1e-7,
  ) {
    const zeros = (p: tf.Variable) => tf.tidy(() => tf.variable(tf.zerosLike(p), false));
    this.m = params.map(zeros);
    this.v = params.map(zeros);
    this.consts = [beta1, 1 - beta1, beta2, 1 - beta2, epsilon].map((c) => tf.scalar(c));
  }

  /** Call inside tf.tidy. */
  apply(grads: tf.Tensor[]): void {
    this.t++;
    const [b1, omb1, b2, omb2, eps] = this.consts;
    const stepSize = tf.scalar((this.lr * Math.sqrt(1 - this.beta2 ** this.t)) / (1 - this.beta1 ** this.t));
    for (const [i, p] of this.params.entries()) {
      const g = grads[i];
      const m = tf.add(tf.mul(this.m[i], b1), tf.mul(g, omb1));
      const v = tf.add(tf.mul(this.v[i], b2), tf.mul(tf.square(g), omb2));
      this.m[i].assign(m);
      this.v[i].assign(v);
      p.assign(tf.sub(p, tf.mul(tf.div(m, tf.add(tf.sqrt(v), eps)), stepSize)));
    }
  }

  dispose(): void {
    tf.dispose([...this.m, ...this.v, ...this.consts]);
  }
}

/** Rows [from, to) of a set, standardised, into `out` (or a new array). */
function standardised(
  fs: FeatureSet,
  mean: Float32Array,
  invStd: Float32Array,
  from = 0,
  to = fs.n,
  out = new Float32Array((to - from) * fs.dim),
): Float32Array {
  for (let i = from; i < to; i++) {
    for (let d = 0, o = i * fs.dim, p = (i - from) * fs.dim; d < fs.dim; d++)
      out[p + d] = (fs.x[o + d] - mean[d]) * invStd[d];
  }
  return out;
}

/**
 * Sets up to this many values (128 MB) are scored each epoch from one device-resident standardised copy; larger ones
 * (tens of thousands of images) are scored in chunks of EVAL_CHUNK_ROWS, so that nothing of the size of the data set
 * is held a second time, in JS or on the device.
 */
const RESIDENT_VALUES = 32 * 1024 * 1024;
const EVAL_CHUNK_ROWS = 4096;

/** Scores a dense head on a whole set each epoch: [class-weighted mean cross-entropy, accuracy]. */
interface SetScorer {
  score(headParams: tf.Tensor[]): [number, number];
  dispose(): void;
}

/** Exported for tests, which pass a small `residentValues` to exercise the chunked path. */
export function setScorer(
  fs: FeatureSet,
  std: { mean: Float32Array; invStd: Float32Array },
  oneHotOf: (y: Int32Array) => Float32Array,
  weightsOf: (y: Int32Array) => Float32Array,
  C: number,
  residentValues = RESIDENT_VALUES,
): SetScorer {
  const { n, dim } = fs;
  if (n * dim <= residentValues) {
    const x = tf.tensor2d(standardised(fs, std.mean, std.invStd), [n, dim]);
    const y = tf.tensor2d(oneHotOf(fs.y), [n, C]);
    const w = tf.tensor1d(weightsOf(fs.y));
    return {
      score: (headParams) => {
        const t = denseEvaluate(headParams, x, y, w);
        const v = t.dataSync();
        t.dispose();
        return [v[0], v[1]];
      },
      dispose: () => tf.dispose([x, y, w]),
    };
  }
  const buf = new Float32Array(EVAL_CHUNK_ROWS * dim);
  return {
    score: (headParams) => {
      let loss = 0;
      let wsum = 0;
      let right = 0;
      for (let from = 0; from < n; from += EVAL_CHUNK_ROWS) {
        const to = Math.min(n, from + EVAL_CHUNK_ROWS);
        const ys = fs.y.subarray(from, to);
        const t = tf.tidy(() =>
          denseEvaluateSums(
            headParams,
            tf.tensor2d(standardised(fs, std.mean, std.invStd, from, to, buf).slice(0, (to - from) * dim), [
              to - from,
              dim,
            ]),
            tf.tensor2d(oneHotOf(ys), [to - from, C]),
            tf.tensor1d(weightsOf(ys)),
          ),
        );
        const v = t.dataSync();
        t.dispose();
        loss += v[0];
        wsum += v[1];
        right += v[2];
      }
      return [loss / Math.max(wsum, 1e-12), right / n];
    },
    dispose: () => {},
  };
}

function oneHot(y: Int32Array, numClasses: number): Float32Array {
  const out = new Float32Array(y.length * numClasses);
  for (let i = 0; i < y.length; i++) out[i * numClasses + y[i]] = 1;
  return out;
}

function positive(name: string, v: number, integer: boolean): number {
  if (!(v > 0) || (integer && !Number.isInteger(v)))
    throw new UsageError(
      'invalid-value',
      words`${opt(name)} must be a positive ${integer ? 'integer' : 'number'} (got ${shown(v)})`,
    );
  return v;
}

async function trainDense(
  kind: 'softmax' | 'mlp',
  train: FeatureSet,
  val: FeatureSet | undefined,
  numClasses: number,
  opts: TrainHeadOptions,
): Promise<TrainedHead> {
  const epochs = positive('epochs', opts.epochs ?? HEAD_DEFAULTS.epochs, true);
  const lr = positive('lr', opts.lr ?? HEAD_DEFAULTS.lr, false);
  const batchSize = positive('batchSize', opts.batchSize ?? HEAD_DEFAULTS.batchSize, true);
  const patience = positive('patience', opts.patience ?? HEAD_DEFAULTS.patience, true);
  const hidden = positive('hidden', opts.hidden ?? HEAD_DEFAULTS.hidden, true);
  const dropout = opts.dropout ?? HEAD_DEFAULTS.dropout;
  if (!(dropout >= 0 && dropout < 1))
    throw new UsageError('invalid-value', words`${opt('dropout')} must be in [0, 1) (got ${shown(dropout)})`);
  const weightDecay = opts.weightDecay ?? HEAD_DEFAULTS.weightDecay;
  if (!(weightDecay >= 0))
    throw new UsageError('invalid-value', words`${opt('weightDecay')} must be >= 0 (got ${shown(weightDecay)})`);
  const { signal, onEpoch } = opts;
  const stopEarly = opts.earlyStopping ?? true;
  const rng = mulberry32(opts.seed ?? HEAD_DEFAULTS.seed);
  const { n, dim } = train;
  const C = numClasses;

  const std = computeStandardisation(train.x, n, dim);
  const classW =
    (opts.classWeights ?? HEAD_DEFAULTS.classWeights) === 'balanced'
      ? balancedClassWeights(train.y, C)
      : new Float32Array(C).fill(1);
  const sampleW = (y: Int32Array) => Float32Array.from(y, (c) => classW[c]);

  // Softmax regression is convex, so it starts from zero; the mlp needs asymmetric weights to break symmetry.
  const units = kind === 'softmax' ? C : hidden;
  // Layout of the first kernel while training: see denseGradients. Glorot draws are i.i.d., so drawing the kernel as
  // [units, dim] is the same distribution.
  const transposed = units > batchSize;
  const init: Float32Array[] =
    kind === 'softmax'
      ? [new Float32Array(C * dim), new Float32Array(C)]
      : [glorotUniform(hidden, dim, rng), new Float32Array(hidden), glorotUniform(hidden, C, rng), new Float32Array(C)];
  const shapes: number[][] = [transposed ? [units, dim] : [dim, units], [units]];
  if (kind === 'mlp') shapes.push([hidden, C], [C]);
  const params: tf.Variable[] = init.map((a, i) => {
    const t = tf.tensor(a, shapes[i]);
    const v = tf.variable(t, true);
    t.dispose();
    return v;
  });
  const headLayout = (): tf.Tensor[] => (transposed ? [tf.transpose(params[0]), ...params.slice(1)] : params);

  const trainW = sampleW(train.y);
  const toOneHot = (y: Int32Array) => oneHot(y, C);
  const scorers = [setScorer(train, std, toOneHot, sampleW, C)];
  if (val) scorers.push(setScorer(val, std, toOneHot, sampleW, C));
  const { mean, invStd } = std;
  const optimizer = new Adam(params, lr);
  let best: tf.Tensor[] | undefined;

  const history: EpochLog[] = [];
  let bestLoss = Number.POSITIVE_INFINITY;
  let bestEpoch = 0;
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const useDropout = kind === 'mlp' && dropout > 0;
  const keepScale = 1 / (1 - dropout);

  const step = (idx: Int32Array) => {
    const b = idx.length;
    // Batches are assembled here rather than with tf.gather (several times slower on WASM), together with the
    // transposed copy that the kernel gradient needs: WASM's matMul is an order of magnitude slower with transposeA.
    // Fresh arrays each step: the CPU backend keeps a reference to the array a tensor was made from.
    const xb = new Float32Array(b * dim);
    const xbT = new Float32Array(dim * b);
    const yw = new Float32Array(b * C);
    const wb = new Float32Array(b);
    // Standardised here, row by row, rather than holding a standardised copy of the whole set.
    for (let r = 0; r < b; r++) {
      const i = idx[r];
      const o = i * dim;
      for (let d = 0; d < dim; d++) {
        const v = (train.x[o + d] - mean[d]) * invStd[d];
        xb[r * dim + d] = v;
        xbT[d * b + r] = v;
      }
      wb[r] = trainW[i] / b;
      yw[r * C + train.y[i]] = wb[r];
    }
    let mask: Float32Array | undefined;
    if (useDropout) {
      mask = new Float32Array(b * hidden);
      for (let i = 0; i < mask.length; i++) mask[i] = rng() < dropout ? 0 : keepScale;
    }
    tf.tidy(() => {
      const grads = denseGradients(
        params,
        {
          x: tf.tensor2d(xb, [b, dim]),
          xT: tf.tensor2d(xbT, [dim, b]),
          yw: tf.tensor2d(yw, [b, C]),
          w: tf.tensor2d(wb, [b, 1]),
          mask: mask ? tf.tensor2d(mask, [b, hidden]) : undefined,
        },
        weightDecay,
        transposed,
      );
      optimizer.apply(grads);
    });
  };

  try {
    let lastYield = performance.now();
    for (let epoch = 1; epoch <= epochs; epoch++) {
      const t0 = performance.now();
      shuffleInPlace(order, rng);
      for (let s = 0; s < n; s += batchSize) {
        checkAbort(signal);
        step(order.subarray(s, Math.min(n, s + batchSize)));
        if (performance.now() - lastYield > YIELD_MS) {
          await tick();
          lastYield = performance.now();
        }
      }
      // Scored once per epoch on whole sets with dropout off: one read-back, and numbers that do not depend on the
      // batch order.
      const headParams = headLayout();
      const nums = scorers.flatMap((sc) => sc.score(headParams));
      if (transposed) tf.dispose(headParams[0]);
      const log: EpochLog = { epoch, loss: nums[0], accuracy: nums[1], seconds: 0 };
      if (val) {
        log.valLoss = nums[2];
        log.valAccuracy = nums[3];
      }
      const watched = val ? nums[2] : nums[0];
      if (!stopEarly) {
        bestEpoch = epoch;
      } else if (watched < bestLoss) {
        bestLoss = watched;
        bestEpoch = epoch;
        if (best) tf.dispose(best);
        best = params.map((p) => tf.clone(p));
      }
      log.seconds = (performance.now() - t0) / 1000;
      history.push(log);
      onEpoch?.(log, epochs);
      if (!Number.isFinite(watched) && (bestEpoch === 0 || !stopEarly))
        throw new UsageError(
          'diverged',
          words`training diverged at epoch ${epoch} (loss ${watched}); lower ${opt('lr')}`,
        );
      if (stopEarly && epoch - bestEpoch >= patience) break;
      await tick();
      lastYield = performance.now();
    }
    checkAbort(signal);
    if (best && bestEpoch !== history.length) for (const [i, p] of params.entries()) p.assign((best as tf.Tensor[])[i]);
    const headParams = headLayout();
    if (transposed) params[0].dispose();
    return new DenseHead(kind, C, dim, std, headParams, history, bestEpoch);
  } catch (e) {
    tf.dispose(params);
    throw e;
  } finally {
    for (const sc of scorers) sc.dispose();
    if (best) tf.dispose(best);
    optimizer.dispose();
  }
}
