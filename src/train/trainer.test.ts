import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initTf, tf } from '../tfjs/tf.ts';
import type { EpochLog, FeatureSet } from './features.ts';
import { computeStandardisation } from './heads.ts';
import { accuracy, argmaxRows, logLoss } from './metrics.ts';
import { gaussian, mulberry32, shuffleInPlace } from './random.ts';
import { setScorer, trainHead } from './trainer.ts';

before(async () => {
  await initTf();
});

/** Linearly separable: the class is decided by the sign pattern of a random projection, with a margin. */
function separable(n: number, dim: number, classes: number, seed: number): FeatureSet {
  const rng = mulberry32(seed);
  const centres = Array.from({ length: classes }, () => Array.from({ length: dim }, () => gaussian(rng)));
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = Math.floor(rng() * classes);
    for (let d = 0; d < dim; d++) x[i * dim + d] = 10 + 3 * centres[y[i]][d] + 0.7 * gaussian(rng);
  }
  return { x, y, n, dim };
}

function split(fs: FeatureSet, first: number): [FeatureSet, FeatureSet] {
  const { dim } = fs;
  const part = (a: number, b: number): FeatureSet => ({
    x: fs.x.slice(a * dim, b * dim),
    y: fs.y.slice(a, b),
    n: b - a,
    dim,
  });
  return [part(0, first), part(first, fs.n)];
}

function noise(n: number, dim: number, seed: number): FeatureSet {
  const rng = mulberry32(seed);
  return {
    x: Float32Array.from({ length: n * dim }, () => gaussian(rng)),
    y: Int32Array.from({ length: n }, () => (rng() < 0.5 ? 0 : 1)),
    n,
    dim,
  };
}

test('logistic: fitted without reading the validation set, one history entry, its lambda search recorded', async () => {
  const [train, val] = split(separable(240, 40, 3, 1), 150);
  const logs: EpochLog[] = [];
  const h = await trainHead(train, val, 3, {
    head: 'logistic',
    onEpoch: (l, total) => logs.push({ ...l, epoch: total }),
  });
  const blind = await trainHead(train, undefined, 3, { head: 'logistic' });
  const shuffled = { ...val, y: shuffleInPlace(val.y.slice(), mulberry32(4)) };
  const misled = await trainHead(train, shuffled, 3, { head: 'logistic' });
  try {
    const p = h.predictProba(val.x, val.n);
    assert.ok(accuracy(p, val.y, 3) >= 0.98);
    // The validation set only fills the reported numbers: with it, without it or with its labels shuffled, the same fit.
    assert.deepEqual(blind.predictProba(val.x, val.n), p);
    assert.deepEqual(misled.predictProba(val.x, val.n), p);
    assert.equal(h.history.length, 1);
    assert.equal(h.bestEpoch, 1);
    assert.deepEqual(logs, [{ ...h.history[0], epoch: 1 }]);
    assert.ok(Math.abs((h.history[0].valAccuracy ?? 0) - accuracy(p, val.y, 3)) < 1e-12);
    assert.equal(blind.history[0].valAccuracy, undefined);
    assert.ok(h.fit?.converged);
    assert.equal(h.fit?.search?.folds, 5);
    assert.ok(h.fit?.search?.rows.some((r) => r.lambda === h.fit?.lambda));
    // Out-of-fold probabilities of every training row, from fits that did not see it.
    assert.equal(h.outOfFold?.length, train.n * 3);
    assert.ok(accuracy(h.outOfFold as Float32Array, train.y, 3) > 0.9);
  } finally {
    h.dispose();
    blind.dispose();
    misled.dispose();
  }
});

test('logistic: a fit started from the search’s solution at its strength only confirms it', async () => {
  const train = noise(200, 30, 6);
  const searched = await trainHead(train, undefined, 2, { head: 'logistic' });
  const lambda = searched.fit?.lambda as number;
  const fromZero = await trainHead(train, undefined, 2, { head: 'logistic', lambda });
  const started = await trainHead(train, undefined, 2, { head: 'logistic', lambda, start: searched.solution });
  try {
    assert.ok(searched.solution && searched.fit?.converged);
    assert.ok((started.fit?.iterations ?? 99) <= 1, `${started.fit?.iterations} iterations from the solution`);
    assert.ok((fromZero.fit?.iterations ?? 0) > 5, `${fromZero.fit?.iterations} iterations from zero`);
    const p = started.predictProba(train.x, train.n);
    const q = fromZero.predictProba(train.x, train.n);
    assert.ok(Math.max(...p.map((v, i) => Math.abs(v - q[i]))) < 1e-3);
  } finally {
    for (const h of [searched, fromZero, started]) h.dispose();
  }
  await assert.rejects(
    trainHead(train, undefined, 2, { head: 'logistic', lambda, start: new Float64Array(3) }),
    /a start of 3 parameters/,
  );
});

