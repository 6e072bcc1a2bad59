/**
 * The logistic head: L2-regularised multinomial logistic regression fitted to convergence on cached features, with the
 * regularisation strength chosen by cross-validation on the training rows (the recipe of scikit-learn's
 * `make_pipeline(StandardScaler(), LogisticRegressionCV())`). No validation row is used to fit it or to choose.
 *
 * Objective on standardised rows x_i, labels y_i and sample weights w_i summing to 1:
 *   f(W, b) = sum_i w_i * CE(softmax(x_i W + b), y_i) + lambda/2 * |W|^2        (the bias is not penalised)
 * Smooth and strictly convex in W, so L-BFGS reaches its one minimum from any start; warm starts along a path of
 * decreasing lambda only save iterations. The two products with the data (X W and X^T G) run as TF.js matMuls on one
 * standardised copy of the rows, or, for rows too many to copy, on ONNX Runtime block by block where the rows lie
 * (RowEngine); the rest is Float64 arithmetic in JS.
 */
import { OrtRowProducts } from '../engines/ort-rows.ts';
import { onnxAvailable } from '../onnx/runtime.ts';
import { tf } from '../tfjs/tf.ts';
import { InternalError, opt, UsageError, words } from '../util/errors.ts';
import { checkAbort } from '../util/progress.ts';
import { imageFolds } from './folds.ts';
import { accuracy, logLoss } from './metrics.ts';

/** Regularisation strengths tried, strongest first: 10^1 down to 10^-3.5 in half decades. On standardised features
 *  lambda = 10 keeps the weights near zero and 10^-3.5 barely regularises a few hundred rows; scikit-learn's default
 *  grid (C = 10^-4..10^4 on a summed loss, lambda = 1 / (C n)) spans about the same range for such data. */
export const LAMBDA_GRID: readonly number[] = Array.from({ length: 10 }, (_, k) => 10 ** (1 - 0.5 * k));
/** Folds of the lambda search (LogisticRegressionCV's default). */
export const LOGISTIC_FOLDS = 5;
/** Lambdas tried past the best held-out loss before the path stops. */
const PATH_PATIENCE = 2;
/** Gradient tolerance of the fold fits: held-out losses settle long before the final fit's 1e-5. */
const CV_GRAD_TOL = 1e-4;

/** Rows to fit: x (n*dim) as extracted, y class indices, w sample weights that sum to 1. The model sees each row
 *  standardised, (x - mean) * invStd per feature, when `mean` and `invStd` are given, and as it is otherwise. */
export interface LogisticData {
  x: Float32Array;
  n: number;
  dim: number;
  y: Int32Array;
  w: Float64Array;
  numClasses: number;
  mean?: Float32Array;
  invStd?: Float32Array;
}

/**
 * Parameters are one Float64Array: the kernel as [dim][numClasses] (a Dense kernel's layout), then numClasses biases.
 */
export function paramCount(dim: number, numClasses: number): number {
  return (dim + 1) * numClasses;
}

/**
 * The data side of a fit: the standardised rows Xs of a LogisticData times a kernel, and times a gradient. `pass`
 * visits `rows` (ascending row indices, or every row) in blocks: it hands `visit` the logits without bias of positions
 * [from, to) of that list ((to - from) x C), and when `visit` returns G for them (same shape), adds Xs_block^T G into
 * the [dim][C] sums it returns.
 */
export interface RowEngine {
  readonly kind: 'ort' | 'tfjs';
  pass(
    rows: Int32Array | undefined,
    kernel: Float32Array,
    visit: (z: Float32Array, from: number, to: number) => Float32Array | undefined,
  ): Promise<Float64Array>;
  dispose(): Promise<void>;
}

/** Rows per block on ONNX Runtime: 4,096 rows of 1,280 features are 21 MB, and runs of this size keep its Gemm busy. */
export const ORT_BLOCK_ROWS = 4096;

