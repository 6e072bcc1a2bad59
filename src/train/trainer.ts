/**
 * Trains a head on cached trunk features. The loop is written out rather than using model.fit so that every random
 * choice (initial weights, batch order, dropout masks) comes from one seeded generator: the same seed and data give
 * bit-identical weights. Batches are copied from JS into tensors (cheaper than tf.gather on WASM, and nothing is ever
 * downloaded per step); whole-set scoring runs on device-resident copies and reads back once per epoch.
 */
import { tf } from '../tfjs/tf.ts';
import { InternalError, opt, shown, UsageError, words } from '../util/errors.ts';
import { checkAbort } from '../util/progress.ts';
import type { EpochLog, FeatureSet, HeadKind, TrainedHead, TrainHeadOptions } from './features.ts';
import {
  computeStandardisation,
  DenseHead,
  denseEvaluate,
  denseEvaluateSums,
  denseGradients,
  KnnHead,
} from './heads.ts';
import { fitLogistic } from './logistic.ts';
import { accuracy, logLoss } from './metrics.ts';
import { glorotUniform, mulberry32, shuffleInPlace } from './random.ts';

export type { EpochLog, FeatureSet, HeadJson, HeadKind, TrainedHead, TrainHeadOptions } from './features.ts';
export { headFromJSON } from './heads.ts';

/** Every head `trainHead` fits. */
export const HEAD_KINDS: readonly HeadKind[] = ['logistic', 'softmax', 'mlp', 'knn'];