for (const head of ['softmax', 'mlp'] as const) {
  test(`${head} learns a linearly separable problem`, async () => {
    const [train, val] = split(separable(240, 40, 3, 1), 150);
    // hidden 64 > batch 32: trains with the transposed first-kernel layout (softmax uses the plain one).
    const h = await trainHead(train, val, 3, { head, epochs: 30, hidden: 64 });
    try {
      const acc = accuracy(h.predictProba(val.x, val.n), val.y, 3);
      assert.ok(acc >= 0.98, `held-out accuracy ${acc}`);
      assert.equal(h.history.length, 30);
      assert.ok(h.history[0].loss > h.history[29].loss);
      assert.ok((h.history.at(-1)?.valAccuracy ?? 0) >= 0.98);
    } finally {
      h.dispose();
    }
  });
}

test('same seed gives bit-identical heads; another seed gives another mlp', async () => {
  const [train, q] = split(separable(100, 16, 2, 3), 80);
  const run = async (head: 'softmax' | 'mlp', seed: number) => {
    const h = await trainHead(train, undefined, 2, { head, seed, epochs: 8, hidden: 16 });
    try {
      return h.predictProba(q.x, q.n);
    } finally {
      h.dispose();
    }
  };
  assert.deepEqual(await run('softmax', 5), await run('softmax', 5));
  const a = await run('mlp', 5);
  assert.deepEqual(await run('mlp', 5), a);
  assert.notDeepEqual(await run('mlp', 6), a);
});

test('early stopping halts when validation loss rises and restores the best epoch', async () => {
  // Pure noise: the head can only memorise the training set, so loss on (independent, shuffled) validation labels rises.
  const train = noise(60, 30, 1);
  const val = noise(60, 30, 2);
  shuffleInPlace(val.y, mulberry32(3));
  const logs: EpochLog[] = [];
  const h = await trainHead(train, val, 2, {
    head: 'softmax',
    epochs: 200,
    patience: 5,
    lr: 0.03,
    classWeights: 'none',
    onEpoch: (l, total) => {
      assert.equal(total, 200);
      logs.push(l);
    },
  });
  try {
    assert.ok(h.history.length < 200, `ran ${h.history.length} epochs`);
    assert.deepEqual(logs, h.history);
    assert.deepEqual(
      h.history.map((l) => l.epoch),
      h.history.map((_, i) => i + 1),
    );
    assert.equal(h.history.length, h.bestEpoch + 5);
    const vals = h.history.map((l) => l.valLoss as number);
    assert.equal(Math.min(...vals), vals[h.bestEpoch - 1]);
    const now = logLoss(h.predictProba(val.x, val.n), val.y, 2);
    assert.ok(Math.abs(now - vals[h.bestEpoch - 1]) < 1e-4, `restored val loss ${now}, best ${vals[h.bestEpoch - 1]}`);
    assert.ok(now < (vals.at(-1) as number) - 1e-3, 'the last epoch was no better than the best');
  } finally {
    h.dispose();
  }
});

test('balanced class weights move the decision towards the rare class', async () => {
  const rng = mulberry32(11);
  const make = (counts: number[]): FeatureSet => {
    const n = counts[0] + counts[1];
    const x = new Float32Array(n * 2);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      y[i] = i < counts[0] ? 0 : 1;
      const m = y[i] === 0 ? -0.6 : 0.6;
      x[2 * i] = m + gaussian(rng);
      x[2 * i + 1] = m + gaussian(rng);
    }
    return { x, y, n, dim: 2 };
  };
  const train = make([270, 30]);
  const test = make([200, 200]);
  const recallOfRare = async (head: 'softmax' | 'logistic', classWeights: 'balanced' | 'none') => {
    const h = await trainHead(train, undefined, 2, { head, classWeights, epochs: 40, lr: 0.02, patience: 100 });
    try {
      const pred = argmaxRows(h.predictProba(test.x, test.n), test.n, 2);
      let hit = 0;
      for (let i = 200; i < 400; i++) hit += pred[i];
      return hit / 200;
    } finally {
      h.dispose();
    }
  };
  for (const head of ['softmax', 'logistic'] as const) {
    const none = await recallOfRare(head, 'none');
    const balanced = await recallOfRare(head, 'balanced');
    assert.ok(balanced > none + 0.3, `${head} rare-class recall: balanced ${balanced}, none ${none}`);
  }
});