/**
 * ONNX Runtime, block by block, reading the rows where they lie: however many rows, the fit holds no copy of them. A
 * pass over some rows (a fold's) multiplies every row of each block that holds one of them and hands `visit` only
 * theirs: gathering a fold's scattered rows into a block of their own costs more than the quarter more rows multiplied.
 * Centring is done in the graph; the scale is folded into the kernel and the gradient, which multiplies no rounding
 * error (no difference of large numbers is taken).
 */
class OrtRows implements RowEngine {
  readonly kind = 'ort';

  private constructor(
    private readonly d: LogisticData,
    private readonly products: OrtRowProducts,
    private readonly scale: Float32Array | undefined,
  ) {}

  static async create(d: LogisticData): Promise<OrtRows> {
    const products = await OrtRowProducts.create(d.mean ?? new Float32Array(d.dim), d.numClasses);
    return new OrtRows(d, products, d.invStd);
  }

  async pass(
    rows: Int32Array | undefined,
    kernel: Float32Array,
    visit: (z: Float32Array, from: number, to: number) => Float32Array | undefined,
  ): Promise<Float64Array> {
    const { x, n, dim, numClasses: C } = this.d;
    const s = this.scale;
    const k = s ? kernel.map((v, i) => v * s[Math.floor(i / C)]) : kernel;
    const sums = new Float64Array(dim * C);
    const count = rows ? rows.length : n;
    // Positions [from, to) of `rows` fall in block [r0, r1) of all rows.
    for (let from = 0; from < count; ) {
      const r0 = rows ? rows[from] - (rows[from] % ORT_BLOCK_ROWS) : from;
      const r1 = Math.min(n, r0 + ORT_BLOCK_ROWS);
      let to = from;
      while (to < count && (rows ? rows[to] : to) < r1) to++;
      const block = x.subarray(r0 * dim, r1 * dim);
      const zBlock = await this.products.logits(block, r1 - r0, k);
      let z = zBlock;
      if (rows) {
        z = new Float32Array((to - from) * C);
        for (let j = from; j < to; j++)
          z.set(zBlock.subarray((rows[j] - r0) * C, (rows[j] - r0 + 1) * C), (j - from) * C);
      }
      let g = visit(z, from, to);
      if (g) {
        if (rows) {
          const gBlock = new Float32Array((r1 - r0) * C);
          for (let j = from; j < to; j++)
            gBlock.set(g.subarray((j - from) * C, (j - from + 1) * C), (rows[j] - r0) * C);
          g = gBlock;
        }
        const dk = await this.products.gradient(block, r1 - r0, g);
        for (let i = 0; i < dk.length; i++) sums[i] += dk[i];
      }
      from = to;
    }
    if (s) for (let i = 0; i < sums.length; i++) sums[i] *= s[Math.floor(i / C)];
    return sums;
  }

  dispose(): Promise<void> {
    return this.products.release();
  }
}

/**
 * TF.js: the standardised rows held once on the backend, which both products read as the right-hand operand (WASM
 * keeps it packed). Every pass multiplies all rows; a visit sees those asked for.
 */
class TfjsRows implements RowEngine {
  readonly kind = 'tfjs';
  private readonly X: tf.Tensor2D;

  constructor(private readonly d: LogisticData) {
    const { x, n, dim, mean, invStd } = d;
    this.X = tf.tidy(() => {
      const raw = tf.tensor2d(x, [n, dim]);
      return mean && invStd ? tf.mul(tf.sub(raw, tf.tensor1d(mean)), tf.tensor1d(invStd)) : raw;
    });
  }