/** Defaults, exported so the CLI and docs can show them. */
export const HEAD_DEFAULTS = {
  // Not worse than the softmax head on any of the four figures that decided it (docs/BENCHMARKS.md, Heads), and it
  // chooses its one setting without the validation set.
  head: 'logistic' as HeadKind,
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
  if (kind === 'logistic') return trainLogistic(train, useVal, numClasses, opts);
  if (kind !== 'softmax' && kind !== 'mlp')
    throw new UsageError(
      'invalid-value',
      words`${opt('head')} must be logistic, softmax, mlp or knn (got ${shown(String(kind))})`,
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

/** Class-weighted mean cross-entropy, as the epoch-trained heads report it (denseEvaluate). */
function weightedLogLoss(p: Float32Array, y: Int32Array, C: number, classW: Float32Array): number {
  let s = 0;
  let total = 0;
  for (let i = 0; i < y.length; i++) {
    const w = classW[y[i]];
    s -= w * Math.log(Math.max(1e-15, p[i * C + y[i]]));
    total += w;
  }
  return total > 0 ? s / total : Number.NaN;
}

function checkSource(source: Int32Array | undefined, n: number): Int32Array {
  if (!source) return Int32Array.from({ length: n }, (_, i) => i);
  if (source.length !== n)
    throw new UsageError('invalid-value', `train: source holds ${source.length} entries for ${n} rows`);
  for (const s of source) {
    if (!(s >= 0 && s < n) || source[s] !== s)
      throw new UsageError('invalid-value', 'train: source must point every row at an image row');
  }
  return source;
}

/**
 * The logistic head (logistic.ts): fitted on standardised rows with balanced class weights, its lambda chosen by
 * cross-validation on the training rows. `val` only fills the reported numbers. One history entry: there are no epochs.
 */
async function trainLogistic(
  train: FeatureSet,
  val: FeatureSet | undefined,
  numClasses: number,
  opts: TrainHeadOptions,
): Promise<TrainedHead> {
  const t0 = performance.now();
  const { n, dim } = train;
  const C = numClasses;
  const source = checkSource(train.source, n);
  const std = computeStandardisation(train.x, n, dim);
  const classW =
    (opts.classWeights ?? HEAD_DEFAULTS.classWeights) === 'balanced'
      ? balancedClassWeights(train.y, C)
      : new Float32Array(C).fill(1);
  const w = Float64Array.from(train.y, (c) => classW[c]);
  const total = w.reduce((a, b) => a + b, 0);
  for (let i = 0; i < n; i++) w[i] /= total;
  const fit = await fitLogistic(
    // Standardised on the way (logistic.ts's RowEngine): a standardised copy would be the size of the data set.
    { x: train.x, n, dim, y: train.y, w, numClasses: C, mean: std.mean, invStd: std.invStd },
    source,
    {
      seed: opts.seed ?? HEAD_DEFAULTS.seed,
      lambda: opts.lambda,
      init: opts.start,
      folds: opts.folds,
      signal: opts.signal,
    },
  );
  const kernel = Float32Array.from(fit.params.subarray(0, dim * C));
  const bias = Float32Array.from(fit.params.subarray(dim * C));
  const info = {
    lambda: fit.lambda,
    ...(fit.search
      ? { search: { folds: fit.search.folds, rows: fit.search.rows, foldScores: fit.search.foldScores } }
      : {}),
    iterations: fit.iterations,
    converged: fit.converged,
  };
  const head = new DenseHead('logistic', C, dim, std, [tf.tensor2d(kernel, [dim, C]), tf.tensor1d(bias)], [], 1, info);
  try {
    const p = head.predictProba(train.x, n);
    const log: EpochLog = {
      epoch: 1,
      loss: weightedLogLoss(p, train.y, C, classW),
      accuracy: accuracy(p, train.y, C),
      seconds: 0,
    };
    if (val) {
      const q = head.predictProba(val.x, val.n);
      log.valLoss = weightedLogLoss(q, val.y, C, classW);
      log.valAccuracy = accuracy(q, val.y, C);
    }
    log.seconds = (performance.now() - t0) / 1000;
    head.history = [log];
    head.outOfFold = fit.search?.oof;
    head.solution = fit.params;
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

/**
 * Rows of `fs` standardised into `out` (or a new array): the rows listed in `rows` (all rows when absent), positions
 * [from, to) of that list.
 */
function standardised(
  fs: FeatureSet,
  mean: Float32Array,
  invStd: Float32Array,
  rows?: ArrayLike<number>,
  from = 0,
  to = rows ? rows.length : fs.n,
  out = new Float32Array((to - from) * fs.dim),
): Float32Array {
  const { dim } = fs;
  for (let r = from; r < to; r++) {
    const o = (rows ? rows[r] : r) * dim;
    for (let d = 0, p = (r - from) * dim; d < dim; d++) out[p + d] = (fs.x[o + d] - mean[d]) * invStd[d];
  }
  return out;
}

/**
 * Sets up to this many values (128 MB) are scored each epoch from one device-resident standardised copy; larger ones
 * (tens of thousands of images) are scored in chunks of EVAL_CHUNK_ROWS, so that nothing of the size of the data set
 * is held a second time, in JS or on the device.
 */
export const RESIDENT_VALUES = 32 * 1024 * 1024;
const EVAL_CHUNK_ROWS = 4096;

/** Scores a dense head on a whole set each epoch: [class-weighted mean cross-entropy, accuracy]. */
interface SetScorer {
  score(headParams: tf.Tensor[]): [number, number];
  dispose(): void;
}

/**
 * Scores rows `rows` of `fs` (all rows when absent). Exported for tests, which pass a small `residentValues` to exercise
 * the chunked path.
 */
export function setScorer(
  fs: FeatureSet,
  std: { mean: Float32Array; invStd: Float32Array },
  oneHotOf: (y: Int32Array) => Float32Array,
  weightsOf: (y: Int32Array) => Float32Array,
  C: number,
  residentValues = RESIDENT_VALUES,
  rows?: Int32Array,
): SetScorer {
  const { dim } = fs;
  const labels = rows ? Int32Array.from(rows, (i) => fs.y[i]) : fs.y;
  const n = labels.length;
  if (n * dim <= residentValues) {
    const x = tf.tensor2d(standardised(fs, std.mean, std.invStd, rows), [n, dim]);
    const y = tf.tensor2d(oneHotOf(labels), [n, C]);
    const w = tf.tensor1d(weightsOf(labels));
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
        const ys = labels.subarray(from, to);
        const t = tf.tidy(() =>
          denseEvaluateSums(
            headParams,
            tf.tensor2d(standardised(fs, std.mean, std.invStd, rows, from, to, buf).slice(0, (to - from) * dim), [
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

function oneHot(y: ArrayLike<number>, numClasses: number): Float32Array {
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

/** The settings of an epoch-trained (softmax or mlp) head, checked once. */
export interface DenseSettings {
  kind: 'softmax' | 'mlp';
  epochs: number;
  lr: number;
  batchSize: number;
  patience: number;
  hidden: number;
  dropout: number;
  weightDecay: number;
  seed: number;
  balanced: boolean;
}

export function denseSettings(kind: 'softmax' | 'mlp', opts: TrainHeadOptions): DenseSettings {
  const dropout = opts.dropout ?? HEAD_DEFAULTS.dropout;
  if (!(dropout >= 0 && dropout < 1))
    throw new UsageError('invalid-value', words`${opt('dropout')} must be in [0, 1) (got ${shown(dropout)})`);
  const weightDecay = opts.weightDecay ?? HEAD_DEFAULTS.weightDecay;
  if (!(weightDecay >= 0))
    throw new UsageError('invalid-value', words`${opt('weightDecay')} must be >= 0 (got ${shown(weightDecay)})`);
  return {
    kind,
    epochs: positive('epochs', opts.epochs ?? HEAD_DEFAULTS.epochs, true),
    lr: positive('lr', opts.lr ?? HEAD_DEFAULTS.lr, false),
    batchSize: positive('batchSize', opts.batchSize ?? HEAD_DEFAULTS.batchSize, true),
    patience: positive('patience', opts.patience ?? HEAD_DEFAULTS.patience, true),
    hidden: positive('hidden', opts.hidden ?? HEAD_DEFAULTS.hidden, true),
    dropout,
    weightDecay,
    seed: opts.seed ?? HEAD_DEFAULTS.seed,
    balanced: (opts.classWeights ?? HEAD_DEFAULTS.classWeights) === 'balanced',
  };
}

/** Loss and accuracy of one scored set after an epoch. */
export type EpochScore = { loss: number; accuracy: number };

/**
 * A softmax or mlp head in training, advanced one epoch at a time. `trainHead` drives one and stops early on its
 * validation rows; cross-validation (cross-validate.ts) drives one per fold in lockstep and stops on their pooled
 * held-out loss. It fits rows `rows` of `data` (all of them when absent), so folds share one copy of the features and
 * each batch is standardised as it is assembled.
 */
export class DenseFit {
  private readonly rng: () => number;
  private readonly std: ReturnType<typeof computeStandardisation>;
  private readonly rowW: Float32Array;
  private readonly rows: Int32Array;
  private readonly units: number;
  private readonly transposed: boolean;
  private readonly params: tf.Variable[] = [];
  private readonly optimizer: Adam;
  private readonly scorers: SetScorer[] = [];
  private kept?: tf.Tensor[];
  private keptEpoch = 0;
  private epochs = 0;
  private lastYield = 0;
  private done = false;
  private readonly scoresTraining: boolean;

  /**
   * `val`: the rows scored after every epoch as validation (all of `val.set`, or its rows `val.rows`: a cross-validation
   * fold scores its held-out rows where they lie, without a copy), standardised with the fitted rows' statistics.
   * `o.scoreTraining`: also score the fitted rows every epoch (a cross-validation fold only needs its held-out score).
   * `o.residentValues`: the most values a scored set may hold on the device before it is scored in chunks (folds in
   * lockstep split one budget between them).
   */
  constructor(
    private readonly data: FeatureSet,
    rows: Int32Array | undefined,
    val: { set: FeatureSet; rows?: Int32Array } | undefined,
    private readonly numClasses: number,
    private readonly s: DenseSettings,
    o: { scoreTraining: boolean; residentValues?: number },
  ) {
    const { dim } = data;
    const C = numClasses;
    this.scoresTraining = o.scoreTraining;
    this.rows = rows ? rows.slice() : Int32Array.from({ length: data.n }, (_, i) => i);
    this.rng = mulberry32(s.seed);
    this.std = computeStandardisation(data.x, data.n, dim, rows);
    const fitY = Int32Array.from(this.rows, (i) => data.y[i]);
    const classW = s.balanced ? balancedClassWeights(fitY, C) : new Float32Array(C).fill(1);
    this.rowW = Float32Array.from(data.y, (c) => classW[c]);
    // Softmax regression is convex, so it starts from zero; the mlp needs asymmetric weights to break symmetry.
    this.units = s.kind === 'softmax' ? C : s.hidden;
    // Layout of the first kernel while training: see denseGradients. Glorot draws are i.i.d., so drawing the kernel as
    // [units, dim] is the same distribution.
    this.transposed = this.units > s.batchSize;
    const init: Float32Array[] =
      s.kind === 'softmax'
        ? [new Float32Array(C * dim), new Float32Array(C)]
        : [
            glorotUniform(s.hidden, dim, this.rng),
            new Float32Array(s.hidden),
            glorotUniform(s.hidden, C, this.rng),
            new Float32Array(C),
          ];
    const shapes: number[][] = [this.transposed ? [this.units, dim] : [dim, this.units], [this.units]];
    if (s.kind === 'mlp') shapes.push([s.hidden, C], [C]);
    try {
      for (const [i, a] of init.entries()) {
        const t = tf.tensor(a, shapes[i]);
        this.params.push(tf.variable(t, true));
        t.dispose();
      }
      const toOneHot = (y: Int32Array) => oneHot(y, C);
      const weightsOf = (y: Int32Array) => Float32Array.from(y, (c) => classW[c]);
      const budget = o.residentValues ?? RESIDENT_VALUES;
      if (o.scoreTraining) this.scorers.push(setScorer(data, this.std, toOneHot, weightsOf, C, budget, rows));
      if (val) this.scorers.push(setScorer(val.set, this.std, toOneHot, weightsOf, C, budget, val.rows));
      this.optimizer = new Adam(this.params, s.lr);
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  /** Rows fitted on. */
  get n(): number {
    return this.rows.length;
  }

  private headLayout(): tf.Tensor[] {
    return this.transposed ? [tf.transpose(this.params[0]), ...this.params.slice(1)] : this.params;
  }

  private step(idx: Int32Array): void {
    const { dim } = this.data;
    const { x, y } = this.data;
    const { mean, invStd } = this.std;
    const C = this.numClasses;
    const { hidden, dropout } = this.s;
    const b = idx.length;
    // Batches are assembled here rather than with tf.gather (several times slower on WASM), standardised on the way,
    // together with the transposed copy that the kernel gradient needs: WASM's matMul is an order of magnitude slower
    // with transposeA. Fresh arrays each step: the CPU backend keeps a reference to the array a tensor was made from.
    const xb = new Float32Array(b * dim);
    const xbT = new Float32Array(dim * b);
    const yw = new Float32Array(b * C);
    const wb = new Float32Array(b);
    // Standardised here, row by row, rather than holding a standardised copy of the whole set.
    for (let r = 0; r < b; r++) {
      const i = idx[r];
      for (let d = 0, o = i * dim; d < dim; d++) {
        const v = (x[o + d] - mean[d]) * invStd[d];
        xb[r * dim + d] = v;
        xbT[d * b + r] = v;
      }
      wb[r] = this.rowW[i] / b;
      yw[r * C + y[i]] = wb[r];
    }
    let mask: Float32Array | undefined;
    if (this.s.kind === 'mlp' && dropout > 0) {
      const keepScale = 1 / (1 - dropout);
      mask = new Float32Array(b * hidden);
      for (let i = 0; i < mask.length; i++) mask[i] = this.rng() < dropout ? 0 : keepScale;
    }
    tf.tidy(() => {
      const grads = denseGradients(
        this.params,
        {
          x: tf.tensor2d(xb, [b, dim]),
          xT: tf.tensor2d(xbT, [dim, b]),
          yw: tf.tensor2d(yw, [b, C]),
          w: tf.tensor2d(wb, [b, 1]),
          mask: mask ? tf.tensor2d(mask, [b, hidden]) : undefined,
        },
        this.s.weightDecay,
        this.transposed,
      );
      this.optimizer.apply(grads);
    });
  }

  /**
   * One epoch: every fitted row once, in a fresh seeded order. Then the scored sets, whole, with dropout off: numbers
   * that do not depend on the batch order. Yields to the event loop every YIELD_MS.
   */
  async epoch(signal?: AbortSignal): Promise<{ train?: EpochScore; val?: EpochScore }> {
    if (this.done) throw new InternalError('DenseFit: epoch after the head was taken');
    const { rows } = this;
    const { batchSize } = this.s;
    this.lastYield = performance.now();
    shuffleInPlace(rows, this.rng);
    for (let s = 0; s < rows.length; s += batchSize) {
      checkAbort(signal);
      this.step(rows.subarray(s, Math.min(rows.length, s + batchSize)));
      if (performance.now() - this.lastYield > YIELD_MS) {
        await tick();
        this.lastYield = performance.now();
      }
    }
    this.epochs++;
    if (this.scorers.length === 0) return {};
    const headParams = this.headLayout();
    const nums = this.scorers.map((sc) => sc.score(headParams));
    if (this.transposed) tf.dispose(headParams[0]);
    const at = (k: number): EpochScore => ({ loss: nums[k][0], accuracy: nums[k][1] });
    return this.scoresTraining ? { train: at(0), ...(nums.length > 1 ? { val: at(1) } : {}) } : { val: at(0) };
  }

  /** Remembers the current weights as the ones to keep. */
  keep(): void {
    if (this.kept) tf.dispose(this.kept);
    this.kept = this.params.map((p) => tf.clone(p));
    this.keptEpoch = this.epochs;
  }

  /** The trained head, with the kept weights when `keep` was called (else the last ones). The fit is done after it. */
  toHead(history: EpochLog[], bestEpoch: number): DenseHead {
    if (this.done) throw new InternalError('DenseFit: the head was already taken');
    if (this.kept && this.keptEpoch !== this.epochs) for (const [i, p] of this.params.entries()) p.assign(this.kept[i]);
    const headParams = this.headLayout();
    if (this.transposed) this.params[0].dispose();
    this.done = true;
    this.release();
    return new DenseHead(this.s.kind, this.numClasses, this.data.dim, this.std, headParams, history, bestEpoch);
  }

  private release(): void {
    for (const sc of this.scorers) sc.dispose();
    this.scorers.length = 0;
    if (this.kept) tf.dispose(this.kept);
    this.kept = undefined;
    this.optimizer?.dispose();
  }

  /** Frees everything the fit holds; after toHead, the head's weights stay with the head. */
  dispose(): void {
    if (!this.done) {
      tf.dispose(this.params);
      this.done = true;
      this.release();
    }
  }
}

async function trainDense(
  kind: 'softmax' | 'mlp',
  train: FeatureSet,
  val: FeatureSet | undefined,
  numClasses: number,
  opts: TrainHeadOptions,
): Promise<TrainedHead> {
  const s = denseSettings(kind, opts);
  const { signal, onEpoch } = opts;
  const stopEarly = opts.earlyStopping ?? true;
  const fit = new DenseFit(train, undefined, val ? { set: val } : undefined, numClasses, s, { scoreTraining: true });
  const history: EpochLog[] = [];
  let bestLoss = Number.POSITIVE_INFINITY;
  let bestEpoch = 0;
  try {
    for (let epoch = 1; epoch <= s.epochs; epoch++) {
      const t0 = performance.now();
      const r = await fit.epoch(signal);
      const tr = r.train as EpochScore;
      const log: EpochLog = { epoch, loss: tr.loss, accuracy: tr.accuracy, seconds: 0 };
      if (r.val) {
        log.valLoss = r.val.loss;
        log.valAccuracy = r.val.accuracy;
      }
      const watched = r.val ? r.val.loss : tr.loss;
      if (!stopEarly) {
        bestEpoch = epoch;
      } else if (watched < bestLoss) {
        bestLoss = watched;
        bestEpoch = epoch;
        fit.keep();
      }
      log.seconds = (performance.now() - t0) / 1000;
      history.push(log);
      onEpoch?.(log, s.epochs);
      if (!Number.isFinite(watched) && (bestEpoch === 0 || !stopEarly))
        throw new UsageError(
          'diverged',
          words`training diverged at epoch ${epoch} (loss ${watched}); lower ${opt('lr')}`,
        );
      if (stopEarly && epoch - bestEpoch >= s.patience) break;
      await tick();
    }
    checkAbort(signal);
    return fit.toHead(history, bestEpoch);
  } finally {
    fit.dispose();
  }
}