test('no tensor leaks: a head holds only its own tensors, predicting allocates nothing, dispose frees all', async () => {
  const [train, val] = split(separable(70, 10, 2, 5), 50);
  for (const [head, own, hidden] of [
    ['logistic', 4, 8],
    ['softmax', 4, 8],
    ['mlp', 6, 8],
    ['mlp', 6, 40],
    ['knn', 1, 8],
  ] as const) {
    const start = tf.memory().numTensors;
    const h = await trainHead(train, val, 2, { head, epochs: 4, hidden });
    assert.equal(tf.memory().numTensors, start + own, `${head} after training`);
    for (let i = 0; i < 3; i++) h.predictProba(val.x, val.n);
    h.toJSON();
    assert.equal(tf.memory().numTensors, start + own, `${head} after predicting`);
    h.dispose();
    assert.equal(tf.memory().numTensors, start, `${head} after dispose`);
  }
});

test('abort signal stops training with its reason and leaks nothing', async () => {
  const train = separable(64, 10, 2, 7);
  const start = tf.memory().numTensors;
  const ac = new AbortController();
  let seen = 0;
  await assert.rejects(
    trainHead(train, undefined, 2, {
      head: 'mlp',
      hidden: 8,
      epochs: 50,
      signal: ac.signal,
      onEpoch: (l) => {
        seen = l.epoch;
        if (l.epoch === 3) ac.abort(new Error('user stopped'));
      },
    }),
    /user stopped/,
  );
  assert.equal(seen, 3);
  assert.equal(tf.memory().numTensors, start);
  await assert.rejects(trainHead(train, undefined, 2, { signal: AbortSignal.abort() }));
  assert.equal(tf.memory().numTensors, start);
});

test('rejects malformed input', async () => {
  const train = separable(10, 4, 2, 8);
  await assert.rejects(trainHead(train, undefined, 1), /label 1/);
  await assert.rejects(trainHead({ ...train, n: 11 }, undefined, 2), /expected/);
  await assert.rejects(trainHead(train, separable(5, 3, 2, 9), 2), /dim/);
});

test('large sets are scored in chunks with the numbers of one resident copy, and predicted in chunks alike', async () => {
  const fs = separable(9000, 24, 3, 5); // 9000 rows: three scoring chunks and three prediction chunks
  const std = computeStandardisation(fs.x, fs.n, fs.dim);
  const oneHot = (y: Int32Array) => {
    const o = new Float32Array(y.length * 3);
    y.forEach((c, i) => {
      o[i * 3 + c] = 1;
    });
    return o;
  };
  const weights = (y: Int32Array) => Float32Array.from(y, (c) => 1 + c * 0.5);
  const rng = mulberry32(3);
  const params = [
    tf.tensor2d(
      Float32Array.from({ length: 24 * 3 }, () => gaussian(rng) * 0.3),
      [24, 3],
    ),
    tf.zeros([3]),
  ];
  const resident = setScorer(fs, std, oneHot, weights, 3);
  const chunked = setScorer(fs, std, oneHot, weights, 3, 1000);
  const before = tf.memory().numTensors;
  const [l1, a1] = resident.score(params);
  const [l2, a2] = chunked.score(params);
  assert.equal(tf.memory().numTensors, before, 'scoring leaks nothing');
  assert.ok(Math.abs(l1 - l2) < 1e-5 * Math.abs(l1), `${l1} vs ${l2}`);
  assert.ok(Math.abs(a2 - a1) < 1e-6, `${a1} vs ${a2}`); // float32 mean vs an exact count
  resident.dispose();
  chunked.dispose();
  tf.dispose(params);

  const h = await trainHead(fs, undefined, 3, { epochs: 2 });
  try {
    const all = h.predictProba(fs.x, fs.n);
    const firstRows = h.predictProba(fs.x.subarray(0, 10 * 24), 10);
    const lastRows = h.predictProba(fs.x.subarray((fs.n - 10) * 24), 10);
    assert.deepEqual(all.subarray(0, 30), firstRows);
    assert.deepEqual(all.subarray(all.length - 30), lastRows);
  } finally {
    h.dispose();
  }
});