  async pass(
    rows: Int32Array | undefined,
    kernel: Float32Array,
    visit: (z: Float32Array, from: number, to: number) => Float32Array | undefined,
  ): Promise<Float64Array> {
    const { n, dim, numClasses: C } = this.d;
    const zt = tf.tidy(() => tf.matMul(this.X, tf.tensor2d(kernel, [dim, C])));
    const zAll = zt.dataSync() as Float32Array;
    zt.dispose();
    const count = rows ? rows.length : n;
    let z = zAll;
    if (rows) {
      z = new Float32Array(count * C);
      for (let j = 0; j < count; j++) z.set(zAll.subarray(rows[j] * C, (rows[j] + 1) * C), j * C);
    }
    const sums = new Float64Array(dim * C);
    const g = visit(z, 0, count);
    if (!g) return sums;
    // G transposed ([C][n], zero on rows not asked for): G^T X keeps the data as the right-hand operand.
    const gT = new Float32Array(C * n);
    for (let j = 0; j < count; j++) {
      const i = rows ? rows[j] : j;
      for (let c = 0; c < C; c++) gT[c * n + i] = g[j * C + c];
    }
    const gw = tf.tidy(() => tf.matMul(tf.tensor2d(gT, [C, n]), this.X));
    const data = gw.dataSync();
    gw.dispose();
    for (let k = 0; k < dim; k++) for (let c = 0; c < C; c++) sums[k * C + c] = data[c * dim + k];
    return sums;
  }

  async dispose(): Promise<void> {
    this.X.dispose();
  }
}

/**
 * Rows of more bytes than this are multiplied on ONNX Runtime (no copy); up to it on TF.js, whose copies (the tensor and
 * XNNPACK's packed one, 256 MB at most) buy products about twice as fast: 100,000 images of 1,280 features are 0.8 GB
 * of rows, 10,000 are 92 MB.
 */
export const ORT_ROWS_ABOVE_BYTES = 128e6;

/** The rows of `d` on `kind`; by default ONNX Runtime beyond ORT_ROWS_ABOVE_BYTES where it loads, else TF.js. */
export async function rowEngine(d: LogisticData, kind?: 'ort' | 'tfjs'): Promise<RowEngine> {
  if ((d.mean === undefined) !== (d.invStd === undefined))
    throw new InternalError('logistic: mean and invStd come together');
  const useOrt = kind ? kind === 'ort' : d.x.length * 4 > ORT_ROWS_ABOVE_BYTES && (await onnxAvailable());
  return useOrt ? OrtRows.create(d) : new TfjsRows(d);
}

/**
 * The objective over rows `rows` of the engine's data (all rows when absent) with sample weights `w` (d.w by default;
 * rows outside `rows` must weigh 0). Objectives over the same rows with other weights (the folds of the lambda search)
 * share one engine.
 */
export class LogisticObjective {
  /** Function and gradient evaluations so far. */
  evaluations = 0;

  constructor(
    readonly engine: RowEngine,
    readonly d: LogisticData,
    public lambda: number,
    readonly rows?: Int32Array,
    readonly w: Float64Array = d.w,
  ) {}

  /** Logits ((rows given, else this objective's rows) x C, in that order) for the kernel and bias in `params`. */
  async logits(params: Float64Array, rows = this.rows): Promise<Float32Array> {
    const { dim, numClasses: C } = this.d;
    const out = new Float32Array((rows ? rows.length : this.d.n) * C);
    await this.engine.pass(rows, Float32Array.from(params.subarray(0, dim * C)), (z, from) => {
      for (let i = 0; i < z.length; i++) out[from * C + i] = z[i] + params[dim * C + (i % C)];
      return undefined;
    });
    return out;
  }

