/**
 * The logistic head: L2-regularised multinomial logistic regression fitted to convergence on cached features, with the
 * regularisation strength chosen by cross-validation on the training rows (the recipe of scikit-learn's
 * `make_pipeline(StandardScaler(), LogisticRegressionCV())`). No validation row is used to fit it or to choose.
 *
 * Objective on standardised rows x_i, labels y_i and sample weights w_i summing to 1:
 *   f(W, b) = sum_i w_i * CE(softmax(x_i W + b), y_i) + lambda/2 * |W|^2        (the bias is not penalised)
 * Smooth and strictly convex in W, so L-BFGS reaches its one minimum from any start; warm starts along a path of
 * decreasing lambda only save iterations. The two products with the data (X W and X^T G) run as TF.js matMuls (SIMD
 * on WASM, about 5x plain JS for two classes, 25x for a hundred); the rest is Float64 arithmetic in JS.
 */
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
/** Above this many bytes of per-fold copies, the folds share one copy of the rows (see fitLogistic). */
export const SHARE_ROWS_ABOVE_BYTES = 256e6;

/** Rows to fit: x standardised (n*dim), y class indices, w sample weights that sum to 1. */
export interface LogisticData {
  x: Float32Array;
  n: number;
  dim: number;
  y: Int32Array;
  w: Float64Array;
  numClasses: number;
}

/**
 * Parameters are one Float64Array: the kernel as [dim][numClasses] (a Dense kernel's layout), then numClasses biases.
 */
export function paramCount(dim: number, numClasses: number): number {
  return (dim + 1) * numClasses;
}

/**
 * The data on the TF.js backend once; both products read it as the right-hand operand, which WASM keeps packed.
 * Objectives over the same rows with other weights (the folds of the lambda search: a held-out row weighs 0) share
 * one copy: `shared` is another objective on `d.x`, whose tensor this one reads and never disposes.
 */
export class LogisticObjective {
  private readonly X: tf.Tensor2D;
  private readonly owner: boolean;
  /** Function and gradient evaluations so far. */
  evaluations = 0;

  constructor(
    readonly d: LogisticData,
    public lambda: number,
    shared?: LogisticObjective,
  ) {
    if (shared && (shared.d.x !== d.x || shared.d.n !== d.n || shared.d.dim !== d.dim))
      throw new InternalError('LogisticObjective: a shared tensor must hold the same rows');
    this.owner = !shared;
    this.X = shared ? shared.X : tf.tensor2d(d.x, [d.n, d.dim]);
  }

  /** Logits (n*C) for the kernel and bias in `params`. */
  logits(params: Float64Array): Float32Array {
    const { n, dim, numClasses: C } = this.d;
    const z = tf.tidy(() => tf.matMul(this.X, tf.tensor2d(Float32Array.from(params.subarray(0, dim * C)), [dim, C])));
    const out = z.dataSync() as Float32Array;
    z.dispose();
    for (let i = 0; i < n; i++) for (let c = 0; c < C; c++) out[i * C + c] += params[dim * C + c];
    return out;
  }

  /**
   * f and its gradient (written into `grad`) at `params`. Backpropagation by hand: d CE / d z_c = p_c - [y = c], so
   * dW = X^T G + lambda W and db = column sums of G, with G_ic = w_i (p_ic - [y_i = c]). Checked against
   * tf.variableGrads in logistic.test.ts.
   */
  lossGrad(params: Float64Array, grad: Float64Array): number {
    this.evaluations++;
    const { n, dim, y, w, numClasses: C } = this.d;
    const z = this.logits(params);
    // G transposed ([C][n]): G^T X keeps the data as the right-hand operand.
    const gT = new Float32Array(C * n);
    grad.fill(0);
    let loss = 0;
    for (let i = 0; i < n; i++) {
      // A row of weight 0 (held out of this fold) adds nothing to the loss or the gradient.
      if (w[i] === 0) continue;
      const o = i * C;
      let max = Number.NEGATIVE_INFINITY;
      for (let c = 0; c < C; c++) if (z[o + c] > max) max = z[o + c];
      let sum = 0;
      for (let c = 0; c < C; c++) sum += Math.exp(z[o + c] - max);
      loss += w[i] * (Math.log(sum) - (z[o + y[i]] - max));
      for (let c = 0; c < C; c++) {
        const gi = w[i] * (Math.exp(z[o + c] - max) / sum - (c === y[i] ? 1 : 0));
        gT[c * n + i] = gi;
        grad[dim * C + c] += gi;
      }
    }
    const gw = tf.tidy(() => tf.matMul(tf.tensor2d(gT, [C, n]), this.X));
    const gwData = gw.dataSync();
    gw.dispose();
    let reg = 0;
    const lambda = this.lambda;
    for (let k = 0; k < dim; k++) {
      for (let c = 0; c < C; c++) {
        const v = params[k * C + c];
        reg += v * v;
        grad[k * C + c] = gwData[c * dim + k] + lambda * v;
      }
    }
    return loss + 0.5 * lambda * reg;
  }

