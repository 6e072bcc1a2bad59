import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initTf, tf } from '../tfjs/tf.ts';
import {
  fitLogistic,
  LAMBDA_GRID,
  type LogisticData,
  LogisticObjective,
  lbfgs,
  ORT_BLOCK_ROWS,
  ORT_ROWS_ABOVE_BYTES,
  paramCount,
  rowEngine,
  softmaxRows,
} from './logistic.ts';
import { accuracy } from './metrics.ts';
import { gaussian, mulberry32 } from './random.ts';

before(async () => {
  await initTf();
});

/** n rows, `dim` features, labels from a random linear rule with `noise` of them flipped at random. */
function problem(n: number, dim: number, C: number, seed: number, noise = 0): LogisticData {
  const rng = mulberry32(seed);
  const w = Array.from({ length: dim * C }, () => gaussian(rng));
  const x = Float32Array.from({ length: n * dim }, () => gaussian(rng));
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bestV = Number.NEGATIVE_INFINITY;
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let k = 0; k < dim; k++) s += x[i * dim + k] * w[k * C + c];
      if (s > bestV) [best, bestV] = [c, s];
    }
    y[i] = rng() < noise ? Math.floor(rng() * C) : best;
  }
  const weights = Float64Array.from({ length: n }, () => 0.5 + rng());
  const total = weights.reduce((a, b) => a + b, 0);
  return { x, n, dim, y, w: weights.map((v) => v / total), numClasses: C };
}

/** The objective written with TF.js ops, for autodiff. */
function tfObjective(d: LogisticData, lambda: number, W: tf.Variable, b: tf.Variable): tf.Scalar {
  const logits = tf.add(tf.matMul(tf.tensor2d(d.x, [d.n, d.dim]), W), b);
  const ce = tf.neg(tf.sum(tf.mul(tf.oneHot(tf.tensor1d(d.y, 'int32'), d.numClasses), tf.logSoftmax(logits)), 1));
  const data = tf.sum(tf.mul(ce, tf.tensor1d(Float32Array.from(d.w))));
  return tf.add(data, tf.mul(tf.sum(tf.square(W)), lambda / 2)) as tf.Scalar;
}

/** Gradient of the TF.js objective at `params` ([dim][C] kernel then biases), by tf.variableGrads. */
function autodiff(d: LogisticData, lambda: number, params: Float64Array): { f: number; grad: Float64Array } {
  const C = d.numClasses;
  const W = tf.variable(tf.tensor2d(Float32Array.from(params.subarray(0, d.dim * C)), [d.dim, C]));
  const b = tf.variable(tf.tensor1d(Float32Array.from(params.subarray(d.dim * C))));
  try {
    const { value, grads } = tf.variableGrads(() => tfObjective(d, lambda, W, b), [W, b]);
    const grad = new Float64Array(params.length);
    grad.set(grads[W.name].dataSync());
    grad.set(grads[b.name].dataSync(), d.dim * C);
    const f = value.dataSync()[0];
    tf.dispose([value, grads[W.name], grads[b.name]]);
    return { f, grad };
  } finally {
    tf.dispose([W, b]);
  }
}