  /**
   * f and its gradient (written into `grad`) at `params`. Backpropagation by hand: d CE / d z_c = p_c - [y = c], so
   * dW = Xs^T G + lambda W and db = column sums of G, with G_ic = w_i (p_ic - [y_i = c]). Checked against
   * tf.variableGrads in logistic.test.ts.
   */
  async lossGrad(params: Float64Array, grad: Float64Array): Promise<number> {
    this.evaluations++;
    const { dim, y, numClasses: C } = this.d;
    const { w, rows } = this;
    grad.fill(0);
    let loss = 0;
    const gw = await this.engine.pass(rows, Float32Array.from(params.subarray(0, dim * C)), (z, from, to) => {
      const g = new Float32Array((to - from) * C);
      for (let j = from; j < to; j++) {
        const i = rows ? rows[j] : j;
        // A row of weight 0 (held out of this fold) adds nothing to the loss or the gradient.
        if (w[i] === 0) continue;
        const o = (j - from) * C;
        let max = Number.NEGATIVE_INFINITY;
        for (let c = 0; c < C; c++) z[o + c] += params[dim * C + c];
        for (let c = 0; c < C; c++) if (z[o + c] > max) max = z[o + c];
        let sum = 0;
        for (let c = 0; c < C; c++) sum += Math.exp(z[o + c] - max);
        loss += w[i] * (Math.log(sum) - (z[o + y[i]] - max));
        for (let c = 0; c < C; c++) {
          const gi = w[i] * (Math.exp(z[o + c] - max) / sum - (c === y[i] ? 1 : 0));
          g[o + c] = gi;
          grad[dim * C + c] += gi;
        }
      }
      return g;
    });
    let reg = 0;
    const lambda = this.lambda;
    for (let k = 0; k < dim * C; k++) {
      const v = params[k];
      reg += v * v;
      grad[k] = gw[k] + lambda * v;
    }
    return loss + 0.5 * lambda * reg;
  }
}

/** Softmax of logits, row by row, in place. */
export function softmaxRows(z: Float32Array, n: number, C: number): Float32Array {
  for (let i = 0; i < n; i++) {
    const o = i * C;
    let max = Number.NEGATIVE_INFINITY;
    for (let c = 0; c < C; c++) if (z[o + c] > max) max = z[o + c];
    let sum = 0;
    for (let c = 0; c < C; c++) sum += z[o + c] = Math.exp(z[o + c] - max);
    for (let c = 0; c < C; c++) z[o + c] /= sum;
  }
  return z;
}

export interface LbfgsOptions {
  /** Stop when the largest gradient component is at most this. Default 1e-5 (float32 products limit the floor). */
  gradTol?: number;
  /** Stop when an iteration lowers f by at most this, relative to max(|f|, 1). Default 1e-9 (SciPy's factr 1e7). */
  relTol?: number;
  /** Default 1000. */
  maxIter?: number;
  /** Correction pairs kept. Default 10. */
  memory?: number;
  /** Awaited every iteration: an abort check, a yield to the event loop. */
  onIter?: () => void | Promise<void>;
}

export interface LbfgsResult {
  x: Float64Array;
  f: number;
  iterations: number;
  /** Largest gradient component at the end. */
  gradMax: number;
  /** True when a tolerance was met rather than the iteration limit. */
  converged: boolean;
}

function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