  dispose(): void {
    if (this.owner) this.X.dispose();
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
  fg: (x: Float64Array, grad: Float64Array) => number,
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
  let f = fg(x, g);
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
      fNew = fg(xNew, gNew);
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
  /** The folds read one copy of all rows (true) or copies of their own (false); default: shared beyond
   *  SHARE_ROWS_ABOVE_BYTES of copies. */
  shareRows?: boolean;
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

/** Rows `idx` of `d`, with their weights renormalised to sum 1. */
function subset(d: LogisticData, idx: number[]): LogisticData {
  const x = new Float32Array(idx.length * d.dim);
  const y = new Int32Array(idx.length);
  const w = new Float64Array(idx.length);
  let total = 0;
  idx.forEach((r, i) => {
    x.set(d.x.subarray(r * d.dim, (r + 1) * d.dim), i * d.dim);
    y[i] = d.y[r];
    w[i] = d.w[r];
    total += d.w[r];
  });
  for (let i = 0; i < w.length; i++) w[i] /= total;
  return { x, n: idx.length, dim: d.dim, y, w, numClasses: d.numClasses };
}

/** `d`'s weights with every row outside `idx` at 0, the rest renormalised to sum 1: the fit of one fold. */
function foldWeights(d: LogisticData, idx: number[]): Float64Array {
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
  if (o.lambda !== undefined) {
    if (!(o.lambda >= 0))
      throw new UsageError('invalid-value', words`${opt('lambda')} must be a number ≥ 0 (got ${o.lambda})`);
    const obj = new LogisticObjective(d, o.lambda);
    try {
      const r = await minimise(obj, new Float64Array(p), o.signal);
      return { params: r.x, lambda: o.lambda, iterations: r.iterations, converged: r.converged, gradMax: r.gradMax };
    } finally {
      obj.dispose();
    }
  }
  const images = [...source.keys()].filter((r) => source[r] === r);
  const imageY = Int32Array.from(images, (r) => d.y[r]);
  const k = o.folds
    ? o.folds.reduce((a, b) => Math.max(a, b), 0) + 1
    : Math.min(LOGISTIC_FOLDS, minClassCount(imageY, d.numClasses));
  if (k < 2) {
    // Too few images of some class to hold any out: the middle of the grid, said so in the search record.
    const lambda = LAMBDA_GRID[Math.floor(LAMBDA_GRID.length / 2)];
    return fitLogistic(d, source, { ...o, lambda });
  }
  const fold = o.folds ?? imageFolds(d.y, source, k, o.seed ?? 42);
  if (fold.length !== d.n) throw new UsageError('invalid-value', `logistic: ${fold.length} folds for ${d.n} rows`);
  const C = d.numClasses;
  // Per fold, its own copies of the fitting and of the held-out rows on the backend: the fastest, but the data k + 1
  // times over (plus the final fit's), which 100,000 images of 1280 features do not fit in WASM's memory. Beyond
  // SHARE_ROWS_ABOVE_BYTES every fold reads one copy of all rows instead, its held-out rows weighted 0 (a quarter more
  // arithmetic per fold fit: the held-out rows are multiplied too).
  const share = o.shareRows ?? d.n * d.dim * 4 * (k + 1) > SHARE_ROWS_ABOVE_BYTES;
  const owned: LogisticObjective[] = [];
  const objective = (data: LogisticData, lambda: number, shared?: LogisticObjective) => {
    const obj = new LogisticObjective(data, lambda, shared);
    owned.push(obj);
    return obj;
  };
  const rows: LambdaSearch['rows'] = [];
  const oofs: Float32Array[] = [];
  const solutions: Float64Array[][] = [];
  const foldScores: number[][] = [];
  let iterations = 0;
  let allConverged = true;
  try {
    const all = share ? objective(d, 0) : undefined;
    const folds = Array.from({ length: k }, (_, f) => {
      const fitRows = [...fold.keys()].filter((r) => fold[r] !== f);
      const heldRows = [...fold.keys()].filter((r) => fold[r] === f);
      if (all) {
        const fit = objective({ ...d, w: foldWeights(d, fitRows) }, LAMBDA_GRID[0], all);
        // Probabilities of the held-out rows, in heldRows' order.
        const held = (q: Float64Array) => {
          const pAll = softmaxRows(all.logits(q), d.n, C);
          const out = new Float32Array(heldRows.length * C);
          for (const [i, row] of heldRows.entries()) out.set(pAll.subarray(row * C, (row + 1) * C), i * C);
          return out;
        };
        return { heldRows, fit, held };
      }
      const fit = objective(subset(d, fitRows), LAMBDA_GRID[0]);
      const scorer = objective(subset(d, heldRows), 0);
      return { heldRows, fit, held: (q: Float64Array) => softmaxRows(scorer.logits(q), heldRows.length, C) };
    });
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
        const proba = f.held(r.x);
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
    const final = all ?? objective(d, lambda);
    final.lambda = lambda;
    const r = await minimise(final, init, o.signal);
    return {
      params: r.x,
      lambda,
      iterations: iterations + r.iterations,
      converged: r.converged,
      gradMax: r.gradMax,
      search: { folds: k, rows, lambda, oof: oofs[best], foldScores: foldScores[best], converged: allConverged },
    };
  } finally {
    for (const obj of owned) obj.dispose();
  }
}

function minClassCount(y: Int32Array, C: number): number {
  const counts = new Int32Array(C);
  for (const c of y) counts[c]++;
  let min = Number.POSITIVE_INFINITY;
  for (const c of counts) if (c > 0) min = Math.min(min, c);
  return Number.isFinite(min) ? min : 0;
}