const maxAbs = (a: Float64Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/** `d` as extracted rows with a per-feature offset and scale, plus the mean and invStd that standardise them back. */
function unstandardised(d: LogisticData, seed: number): LogisticData {
  const rng = mulberry32(seed);
  const offset = Float32Array.from({ length: d.dim }, () => 3 + 5 * rng());
  const spread = Float32Array.from({ length: d.dim }, () => 0.5 + 4 * rng());
  const x = d.x.map((v, i) => offset[i % d.dim] + spread[i % d.dim] * v);
  // The standardisation graft would compute is not needed here: any (mean, invStd) pair defines the model's input.
  return { ...d, x, mean: offset, invStd: spread.map((v) => 1 / v) };
}

for (const kind of ['ort', 'tfjs'] as const) {
  test(`${kind}: hand-written loss and gradient match tf.variableGrads (3 classes, sample weights, L2 on the kernel only)`, async () => {
    const d = problem(40, 7, 3, 1);
    const rng = mulberry32(2);
    const params = Float64Array.from({ length: paramCount(d.dim, 3) }, () => gaussian(rng) * 0.5);
    // The same model on rows kept as extracted and standardised on the way: the gradient is the same function.
    for (const data of [d, unstandardised(d, 9)]) {
      const engine = await rowEngine(data, kind);
      assert.equal(engine.kind, kind);
      try {
        const obj = new LogisticObjective(engine, data, 0.3);
        const grad = new Float64Array(params.length);
        const f = await obj.lossGrad(params, grad);
        const ref = autodiff(d, 0.3, params);
        assert.ok(Math.abs(f - ref.f) < 1e-5, `loss ${f} vs ${ref.f}`);
        const diff = grad.map((g, i) => g - ref.grad[i]);
        assert.ok(maxAbs(diff) < 1e-5, `gradient differs by ${maxAbs(diff)}`);
        // The bias is not penalised: at lambda 0 and lambda 0.3 its gradient is the same.
        const grad0 = new Float64Array(params.length);
        obj.lambda = 0;
        await obj.lossGrad(params, grad0);
        for (let c = 0; c < 3; c++) assert.ok(Math.abs(grad0[7 * 3 + c] - grad[7 * 3 + c]) < 1e-9);
        assert.ok(Math.abs(grad0[0] - grad[0]) > 1e-3, 'the kernel is penalised');
      } finally {
        await engine.dispose();
      }
    }
  });
}

test('by default small data sets are multiplied on TF.js, and rows too many to copy on ONNX Runtime', async () => {
  const small = problem(40, 7, 3, 1);
  const dim = 1280;
  const n = Math.ceil(ORT_ROWS_ABOVE_BYTES / 4 / dim) + 1;
  // Never multiplied here: only the engine is chosen.
  const big: LogisticData = {
    ...small,
    x: new Float32Array(n * dim),
    n,
    dim,
    y: new Int32Array(n),
    w: new Float64Array(n),
  };
  for (const [d, kind] of [
    [small, 'tfjs'],
    [big, 'ort'],
  ] as const) {
    const engine = await rowEngine(d);
    try {
      assert.equal(engine.kind, kind);
    } finally {
      await engine.dispose();
    }
  }
});

test('ONNX Runtime and TF.js agree on scattered rows across several blocks, on fresh random data', async () => {
  const n = 2 * ORT_BLOCK_ROWS + 123;
  const d = unstandardised(problem(n, 9, 4, 12, 0.2), 13);
  const rng = mulberry32(14);
  // A fold's rows: scattered, so ONNX Runtime gathers them; the rest weigh 0.
  const rows = Int32Array.from([...Array(n).keys()].filter(() => rng() < 0.8));
  const w = new Float64Array(n);
  for (const r of rows) w[r] = 1 / rows.length;
  const params = Float64Array.from({ length: paramCount(d.dim, 4) }, () => gaussian(rng) * 0.3);
  const run = async (kind: 'ort' | 'tfjs') => {
    const engine = await rowEngine(d, kind);
    try {
      const obj = new LogisticObjective(engine, d, 0.05, rows, w);
      const grad = new Float64Array(params.length);
      const f = await obj.lossGrad(params, grad);
      const held = Int32Array.from([...Array(n).keys()].filter((r) => w[r] === 0));
      // Every row: blocks read in place, at offsets into the caller's array.
      const gradAll = new Float64Array(params.length);
      const fAll = await new LogisticObjective(engine, d, 0.05).lossGrad(params, gradAll);
      return { f, grad, logits: await obj.logits(params, held), fAll, gradAll };
    } finally {
      await engine.dispose();
    }
  };
  const [o, t] = [await run('ort'), await run('tfjs')];
  assert.ok(Math.abs(o.f - t.f) < 1e-5 * Math.abs(t.f), `loss ${o.f} vs ${t.f}`);
  const gDiff = maxAbs(o.grad.map((g, i) => g - t.grad[i]));
  assert.ok(gDiff < 1e-5 * Math.max(1, maxAbs(t.grad)), `gradients differ by ${gDiff}`);
  assert.ok(Math.abs(o.fAll - t.fAll) < 1e-5 * Math.abs(t.fAll), `loss on every row ${o.fAll} vs ${t.fAll}`);
  const gAllDiff = maxAbs(o.gradAll.map((g, i) => g - t.gradAll[i]));
  assert.ok(gAllDiff < 1e-5 * Math.max(1, maxAbs(t.gradAll)), `gradients on every row differ by ${gAllDiff}`);
  assert.ok(o.logits.length > 0 && o.logits.length === t.logits.length);
  const zDiff = Math.max(...o.logits.map((v, i) => Math.abs(v - t.logits[i])));
  assert.ok(zDiff < 1e-4, `held-out logits differ by ${zDiff}`);
});

test('L-BFGS reaches the minimum of the Rosenbrock function and of an ill-conditioned quadratic', async () => {
  const rosen = (x: Float64Array, g: Float64Array) => {
    const [a, b] = [x[0], x[1]];
    g[0] = -2 * (1 - a) - 400 * a * (b - a * a);
    g[1] = 200 * (b - a * a);
    return (1 - a) ** 2 + 100 * (b - a * a) ** 2;
  };
  const r = await lbfgs(rosen, Float64Array.of(-1.2, 1), { gradTol: 1e-8, relTol: 0 });
  assert.ok(r.converged);
  assert.ok(Math.abs(r.x[0] - 1) < 1e-5 && Math.abs(r.x[1] - 1) < 1e-5, `ended at ${Array.from(r.x)}`);
  // Condition number 100 over 50 distinct eigenvalues: SciPy's L-BFGS-B (10 pairs) needs about 100 iterations for
  // 1e-7, as this one does.
  const scales = Float64Array.from({ length: 50 }, (_, i) => 10 ** ((2 * i) / 49));
  const quad = (x: Float64Array, g: Float64Array) => {
    let f = 0;
    for (let i = 0; i < x.length; i++) {
      g[i] = scales[i] * (x[i] - 1);
      f += 0.5 * scales[i] * (x[i] - 1) ** 2;
    }
    return f;
  };
  const q = await lbfgs(quad, new Float64Array(50), { gradTol: 1e-9, relTol: 0 });
  assert.ok(q.converged && q.iterations < 200, `${q.iterations} iterations`);
  for (const v of q.x) assert.ok(Math.abs(v - 1) < 1e-9);
});

test('a fixed-lambda fit stops where the independent gradient vanishes, and predicts its training rules', async () => {
  const d = problem(120, 10, 3, 3);
  const fit = await fitLogistic(
    d,
    Int32Array.from({ length: d.n }, (_, i) => i),
    { lambda: 0.01 },
  );
  assert.ok(fit.converged);
  assert.equal(fit.search, undefined);
  // Optimality: the gradient of the objective, computed by autodiff, is zero at the returned parameters.
  const g = maxAbs(autodiff(d, 0.01, fit.params).grad);
  assert.ok(g < 1e-4, `gradient at the solution ${g}`);
  const engine = await rowEngine(d);
  try {
    const p = softmaxRows(await new LogisticObjective(engine, d, 0).logits(fit.params), d.n, 3);
    assert.ok(accuracy(p, d.y, 3) > 0.9);
  } finally {
    await engine.dispose();
  }
});

test('lambda search: noise wants the strongest penalty, a clean rule a weaker one; same seed, same fit', async () => {
  const identity = (n: number) => Int32Array.from({ length: n }, (_, i) => i);
  const noise = problem(80, 30, 2, 4, 1);
  const a = await fitLogistic(noise, identity(80), { seed: 1 });
  assert.equal(a.lambda, LAMBDA_GRID[0], `chose ${a.lambda} on pure noise`);
  assert.equal(a.search?.folds, 5);
  assert.ok((a.search?.rows.length ?? 0) >= 3);
  const clean = problem(150, 8, 2, 5);
  const b = await fitLogistic(clean, identity(150), { seed: 1 });
  assert.ok(b.lambda < LAMBDA_GRID[2], `chose ${b.lambda} on a clean linear rule`);
  const again = await fitLogistic(clean, identity(150), { seed: 1 });
  assert.deepEqual(again.params, b.params);
  assert.deepEqual(again.search?.rows, b.search?.rows);
});

test('a search on given folds: one score per fold, pooled into the chosen lambda’s accuracy', async () => {
  const d = problem(90, 10, 3, 8, 0.2);
  const source = Int32Array.from({ length: 90 }, (_, i) => i);
  const folds = Int32Array.from({ length: 90 }, (_, i) => i % 3);
  const fit = await fitLogistic(d, source, { folds });
  const search = fit.search;
  assert.ok(search);
  assert.equal(search.folds, 3);
  assert.equal(search.foldScores.length, 3);
  const row = search.rows.find((r) => r.lambda === search.lambda);
  // Equal folds of 30 images: the pooled held-out accuracy is the mean of the folds' accuracies.
  const mean = search.foldScores.reduce((a, b) => a + b, 0) / 3;
  assert.ok(Math.abs((row?.accuracy ?? Number.NaN) - mean) < 1e-9, `${row?.accuracy} vs ${mean}`);
  // Each fold's score is its own held-out rows' accuracy under the out-of-fold probabilities.
  for (let f = 0; f < 3; f++) {
    const rows = [...folds.keys()].filter((r) => folds[r] === f);
    const p = Float32Array.from(rows.flatMap((r) => [...search.oof.subarray(r * 3, r * 3 + 3)]));
    const yf = Int32Array.from(rows, (r) => d.y[r]);
    assert.ok(Math.abs(accuracy(p, yf, 3) - search.foldScores[f]) < 1e-9);
  }
});

test('views stay in their image’s fold: an image and its copy are predicted by the same fit', async () => {
  // 60 noise images, each followed by an exact copy standing in for its view.
  const base = problem(60, 40, 2, 6, 1);
  const x = new Float32Array(2 * base.x.length);
  x.set(base.x);
  x.set(base.x, base.x.length);
  const y = Int32Array.from({ length: 120 }, (_, r) => base.y[r % 60]);
  const d: LogisticData = { x, n: 120, dim: 40, y, w: new Float64Array(120).fill(1 / 120), numClasses: 2 };
  const same = (oof: Float32Array) => [...Array(60).keys()].every((r) => oof[2 * r] === oof[2 * (r + 60)]);
  const grouped = await fitLogistic(
    d,
    Int32Array.from({ length: 120 }, (_, r) => r % 60),
    { seed: 2 },
  );
  // Held out together, a copy gets exactly its image's out-of-fold probabilities; no fit saw either of them.
  const oof = grouped.search?.oof ?? new Float32Array(0);
  assert.ok(same(oof));
  assert.ok(accuracy(oof.subarray(0, 120), base.y, 2) < 0.75);
  // Declared independent, copies land in other folds: their fits differ (the leak the grouping prevents).
  const leaky = await fitLogistic(
    d,
    Int32Array.from({ length: 120 }, (_, r) => r),
    { seed: 2 },
  );
  assert.ok(!same(leaky.search?.oof as Float32Array));
});

for (const engine of ['ort', 'tfjs'] as const) {
  test(`${engine}: a fit frees every tensor it made and stops on abort`, async () => {
    const d = problem(50, 6, 2, 7);
    const start = tf.memory().numTensors;
    await fitLogistic(
      d,
      Int32Array.from({ length: 50 }, (_, i) => i),
      { seed: 3, engine },
    );
    assert.equal(tf.memory().numTensors, start);
    const ac = new AbortController();
    ac.abort(new Error('stop now'));
    await assert.rejects(
      fitLogistic(
        d,
        Int32Array.from({ length: 50 }, (_, i) => i),
        { signal: ac.signal, engine },
      ),
      /stop now/,
    );
    assert.equal(tf.memory().numTensors, start);
  });
}

test('ONNX Runtime and TF.js choose the same lambda, and rows standardised on the way fit as standardised ones', async () => {
  const d = problem(150, 12, 3, 11, 0.3);
  const source = Int32Array.from({ length: d.n }, (_, i) => i);
  const ort = await fitLogistic(d, source, { seed: 3, engine: 'ort' });
  const fits = [
    await fitLogistic(d, source, { seed: 3, engine: 'tfjs' }),
    await fitLogistic(unstandardised(d, 15), source, { seed: 3 }),
  ];
  for (const other of fits) {
    assert.equal(other.lambda, ort.lambda);
    assert.equal(other.search?.rows.length, ort.search?.rows.length);
    for (const [i, r] of (ort.search?.rows ?? []).entries()) {
      assert.ok(Math.abs(r.logLoss - (other.search?.rows[i].logLoss ?? Number.NaN)) < 1e-4, `lambda ${r.lambda}`);
      assert.equal(other.search?.rows[i].accuracy, r.accuracy);
    }
    const oofDiff = Math.max(...(ort.search?.oof ?? []).map((v, i) => Math.abs(v - (other.search?.oof[i] ?? 0))));
    assert.ok(oofDiff < 1e-3, `out-of-fold probabilities differ by ${oofDiff}`);
    const paramDiff = Math.max(...ort.params.map((v, i) => Math.abs(v - other.params[i])));
    assert.ok(paramDiff < 1e-3, `final parameters differ by ${paramDiff}`);
  }
});