function absMax(a: Float64Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/**
 * Limited-memory BFGS (Nocedal & Wright, algorithm 7.4) with a weak-Wolfe bracketing line search (Lewis & Overton):
 * every accepted step satisfies the curvature condition, so each stored pair has s.y > 0 and the two-loop direction
 * stays a descent direction.
 */
export async function lbfgs(
  fg: (x: Float64Array, grad: Float64Array) => number | Promise<number>,
  x0: Float64Array,
  o: LbfgsOptions = {},
): Promise<LbfgsResult> {
  const gradTol = o.gradTol ?? 1e-5;
  const relTol = o.relTol ?? 1e-9;
  const maxIter = o.maxIter ?? 1000;
  const m = o.memory ?? 10;
  const p = x0.length;
  let x = Float64Array.from(x0);
  let g = new Float64Array(p);
  let f = await fg(x, g);
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  const rho: number[] = [];
  const alpha = new Float64Array(m);
  const dir = new Float64Array(p);
  let xNew = new Float64Array(p);
  let gNew = new Float64Array(p);
  let iterations = 0;
  let converged = absMax(g) <= gradTol;
  while (!converged && iterations < maxIter) {
    await o.onIter?.();
    iterations++;
    // Two-loop recursion: dir = -H g, with H0 = (s.y / y.y) I from the newest pair.
    for (let i = 0; i < p; i++) dir[i] = -g[i];
    for (let k = S.length - 1; k >= 0; k--) {
      alpha[k] = rho[k] * dot(S[k], dir);
      const yk = Y[k];
      for (let i = 0; i < p; i++) dir[i] -= alpha[k] * yk[i];
    }
    if (S.length) {
      const last = S.length - 1;
      const gamma = dot(S[last], Y[last]) / dot(Y[last], Y[last]);
      for (let i = 0; i < p; i++) dir[i] *= gamma;
    }
    for (let k = 0; k < S.length; k++) {
      const beta = rho[k] * dot(Y[k], dir);
      const sk = S[k];
      for (let i = 0; i < p; i++) dir[i] += (alpha[k] - beta) * sk[i];
    }
    let gd = dot(g, dir);
    if (!(gd < 0)) {
      // Rounding lost descent: restart from steepest descent.
      S.length = 0;
      Y.length = 0;
      rho.length = 0;
      for (let i = 0; i < p; i++) dir[i] = -g[i];
      gd = dot(g, dir);
    }
    // The first step has no curvature information: a move of unit length.
    let t = S.length === 0 ? Math.min(1, 1 / Math.sqrt(-gd)) : 1;
    let lo = 0;
    let hi = Number.POSITIVE_INFINITY;
    let fNew = f;
    let wolfe = false;
    for (let ls = 0; ls < 50; ls++) {
      for (let i = 0; i < p; i++) xNew[i] = x[i] + t * dir[i];
      fNew = await fg(xNew, gNew);
      if (!(fNew <= f + 1e-4 * t * gd)) hi = t;
      else if (dot(gNew, dir) < 0.9 * gd) lo = t;
      else {
        wolfe = true;
        break;
      }
      t = Number.isFinite(hi) ? (lo + hi) / 2 : 2 * lo;
    }
    // No Wolfe point within rounding and no decrease either: the precision floor is reached.
    if (!wolfe && !(fNew < f)) {
      converged = true;
      break;
    }
    const s = new Float64Array(p);
    const yv = new Float64Array(p);
    for (let i = 0; i < p; i++) {
      s[i] = xNew[i] - x[i];
      yv[i] = gNew[i] - g[i];
    }
    const sy = dot(s, yv);
    if (sy > 1e-12 * Math.sqrt(dot(s, s) * dot(yv, yv))) {
      if (S.length === m) {
        S.shift();
        Y.shift();
        rho.shift();
      }
      S.push(s);
      Y.push(yv);
      rho.push(1 / sy);
    }
    const decrease = f - fNew;
    [x, xNew] = [xNew, x];
    [g, gNew] = [gNew, g];
    f = fNew;
    if (absMax(g) <= gradTol || decrease <= relTol * Math.max(Math.abs(f), 1)) converged = true;
  }
  return { x, f, iterations, gradMax: absMax(g), converged };
}

/** The lambda search: cross-validated scores for every lambda of the grid. */
export interface LambdaSearch {
  folds: number;
  /** Per lambda tried (LAMBDA_GRID from the top, until the held-out loss has risen twice past its best): held-out log
   *  loss and accuracy over the training images. */
  rows: { lambda: number; logLoss: number; accuracy: number }[];
  /** The lambda of the lowest cross-validated log loss. */
  lambda: number;
  /**
   * Out-of-fold probabilities at the chosen lambda for every row (images and their augmentation views), each from the
   * fit that did not see that image: what test-time augmentation is judged on.
   */
  oof: Float32Array;
  /** Accuracy on each fold's held-out images at the chosen lambda. */
  foldScores: number[];
  /** Every fold fit met its tolerance. */
  converged: boolean;
}

export interface LogisticFitOptions {
  /** Seed of the fold assignment when `folds` is not given. */
  seed?: number;
  /** The fold of each row (0..k-1; an augmentation view in its image's fold), for a search on folds chosen by the
   *  caller (cross-validation's own). Default: stratified folds of the images (imageFolds). */
  folds?: Int32Array;
  /** Skip the search and fit this lambda. */
  lambda?: number;
  /** With `lambda`: where the fit starts (default zeros), e.g. a fit of the same rows at that lambda. */
  init?: Float64Array;
  /** Where the products with the rows run (see rowEngine); default by size. */
  engine?: 'ort' | 'tfjs';
  signal?: AbortSignal;
}

export interface LogisticFit {
  /** Kernel [dim][C] then biases, on standardised rows. */
  params: Float64Array;
  lambda: number;
  iterations: number;
  converged: boolean;
  gradMax: number;
  search?: LambdaSearch;
}

/** `d`'s weights with every row outside `idx` at 0, the rest renormalised to sum 1: the fit of one fold. */
function foldWeights(d: LogisticData, idx: Int32Array): Float64Array {
  const w = new Float64Array(d.n);
  let total = 0;
  for (const r of idx) total += d.w[r];
  for (const r of idx) w[r] = d.w[r] / total;
  return w;
}

/** Yield to the event loop at least this often, so aborts, timers and servers are served during a fit. */
const YIELD_MS = 50;

/** An onIter callback that checks `signal` and yields now and then. */
function pacer(signal?: AbortSignal): () => Promise<void> | undefined {
  let last = performance.now();
  return () => {
    checkAbort(signal);
    if (performance.now() - last < YIELD_MS) return undefined;
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        last = performance.now();
        resolve();
      }),
    );
  };
}

function minimise(obj: LogisticObjective, init: Float64Array, signal?: AbortSignal): Promise<LbfgsResult> {
  return lbfgs((p, g) => obj.lossGrad(p, g), init, { onIter: pacer(signal) });
}

/**
 * Fits the logistic regression. `source[r]` is the image row r shows (its own index for an image, the image's index for
 * an augmentation view): folds split images, a fold's views join the rows it is fitted on and never the rows that score
 * it. The lambda of the lowest mean held-out log loss wins (a proper score: smooth where accuracy on a few hundred
 * images ties), ties going to the stronger lambda; the final fit on all rows starts from the mean of the folds'
 * solutions at that lambda, as scikit-learn's refit does.
 */
export async function fitLogistic(
  d: LogisticData,
  source: Int32Array,
  o: LogisticFitOptions = {},
): Promise<LogisticFit> {
  const p = paramCount(d.dim, d.numClasses);
  if (o.lambda !== undefined && !(o.lambda >= 0))
    throw new UsageError('invalid-value', words`${opt('lambda')} must be a number ≥ 0 (got ${o.lambda})`);
  const engine = await rowEngine(d, o.engine);
  try {
    if (o.lambda !== undefined) {
      if (o.init && o.init.length !== p)
        throw new InternalError(`logistic: a start of ${o.init.length} parameters for ${p}`);
      const r = await minimise(new LogisticObjective(engine, d, o.lambda), o.init ?? new Float64Array(p), o.signal);
      return { params: r.x, lambda: o.lambda, iterations: r.iterations, converged: r.converged, gradMax: r.gradMax };
    }
    return await searchLambda(engine, d, source, o);
  } finally {
    await engine.dispose();
  }
}

/** fitLogistic's lambda search and final fit, on one engine over all rows. */
async function searchLambda(
  engine: RowEngine,
  d: LogisticData,
  source: Int32Array,
  o: LogisticFitOptions,
): Promise<LogisticFit> {
  const p = paramCount(d.dim, d.numClasses);
  const images = [...source.keys()].filter((r) => source[r] === r);
  const imageY = Int32Array.from(images, (r) => d.y[r]);
  const k = o.folds
    ? o.folds.reduce((a, b) => Math.max(a, b), 0) + 1
    : Math.min(LOGISTIC_FOLDS, minClassCount(imageY, d.numClasses));
  if (k < 2) {
    // Too few images of some class to hold any out: the middle of the grid, said so in the search record.
    const lambda = LAMBDA_GRID[Math.floor(LAMBDA_GRID.length / 2)];
    const r = await minimise(new LogisticObjective(engine, d, lambda), new Float64Array(p), o.signal);
    return { params: r.x, lambda, iterations: r.iterations, converged: r.converged, gradMax: r.gradMax };
  }
  const fold = o.folds ?? imageFolds(d.y, source, k, o.seed ?? 42);
  if (fold.length !== d.n) throw new UsageError('invalid-value', `logistic: ${fold.length} folds for ${d.n} rows`);
  const C = d.numClasses;
  // Every fold reads the one engine's rows: its fit visits its fitting rows, its score its held-out rows.
  const folds = Array.from({ length: k }, (_, f) => {
    const fitRows = Int32Array.from([...fold.keys()].filter((r) => fold[r] !== f));
    const heldRows = Int32Array.from([...fold.keys()].filter((r) => fold[r] === f));
    const fit = new LogisticObjective(engine, d, LAMBDA_GRID[0], fitRows, foldWeights(d, fitRows));
    const held = async (q: Float64Array) => softmaxRows(await fit.logits(q, heldRows), heldRows.length, C);
    return { heldRows, fit, held };
  });
  const rows: LambdaSearch['rows'] = [];
  const oofs: Float32Array[] = [];
  const solutions: Float64Array[][] = [];
  const foldScores: number[][] = [];
  let iterations = 0;
  let allConverged = true;
  let inits: Float64Array[] = folds.map(() => new Float64Array(p));
  let best = 0;
  const onIter = pacer(o.signal);
  for (const [g, lambda] of LAMBDA_GRID.entries()) {
    const oof = new Float32Array(d.n * C);
    const imgProba = new Float32Array(images.length * C);
    const imgY = new Int32Array(images.length);
    let j = 0;
    const sols: Float64Array[] = [];
    const scores: number[] = [];
    for (const [fi, f] of folds.entries()) {
      f.fit.lambda = lambda;
      // The held-out fold only needs its log loss to a few digits: a looser tolerance than the final fit's.
      const r = await lbfgs((q, gr) => f.fit.lossGrad(q, gr), inits[fi], { gradTol: CV_GRAD_TOL, onIter });
      iterations += r.iterations;
      allConverged &&= r.converged;
      sols.push(r.x);
      const proba = await f.held(r.x);
      const j0 = j;
      f.heldRows.forEach((row, i) => {
        const pr = proba.subarray(i * C, (i + 1) * C);
        oof.set(pr, row * C);
        if (source[row] === row) {
          imgProba.set(pr, j * C);
          imgY[j++] = d.y[row];
        }
      });
      if (j > j0) scores.push(accuracy(imgProba.subarray(j0 * C, j * C), imgY.subarray(j0, j), C));
    }
    inits = sols;
    foldScores.push(scores);
    solutions.push(sols);
    oofs.push(oof);
    rows.push({ lambda, logLoss: logLoss(imgProba, imgY, C), accuracy: accuracy(imgProba, imgY, C) });
    if (rows[g].logLoss < rows[best].logLoss) best = g;
    // The held-out loss is near-unimodal along the path: stop once it has risen past the best for two steps.
    if (g - best >= PATH_PATIENCE) break;
  }
  const lambda = LAMBDA_GRID[best];
  const init = new Float64Array(p);
  for (const s of solutions[best]) for (let i = 0; i < p; i++) init[i] += s[i] / k;
  const r = await minimise(new LogisticObjective(engine, d, lambda), init, o.signal);
  return {
    params: r.x,
    lambda,
    iterations: iterations + r.iterations,
    converged: r.converged,
    gradMax: r.gradMax,
    search: { folds: k, rows, lambda, oof: oofs[best], foldScores: foldScores[best], converged: allConverged },
  };
}

function minClassCount(y: Int32Array, C: number): number {
  const counts = new Int32Array(C);
  for (const c of y) counts[c]++;
  let min = Number.POSITIVE_INFINITY;
  for (const c of counts) if (c > 0) min = Math.min(min, c);
  return Number.isFinite(min) ? min : 0;
}
